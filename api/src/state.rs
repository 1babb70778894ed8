//! What every handler shares.

use std::ops::Deref;
use std::sync::Arc;

use async_nats::jetstream;
use common::storage::Storage;

use crate::auth::{LoginLimiter, Passwords, Tokens};
use crate::settings::Settings;

/// The shared context, cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The database.
    pub storage: Storage,
    /// The NATS client (for its connection state).
    pub nats: async_nats::Client,
    /// JetStream, to publish events and notifications.
    pub js: jetstream::Context,
    /// Issues and verifies tokens.
    pub tokens: Tokens,
    /// Hashes and verifies passwords.
    pub passwords: Passwords,
    /// Failed-login limits.
    pub limiter: LoginLimiter,
    /// Sends test notifications (`POST /api/notification-routes/{id}/test/`).
    pub notifier: common::notify::Notifier,
    /// The settings served with.
    pub settings: Settings,
    /// Cancelled when the server stops: ends live streams so that shutdown can finish.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Changes announced whose pending mark is still to be cleared (see `updates`).
    pub published: crate::updates::PublishedChanges,
}

impl AppState {
    /// Wraps the parts.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
