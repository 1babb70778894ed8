//! Authentication and authorization: password hashing, JSON Web Tokens, failed-login
//! limits, and the extractors that make a handler's access level part of its signature.

mod extract;
mod limiter;
mod passwords;
mod tokens;

pub use extract::{AdminUser, AnyUser, ClientAddr};
pub use limiter::LoginLimiter;
pub use passwords::{PasswordPolicyError, Passwords, check_password_policy};
pub use tokens::{Claims, TokenType, Tokens};
