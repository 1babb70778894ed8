//! threatmon's shared core: the domain and its validation, configuration, storage, the NATS
//! subjects and streams, and telemetry. The services (`ingestor`, `alerter`, `api`) are thin
//! glue around this crate and talk to each other only through NATS and the database.

pub mod bus;
pub mod config;
pub mod domain;
pub mod notify;
pub mod ops;
pub mod shutdown;
pub mod storage;
pub mod subjects;
pub mod telemetry;
pub mod worker;

pub use domain::{Alert, AlertStatus, Event, EventIn, FieldErrors, NewEvent, Role, Severity, User};
pub use storage::{Storage, StorageError};
