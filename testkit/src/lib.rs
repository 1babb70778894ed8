//! Test support for threatmon: a real `nats-server -js` per test, a fresh
//! SQLite or Postgres database per test, and an offline headless browser ([`Chromium`]).
//!
//! Tests run against the real things (no mocks) so that they exercise the same
//! JetStream and SQL behaviour as production. Missing prerequisites make the
//! harness panic with a message saying how to install them; nothing is skipped
//! silently.

// This crate exists to fail loudly: a test harness that cannot start its
// server or create its database has nothing better to do than panic with a
// clear message, so `expect`/`unwrap` are the intended error handling here.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod browser;
mod outage;
pub mod strategies;

pub use browser::Chromium;
pub use outage::{DbOutage, TcpProxy};

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};
use tempfile::TempDir;

/// How long [`NatsServer`] waits for "Server is ready" after spawning.
const NATS_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often [`NatsServer`] polls its log file while waiting for readiness.
const NATS_READY_POLL: Duration = Duration::from_millis(10);
/// The line nats-server logs once it accepts client connections.
const NATS_READY_LINE: &str = "Server is ready";
/// Where Debian's `nats-server` package installs the binary (not on a normal user's PATH).
const NATS_SBIN: &str = "/usr/sbin/nats-server";
/// How many trailing log lines to include in panic messages.
const LOG_TAIL_LINES: usize = 40;

/// A real `nats-server -js` on a free loopback port with its own temporary store.
///
/// Tests talk to a genuine server so JetStream semantics (acks, redelivery,
/// persistence across restarts) are the real ones. [`stop`](Self::stop) kills
/// it like a crash and [`restart`](Self::restart) brings it back on the same
/// port and store, so clients can exercise reconnects and durability.
pub struct NatsServer {
    /// The running process, if any. In a mutex so [`is_running`](Self::is_running)
    /// can reap it through `&self` while the server stays `Sync`.
    child: Mutex<Option<Child>>,
    /// The port chosen at first start and reused for every restart.
    port: u16,
    /// The `nats-server` binary that was found at start.
    binary: PathBuf,
    /// Holds `store/` and `nats.log`; removed when the server is dropped.
    dir: TempDir,
}

impl NatsServer {
    /// Starts one and waits until it accepts connections.
    ///
    /// Panics with a clear message (naming `apt-get install nats-server`) when
    /// the `nats-server` binary is neither on `PATH` nor at
    /// `/usr/sbin/nats-server` — tests that need NATS never skip silently.
    pub fn start() -> NatsServer {
        let binary = find_nats_server().unwrap_or_else(|| {
            panic!(
                "nats-server not found on PATH or at {NATS_SBIN}; \
                 install it (e.g. `apt-get install nats-server`) to run these tests"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("threatmon-nats-")
            .tempdir()
            .expect("create temporary directory for nats-server");
        let mut server = NatsServer {
            child: Mutex::new(None),
            port: free_port(),
            binary,
            dir,
        };
        server.spawn_and_wait();
        server
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.as_ref().map(std::process::Child::id)
    }

    /// Whether the server process is alive (false after [`stop`](Self::stop)
    /// or if it died on its own).
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Kills the process (SIGKILL, like a crash) and waits for it to exit. Idempotent.
    pub fn stop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut child) = child {
            // Fails only if the process already exited, which is fine.
            let _ = child.kill();
            if let Err(err) = child.wait() {
                eprintln!("testkit: waiting for nats-server to exit failed: {err}");
            }
        }
    }

    /// Starts again on the SAME port and the SAME store directory, and waits
    /// until ready. If the server is still running it is killed first, so this
    /// is also "crash and come back".
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_and_wait();
    }

    /// Starts again on the same port with JetStream off: a server that takes connections but
    /// answers no JetStream request, as one still recovering its streams does. Kills a
    /// running one first; [`restart`](Self::restart) brings JetStream back.
    pub fn restart_without_jetstream(&mut self) {
        self.stop();
        self.spawn_and_wait_with(false);
    }

