//! `threatmon-bench`: measures threatmon against the limits of the broker and the databases
//! on this machine, in one run, and writes the figures as markdown (`BENCHMARKS.md`).
//!
//! Run it with `scripts/bench` (which builds the release binaries first). Every figure is
//! the median of `--runs` runs with its spread; each run checks that nothing was lost.
//! The pipeline runs on SQLite and, when its server answers, on PostgreSQL, once for each
//! uid kind of `--uids`; PostgreSQL also with two ingestors and two alerters (scaling).
//! The alert latency is compared with the alerter's notification delivery off and on.

mod api;
mod db;
mod load;
mod locks;
mod pipeline;
mod procs;
mod raw;
mod stats;
mod webhooks;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use common::domain::Severity;
use testkit::NatsServer;

use crate::db::Backend;
use crate::load::Uids;
use crate::locks::LockSamples;
use crate::pipeline::{Folding, Load, Notify, PipelineRun, STAGE_NAMES, Stages};
use crate::stats::{Samples, thousands, with_spread};

/// Measures threatmon's pipeline and API against the raw limits of this machine.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Events per pipeline run (25/25/25/25 severity mix; half raise alerts).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Runs of every measurement; figures are their median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Messages and rows for each raw-limit measurement.
    #[arg(long, default_value_t = 200_000)]
    raw_messages: u64,
    /// Seconds each API measurement lasts (after 0.5 s of warm-up).
    #[arg(long, default_value_t = 3.0)]
    api_seconds: f64,
    /// PostgreSQL server for the raw insert ceiling and the PostgreSQL pipeline runs (each
    /// in a scratch database, created and dropped). `off` to skip; a server that does not
    /// answer is reported as not measured.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// The uids the simulated sensors choose, a comma-separated list: random v4 (the worst
    /// case for the unique index) and/or time-ordered v7. Each kind is a pipeline run of
    /// its own on each backend, with raw inserts of the same rows.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "v4,v7")]
    uids: Vec<Uids>,
    /// Backends of the scaling run (two ingestors and two alerters on one database, the
    /// sustained phase only), a comma-separated list: postgres, sqlite, or off.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "postgres")]
    scaling: Vec<RunOn>,
    /// Backends of the folding comparison (`--events` events whose escalations fall on
    /// `--fold-keys` keys, once with `ALERT_FOLD_KEY=none` and once folded by the default
    /// key; the first uid kind; the sustained phase only): postgres, sqlite, or off.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sqlite,postgres"
    )]
    folding: Vec<RunOn>,
    /// Fold keys (`sourceName`, `eventType` pairs) of the folding comparison's load.
    #[arg(long, default_value_t = 1000)]
    fold_keys: u64,
    /// Backends of the delivery comparison (alert latency at 1,000 events/s, the latency
    /// phase only on a fresh database, once with `NOTIFY_DELIVERY=false` and once delivering
    /// to two webhook routes that match every alert; the first uid kind): sqlite, postgres,
    /// or off.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite")]
    notify: Vec<RunOn>,
    /// Seconds each fixed-rate latency phase is measured (for quick runs and the smoke test).
    #[arg(long, default_value_t = 10.0, hide = true)]
    latency_seconds: f64,
    /// Seconds each fixed-rate latency phase publishes before it is measured.
    #[arg(long, default_value_t = 5.0, hide = true)]
    latency_warm_up_seconds: f64,
    /// Where to write the markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
}

/// A backend the scaling, folding or delivery comparison runs may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RunOn {
    /// On a PostgreSQL scratch database.
    Postgres,
    /// On a SQLite file.
    Sqlite,
    /// Not at all.
    Off,
}

impl RunOn {
    /// Whether `chosen` (a `--scaling`, `--folding` or `--notify` list) runs on `backend`.
    fn wanted(chosen: &[RunOn], backend: &Backend) -> bool {
        let wanted = match backend {
            Backend::Sqlite => chosen.contains(&RunOn::Sqlite),
            Backend::Postgres(_) => chosen.contains(&RunOn::Postgres),
        };
        wanted && !chosen.contains(&RunOn::Off)
    }

