//! The domain: what an event and an alert are, and the only ways to make one; and the users
//! of the API.
//!
//! Parse, don't validate: a [`NewEvent`] can only be built by [`EventIn::parse`], so code
//! holding one never re-checks it.

mod alert;
mod errors;
mod event;
mod fold;
mod route;
mod severity;
mod time;
mod user;

pub use alert::{Alert, AlertStatus, CloseReason};
pub use errors::FieldErrors;
pub use event::{
    Event, EventIn, EventRejection, NewEvent, check_idempotency_key, identifier_problem,
    json_type_name,
};
pub use fold::{BadFoldKey, FoldKey, FoldValue};
pub use route::{
    DEFAULT_TRIGGERS, MAX_ROUTE_LIST, MIN_REPEAT_SECS, Matched, ROUTE_TRIGGERS, RouteKind,
    RouteSpec, Trigger, check_url, is_private_address, new_secret, plausible_address, secret_bytes,
};
pub use severity::Severity;
pub use time::{from_micros, to_micros};
pub use user::{Role, UnknownRole, User};
