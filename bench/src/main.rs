//! `threatmon-bench`: measures threatmon against the limits of the broker and the databases
//! on this machine, in one run, and writes the figures as markdown (`BENCHMARKS.md`).
//!
//! Run it with `scripts/bench` (which builds the release binaries first). Every figure is
//! the median of `--runs` runs with its spread; each run checks that nothing was lost.

mod api;
mod load;
mod pipeline;
mod procs;
mod raw;
mod stats;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use common::domain::Severity;
use testkit::NatsServer;

use crate::pipeline::PipelineRun;
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
    /// PostgreSQL to measure the raw insert ceiling on (a scratch database is created and
    /// dropped). `off` to skip.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// The uids the simulated sensors choose: random v4 (the worst case) or time-ordered v7.
    #[arg(long, value_enum, default_value = "v4")]
    uids: load::Uids,
    /// Where to write the markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
}

/// Concurrent connections the API is measured at.
const CONNECTIONS: [usize; 2] = [16, 64];

#[derive(Default)]
struct Raw {
    publish: Samples,
    consume: Samples,
    sqlite: Samples,
    postgres: Samples,
    postgres_error: Option<String>,
}

#[derive(Default)]
struct Pipeline {
    published: Samples,
    stored: Samples,
    alerted: Samples,
    fixed: [Samples; 3],
    half: [Samples; 3],
    half_rate: Samples,
    ingestor_mib: Samples,
    alerter_mib: Samples,
    checks: Vec<(usize, String, u64, u64)>,
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

async fn run(args: Args) -> Result<bool> {
    let sqlite_version: String = {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
        sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&pool)
            .await?
    };
    let machine = procs::Machine::describe(sqlite_version);
    load::use_uids(args.uids);
    let runs = args.runs.max(1);

    let mut raw = Raw::default();
    for run in 0..runs {
        progress(&format!("raw limits, run {} of {runs}", run + 1));
        let events = load::events(args.raw_messages, 1000 + run as u64)?;
        let nats = NatsServer::start();
        let client = async_nats::connect(nats.url()).await?;
        let js = async_nats::jetstream::new(client);
        raw.publish
            .push(raw::jetstream_publish(&js, &events).await?);
        raw.consume
            .push(raw::jetstream_consume(&js, events.len() as u64).await?);
        drop(nats);
        let dir = tempfile::tempdir()?;
        raw.sqlite
            .push(raw::sqlite_insert(dir.path(), &events).await?);
        if args.postgres_url != "off" {
            match raw::postgres_insert(&args.postgres_url, &events).await {
                Ok(rate) => raw.postgres.push(rate),
                Err(err) => raw.postgres_error = Some(format!("{err:#}")),
            }
        }
    }

    let mut pipeline = Pipeline::default();
    let mut kept = None;
    let snapshot_dir = tempfile::tempdir()?;
    let snapshot = snapshot_dir.path().join("api.db");
    for run in 0..runs {
        progress(&format!(
            "pipeline, run {} of {runs}: {} events",
            run + 1,
            thousands(args.events as f64)
        ));
        let last = run + 1 == runs;
        let (measured, nats, dir) = pipeline::run(
            args.events,
            7 + 10 * run as u64,
            last.then_some(snapshot.as_path()),
        )
        .await
        .with_context(|| format!("pipeline run {}", run + 1))?;
        record_pipeline(&mut pipeline, run, measured);
        if last {
            kept = Some((nats, dir));
        }
    }
    let (nats, _logs) = kept.context("no pipeline run")?;

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

    let (report, ok) = render(&args, &machine, &raw, &pipeline, &cells, api_mib);
    println!("{report}");
    std::fs::write(&args.out, &report)
        .with_context(|| format!("writing {}", args.out.display()))?;
    progress(&format!("wrote {}", args.out.display()));
    Ok(ok)
}

