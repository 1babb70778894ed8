//! Storage on SQLite (the default) or PostgreSQL, chosen by `DATABASE_URL` at run time.
//!
//! How the two backends share queries: the schema is the same on both (see `migrations/`),
//! every query is written once in SQL both accept (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`), and [`on_pool!`] expands each query once per backend, so the compiler
//! checks every bind and row type against both drivers. Where a backend has a faster form
//! of the same statement, the method says so: the bulk statements of `store_events` and
//! `create_alerts` are methods of a small trait implemented for each `sqlx::Database`
//! (multi-row `VALUES` on SQLite, one `UNNEST` of arrays per batch on Postgres), called as
//! `<Db as …>::method` inside `on_pool!`. Queries are built at run time (not sqlx's
//! `query!` macros), so building needs no live database; every query is exercised on both
//! backends by the test suite (`THREATMON_TEST_BACKEND=postgres` reruns it on Postgres).
//!
//! Statements whose text depends on the call (filters, multi-row `VALUES`, `IN` lists) are
//! built on sqlx's `QueryBuilder` (see [`sql`]); the lists of events and alerts share one
//! filter, count and page path (see [`listing`]).
//!
//! Exact counts without scans: counts tables per severity, status, type and sensor are kept
//! in the same transaction as every change to the rows they count (see [`counts`]); a count
//! filtered by nothing but those columns reads them instead of the rows. Anything writing
//! `events` or `alerts` must keep them too.

mod alerts;
mod counts;
mod events;
mod listing;
mod notifications;
mod reminders;
mod sql;
mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use alerts::{
    AlertChange, AlertFilter, AlertOrdering, AlertSummary, AlertUpdate, AssigneeFilter, BulkUpdate,
    ChangeKind, CreatedAlerts, Folding, MAX_NOTE_TEXT_CHARS, Note, Refusal, SearchCounts,
    SourceCount, StatusChange, StatusCounts, StatusUpdate, SummaryCounts, TypeCount, search_words,
};
pub use events::{EventFilter, EventRecord, StoredEvents};
pub use notifications::{
    AttemptOutcome, AttemptResult, ClaimedDelivery, DeliveryAttempt, DeliveryRecord,
    FinishedAttempt, NewDelivery, Route, delivery_webhook_id,
};
pub use reminders::{DueReminder, ReminderDecision};
pub use users::{NewUser, UserChanges};

/// Runs the same expression against whichever pool backs the storage; the expression is
/// compiled once per backend, with `Db` naming that backend's `sqlx::Database`.
macro_rules! on_pool {
    ($storage:expr, |$pool:ident| $body:expr) => {
        match $storage {
            $crate::storage::Storage::Sqlite($pool, ..) => {
                #[allow(dead_code)]
                type Db = sqlx::Sqlite;
                $body
            }
            $crate::storage::Storage::Postgres($pool) => {
                #[allow(dead_code)]
                type Db = sqlx::Postgres;
                $body
            }
        }
    };
}
pub(crate) use on_pool;

/// Runs `$body` with `$tx` a write transaction begun on the storage's writer (SQLite: its
/// one write connection, with `BEGIN IMMEDIATE`; Postgres: a pooled connection), with `Db`
/// naming the backend as in [`on_pool!`]. `$body` commits; failing to begin is transient.
///
/// `BEGIN IMMEDIATE` takes SQLite's write lock first, so a writer that has to wait for
/// another process waits before doing any work, and never has to undo and redo a
/// transaction that lost the lock half-way (a deferred transaction is refused at its first
/// write when another committed since it began reading).
macro_rules! in_write_transaction {
    ($storage:expr, |$tx:ident| $body:expr) => {
        match $storage {
            $crate::storage::Storage::Sqlite(_, writer, _) => {
                #[allow(dead_code)]
                type Db = sqlx::Sqlite;
                let mut $tx = writer
                    .0
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err($crate::storage::StorageError::connecting)?;
                $body
            }
            $crate::storage::Storage::Postgres(pool) => {
                #[allow(dead_code)]
                type Db = sqlx::Postgres;
                let mut $tx = pool
                    .begin()
                    .await
                    .map_err($crate::storage::StorageError::connecting)?;
                $body
            }
        }
    };
}
pub(crate) use in_write_transaction;