    /// The flag's spelling of `chosen`.
    fn flag(chosen: &[RunOn]) -> String {
        chosen
            .iter()
            .map(|s| match s {
                RunOn::Postgres => "postgres",
                RunOn::Sqlite => "sqlite",
                RunOn::Off => "off",
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Concurrent connections the API is measured at.
const CONNECTIONS: [usize; 2] = [16, 64];
/// Workers of each kind in the scaling run.
const SCALING_WORKERS: usize = 2;
/// Webhook routes of the delivery comparison, each matching every alert.
const WEBHOOK_ROUTES: usize = 2;
/// The delivery comparison's target: the median p99 with delivery on at most this times the
/// median p99 with it off. One configuration's p99 at 1,000 events/s moves ±30% from run to
/// run on two shared cores (half the range of 3 runs: 99–163 ms with delivery off; ±3–41%
/// in earlier reports), so a 10% margin would be missed or met by chance; 25% over the
/// median of 3 runs, on and off alternating within each run, is about the least that an
/// unchanged latency meets, and the report shows the off runs' spread beside it.
const DELIVERY_P99_TOLERANCE: f64 = 1.25;

/// Whether the PostgreSQL runs happen.
enum Postgres {
    /// `--postgres-url off`.
    Off,
    /// The server did not answer: why.
    Unavailable(String),
    /// The server answered with this version.
    Available { url: String, version: String },
}

impl Postgres {
    fn backend(&self) -> Option<Backend> {
        match self {
            Postgres::Available { url, .. } => Some(Backend::Postgres(url.clone())),
            _ => None,
        }
    }

    /// Why there are no PostgreSQL figures, in a table cell (the reason in full is in the
    /// report's header and the pipeline section).
    fn short(&self) -> String {
        match self {
            Postgres::Off => "skipped (`--postgres-url off`)".to_owned(),
            Postgres::Unavailable(_) => {
                "not measured: the PostgreSQL server did not answer".to_owned()
            }
            Postgres::Available { .. } => "not measured".to_owned(),
        }
    }

    /// Why there are no PostgreSQL figures, for the report.
    fn absent(&self) -> String {
        match self {
            Postgres::Off => "skipped (`--postgres-url off`)".to_owned(),
            Postgres::Unavailable(reason) => format!("not measured: {reason}"),
            Postgres::Available { .. } => "not measured".to_owned(),
        }
    }
}

/// The raw insert ceilings of one uid kind.
#[derive(Default)]
struct RawInserts {
    sqlite: Samples,
    postgres: Samples,
}

#[derive(Default)]
struct Raw {
    publish: Samples,
    consume: Samples,
    /// The whole machine's CPU-milliseconds per 1,000 messages while the raw consumer ran
    /// (broker and client together).
    consume_cpu: Samples,
    /// In the order of `--uids`.
    inserts: Vec<(Uids, RawInserts)>,
    postgres_error: Option<String>,
}

impl Raw {
    fn inserts(&self, uids: Uids) -> Option<&RawInserts> {
        self.inserts
            .iter()
            .find(|(kind, _)| *kind == uids)
            .map(|(_, inserts)| inserts)
    }
}

/// p50 and p99 of each stage of a latency phase, over the runs.
#[derive(Default)]
struct StageSamples {
    p50: [Samples; 5],
    p99: [Samples; 5],
    max: Samples,
    /// Stage values that read below zero, per stage, over the runs.
    negative: [u64; 4],
}

impl StageSamples {
    fn push(&mut self, stages: &Stages) {
        for (i, part) in stages.parts().into_iter().enumerate() {
            self.p50[i].push(part.quantile_ms(0.5));
            self.p99[i].push(part.quantile_ms(0.99));
        }
        self.max.push(stages.total.max_ms());
        for (sum, n) in self.negative.iter_mut().zip(stages.negative) {
            *sum += n;
        }
    }
}

/// One pipeline configuration (backend, uid kind, workers) over its runs.
struct Pipeline {
    backend: &'static str,
    uids: Uids,
    workers: usize,
    load: Load,
    notify: Notify,
    published: Samples,
    stored: Samples,
    alerted: Samples,
    fixed: StageSamples,
    half: StageSamples,
    half_rate: Samples,
    ingestor_mib: Samples,
    alerter_mib: Samples,
    locks: Option<LockSamples>,
    /// The last run's CPU use during the sustained phase.
    cpu: Option<procs::CpuUse>,
    /// Webhook requests and distinct `webhook-id`s received, over the runs.
    webhook_requests: u64,
    webhook_distinct: u64,
    /// Seconds from the end of the latency phase (and its checks) until the receiver had
    /// every delivery.
    delivered_after: Samples,
    checks: Vec<(usize, String, u64, u64)>,
}

impl Pipeline {
    fn new(backend: &Backend, uids: Uids, workers: usize, load: Load) -> Pipeline {
        Pipeline {
            backend: backend.name(),
            uids,
            workers,
            load,
            notify: Notify::NoRoutes,
            published: Samples::default(),
            stored: Samples::default(),
            alerted: Samples::default(),
            fixed: StageSamples::default(),
            half: StageSamples::default(),
            half_rate: Samples::default(),
            ingestor_mib: Samples::default(),
            alerter_mib: Samples::default(),
            locks: None,
            cpu: None,
            webhook_requests: 0,
            webhook_distinct: 0,
            delivered_after: Samples::default(),
            checks: Vec::new(),
        }
    }

    fn record(&mut self, run: usize, measured: PipelineRun) {
        self.published.push(measured.published_rate);
        self.stored.push(measured.stored_rate);
        self.alerted.push(measured.alerted_rate);
        if let Some(stages) = &measured.latency_fixed {
            self.fixed.push(stages);
        }
        if let Some(stages) = &measured.latency_half {
            self.half.push(stages);
            self.half_rate.push(measured.half_rate);
        }
        if measured.cpu.is_some() {
            self.cpu = measured.cpu;
        }
        if let Some(delivered) = measured.webhooks {
            self.webhook_requests += delivered.requests;
            self.webhook_distinct += delivered.distinct;
            self.delivered_after.push(delivered.after.as_secs_f64());
        }
        self.ingestor_mib.push(measured.ingestor_mib);
        self.alerter_mib.push(measured.alerter_mib);
        if let Some(locks) = &measured.locks {
            self.locks
                .get_or_insert_with(LockSamples::default)
                .merge(locks);
        }
        for (what, expected, found) in measured.checks {
            self.checks.push((run + 1, what, expected, found));
        }
    }

    /// `1+1` or `2+2`: ingestors + alerters, how they fold a repeating load, and their
    /// notification delivery when it is not as deployed.
    fn shape(&self) -> String {
        let workers = format!("{}+{}", self.workers, self.workers);
        let shape = match self.load {
            Load::Generated => workers,
            Load::Repeating { keys, folding } => format!(
                "{workers}, {} keys, {}",
                thousands(keys as f64),
                match folding {
                    Folding::Off => "`none`",
                    Folding::Keys { .. } => "folded",
                }
            ),
        };
        match self.notify {
            Notify::NoRoutes => shape,
            Notify::Off => format!("{shape}, delivery off"),
            Notify::Webhooks { routes } => format!("{shape}, {routes} webhook routes"),
        }
    }
}

struct ApiCell {
    name: &'static str,
    request: api::Request,
    connections: usize,
    rate: Samples,
    p50: Samples,
    p99: Samples,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // reqwest is built without a default TLS provider; the services are plain HTTP anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("threatmon-bench: a correctness check failed (see the report)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("threatmon-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(what: &str) {
    eprintln!("[{}] {what}", chrono::Utc::now().format("%H:%M:%S"));
}

/// The uid kinds of `--uids`, each once, in order (v4 when the list is empty).
fn uid_kinds(args: &Args) -> Vec<Uids> {
    let mut kinds: Vec<Uids> = Vec::new();
    for kind in &args.uids {
        if !kinds.contains(kind) {
            kinds.push(*kind);
        }
    }
    if kinds.is_empty() {
        kinds.push(Uids::V4);
    }
    kinds
}

/// Everything the report is made of.
struct Measured {
    machine: procs::Machine,
    postgres: Postgres,
    raw: Raw,
    pipelines: Vec<Pipeline>,
    scaling: Vec<Pipeline>,
    /// Per backend: the repeating load with `ALERT_FOLD_KEY=none`, then folded.
    folding: Vec<[Pipeline; 2]>,
    /// Per backend: the latency phase with notification delivery off, then on.
    notify: Vec<[Pipeline; 2]>,
    cells: Vec<ApiCell>,
    api_mib: f64,
}

async fn run(args: Args) -> Result<bool> {
    let sqlite_version: String = {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
        sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&pool)
            .await?
    };
    let machine = procs::Machine::describe(sqlite_version);
    let postgres = if args.postgres_url == "off" {
        Postgres::Off
    } else {
        match db::postgres_answers(&args.postgres_url).await {
            Ok(version) => Postgres::Available {
                url: args.postgres_url.clone(),
                version,
            },
            Err(err) => {
                let reason = reason(&err);
                progress(&format!("PostgreSQL not measured: {reason}"));
                Postgres::Unavailable(reason)
            }
        }
    };
    let runs = args.runs.max(1);
    let kinds = uid_kinds(&args);

    let mut raw = Raw {
        inserts: kinds.iter().map(|k| (*k, RawInserts::default())).collect(),
        ..Raw::default()
    };
    for run in 0..runs {
        progress(&format!("raw limits, run {} of {runs}", run + 1));
        // The broker does not look at uids: its limits once a run, on the first kind.
        let events = load::events(args.raw_messages, 1000 + run as u64, kinds[0])?;
        let nats = NatsServer::start();
        let client = async_nats::connect(nats.url()).await?;
        let js = async_nats::jetstream::new(client);
        raw.publish
            .push(raw::jetstream_publish(&js, &events).await?);
        let cpu_before = procs::machine_cpu_seconds().0;
        raw.consume
            .push(raw::jetstream_consume(&js, events.len() as u64).await?);
        raw.consume_cpu.push(
            1e6 * (procs::machine_cpu_seconds().0 - cpu_before) / (events.len().max(1) as f64),
        );
        drop(nats);
        for (kind, inserts) in &mut raw.inserts {
            let events = load::events(args.raw_messages, 1000 + run as u64, *kind)?;
            let dir = tempfile::tempdir()?;
            inserts
                .sqlite
                .push(raw::sqlite_insert(dir.path(), &events).await?);
            if let Postgres::Available { url, .. } = &postgres {
                match raw::postgres_insert(url, &events).await {
                    Ok(rate) => inserts.postgres.push(rate),
                    Err(err) => raw.postgres_error = Some(reason(&err)),
                }
            }
        }
    }

    let phases = pipeline::Phases {
        warm_up: Duration::from_secs_f64(args.latency_warm_up_seconds.max(0.0)),
        measured: Duration::from_secs_f64(args.latency_seconds.max(0.1)),
    };
    let mut backends = vec![Backend::Sqlite];
    backends.extend(postgres.backend());
    let mut pipelines = Vec::new();
    let mut kept = None;
    let snapshot_dir = tempfile::tempdir()?;
    let snapshot = snapshot_dir.path().join("api.db");
    for backend in &backends {
        for (k, kind) in kinds.iter().enumerate() {
            let mut pipeline = Pipeline::new(backend, *kind, 1, Load::Generated);
            for run in 0..runs {
                progress(&format!(
                    "pipeline on {}, {} uids, run {} of {runs}: {} events",
                    backend.name(),
                    kind.flag(),
                    run + 1,
                    thousands(args.events as f64)
                ));
                // The api is measured on the last SQLite run of the first uid kind.
                let for_api = *backend == Backend::Sqlite && k == 0 && run + 1 == runs;
                let (measured, nats, dir) = pipeline::run(pipeline::Plan {
                    backend,
                    uids: *kind,
                    events: args.events,
                    seed: 7 + 10 * run as u64,
                    workers: 1,
                    latency: Some(phases),
                    snapshot_to: for_api.then_some(snapshot.as_path()),
                    load: Load::Generated,
                    notify: Notify::NoRoutes,
                })
                .await
                .with_context(|| {
                    format!(
                        "pipeline on {}, {} uids, run {}",
                        backend.name(),
                        kind.flag(),
                        run + 1
                    )
                })?;
                progress(&format!(
                    "  stored {} events/s",
                    thousands(measured.stored_rate)
                ));
                pipeline.record(run, measured);
                if for_api {
                    kept = Some((nats, dir));
                }
            }
            pipelines.push(pipeline);
        }
    }

    // Two of each on one database, with the same load as the one-of-each runs: v4 uids
    // (the worst case for the unique index) when measured, else the first kind.
    let scaling_uids = if kinds.contains(&Uids::V4) {
        Uids::V4
    } else {
        kinds[0]
    };
    let mut scaling = Vec::new();
    for backend in &backends {
        if !RunOn::wanted(&args.scaling, backend) {
            continue;
        }
        let mut pipeline = Pipeline::new(backend, scaling_uids, SCALING_WORKERS, Load::Generated);
        for run in 0..runs {
            progress(&format!(
                "scaling on {}: {SCALING_WORKERS} ingestors and {SCALING_WORKERS} alerters, run {} of {runs}",
                backend.name(),
                run + 1
            ));
            let (measured, _nats, _dir) = pipeline::run(pipeline::Plan {
                backend,
                uids: scaling_uids,
                events: args.events,
                seed: 7 + 10 * run as u64,
                workers: SCALING_WORKERS,
                latency: None,
                snapshot_to: None,
                load: Load::Generated,
                notify: Notify::NoRoutes,
            })
            .await
            .with_context(|| format!("scaling on {}, run {}", backend.name(), run + 1))?;
            progress(&format!(
                "  stored {} events/s",
                thousands(measured.stored_rate)
            ));
            pipeline.record(run, measured);
        }
        scaling.push(pipeline);
    }

    // The same repeating load without folding and folded, alternating within each run so
    // that the machine's drift falls on both alike.
    let mut folding = Vec::new();
    for backend in &backends {
        if !RunOn::wanted(&args.folding, backend) {
            continue;
        }
        let keys = args.fold_keys.max(1);
        let mut pair = [Folding::Off, Folding::Keys { keys }]
            .map(|folding| Pipeline::new(backend, kinds[0], 1, Load::Repeating { keys, folding }));
        for run in 0..runs {
            for pipeline in &mut pair {
                progress(&format!(
                    "folding on {}, {}, run {} of {runs}: {} events over {} keys",
                    backend.name(),
                    pipeline.shape(),
                    run + 1,
                    thousands(args.events as f64),
                    thousands(keys as f64)
                ));
                let (measured, _nats, _dir) = pipeline::run(pipeline::Plan {
                    backend,
                    uids: kinds[0],
                    events: args.events,
                    seed: 7 + 10 * run as u64,
                    workers: 1,
                    latency: None,
                    snapshot_to: None,
                    load: pipeline.load,
                    notify: Notify::NoRoutes,
                })
                .await
                .with_context(|| {
                    format!(
                        "folding on {}, {}, run {}",
                        backend.name(),
                        pipeline.shape(),
                        run + 1
                    )
                })?;
                progress(&format!(
                    "  stored {} events/s",
                    thousands(measured.stored_rate)
                ));
                pipeline.record(run, measured);
            }
        }
        folding.push(pair);
    }

    // Alert latency with notification delivery off (no delivery loop) and on (two webhook
    // routes matching every alert), alternating within each run. The latency phase only, on
    // a fresh database: a sustained phase would leave a backlog of deliveries behind.
    let mut notify = Vec::new();
    for backend in &backends {
        if !RunOn::wanted(&args.notify, backend) {
            continue;
        }
        let mut pair = [
            Notify::Off,
            Notify::Webhooks {
                routes: WEBHOOK_ROUTES,
            },
        ]
        .map(|notify| Pipeline {
            notify,
            ..Pipeline::new(backend, kinds[0], 1, Load::Generated)
        });
        for run in 0..runs {
            for pipeline in &mut pair {
                progress(&format!(
                    "delivery comparison on {}, {}, run {} of {runs}",
                    backend.name(),
                    pipeline.shape(),
                    run + 1
                ));
                let (measured, _nats, _dir) = pipeline::run(pipeline::Plan {
                    backend,
                    uids: kinds[0],
                    events: 0,
                    seed: 7 + 10 * run as u64,
                    workers: 1,
                    latency: Some(phases),
                    snapshot_to: None,
                    load: Load::Generated,
                    notify: pipeline.notify,
                })
                .await
                .with_context(|| {
                    format!(
                        "delivery comparison on {}, {}, run {}",
                        backend.name(),
                        pipeline.shape(),
                        run + 1
                    )
                })?;
                if let Some(stages) = &measured.latency_fixed {
                    progress(&format!(
                        "  alert latency p50 {:.2} ms, p99 {:.2} ms",
                        stages.total.quantile_ms(0.5),
                        stages.total.quantile_ms(0.99)
                    ));
                }
                pipeline.record(run, measured);
            }
        }
        notify.push(pair);
    }

    let (nats, _logs) = kept.context("no SQLite pipeline run")?;
    progress("api");
    let alerts = args.events / 2;
    let api = api::Api::start(&snapshot, nats.url(), alerts, snapshot_dir.path()).await?;
    let mut cells = Vec::new();
    for (name, request) in api::SCENARIOS {
        for connections in CONNECTIONS {
            let mut cell = ApiCell {
                name,
                request: *request,
                connections,
                rate: Samples::default(),
                p50: Samples::default(),
                p99: Samples::default(),
            };
            for _ in 0..runs {
                let measured = api
                    .measure(
                        *request,
                        connections,
                        Duration::from_secs_f64(args.api_seconds),
                    )
                    .await
                    .with_context(|| format!("{name} at {connections} connections"))?;
                cell.rate.push(measured.rate);
                cell.p50.push(measured.latencies.quantile_ms(0.5));
                cell.p99.push(measured.latencies.quantile_ms(0.99));
            }
            progress(&format!(
                "  {name} ×{connections}: {} req/s, p99 {:.2} ms",
                thousands(cell.rate.median()),
                cell.p99.median()
            ));
            cells.push(cell);
        }
    }
    let api_mib = api.stop()?;

    let measured = Measured {
        machine,
        postgres,
        raw,
        pipelines,
        scaling,
        folding,
        notify,
        cells,
        api_mib,
    };
    let (report, ok) = render(&args, &measured);
    println!("{report}");
    std::fs::write(&args.out, &report)
        .with_context(|| format!("writing {}", args.out.display()))?;
    progress(&format!("wrote {}", args.out.display()));
    Ok(ok)
}

/// An error's chain as one line, without the repeats sqlx's errors bring (a cause whose
/// text its wrapper already says).
fn reason(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

fn rate(samples: &Samples) -> String {
    with_spread(samples, thousands)
}

fn ms(samples: &Samples) -> String {
    with_spread(samples, |v| format!("{v:.2} ms"))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.0}%", 100.0 * part / whole)
    } else {
        "—".to_owned()
    }
}

/// The flags of this run as `scripts/bench` takes them (the PostgreSQL URL only when off:
/// it may hold a password).
fn command_line(args: &Args, kinds: &[Uids]) -> String {
    let runs = args.runs.max(1);
    let mut line = format!(
        "scripts/bench --events {} --runs {runs} --raw-messages {} --api-seconds {} --uids {}",
        args.events,
        args.raw_messages,
        args.api_seconds,
        kinds.iter().map(|k| k.flag()).collect::<Vec<_>>().join(",")
    );
    let _ = write!(
        line,
        " --scaling {} --folding {} --fold-keys {} --notify {}",
        RunOn::flag(&args.scaling),
        RunOn::flag(&args.folding),
        args.fold_keys,
        RunOn::flag(&args.notify)
    );
    if args.postgres_url == "off" {
        line.push_str(" --postgres-url off");
    }
    if args.latency_seconds != 10.0 || args.latency_warm_up_seconds != 5.0 {
        let _ = write!(
            line,
            " --latency-seconds {} --latency-warm-up-seconds {}",
            args.latency_seconds, args.latency_warm_up_seconds
        );
    }
    line
}

/// The report as markdown, and whether every correctness check passed.
fn render(args: &Args, m: &Measured) -> (String, bool) {
    let runs = args.runs.max(1);
    let kinds = uid_kinds(args);
    let profile = procs::build_profile();
    let mut out = String::new();
    let _ = writeln!(out, "# threatmon benchmarks\n");
    let _ = writeln!(
        out,
        "Produced by `scripts/bench` (the `threatmon-bench` binary): every figure is the median \
         of {runs} runs, ± half their range. Nothing here is edited by hand.\n"
    );
    let machine = &m.machine;
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(out, "| commit | `{}` |", machine.commit);
    let _ = writeln!(out, "| date | {} |", machine.date);
    let _ = writeln!(
        out,
        "| machine | {} cores ({}), {:.1} GiB |",
        machine.cores, machine.cpu, machine.memory_gib
    );
    let _ = writeln!(out, "| nats-server | {} |", machine.nats_server);
    let _ = writeln!(
        out,
        "| SQLite | {} (WAL, synchronous=FULL) |",
        machine.sqlite
    );
    let postgres_line = match &m.postgres {
        Postgres::Available { version, .. } => version.clone(),
        other => other.absent(),
    };
    let _ = writeln!(out, "| PostgreSQL | {postgres_line} |");
    let _ = writeln!(
        out,
        "| load | {} events a pipeline run, 25/25/25/25 LOW/MEDIUM/HIGH/CRITICAL, ~{} bytes each; \
         each uid kind a run of its own ({}) |",
        thousands(args.events as f64),
        load::events(100, 1, Uids::V4)
            .map(|e| e.iter().map(|m| m.payload.len()).sum::<usize>() / 100)
            .unwrap_or(0),
        kinds
            .iter()
            .map(|k| match k {
                Uids::V4 => "v4: random UUIDv4",
                Uids::V7 => "v7: time-ordered UUIDv7",
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "| services | {profile} build |");
    let _ = writeln!(out, "| command | `{}` |\n", command_line(args, &kinds));

    render_raw(&mut out, m, &kinds);
    for backend in ["SQLite", "PostgreSQL"] {
        render_pipeline(&mut out, m, backend, &profile, args);
    }
    render_scaling(&mut out, m);
    render_folding(&mut out, m, args);
    render_notify(&mut out, m, args);
    render_api(&mut out, m, args);
    render_targets(&mut out, m, &kinds);
    let ok = render_checks(&mut out, m);
    (out, ok)
}

fn render_raw(out: &mut String, m: &Measured, kinds: &[Uids]) {
    let raw = &m.raw;
    let _ = writeln!(out, "## Raw limits (same run, same messages and rows)\n");
    let _ = writeln!(out, "| what | uids | per second |\n| --- | --- | ---: |");
    let _ = writeln!(
        out,
        "| JetStream publish, {} PubAcks in flight, `Nats-Msg-Id` | {} | {} |",
        load::IN_FLIGHT,
        kinds[0].flag(),
        rate(&raw.publish)
    );
    let _ = writeln!(
        out,
        "| JetStream pull consumer, fetch 500, `ack()` each ({:.0} CPU-ms of the machine per 1,000) | {} | {} |",
        raw.consume_cpu.median(),
        kinds[0].flag(),
        rate(&raw.consume)
    );
    for (kind, inserts) in &raw.inserts {
        let _ = writeln!(
            out,
            "| SQLite insert, 1,000-row transactions, UNIQUE uid | {} | {} |",
            kind.flag(),
            rate(&inserts.sqlite)
        );
    }
    for (kind, inserts) in &raw.inserts {
        let measured = if !inserts.postgres.0.is_empty() {
            rate(&inserts.postgres)
        } else if let Some(err) = &raw.postgres_error {
            format!("not measured: {err}")
        } else {
            m.postgres.short()
        };
        let _ = writeln!(
            out,
            "| PostgreSQL insert, UNNEST, 1,000-row transactions, UNIQUE uid | {} | {measured} |",
            kind.flag()
        );
    }
    let _ = writeln!(
        out,
        "\nThe broker's limits are measured once a run (it does not look at uids); each \
         database's with the uid kind of the pipeline run it is compared with."
    );
}

fn render_pipeline(out: &mut String, m: &Measured, backend: &str, profile: &str, args: &Args) {
    let _ = writeln!(
        out,
        "\n## Pipeline on {backend} (one ingestor and one alerter process, {profile} build)\n"
    );
    let pipelines: Vec<&Pipeline> = m
        .pipelines
        .iter()
        .filter(|p| p.backend == backend)
        .collect();
    if pipelines.is_empty() {
        let _ = writeln!(out, "{}", m.postgres.absent());
        return;
    }
    let consume = m.raw.consume.median();
    let _ = writeln!(
        out,
        "| uids | published (PubAcks) | **stored**: first publish → last stored | alerted: → last `alerts.created.*` | stored vs raw consumer | stored vs raw {backend} insert |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for p in &pipelines {
        let insert = raw_insert(m, backend, p.uids);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            p.uids.flag(),
            rate(&p.published),
            rate(&p.stored),
            rate(&p.alerted),
            percent(p.stored.median(), consume),
            percent(p.stored.median(), insert)
        );
    }
    render_cpu(out, &pipelines, backend);
    for p in &pipelines {
        let _ = writeln!(
            out,
            "\n### Alert latency on {backend}, {} uids\n\nEvery HIGH/CRITICAL event of {} s at a \
             fixed rate, after {} s at that rate unmeasured, on the database the run above \
             filled. The stages compare the bench's clock with the timestamps the services \
             stored (`created_at`), so they add up to about the total.\n",
            p.uids.flag(),
            args.latency_seconds,
            args.latency_warm_up_seconds
        );
        let _ = writeln!(
            out,
            "| stage (what is measured) | 1,000/s p50 | 1,000/s p99 | {}/s p50 | {}/s p99 |",
            thousands(p.half_rate.median()),
            thousands(p.half_rate.median())
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
        for (i, name) in STAGE_NAMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} |",
                ms(&p.fixed.p50[i]),
                ms(&p.fixed.p99[i]),
                ms(&p.half.p50[i]),
                ms(&p.half.p99[i])
            );
        }
        let _ = writeln!(
            out,
            "| max of the total | {} | | {} | |",
            ms(&p.fixed.max),
            ms(&p.half.max)
        );
        let negative: Vec<String> = (0..4)
            .filter_map(|i| {
                let n = p.fixed.negative[i] + p.half.negative[i];
                (n > 0).then(|| format!("{n} in stage {}", i + 1))
            })
            .collect();
        if !negative.is_empty() {
            let _ = writeln!(
                out,
                "\nStage values that read below zero count as 0: {}. A stage between two \
                 processes' clocks reads below zero when the bench's own subscriber is \
                 scheduled later than the service it watches (the alerter gets the \
                 escalation from its JetStream consumer, the bench from a core subscription).",
                negative.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "\nPeak memory (VmHWM): ingestor {}, alerter {} MiB ({backend}, {} uids).",
            with_spread(&p.ingestor_mib, |v| format!("{v:.1}")),
            with_spread(&p.alerter_mib, |v| format!("{v:.1}")),
            p.uids.flag()
        );
    }
}

/// Where the CPU went during each sustained phase: per process, per 1,000 events, and how
/// busy the whole machine was. A machine near 100% busy is CPU-bound, and the table says
/// which process would have to get cheaper for the pipeline to go faster.
fn render_cpu(out: &mut String, pipelines: &[&Pipeline], backend: &str) {
    let Some(groups) = pipelines.iter().find_map(|p| p.cpu.as_ref()).map(|cpu| {
        cpu.by_process
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
    }) else {
        return;
    };
    let _ = writeln!(
        out,
        "\nCPU during the sustained phase ({backend}; last run), in CPU-milliseconds per 1,000 \
         events, from `/proc/<pid>/stat`; machine busy from `/proc/stat`:\n"
    );
    let _ = writeln!(
        out,
        "| uids | {} | other | machine busy |",
        groups.join(" | ")
    );
    let _ = writeln!(out, "|{}", " --- |".repeat(groups.len() + 3));
    for p in pipelines {
        let Some(cpu) = &p.cpu else { continue };
        let per_thousand = |seconds: f64| 1e6 * seconds / (cpu.events.max(1) as f64);
        let listed: f64 = cpu.by_process.iter().map(|(_, s)| s).sum();
        let cells: Vec<String> = cpu
            .by_process
            .iter()
            .map(|(_, seconds)| format!("{:.0}", per_thousand(*seconds)))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0}% of {:.1} core-s |",
            p.uids.flag(),
            cells.join(" | "),
            per_thousand((cpu.machine_busy - listed).max(0.0)),
            100.0 * cpu.machine_busy / cpu.machine_total.max(1e-9),
            cpu.machine_total
        );
    }
}