    /// The contents of the server's log file (all runs so far), for debugging failures.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn log_tail(&self) -> String {
        tail(&self.log(), LOG_TAIL_LINES)
    }

    /// Spawns the process and blocks until this run logs "Server is ready".
    fn spawn_and_wait(&mut self) {
        self.spawn_and_wait_with(true);
    }

    fn spawn_and_wait_with(&mut self, jetstream: bool) {
        let log_path = self.log_path();
        // nats-server appends to its log; only lines past this offset belong to this run.
        let offset = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let mut command = Command::new(&self.binary);
        if jetstream {
            command.arg("-js");
        }
        let child = command
            .args(["-a", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .arg("-l")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("failed to spawn {}: {err}", self.binary.display()));
        *self.child.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(child);

        let started = Instant::now();
        loop {
            if log_since_contains(&log_path, offset, NATS_READY_LINE) {
                return;
            }
            let exited = self
                .child
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .map(|c| c.try_wait());
            match exited {
                Some(Ok(Some(status))) => {
                    self.child
                        .get_mut()
                        .unwrap_or_else(|e| e.into_inner())
                        .take();
                    panic!(
                        "nats-server on port {} exited during startup ({status}); log tail:\n{}",
                        self.port,
                        self.log_tail()
                    );
                }
                Some(Err(err)) => panic!("checking nats-server process failed: {err}"),
                _ => {}
            }
            if started.elapsed() >= NATS_READY_TIMEOUT {
                self.stop();
                panic!(
                    "nats-server on port {} not ready after {:?}; log tail:\n{}",
                    self.port,
                    started.elapsed(),
                    self.log_tail()
                );
            }
            std::thread::sleep(NATS_READY_POLL);
        }
    }
}

impl Drop for NatsServer {
    /// Kills and reaps the process; the `TempDir` field then removes the store.
    fn drop(&mut self) {
        self.stop();
    }
}

/// `nats-server` from `PATH`, else Debian's `/usr/sbin/nats-server`.
fn find_nats_server() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let sbin = Path::new(NATS_SBIN);
        sbin.is_file().then(|| sbin.to_path_buf())
    })
}

