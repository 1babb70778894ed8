//! Running the compiled `threatctl` as a user would, and a private nats-server with
//! threatmon's streams declared.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use testkit::NatsServer;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// How long any wait in these tests may take.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// `threatctl` with a clean environment: only PATH, and HOME set to `home` (also the
/// working directory), so that nothing from the machine running the tests leaks in.
pub fn threatctl(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_threatctl"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert!(self.status.success(), "threatctl failed: {self:#?}");
        &self.stdout
    }

    /// Asserts a failure reported as exactly one `threatctl: …` line on stderr, and returns it.
    pub fn one_line_error(&self) -> &str {
        assert!(!self.status.success(), "threatctl succeeded: {self:#?}");
        let stderr = self.stderr.trim_end();
        assert_eq!(stderr.lines().count(), 1, "one line on stderr: {self:#?}");
        assert!(stderr.starts_with("threatctl: "), "{self:#?}");
        stderr
    }
}

/// Runs `command` to the end, feeding it `stdin` when given.
pub async fn run(mut command: Command, stdin: Option<&str>) -> Run {
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("spawn threatctl");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("threatctl did not finish in time")
        .expect("wait for threatctl");
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A private nats-server with threatmon's streams declared, and the test's own client.
pub async fn nats_with_streams() -> (NatsServer, jetstream::Context) {
    let nats = NatsServer::start();
    let client = common::bus::connect(&nats.url(), "threatctl-test", PATIENCE)
        .await
        .expect("connect to the test nats-server");
    let js = jetstream::new(client);
    common::subjects::ensure_streams(&js)
        .await
        .expect("declare streams");
    (nats, js)
}

/// How many messages a stream holds.
pub async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    let mut stream = js.get_stream(name).await.expect("stream");
    stream.info().await.expect("stream info").state.messages
}