/// Which database engine backs a [`Storage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A local SQLite file (WAL).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The database: a pool of connections to SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub enum Storage {
    /// SQLite in WAL mode: a pool for reads, the process's one connection for the
    /// pipeline's writes, and the counts of searches this process has made.
    Sqlite(SqlitePool, SqliteWriter, SearchCounts),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// The one SQLite connection a process writes events and alerts through (a pool of one, so
/// that writers of one process queue in memory instead of taking turns on SQLite's lock),
/// with a larger page cache than the readers': a batch's index pages stay in memory until
/// its commit instead of spilling into the WAL half-way.
#[derive(Debug, Clone)]
pub struct SqliteWriter(SqlitePool);

/// Page cache of the writer connection, KiB (SQLite's `cache_size` takes a negative number
/// as KiB).
const SQLITE_WRITER_CACHE_KIB: u32 = 16 * 1024;

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// `DATABASE_URL` is not a URL we can use.
    #[error("unsupported database URL (expected sqlite:… or postgres://…): {0}")]
    UnsupportedUrl(String),
    /// The database refused a statement: a constraint or a value it cannot hold. Retrying the
    /// same data will fail again.
    #[error("the database refused the data: {0}")]
    Rejected(#[source] sqlx::Error),
    /// A value that must be unique is taken; names the field (`"username"`). Retrying the
    /// same data will fail again.
    #[error("already exists: {0}")]
    Duplicate(&'static str),
    /// The database could not be reached or failed for a reason that may pass (I/O, pool
    /// timeout, lock contention). Retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Another writer got there first in a way this transaction cannot absorb (an alerter
    /// folding by another `ALERT_FOLD_KEY` counted one of its events meanwhile, as during a
    /// rolling change of the setting). Nothing was written; the same work again sees what
    /// the other did.
    #[error("contended: {0}")]
    Contended(String),
    /// A change the alert lifecycle refuses (see `Storage::update_alert`, which says why
    /// without an error).
    #[error("refused: {0}")]
    Refused(String),
    /// A stored value that does not fit the domain (written by something other than us).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Applying migrations failed.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Creating the directory for a SQLite file, or the setup lock file beside it, failed.
    #[error("cannot create a file beside the database: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    /// True when retrying the same work later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Unavailable(_) | StorageError::Contended(_)
        )
    }

    /// An error getting a connection or starting a transaction: never the data's fault, so
    /// always transient. (A server refusing connections answers with a database error, such
    /// as "database is not currently accepting connections", that would otherwise read as a
    /// refusal of the data and dead-letter what is only waiting for the database.)
    pub(crate) fn connecting(err: sqlx::Error) -> StorageError {
        StorageError::Unavailable(err)
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) => {
                // Errors that pass with time: SQLite busy/locked (primary codes 5 and 6,
                // also as extended codes), and Postgres classes 08 (connection), 40
                // (serialization, deadlock), 53 (resources) and 57 (shutdown).
                let code = db.code().unwrap_or_default();
                let transient = if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    ["08", "40", "53", "57"]
                        .iter()
                        .any(|class| code.starts_with(class))
                } else {
                    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                };
                if transient {
                    StorageError::Unavailable(err)
                } else {
                    StorageError::Rejected(err)
                }
            }
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::TypeNotFound { .. } => StorageError::Corrupt(err.to_string()),
            _ => StorageError::Unavailable(err),
        }
    }
}

/// SQLite's "busy" or "locked" (primary codes 5 and 6, also as extended codes).
fn is_sqlite_busy(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && db
                    .code()
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 5 | 6))
        }
        _ => false,
    }
}

/// How long [`Storage::migrate`] keeps retrying while the database is busy or locked.
const MIGRATE_PATIENCE: Duration = Duration::from_secs(30);