/// "`part` of `whole` = N%", the form of every ratio target.
fn share_of(part: f64, whole: f64) -> String {
    format!(
        "{} of {} = {}",
        thousands(part),
        thousands(whole),
        percent(part, whole)
    )
}

/// The raw insert rate of `backend` with `uids` (0 when not measured).
fn raw_insert(m: &Measured, backend: &str, uids: Uids) -> f64 {
    m.raw
        .inserts(uids)
        .map(|inserts| {
            if backend == "SQLite" {
                inserts.sqlite.median()
            } else {
                inserts.postgres.median()
            }
        })
        .unwrap_or(0.0)
}

/// The one-of-each pipeline the scaling run `p` is compared with.
fn one_of_each<'a>(m: &'a Measured, p: &Pipeline) -> Option<&'a Pipeline> {
    m.pipelines
        .iter()
        .find(|o| o.backend == p.backend && o.uids == p.uids)
}

fn render_scaling(out: &mut String, m: &Measured) {
    let _ = writeln!(
        out,
        "\n## Scaling: {SCALING_WORKERS} ingestors and {SCALING_WORKERS} alerters on one database and one nats-server\n"
    );
    if m.scaling.is_empty() {
        let _ = writeln!(
            out,
            "Not run{}.",
            match &m.postgres {
                Postgres::Available { .. } => " (`--scaling off`)".to_owned(),
                other => format!(" on PostgreSQL ({})", other.short()),
            }
        );
        return;
    }
    let _ = writeln!(
        out,
        "The sustained phase only, with the load of the one-of-each run. On PostgreSQL a \
         separate connection reads `pg_locks` every 50 ms while it runs and counts the \
         samples in which a threatmon backend (`application_name = 'threatmon'`) waits \
         (`NOT granted`) on a lock.\n"
    );
    let _ = writeln!(
        out,
        "| backend | uids | 1+1 stored | 2+2 stored | 2+2 vs 1+1 | samples with a threatmon waiter | on rows (`transactionid`/`tuple`) | waits seen |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for p in &m.scaling {
        let single = one_of_each(m, p).map(|o| o.stored.median()).unwrap_or(0.0);
        let (waiters, rows, seen) = match &p.locks {
            Some(locks) => (
                format!("{} of {}", locks.with_waiter, locks.samples),
                locks.row_waits.to_string(),
                locks.describe(),
            ),
            None => ("—".to_owned(), "—".to_owned(), "(not sampled)".to_owned()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {waiters} | {rows} | {seen} |",
            p.backend,
            p.uids.flag(),
            thousands(single),
            rate(&p.stored),
            percent(p.stored.median(), single)
        );
    }
    for p in &m.scaling {
        let _ = writeln!(
            out,
            "\nPeak memory (VmHWM), largest of each kind, {}: ingestor {}, alerter {} MiB.",
            p.backend,
            with_spread(&p.ingestor_mib, |v| format!("{v:.1}")),
            with_spread(&p.alerter_mib, |v| format!("{v:.1}"))
        );
    }
}

fn render_folding(out: &mut String, m: &Measured, args: &Args) {
    let _ = writeln!(
        out,
        "\n## Folding repeats: {} events over {} fold keys\n",
        thousands(args.events as f64),
        thousands(args.fold_keys.max(1) as f64)
    );
    if m.folding.is_empty() {
        let _ = writeln!(
            out,
            "Not run (`--folding off`, or no backend of it measured)."
        );
        return;
    }
    let _ = writeln!(
        out,
        "The generated load, its sensors and types rewritten so that the escalated events \
         fall on {} (`sourceName`, `eventType`) pairs in turn (100 sensors × 10 types for \
         1,000): once with `ALERT_FOLD_KEY=none` (an alert per escalation, as in the runs \
         above) and once folded by the default key, `sourceName,eventType` (an alert per \
         pair), alternating within each run; the sustained phase only. *Escalations in \
         alerts* is first publish → the alerter's consumer has acknowledged every escalation \
         (each counted in an alert and committed). CPU in CPU-milliseconds per 1,000 events \
         (last run).\n",
        thousands(args.fold_keys.max(1) as f64)
    );
    let _ = writeln!(
        out,
        "| backend | uids | stored, `none` | stored, folded | folded vs `none` | escalations in alerts, `none` | folded | alerter CPU, `none` | folded |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let alerter_cpu = |p: &Pipeline| {
        p.cpu
            .as_ref()
            .and_then(|cpu| {
                cpu.by_process
                    .iter()
                    .find(|(who, _)| *who == "alerter")
                    .map(|(_, seconds)| format!("{:.0}", 1e6 * seconds / cpu.events.max(1) as f64))
            })
            .unwrap_or_else(|| "—".to_owned())
    };
    for [off, folded] in &m.folding {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            off.backend,
            off.uids.flag(),
            rate(&off.stored),
            rate(&folded.stored),
            percent(folded.stored.median(), off.stored.median()),
            rate(&off.alerted),
            rate(&folded.alerted),
            alerter_cpu(off),
            alerter_cpu(folded)
        );
    }
}