/// A port for a server a test is about to start: free on 127.0.0.1 now, never handed out
/// before by this process, and outside the kernel's range for outgoing connections.
///
/// Asking the kernel for port 0 gives a port from that ephemeral range, and until the server
/// binds it (seconds later for a service that first migrates its database) any outgoing
/// connection of any test may take it as its local port; the server then fails with "address
/// in use". Ports below the range are only ever taken by a bind, which this checks.
pub fn free_port() -> u16 {
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Well clear of the usual services (PostgreSQL 5432, Redis 6379, NATS 4222, 8080…).
    let low = 10_000u16.min(ephemeral_low.saturating_sub(1024)).max(1);
    let span = ephemeral_low - low;
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    // Each test process starts somewhere else, so one run's ports are not the last run's.
    let mut candidate = next.unwrap_or_else(|| {
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
        low + (seed % u32::from(span)) as u16
    });
    for _ in 0..span {
        let port = candidate;
        candidate = if candidate + 1 >= ephemeral_low {
            low
        } else {
            candidate + 1
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            *next = Some(candidate);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {ephemeral_low}");
}

/// Whether the file at `path`, from byte `offset` on, contains `needle`.
fn log_since_contains(path: &Path, offset: u64, needle: &str) -> bool {
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return false;
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return false;
    }
    String::from_utf8_lossy(&bytes).contains(needle)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory (the default: needs no server).
    Sqlite,
    /// A fresh database on the PostgreSQL server named by `TEST_POSTGRES_URL`.
    Postgres,
}

impl Backend {
    /// From `THREATMON_TEST_BACKEND`: unset or `"sqlite"` → [`Backend::Sqlite`],
    /// `"postgres"` → [`Backend::Postgres`]; any other value panics naming the
    /// variable, so a typo cannot silently run the suite on the wrong backend.
    pub fn from_env() -> Backend {
        const VAR: &str = "THREATMON_TEST_BACKEND";
        match std::env::var(VAR) {
            Err(std::env::VarError::NotPresent) => Backend::Sqlite,
            Ok(value) if value == "sqlite" => Backend::Sqlite,
            Ok(value) if value == "postgres" => Backend::Postgres,
            Ok(value) => {
                panic!("{VAR}={value:?} is not a backend; use \"sqlite\" or \"postgres\"")
            }
            Err(err) => panic!("{VAR} is not valid: {err}"),
        }
    }
}

/// A fresh, empty database for one test, removed when dropped.
///
/// Every test gets its own database so tests can run in parallel and never see
/// each other's rows; the same test body can run on SQLite or Postgres.
pub struct TestDb {
    url: String,
    backend: Backend,
    /// The directory holding the SQLite file; removed on drop.
    _dir: Option<TempDir>,
    /// For Postgres: the admin URL and database name to drop.
    postgres: Option<PgDatabase>,
}

/// A database created on a Postgres server, to be dropped through the admin URL.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl TestDb {
    /// A database on the backend from [`Backend::from_env()`].
    pub async fn new() -> TestDb {
        match Backend::from_env() {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    /// A new SQLite file in a temp dir: url `sqlite://<dir>/threatmon.db?mode=rwc`
    /// (the file is created on first connect).
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("threatmon-db-")
            .tempdir()
            .expect("create temporary directory for SQLite database");
        let path = dir.path().join("threatmon.db");
        let path = path
            .to_str()
            .unwrap_or_else(|| panic!("temporary path {} is not UTF-8", path.display()));
        TestDb {
            url: format!("sqlite://{path}?mode=rwc"),
            backend: Backend::Sqlite,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// `CREATE DATABASE threatmon_test_<uuid>` on the server from
    /// `TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`);
    /// panics loudly if the variable is unset or the server unreachable.
    /// [`url()`](Self::url) points at the new database.
    pub async fn postgres() -> TestDb {
        const VAR: &str = "TEST_POSTGRES_URL";
        let admin_url = std::env::var(VAR).unwrap_or_else(|_| {
            panic!(
                "{VAR} is not set; point it at a PostgreSQL server where this user may \
                 CREATE DATABASE, e.g. postgres://postgres@127.0.0.1:5432/postgres"
            )
        });
        let name = format!("threatmon_test_{}", uuid::Uuid::new_v4().simple());

        let mut url = url::Url::parse(&admin_url)
            .unwrap_or_else(|err| panic!("{VAR}={admin_url:?} is not a URL: {err}"));
        url.set_path(&format!("/{name}"));

        let mut conn = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|err| panic!("cannot connect to {VAR}={admin_url:?}: {err}"));
        // The name is our own hex uuid, so formatting it into the statement is safe.
        sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("CREATE DATABASE {name} on {admin_url:?} failed: {err}"));
        if let Err(err) = conn.close().await {
            eprintln!("testkit: closing admin connection failed: {err}");
        }

        TestDb {
            url: url.into(),
            backend: Backend::Postgres,
            _dir: None,
            postgres: Some(PgDatabase { admin_url, name }),
        }
    }

    /// The connection URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which backend this database is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl Drop for TestDb {
    /// SQLite: the temp dir removes the file. Postgres: drops the database,
    /// forcing out connections a test left open. Errors are printed, not raised.
    fn drop(&mut self) {
        let Some(db) = self.postgres.take() else {
            return;
        };
        // Drop is sync and may run inside a tokio runtime (where block_on would
        // panic), so do the async work on a fresh thread with its own runtime.
        let joined = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("testkit: cannot build runtime to drop {}: {err}", db.name);
                    return;
                }
            };
            runtime.block_on(drop_postgres_database(&db));
        })
        .join();
        if joined.is_err() {
            eprintln!("testkit: thread dropping a test database panicked");
        }
    }
}

async fn drop_postgres_database(db: &PgDatabase) {
    let mut conn = match PgConnection::connect(&db.admin_url).await {
        Ok(conn) => conn,
        Err(err) => {
            eprintln!(
                "testkit: cannot connect to {:?} to drop {}: {err}",
                db.admin_url, db.name
            );
            return;
        }
    };
    let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, db.name);
    if let Err(err) = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await {
        eprintln!("testkit: dropping database {} failed: {err}", db.name);
    }
    if let Err(err) = conn.close().await {
        eprintln!("testkit: closing admin connection failed: {err}");
    }
}

