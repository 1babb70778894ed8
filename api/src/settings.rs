//! The api's settings: environment variables (also read from `.env`), each also a flag.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use common::config::Connections;

/// A secret that never prints: `Debug` and `Display` show `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Shortest `SECRET_KEY` accepted, in bytes: HS256 wants at least its 256-bit output.
pub const MIN_SECRET_KEY_BYTES: usize = 32;

fn parse_secret_key(value: &str) -> Result<Secret, String> {
    if value.len() < MIN_SECRET_KEY_BYTES {
        Err(format!(
            "must be at least {MIN_SECRET_KEY_BYTES} bytes (it has {})",
            value.len()
        ))
    } else {
        Ok(Secret::new(value))
    }
}

fn parse_password(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
}

/// Everything the api needs to serve.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Broker and database.
    #[command(flatten)]
    pub connections: Connections,

    /// Key that signs the JSON Web Tokens (HS256), at least 32 bytes. Required to serve.
    #[arg(long, env = "SECRET_KEY", hide_env_values = true, value_parser = parse_secret_key)]
    pub secret_key: Option<Secret>,

    /// Address to listen on.
    #[arg(long, env = "API_ADDR", default_value = "127.0.0.1:8000")]
    pub api_addr: SocketAddr,

    /// Debug mode: more detail in logs. Never changes what clients are told.
    #[arg(long, env = "DEBUG", default_value_t = false, value_parser = clap::builder::FalseyValueParser::new())]
    pub debug: bool,

    /// Creates this admin at start when no user has this name.
    #[arg(long, env = "ADMIN_USERNAME", requires = "admin_password")]
    pub admin_username: Option<String>,

    /// The password of `ADMIN_USERNAME` (used only when the user is created).
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true, requires = "admin_username",
          value_parser = parse_password)]
    pub admin_password: Option<Secret>,

    /// Local quick start only: lets `ADMIN_PASSWORD` be weak (e.g. `Admin`/`Admin`, as the
    /// original's test setup had). Refused unless `API_ADDR` is a loopback address.
    #[arg(long, env = "LOCAL_QUICKSTART", default_value_t = false,
          value_parser = clap::builder::FalseyValueParser::new())]
    pub local_quickstart: bool,

    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECS", default_value_t = 30 * 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub access_token_ttl_secs: u64,

    /// Lifetime of a refresh token, in seconds.
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECS", default_value_t = 24 * 60 * 60,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub refresh_token_ttl_secs: u64,

    /// Failed logins allowed per (username, client address) within the window.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures: u32,

    /// Failed logins allowed per client address, whatever the username, within the window.
    #[arg(long, env = "LOGIN_MAX_FAILURES_PER_ADDRESS", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures_per_address: u32,

    /// The window failed logins are counted in, in seconds.
    #[arg(long, env = "LOGIN_FAILURE_WINDOW_SECS", default_value_t = 15 * 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub login_failure_window_secs: u64,

    /// Notifications: the api sends a route's test message itself, with these settings.
    #[command(flatten)]
    pub notify: common::notify::NotifySettings,

    /// Origins allowed to call the API from a browser (comma-separated); none by default.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,
}

impl Settings {
    /// Access token lifetime.
    pub fn access_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs)
    }

    /// Refresh token lifetime.
    pub fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_secs)
    }

    /// Failed-login window.
    pub fn login_window(&self) -> Duration {
        Duration::from_secs(self.login_failure_window_secs)
    }
}
