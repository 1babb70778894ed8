//! The databases a pipeline run stores into: a SQLite file, or a scratch database on a
//! PostgreSQL server made for the run and dropped after it. The bench only reads them
//! (counts, and the timestamps of the latency breakdown); the services migrate them.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor};

/// Which engine a pipeline run stores into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the run's temporary directory.
    Sqlite,
    /// A scratch database on the server at this (admin) URL.
    Postgres(String),
}

impl Backend {
    /// `SQLite` or `PostgreSQL`, for the report.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }
}

/// Whether the PostgreSQL server at `url` answers, within a few seconds; the error says why
/// not (the report prints it as "not measured: …").
pub async fn postgres_answers(url: &str) -> Result<String> {
    let attempt = async {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await?;
        let _ = conn.close().await;
        anyhow::Ok(version)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| anyhow::anyhow!("{} did not answer within 5 s", redact(url)))?
        .with_context(|| format!("connecting to {}", redact(url)))
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Scratch databases made by this process so far (their names must not repeat).
static SCRATCH: AtomicU32 = AtomicU32::new(0);

/// `threatmon_bench_<pid>_<n>` on a PostgreSQL server: created empty, dropped by
/// [`PgScratch::drop_now`] or, if the run failed before that, when this value is dropped.
pub struct PgScratch {
    admin_url: String,
    name: String,
    /// The URL of the scratch database (the admin URL with its path replaced).
    pub url: String,
    dropped: bool,
}

impl PgScratch {
    /// Creates a fresh, empty scratch database through `admin_url`.
    pub async fn create(admin_url: &str) -> Result<PgScratch> {
        let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
        let name = format!("threatmon_bench_{}_{n}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {}", redact(admin_url)))?;
        // The name is ours (a pid and a counter), so formatting it into SQL is safe.
        admin
            .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
            .await?;
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let _ = admin.close().await;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&format!("/{name}"));
        Ok(PgScratch {
            admin_url: admin_url.to_owned(),
            name,
            url: url.into(),
            dropped: false,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now, forcing out connections left open (a service that was
    /// killed, a pool not yet closed).
    pub async fn drop_now(mut self) -> Result<()> {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let mut admin = sqlx::PgConnection::connect(admin_url).await?;
    admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .await
        .with_context(|| format!("DROP DATABASE {name}"))?;
    let _ = admin.close().await;
    Ok(())
}

impl Drop for PgScratch {
    /// The error path: a run that failed did not reach [`PgScratch::drop_now`]. Drop is
    /// sync and runs inside the tokio runtime, so the async work gets its own thread and
    /// runtime; failures are printed, not raised.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let joined = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(drop_database(&admin_url, &name))
        })
        .join();
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("threatmon-bench: dropping {}: {err:#}", self.name),
            Err(_) => eprintln!("threatmon-bench: dropping {} panicked", self.name),
        }
    }
}

/// The database of one pipeline run, which the services are pointed at.
pub enum Database {
    /// A SQLite file (removed with the run's directory).
    Sqlite(PathBuf),
    /// A PostgreSQL scratch database.
    Postgres(PgScratch),
}

impl Database {
    /// A new, empty database on `backend`; SQLite files go into `dir`.
    pub async fn create(backend: &Backend, dir: &Path) -> Result<Database> {
        Ok(match backend {
            Backend::Sqlite => Database::Sqlite(dir.join("threatmon.db")),
            Backend::Postgres(admin_url) => Database::Postgres(PgScratch::create(admin_url).await?),
        })
    }

    /// The services' `DATABASE_URL`.
    pub fn url(&self) -> String {
        match self {
            Database::Sqlite(path) => format!("sqlite:{}", path.display()),
            Database::Postgres(scratch) => scratch.url.clone(),
        }
    }

    /// A read-only (SQLite) or plain (PostgreSQL) pool for the bench's own queries. It
    /// does not call itself `threatmon`, so the lock sampler never counts it.
    pub async fn reader(&self) -> Result<Reader> {
        Ok(match self {
            Database::Sqlite(_) => Reader::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(SqliteConnectOptions::from_str(&self.url())?.read_only(true))
                    .await?,
            ),
            Database::Postgres(scratch) => Reader::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&scratch.url)
                    .await
                    .with_context(|| format!("connecting to {}", scratch.name()))?,
            ),
        })
    }

    /// Removes the database (PostgreSQL: drops it; SQLite: its directory goes with the run).
    pub async fn remove(self) -> Result<()> {
        match self {
            Database::Sqlite(_) => Ok(()),
            Database::Postgres(scratch) => scratch.drop_now().await,
        }
    }
}

/// The bench's connection to a run's database. The queries it runs are the same text on
/// both engines (the schemas match column for column).
pub enum Reader {
    /// SQLite, read-only.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

impl Reader {
    /// The one integer `sql` answers (a `COUNT(*)`).
    pub async fn count(&self, sql: &'static str) -> Result<u64> {
        let n: i64 = match self {
            Reader::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Reader::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The rows of a query answering `(integer, integer)`.
    pub async fn pairs(&self, sql: String) -> Result<Vec<(i64, i64)>> {
        Ok(match self {
            Reader::Sqlite(pool) => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(pool).await?,
            Reader::Postgres(pool) => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(pool).await?,
        })
    }

    /// The rows of a query answering `(integer, text, integer)`.
    pub async fn triples(&self, sql: String) -> Result<Vec<(i64, String, i64)>> {
        Ok(match self {
            Reader::Sqlite(pool) => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(pool).await?,
            Reader::Postgres(pool) => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(pool).await?,
        })
    }

    /// A consistent copy of a SQLite database as it is now, at `to` (for the api
    /// benchmark, which runs on SQLite).
    pub async fn snapshot(&self, to: &Path) -> Result<()> {
        let Reader::Sqlite(pool) = self else {
            anyhow::bail!("the api snapshot is taken from a SQLite run");
        };
        let sql = format!(
            "VACUUM INTO '{}'",
            to.display().to_string().replace('\'', "''")
        );
        pool.execute(AssertSqlSafe(sql)).await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Reader::Sqlite(pool) => pool.close().await,
            Reader::Postgres(pool) => pool.close().await,
        }
    }
}