fn render_notify(out: &mut String, m: &Measured, args: &Args) {
    let _ = writeln!(
        out,
        "\n## Notification delivery: alert latency with delivery off and on\n"
    );
    if m.notify.is_empty() {
        let _ = writeln!(
            out,
            "Not run (`--notify off`, or no backend of it measured)."
        );
        return;
    }
    let _ = writeln!(
        out,
        "The 1,000 events/s latency phase of the runs above ({} s measured after {} s \
         unmeasured; **total**: publish → `alerts.created.*` seen), but on a fresh database \
         with no sustained phase before it (which would leave a backlog of deliveries): once \
         with `NOTIFY_DELIVERY=false` (the alerter runs no delivery loop and has no `notifier` \
         consumer) and once with delivery on and {WEBHOOK_ROUTES} webhook routes that match \
         every alert (`NOTIFY_ROUTES_FILE`), about {} deliveries a second, to a receiver in \
         the bench: an HTTP server on a loopback port on its own thread, answering 200 at once \
         (`NOTIFY_ALLOW_PRIVATE_TARGETS=true`). Alternating within each run. The receiver must \
         get one request per (alert, route), counted by distinct `webhook-id` (a delivery \
         attempted again keeps its id): checked below. *All delivered*: how long the receiver \
         still waited for deliveries once every alert was notified (and checked).\n",
        args.latency_seconds,
        args.latency_warm_up_seconds,
        thousands(500.0 * WEBHOOK_ROUTES as f64)
    );
    let _ = writeln!(
        out,
        "| backend | uids | delivery | p50 | p99 | p99 vs off | max | webhook requests (distinct `webhook-id`s), all runs | all delivered |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for [off, on] in &m.notify {
        for p in [off, on] {
            let (delivery, versus, requests, after) = match p.notify {
                Notify::Webhooks { routes } => (
                    format!("on, {routes} webhook routes"),
                    percent(p.fixed.p99[4].median(), off.fixed.p99[4].median()),
                    format!(
                        "{} ({})",
                        thousands(p.webhook_requests as f64),
                        thousands(p.webhook_distinct as f64)
                    ),
                    with_spread(&p.delivered_after, |v| format!("{v:.1} s")),
                ),
                _ => (
                    "off (`NOTIFY_DELIVERY=false`)".to_owned(),
                    "—".to_owned(),
                    "—".to_owned(),
                    "—".to_owned(),
                ),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {delivery} | {} | {} | {versus} | {} | {requests} | {after} |",
                p.backend,
                p.uids.flag(),
                ms(&p.fixed.p50[4]),
                ms(&p.fixed.p99[4]),
                ms(&p.fixed.max)
            );
        }
    }
}

