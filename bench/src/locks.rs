//! Sampling PostgreSQL's lock table while several workers write one database: does any
//! threatmon backend wait on a lock, on what, and is it another writer's rows?

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often the lock table is read.
const EVERY: Duration = Duration::from_millis(50);

/// The waits of threatmon backends in the sampler's database, one row per waiting lock.
/// The services name their connections `threatmon` (`application_name`); the bench's own do
/// not, so they are never counted.
const WAITS: &str = "SELECT l.locktype, COALESCE(l.relation::regclass::text, ''), l.mode, \
         (SELECT COUNT(*) FROM pg_stat_activity b \
          WHERE b.pid = ANY (pg_blocking_pids(l.pid)) AND b.application_name = 'threatmon') \
     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
     WHERE NOT l.granted AND a.application_name = 'threatmon' \
       AND a.datname = current_database()";

/// What the sampler saw.
#[derive(Clone, Debug, Default)]
pub struct LockSamples {
    /// Times the lock table was read.
    pub samples: u64,
    /// Samples in which some threatmon backend waited on a lock.
    pub with_waiter: u64,
    /// Samples in which a threatmon backend waited on another transaction's rows
    /// (`transactionid` or `tuple` locks): writers contending for the same rows.
    pub row_waits: u64,
    /// Each kind of wait seen (`locktype mode on relation, blocked by …`), in how many samples.
    pub seen: BTreeMap<String, u64>,
}

impl LockSamples {
    /// The kinds of wait seen, `kind ×samples`, for the report; `none` when none.
    pub fn describe(&self) -> String {
        if self.seen.is_empty() {
            return "none".to_owned();
        }
        self.seen
            .iter()
            .map(|(kind, n)| format!("{kind} ×{n}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Adds another run's samples.
    pub fn merge(&mut self, other: &LockSamples) {
        self.samples += other.samples;
        self.with_waiter += other.with_waiter;
        self.row_waits += other.row_waits;
        for (kind, n) in &other.seen {
            *self.seen.entry(kind.clone()).or_default() += n;
        }
    }
}

/// A task reading `pg_locks` every [`EVERY`] from its own connection until stopped.
pub struct LockSampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<LockSamples>>,
}

impl LockSampler {
    /// Connects to the database at `url` (the run's scratch database: `relation::regclass`
    /// names relations of the database it is run in) and starts sampling.
    pub async fn start(url: &str) -> Result<LockSampler> {
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .context("connecting the lock sampler")?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut seen = LockSamples::default();
            let mut ticker = tokio::time::interval(EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {}
                }
                let waits: Vec<(String, String, String, i64)> =
                    sqlx::query_as(WAITS).fetch_all(&mut conn).await?;
                seen.samples += 1;
                if waits.is_empty() {
                    continue;
                }
                seen.with_waiter += 1;
                if waits
                    .iter()
                    .any(|(locktype, ..)| locktype == "transactionid" || locktype == "tuple")
                {
                    seen.row_waits += 1;
                }
                // Each kind once a sample, however many backends waited on it.
                let mut kinds: Vec<String> = waits
                    .into_iter()
                    .map(|(locktype, relation, mode, blockers)| {
                        let on = if relation.is_empty() {
                            String::new()
                        } else {
                            format!(" on {relation}")
                        };
                        let by = if blockers > 0 {
                            "another threatmon backend"
                        } else {
                            "another session"
                        };
                        format!("`{locktype}` {mode}{on}, blocked by {by}")
                    })
                    .collect();
                kinds.sort();
                kinds.dedup();
                for kind in kinds {
                    *seen.seen.entry(kind).or_default() += 1;
                }
            }
            let _ = conn.close().await;
            anyhow::Ok(seen)
        });
        Ok(LockSampler { stop, task })
    }

    /// Stops sampling; what was seen.
    pub async fn finish(self) -> Result<LockSamples> {
        let _ = self.stop.send(());
        self.task.await.context("the lock sampler panicked")?
    }
}