/// True when a migration failed only because another session held a lock: SQLite's busy or
/// locked, or Postgres's lock_not_available (55P03), deadlock_detected (40P01) or
/// serialization_failure (40001). Everything else (a file that is not a database, a
/// conflicting table, a changed migration) fails the same way when retried.
fn migrate_error_is_lock(err: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError;
    let (MigrateError::Execute(err) | MigrateError::ExecuteMigration(err, _)) = err else {
        return false;
    };
    if is_sqlite_busy(err) {
        return true;
    }
    match err {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
                && matches!(db.code().as_deref(), Some("55P03" | "40P01" | "40001"))
        }
        _ => false,
    }
}

/// How long SQLite itself waits for a lock before answering "busy"; writes are then retried
/// by [`Storage::retrying_while_busy`] with short, even pauses instead of SQLite's growing
/// ones. Reads in WAL mode wait for no writer.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_millis(5);

/// The Postgres advisory lock behind [`Storage::one_setup_at_a_time`] ("thrtmon1" in ASCII;
/// sqlx's migrations use a key of their own).
const SETUP_LOCK_KEY: i64 = 0x7468_7274_6d6f_6e31;

/// How often the WAL is copied into the SQLite database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copies the WAL into the database file twice a second from a pooled connection, until the
/// pool is closed. SQLite's automatic checkpoint runs inside the commit that crosses 1,000
/// WAL pages, and on a large database that commit then waits for thousands of random writes
/// and an fsync: it set the p99 of alert latency. A passive checkpoint blocks no writer.
fn spawn_checkpointer(pool: SqlitePool) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(CHECKPOINT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if pool.is_closed() {
                break;
            }
            if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                if pool.is_closed() {
                    break;
                }
                tracing::debug!(error = %err, "WAL checkpoint skipped");
            }
        }
    });
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Storage {
    /// Opens a pool for `url` (`sqlite:…` or `postgres://…`). For SQLite the file and its
    /// directory are created when missing.
    pub async fn connect(url: &str) -> Result<Storage, StorageError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StorageError::UnsupportedUrl(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a committed batch survives power loss, not only a process crash.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                // Checkpoints run in the background (`spawn_checkpointer`), not in a commit.
                .pragma("wal_autocheckpoint", "0")
                // 1 MiB of page cache per connection (SQLite's default is 2 MiB): the
                // operating system caches the file anyway, and the api's memory budget is
                // 64 MiB.
                .pragma("cache_size", "-1024");
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)?;
            }
            // Switching a new file to WAL takes a lock for which SQLite does not wait (the
            // busy timeout does not apply), so services opening one new database at once
            // can see "database is locked" here: that passes, so retry for a while.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let mut attempt = 0u64;
            loop {
                // Four: SQLite has one writer at a time and readers need no more on a few
                // cores; each connection holds its own page and statement caches.
                let opened = SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options.clone())
                    .await;
                let opened = match opened {
                    Ok(readers) => SqlitePoolOptions::new()
                        .max_connections(1)
                        .acquire_timeout(Duration::from_secs(30))
                        .connect_with(
                            options
                                .clone()
                                .pragma("cache_size", format!("-{SQLITE_WRITER_CACHE_KIB}")),
                        )
                        .await
                        .map(|writer| (readers, writer)),
                    Err(err) => Err(err),
                };
                match opened {
                    Ok((readers, writer)) => {
                        spawn_checkpointer(readers.clone());
                        return Ok(Storage::Sqlite(
                            readers,
                            SqliteWriter(writer),
                            SearchCounts::default(),
                        ));
                    }
                    Err(err) if is_sqlite_busy(&err) && tokio::time::Instant::now() < deadline => {
                        attempt += 1;
                        tracing::debug!(error = %err, attempt, "SQLite busy while opening; retrying");
                        tokio::time::sleep(Duration::from_millis(20 * attempt.min(25))).await;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| StorageError::UnsupportedUrl(e.to_string()))?
                .application_name("threatmon");
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await?;
            Ok(Storage::Postgres(pool))
        } else {
            Err(StorageError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// Connects and applies pending migrations.
    pub async fn connect_and_migrate(url: &str) -> Result<Storage, StorageError> {
        let storage = Storage::connect(url).await?;
        storage.migrate().await?;
        Ok(storage)
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match self {
            Storage::Sqlite(..) => Backend::Sqlite,
            Storage::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies pending migrations; safe when several services start at once on one database.
    ///
    /// Postgres serializes migrators with an advisory lock. SQLite has no such lock, so two
    /// processes may race to apply the same migration: the loser's transaction fails and
    /// rolls back, with "busy" while the winner holds the write lock, or, when the winner
    /// committed between the loser's look at `_sqlx_migrations` and its own insert there,
    /// with a unique-constraint (or "duplicate column") error. A retry then finds the
    /// migration applied. So an attempt is retried while the database is busy or locked, or
    /// when another migrator applied a migration meanwhile; any other error is reported at
    /// once, with its cause.
    pub async fn migrate(&self) -> Result<(), StorageError> {
        let deadline = tokio::time::Instant::now() + MIGRATE_PATIENCE;
        let mut attempt = 0u64;
        loop {
            let applied_before = self.applied_migrations().await;
            let result = match self {
                Storage::Sqlite(pool, ..) => SQLITE_MIGRATIONS.run(pool).await,
                Storage::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
            };
            let Err(err) = result else {
                return Ok(());
            };
            let busy = migrate_error_is_lock(&err);
            // A loser of the race fails on what the winner committed, and the count of
            // applied migrations shows the winner was there. It can grow only as often as
            // there are migrations, so retrying on it ends.
            let raced = !busy && self.applied_migrations().await > applied_before;
            if !(busy || raced) || tokio::time::Instant::now() >= deadline {
                return Err(err.into());
            }
            attempt += 1;
            tracing::debug!(error = %err, attempt, busy, raced, "migration raced another process; retrying");
            tokio::time::sleep(Duration::from_millis(20 * attempt.min(25))).await;
        }
    }

    /// How many migrations `_sqlx_migrations` records as applied (0 before the first).
    async fn applied_migrations(&self) -> i64 {
        let counted: Result<i64, sqlx::Error> = on_pool!(self, |pool| {
            sqlx::query_scalar::<Db, i64>("SELECT COUNT(*) FROM _sqlx_migrations")
                .fetch_one(pool)
                .await
        });
        counted.unwrap_or(0)
    }

    /// Runs a write until SQLite stops answering "busy" (30 s at most). SQLite's own busy
    /// handler (`busy_timeout`) sleeps 1, 2, 5, 10, … 100 ms between tries, so a worker that
    /// lost the write lock to another process once often lost it again and again: it set the
    /// p99 of alert latency at 65–185 ms. Here SQLite gives up after a few milliseconds
    /// (`SQLITE_BUSY_TIMEOUT`) and the write is tried again half a millisecond later.
    async fn retrying_while_busy<T, F, Fut>(&self, mut write: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match write().await {
                Err(StorageError::Unavailable(err))
                    if is_sqlite_busy(&err) && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                result => return result,
            }
        }
    }

    /// Runs `work` while holding the database's setup lock: of all the services sharing this
    /// database, one at a time runs its setup. Used to declare the NATS streams, which
    /// nats-server before 2.9.16 (Debian's is 2.9.10) cannot safely create from two clients at
    /// once: both may pass its existence check and open the same store, which can leave
    /// JetStream answering no request at all (nats-server#3677, fixed upstream by e6447c982).
    ///
    /// On SQLite the lock is a file lock on `<database>-setup.lock` beside the database (its
    /// users share a host), so the database's writers are never held up; an in-memory
    /// database has a single user and needs none. On Postgres it is a transaction-scoped
    /// advisory lock. Dropping the future releases either, and so does the death of the
    /// process, so a setup abandoned half-way never leaves the others waiting.
    pub async fn one_setup_at_a_time<T>(
        &self,
        work: impl Future<Output = T>,
    ) -> Result<T, StorageError> {
        match self {
            Storage::Sqlite(pool, ..) => {
                let database = pool.connect_options().get_filename().to_path_buf();
                let _lock = if database.is_file() {
                    Some(lock_file_beside(&database).await?)
                } else {
                    None
                };
                Ok(work.await)
            }
            Storage::Postgres(pool) => {
                let mut lock = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(SETUP_LOCK_KEY)
                    .execute(&mut *lock)
                    .await?;
                let done = work.await;
                lock.rollback().await?;
                Ok(done)
            }
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        on_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        match self {
            Storage::Sqlite(readers, writer, _) => {
                writer.0.close().await;
                readers.close().await;
            }
            Storage::Postgres(pool) => pool.close().await,
        }
    }
}

/// Takes the exclusive lock on `<database>-setup.lock` (created when missing), polling so
/// that no executor thread blocks. The lock lasts as long as the returned file is open.
async fn lock_file_beside(database: &std::path::Path) -> Result<std::fs::File, StorageError> {
    let mut path = database.as_os_str().to_owned();
    path.push("-setup.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(err.into()),
        }
    }
}

/// A database URL fit for a log line or an error: the password is replaced.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Most bytes of bound values in one Postgres statement: a whole batch of events usually
/// fits, and a batch of huge events is split rather than buffered as one message of many
/// MiB. (The socket has TCP_NODELAY, see `vendor/sqlx-core/PATCHED.md`: a large statement no
/// longer waits for a delayed ACK.)
const PG_STATEMENT_BYTES: usize = 1024 * 1024;

/// Splits `items` into runs whose estimated bound size stays under [`PG_STATEMENT_BYTES`]
/// (every run holds at least one item).
fn pg_chunks<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let item_bytes = size(item) + 16;
        if i > start && bytes + item_bytes > PG_STATEMENT_BYTES {
            chunks.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += item_bytes;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

/// Rows per statement of SQLite's multi-row statements, largest first: a run of rows is
/// sent as statements of these sizes only (1,000 rows: 3 × 256, 3 × 64, 2 × 16, 2 × 4), so
/// that a handful of statement texts serve every batch and stay prepared in sqlx's statement
/// cache. One text per row count made each new batch size a new statement to compile
/// (thousands of placeholders) and filled the cache with programs of hundreds of KiB.
/// 256 rows of 9 columns stay far below SQLite's limit on bound parameters (32,766).
const STATEMENT_ROWS: [usize; 5] = [256, 64, 16, 4, 1];

/// Splits `items` into runs whose lengths are all in [`STATEMENT_ROWS`], in order.
pub(crate) fn fixed_shape_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        let size = STATEMENT_ROWS
            .into_iter()
            .find(|&size| size <= rest.len())?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/threatmon"),
            "postgres://app:***@db:5432/threatmon"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn postgres_statements_are_split_by_size() {
        let items = vec![PG_STATEMENT_BYTES / 4; 10];
        let chunks = pg_chunks(&items, |n| *n);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        assert!(
            chunks.iter().all(|c| c.len() == 3 || c.len() == 1),
            "{chunks:?}"
        );
        let huge = vec![PG_STATEMENT_BYTES * 2; 2];
        assert_eq!(pg_chunks(&huge, |n| *n).len(), 2);
        assert!(pg_chunks(&Vec::<usize>::new(), |n| *n).is_empty());
    }

    #[test]
    fn multi_row_statements_come_in_a_few_sizes_and_keep_every_row_in_order() {
        for len in [0usize, 1, 3, 4, 17, 255, 256, 257, 913, 1000, 5000] {
            let items: Vec<usize> = (0..len).collect();
            let chunks: Vec<&[usize]> = fixed_shape_chunks(&items).collect();
            assert!(chunks.iter().all(|c| STATEMENT_ROWS.contains(&c.len())));
            assert_eq!(chunks.concat(), items, "{len} rows");
        }
        assert_eq!(
            fixed_shape_chunks(&[0u8; 1000])
                .map(<[u8]>::len)
                .collect::<Vec<_>>(),
            [256, 256, 256, 64, 64, 64, 16, 16, 4, 4]
        );
    }
}