fn render_api(out: &mut String, m: &Measured, args: &Args) {
    let _ = writeln!(
        out,
        "\n## API on {} events and {} alerts (the SQLite pipeline's database, {} uids)\n",
        thousands(args.events as f64),
        thousands((args.events / 2) as f64),
        uid_kinds(args)[0].flag()
    );
    let _ = writeln!(
        out,
        "Closed loop: each keep-alive connection sends its next request when the last is \
         answered; the load client shares the cores with the api. {} s a measurement.\n",
        args.api_seconds
    );
    let _ = writeln!(
        out,
        "| request | conns | req/s | p50 | p99 |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for cell in &m.cells {
        // No answer within the window has no latencies: say so, not "0 ms".
        let (p50, p99) = if cell.rate.median() > 0.0 {
            (ms(&cell.p50), ms(&cell.p99))
        } else {
            let none = format!("none answered within {} s", args.api_seconds);
            (none.clone(), none)
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {p50} | {p99} |",
            cell.name,
            cell.connections,
            rate(&cell.rate),
        );
    }
    let _ = writeln!(
        out,
        "\nPeak memory of the api (VmHWM): {:.1} MiB.",
        m.api_mib
    );
}

fn render_targets(out: &mut String, m: &Measured, kinds: &[Uids]) {
    let _ = writeln!(out, "\n## Targets (issues 11, 12 and 13)\n");
    let _ = writeln!(
        out,
        "Each a ratio or a figure of this run. [`bench/PROFILES.md`](bench/PROFILES.md) traces \
         each miss to the limit that stops it, with the `scripts/profile` runs behind it.\n\n\
         | target | measured | |\n| --- | --- | --- |"
    );
    let mut row = |target: String, measured: String, verdict: &str| {
        let _ = writeln!(out, "| {target} | {measured} | {verdict} |");
    };
    let pipeline = |backend: &str, uids: Uids| {
        m.pipelines
            .iter()
            .find(|p| p.backend == backend && p.uids == uids)
    };
    let absent = |backend: &str, uids: Uids| {
        if backend == "PostgreSQL" && m.postgres.backend().is_none() {
            m.postgres.short()
        } else if !kinds.contains(&uids) {
            format!("not measured (`--uids` has no {})", uids.flag())
        } else {
            "not measured".to_owned()
        }
    };
    const NOT: &str = "not measured";

    let consume = m.raw.consume.median();
    let target = "SQLite, v7 uids: stored ≥ 50% of the raw pull-consumer rate".to_owned();
    match pipeline("SQLite", Uids::V7) {
        Some(p) => row(
            target,
            share_of(p.stored.median(), consume),
            verdict(p.stored.median() >= 0.5 * consume),
        ),
        None => row(target, absent("SQLite", Uids::V7), NOT),
    }
    let target = "SQLite, v4 uids: stored ≥ 70% of the raw SQLite insert rate (v4 rows)".to_owned();
    match pipeline("SQLite", Uids::V4) {
        Some(p) => {
            let insert = raw_insert(m, "SQLite", Uids::V4);
            row(
                target,
                share_of(p.stored.median(), insert),
                verdict(p.stored.median() >= 0.7 * insert),
            )
        }
        None => row(target, absent("SQLite", Uids::V4), NOT),
    }
    for uids in [Uids::V4, Uids::V7] {
        let target = format!(
            "PostgreSQL, {} uids: stored ≥ 60% of the raw PostgreSQL insert rate ({} rows)",
            uids.flag(),
            uids.flag()
        );
        let insert = raw_insert(m, "PostgreSQL", uids);
        match pipeline("PostgreSQL", uids) {
            Some(p) if insert > 0.0 => row(
                target,
                share_of(p.stored.median(), insert),
                verdict(p.stored.median() >= 0.6 * insert),
            ),
            _ => row(target, absent("PostgreSQL", uids), NOT),
        }
    }
    match m.scaling.iter().find(|p| p.backend == "PostgreSQL") {
        Some(p) => {
            let single = one_of_each(m, p).map(|o| o.stored.median()).unwrap_or(0.0);
            row(
                format!(
                    "PostgreSQL scaling: 2+2 stored rate ≥ 1+1 rate ({} uids)",
                    p.uids.flag()
                ),
                format!(
                    "{} vs {} = {}",
                    thousands(p.stored.median()),
                    thousands(single),
                    percent(p.stored.median(), single)
                ),
                verdict(single > 0.0 && p.stored.median() >= single),
            );
            let locks = p.locks.clone().unwrap_or_default();
            row(
                "PostgreSQL scaling: 0 `pg_locks` samples with a threatmon writer waiting on another's rows".to_owned(),
                format!("{} of {} samples", locks.row_waits, locks.samples),
                verdict(locks.samples > 0 && locks.row_waits == 0),
            );
        }
        None => {
            let why = match &m.postgres {
                Postgres::Available { .. } => "not run (`--scaling`)".to_owned(),
                other => other.short(),
            };
            row(
                "PostgreSQL scaling: 2+2 stored rate ≥ 1+1 rate".to_owned(),
                why.clone(),
                NOT,
            );
            row(
                "PostgreSQL scaling: 0 `pg_locks` samples with a threatmon writer waiting on another's rows".to_owned(),
                why,
                NOT,
            );
        }
    }
    for backend in ["SQLite", "PostgreSQL"] {
        for uids in kinds {
            let Some(p) = pipeline(backend, *uids) else {
                row(
                    format!(
                        "{backend}, {} uids: alert latency at 1,000 events/s p50 < 3 ms, p99 < 10 ms",
                        uids.flag()
                    ),
                    absent(backend, *uids),
                    NOT,
                );
                continue;
            };
            let (p50, p99) = (p.fixed.p50[4].median(), p.fixed.p99[4].median());
            row(
                format!(
                    "{backend}, {} uids: alert latency at 1,000 events/s p50 < 3 ms, p99 < 10 ms",
                    uids.flag()
                ),
                format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
                verdict(p50 < 3.0 && p99 < 10.0),
            );
            let half = p.half.p99[4].median();
            row(
                format!(
                    "{backend}, {} uids: alert latency p99 < 50 ms at half the stored rate ({} events/s)",
                    uids.flag(),
                    thousands(p.half_rate.median())
                ),
                format!("p99 {half:.2} ms"),
                verdict(half < 50.0),
            );
        }
    }
    let patch = m
        .cells
        .iter()
        .find(|c| c.connections == 16 && c.request == api::Request::PatchAlert)
        .map(|c| c.p99.median());
    match patch {
        Some(p99) => row(
            "PATCH p99 < 20 ms at 16 connections".to_owned(),
            format!("{p99:.2} ms"),
            verdict(p99 < 20.0),
        ),
        None => row(
            "PATCH p99 < 20 ms at 16 connections".to_owned(),
            NOT.to_owned(),
            NOT,
        ),
    }
    for [off, folded] in &m.folding {
        let (with, without) = (folded.stored.median(), off.stored.median());
        row(
            format!(
                "{}, {} fold keys: stored rate folded ≥ 90% of the rate with `ALERT_FOLD_KEY=none` (same load, same run)",
                off.backend,
                match off.load {
                    Load::Repeating { keys, .. } => thousands(keys as f64),
                    Load::Generated => "no".to_owned(),
                }
            ),
            format!(
                "{} vs {} = {}",
                thousands(with),
                thousands(without),
                percent(with, without)
            ),
            verdict(with >= 0.9 * without),
        );
    }
    let target = |backend: &str, uids: &str| {
        format!(
            "{backend}{uids}: alert latency p99 at 1,000 events/s with delivery on ({WEBHOOK_ROUTES} \
             webhook routes) ≤ {:.0}% of off (`NOTIFY_DELIVERY=false`), same run",
            100.0 * DELIVERY_P99_TOLERANCE
        )
    };
    if m.notify.is_empty() {
        row(
            target("SQLite", ""),
            "not run (`--notify off`)".to_owned(),
            NOT,
        );
    }
    for [off, on] in &m.notify {
        let (with, without) = (on.fixed.p99[4].median(), off.fixed.p99[4].median());
        row(
            target(off.backend, &format!(", {} uids", off.uids.flag())),
            format!(
                "{with:.2} ms vs {without:.2} ms = {} (off's runs ±{:.0}%)",
                percent(with, without),
                100.0 * off.fixed.p99[4].spread()
            ),
            verdict(without > 0.0 && with <= DELIVERY_P99_TOLERANCE * without),
        );
    }
    for (request, what) in [
        (api::SUMMARY, "`GET /api/alerts/summary/`"),
        (api::SEARCH, "a `q=` search"),
    ] {
        let target = format!("{what} p99 < 10 ms at 16 connections");
        match m
            .cells
            .iter()
            .find(|c| c.connections == 16 && c.request == request)
        {
            Some(cell) => {
                let p99 = cell.p99.median();
                row(target, format!("{p99:.2} ms"), verdict(p99 < 10.0));
            }
            None => row(target, NOT.to_owned(), NOT),
        }
    }
    let (worker_peak, which) = m
        .pipelines
        .iter()
        .chain(&m.scaling)
        .chain(m.folding.iter().flatten())
        .chain(m.notify.iter().flatten())
        .flat_map(|p| {
            [
                (p.ingestor_mib.max(), "ingestor", p),
                (p.alerter_mib.max(), "alerter", p),
            ]
        })
        .fold((0.0, String::new()), |best, (mib, name, p)| {
            if mib > best.0 {
                (
                    mib,
                    format!("{name}, {} {} {}", p.backend, p.uids.flag(), p.shape()),
                )
            } else {
                best
            }
        });
    row(
        "each worker < 128 MiB (every run)".to_owned(),
        format!("largest {worker_peak:.1} MiB ({which})"),
        verdict(worker_peak < 128.0),
    );
    row(
        "api < 64 MiB".to_owned(),
        format!("{:.1} MiB", m.api_mib),
        verdict(m.api_mib < 64.0),
    );
}

/// The correctness table; whether every check passed.
fn render_checks(out: &mut String, m: &Measured) -> bool {
    let _ = writeln!(out, "\n## Correctness checks (every run)\n");
    let _ = writeln!(
        out,
        "| backend | uids | workers | run | check | expected | found | |\n| --- | --- | --- | ---: | --- | ---: | ---: | --- |"
    );
    let mut ok = true;
    for p in m
        .pipelines
        .iter()
        .chain(&m.scaling)
        .chain(m.folding.iter().flatten())
        .chain(m.notify.iter().flatten())
    {
        for (run, what, expected, found) in &p.checks {
            let passed = expected == found;
            ok &= passed;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {run} | {what} | {} | {} | {} |",
                p.backend,
                p.uids.flag(),
                p.shape(),
                thousands(*expected as f64),
                thousands(*found as f64),
                if passed { "ok" } else { "**FAILED**" }
            );
        }
    }
    let _ = writeln!(
        out,
        "\nAlerts are raised for severities at or above {} (the default `ALERT_MIN_SEVERITY`).",
        Severity::High.as_str()
    );
    ok
}