fn record_pipeline(pipeline: &mut Pipeline, run: usize, measured: PipelineRun) {
    pipeline.published.push(measured.published_rate);
    pipeline.stored.push(measured.stored_rate);
    pipeline.alerted.push(measured.alerted_rate);
    for (samples, latencies) in [
        (&mut pipeline.fixed, &measured.latency_fixed),
        (&mut pipeline.half, &measured.latency_half),
    ] {
        samples[0].push(latencies.quantile_ms(0.5));
        samples[1].push(latencies.quantile_ms(0.99));
        samples[2].push(latencies.max_ms());
    }
    pipeline.half_rate.push(measured.half_rate);
    pipeline.ingestor_mib.push(measured.ingestor_mib);
    pipeline.alerter_mib.push(measured.alerter_mib);
    for (what, expected, found) in measured.checks {
        pipeline.checks.push((run + 1, what, expected, found));
    }
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

/// The report as markdown, and whether every correctness check passed.
fn render(
    args: &Args,
    machine: &procs::Machine,
    raw: &Raw,
    pipeline: &Pipeline,
    cells: &[ApiCell],
    api_mib: f64,
) -> (String, bool) {
    let runs = args.runs.max(1);
    let mut out = String::new();
    let _ = writeln!(out, "# threatmon benchmarks\n");
    let _ = writeln!(
        out,
        "Produced by `scripts/bench` (the `threatmon-bench` binary): every figure is the median \
         of {runs} runs, ± half their range. Nothing here is edited by hand.\n"
    );
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
    let _ = writeln!(
        out,
        "| load | {} events a pipeline run, 25/25/25/25 LOW/MEDIUM/HIGH/CRITICAL, {} uids, ~{} bytes each |",
        thousands(args.events as f64),
        match args.uids {
            load::Uids::V4 => "random UUIDv4",
            load::Uids::V7 => "time-ordered UUIDv7",
        },
        load::events(100, 1)
            .map(|e| e.iter().map(|m| m.payload.len()).sum::<usize>() / 100)
            .unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "| command | `scripts/bench --events {} --runs {runs} --raw-messages {} --api-seconds {} --uids {}` |\n",
        args.events,
        args.raw_messages,
        args.api_seconds,
        match args.uids {
            load::Uids::V4 => "v4",
            load::Uids::V7 => "v7",
        }
    );

    let consume = raw.consume.median();
    let _ = writeln!(out, "## Raw limits (same run, same messages and rows)\n");
    let _ = writeln!(out, "| what | per second |\n| --- | ---: |");
    let _ = writeln!(
        out,
        "| JetStream publish, {} PubAcks in flight, `Nats-Msg-Id` | {} |",
        load::IN_FLIGHT,
        rate(&raw.publish)
    );
    let _ = writeln!(
        out,
        "| JetStream pull consumer, fetch 500, `ack()` each | {} |",
        rate(&raw.consume)
    );
    let _ = writeln!(
        out,
        "| SQLite insert, 1,000-row transactions, UNIQUE uid | {} |",
        rate(&raw.sqlite)
    );
    match &raw.postgres_error {
        Some(err) if raw.postgres.0.is_empty() => {
            let _ = writeln!(
                out,
                "| PostgreSQL insert (UNNEST, 1,000 rows) | not measured: {err} |"
            );
        }
        _ if raw.postgres.0.is_empty() => {
            let _ = writeln!(out, "| PostgreSQL insert (UNNEST, 1,000 rows) | skipped |");
        }
        _ => {
            let _ = writeln!(
                out,
                "| PostgreSQL insert, UNNEST, 1,000-row transactions, UNIQUE uid | {} |",
                rate(&raw.postgres)
            );
        }
    }

    let stored = pipeline.stored.median();
    let _ = writeln!(
        out,
        "\n## Pipeline on SQLite (ingestor and alerter processes, release build)\n"
    );
    let _ = writeln!(
        out,
        "| what | events/s | vs raw consumer |\n| --- | ---: | ---: |"
    );
    let _ = writeln!(
        out,
        "| published (broker PubAcks) while the pipeline ran | {} | |",
        rate(&pipeline.published)
    );
    let _ = writeln!(
        out,
        "| **stored**: first publish → last event stored | {} | {:.0}% |",
        rate(&pipeline.stored),
        100.0 * stored / consume.max(1.0)
    );
    let _ = writeln!(
        out,
        "| alerted: first publish → last `alerts.created.*` | {} | {:.0}% |",
        rate(&pipeline.alerted),
        100.0 * pipeline.alerted.median() / consume.max(1.0)
    );
    let _ = writeln!(
        out,
        "\nLatency from publish to the `alerts.created.*` notification (every HIGH/CRITICAL \
         event of 10 s at a fixed rate, after 5 s at that rate unmeasured, on the database the \
         run above filled):\n"
    );
    let _ = writeln!(
        out,
        "| rate | p50 | p99 | max |\n| --- | ---: | ---: | ---: |"
    );
    let _ = writeln!(
        out,
        "| 1,000 events/s | {} | {} | {} |",
        ms(&pipeline.fixed[0]),
        ms(&pipeline.fixed[1]),
        ms(&pipeline.fixed[2])
    );
    let _ = writeln!(
        out,
        "| {} events/s (50% of the stored rate) | {} | {} | {} |",
        thousands(pipeline.half_rate.median()),
        ms(&pipeline.half[0]),
        ms(&pipeline.half[1]),
        ms(&pipeline.half[2])
    );
    let _ = writeln!(
        out,
        "\nPeak memory (VmHWM): ingestor {}, alerter {} MiB.",
        with_spread(&pipeline.ingestor_mib, |v| format!("{v:.1}")),
        with_spread(&pipeline.alerter_mib, |v| format!("{v:.1}"))
    );

    let _ = writeln!(
        out,
        "\n## API on {} events and {} alerts (the pipeline's database)\n",
        thousands(args.events as f64),
        thousands((args.events / 2) as f64)
    );
    let _ = writeln!(
        out,
        "Closed loop: each keep-alive connection sends its next request when the last is \
         answered; the load client shares the 2 cores with the api. {} s a measurement.\n",
        args.api_seconds
    );
    let _ = writeln!(
        out,
        "| request | conns | req/s | p50 | p99 |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for cell in cells {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            cell.name,
            cell.connections,
            rate(&cell.rate),
            ms(&cell.p50),
            ms(&cell.p99)
        );
    }
    let _ = writeln!(out, "\nPeak memory of the api (VmHWM): {api_mib:.1} MiB.");

    // Targets from issue 5.
    let _ = writeln!(out, "\n## Targets\n");
    let _ = writeln!(out, "| target | measured | |\n| --- | --- | --- |");
    let _ = writeln!(
        out,
        "| pipeline stored ≥ 30,000 events/s | {} | {} |",
        thousands(stored),
        verdict(stored >= 30_000.0)
    );
    let _ = writeln!(
        out,
        "| pipeline stored ≥ 50% of the raw consumer rate | {:.0}% | {} |",
        100.0 * stored / consume.max(1.0),
        verdict(stored >= 0.5 * consume)
    );
    let p99_fixed = pipeline.fixed[1].median();
    let _ = writeln!(
        out,
        "| alert latency p99 < 50 ms at 1,000 events/s | {p99_fixed:.2} ms | {} |",
        verdict(p99_fixed < 50.0)
    );
    let slowest_list = cells
        .iter()
        .filter(|c| c.connections == 16 && c.request.is_list())
        .map(|c| (c.p99.median(), c.name))
        .fold((0.0, ""), |a, b| if b.0 > a.0 { b } else { a });
    let _ = writeln!(
        out,
        "| every list p99 < 10 ms at 16 connections | worst {:.2} ms (`{}`) | {} |",
        slowest_list.0,
        slowest_list.1,
        verdict(slowest_list.0 < 10.0)
    );
    let first_page = cells
        .iter()
        .filter(|c| c.request == api::SCENARIOS[0].1)
        .map(|c| c.rate.median())
        .fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "| ≥ 5,000 req/s on the first alerts page | {} | {} |",
        thousands(first_page),
        verdict(first_page >= 5000.0)
    );
    let _ = writeln!(
        out,
        "| api < 64 MiB | {api_mib:.1} MiB | {} |",
        verdict(api_mib < 64.0)
    );
    let worker_peak = pipeline.ingestor_mib.max().max(pipeline.alerter_mib.max());
    let _ = writeln!(
        out,
        "| each worker < 128 MiB | {worker_peak:.1} MiB (largest of any run) | {} |",
        verdict(worker_peak < 128.0)
    );

    let _ = writeln!(out, "\n## Correctness checks (every run)\n");
    let _ = writeln!(
        out,
        "| run | check | expected | found | |\n| ---: | --- | ---: | ---: | --- |"
    );
    let mut ok = true;
    for (run, what, expected, found) in &pipeline.checks {
        let passed = expected == found;
        ok &= passed;
        let _ = writeln!(
            out,
            "| {run} | {what} | {} | {} | {} |",
            thousands(*expected as f64),
            thousands(*found as f64),
            if passed { "ok" } else { "**FAILED**" }
        );
    }
    let _ = writeln!(
        out,
        "\nAlerts are raised for severities at or above {} (the default `ALERT_MIN_SEVERITY`).",
        Severity::High.as_str()
    );
    (out, ok)
}