/// Polls `check` every 20 ms until it returns `Some(value)`, and returns the
/// value; panics with `what` and the elapsed time after `timeout`.
///
/// Used instead of sleeps in tests: it finishes as soon as the condition
/// holds and fails with a readable message when it never does.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            panic!("timed out after {elapsed:?} (limit {timeout:?}) waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpStream;

    /// Connects to the server and returns the first line it sends.
    async fn first_line(port: u16) -> String {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to nats-server");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(5),
            BufReader::new(stream).read_line(&mut line),
        )
        .await
        .expect("INFO line within 5 s")
        .expect("read INFO line");
        line
    }

    #[tokio::test]
    async fn nats_server_starts_stops_and_restarts_on_same_port() {
        let mut server = NatsServer::start();
        let port = server.port();
        assert!(server.is_running());
        assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
        assert!(
            first_line(port).await.starts_with("INFO {"),
            "log:\n{}",
            server.log()
        );

        server.stop();
        assert!(!server.is_running());
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "port {port} still answers after stop"
        );
        server.stop(); // idempotent

        server.restart();
        assert!(server.is_running());
        assert_eq!(server.port(), port);
        assert!(first_line(port).await.starts_with("INFO {"));
        // Both runs are in the log; readiness was detected for the second.
        assert_eq!(server.log().matches(NATS_READY_LINE).count(), 2);
    }

    #[tokio::test]
    async fn sqlite_test_db_is_usable() {
        let db = TestDb::sqlite().await;
        assert_eq!(db.backend(), Backend::Sqlite);
        assert!(db.url().starts_with("sqlite://"));
        assert!(db.url().ends_with("/threatmon.db?mode=rwc"));
        let pool = sqlx::SqlitePool::connect(db.url())
            .await
            .expect("open SQLite test database");
        let one: i64 = sqlx::query_scalar("select 1")
            .fetch_one(&pool)
            .await
            .expect("select 1");
        assert_eq!(one, 1);
        pool.close().await;
    }

    async fn pg_database_exists(admin_url: &str, name: &str) -> bool {
        let mut conn = PgConnection::connect(admin_url)
            .await
            .expect("connect admin");
        let exists: bool =
            sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .expect("query pg_database");
        conn.close().await.expect("close admin connection");
        exists
    }

    #[tokio::test]
    async fn postgres_test_db_is_created_and_dropped() {
        // The one conditional in the suite: machines without a Postgres server
        // still run every other test; CI sets TEST_POSTGRES_URL so this runs there.
        let Ok(admin_url) = std::env::var("TEST_POSTGRES_URL") else {
            eprintln!("TEST_POSTGRES_URL not set; not exercising TestDb::postgres()");
            return;
        };
        let db = TestDb::postgres().await;
        assert_eq!(db.backend(), Backend::Postgres);
        let name = url::Url::parse(db.url())
            .expect("test db url")
            .path()
            .trim_start_matches('/')
            .to_owned();
        assert!(name.starts_with("threatmon_test_"), "{}", db.url());
        assert!(pg_database_exists(&admin_url, &name).await);

        // Leave a connection open: drop must force it out.
        let mut conn = PgConnection::connect(db.url())
            .await
            .expect("connect to test database");
        let one: i32 = sqlx::query_scalar("select 1")
            .fetch_one(&mut conn)
            .await
            .expect("select 1");
        assert_eq!(one, 1);

        drop(db);
        assert!(!pg_database_exists(&admin_url, &name).await);
        drop(conn);
    }

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_outgoing_range() {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap();
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for port in ports {
            assert!(port < ephemeral_low, "{port} is in the outgoing range");
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }

    #[tokio::test]
    async fn eventually_returns_the_value() {
        let mut calls = 0;
        let value = eventually(Duration::from_secs(5), "third call", || {
            calls += 1;
            let done = calls >= 3;
            async move { done.then_some(calls) }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for never")]
    async fn eventually_panics_on_timeout() {
        eventually(Duration::from_millis(100), "never", || async { None::<()> }).await;
    }
}
