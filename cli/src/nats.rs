//! Connecting to NATS, for `publish` and `tail`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Notify;

use crate::error::{Error, chain};

/// Where NATS is and how long to wait for it.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "NATS")]
pub struct NatsArgs {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// Give up connecting to NATS after this many seconds (fractions allowed, e.g. 0.5).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_seconds)]
    pub connect_timeout: Duration,
}

/// Parses a positive number of seconds, at most an hour.
pub(crate) fn parse_seconds(value: &str) -> Result<Duration, String> {
    let secs: f64 = value
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds, e.g. 5 or 0.5".to_owned())?;
    if secs > 0.0 && secs <= 3600.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err("expected more than 0 and at most 3600 seconds".to_owned())
    }
}

/// Connects once, within the connect timeout. Once connected, the client reconnects on its
/// own for as long as the process runs; with `reconnected`, losing and regaining the
/// connection is said on stderr, and `reconnected` is notified when it is back.
pub(crate) async fn connect(
    args: &NatsArgs,
    reconnected: Option<Arc<Notify>>,
) -> Result<async_nats::Client, Error> {
    let url = args.nats_url.trim();
    let mut options = async_nats::ConnectOptions::new()
        .name("threatctl")
        .connection_timeout(args.connect_timeout);
    if let Some(reconnected) = reconnected {
        let lost = Arc::new(AtomicBool::new(false));
        options = options.event_callback(move |event| {
            let lost = Arc::clone(&lost);
            let reconnected = Arc::clone(&reconnected);
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        lost.store(true, Ordering::Relaxed);
                        eprintln!("threatctl: lost the NATS connection; reconnecting…");
                    }
                    async_nats::Event::Connected if lost.swap(false, Ordering::Relaxed) => {
                        eprintln!("threatctl: reconnected to NATS");
                        reconnected.notify_one();
                    }
                    _ => {}
                }
            }
        });
    }
    match tokio::time::timeout(args.connect_timeout, options.connect(url)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => Err(Error::new(format!(
            "cannot reach NATS at {url}: {}",
            chain(&err)
        ))),
        Err(_) => Err(Error::new(format!(
            "cannot reach NATS at {url}: no answer within {:.1} s",
            args.connect_timeout.as_secs_f64()
        ))),
    }
}

/// A stream by name, with a clear error when JetStream or the stream is missing.
pub(crate) async fn stream(
    js: &jetstream::Context,
    name: &str,
    url: &str,
) -> Result<jetstream::stream::Stream, Error> {
    js.get_stream(name).await.map_err(|err| {
        Error::new(format!(
            "stream {name} is not available on {}: {} (threatmon's services declare it when they start)",
            url.trim(),
            chain(&err)
        ))
    })
}
