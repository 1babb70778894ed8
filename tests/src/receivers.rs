//! Real receivers of notifications: processes of `tests/receivers/` (the Python of
//! scripts/tools's venv, with the Standard Webhooks library and aiosmtpd), each on a loopback
//! port it chooses and writes to its port file, logging what it got as JSON lines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testkit::eventually;

/// The Python the receivers run on (scripts/test sets `THREATMON_PYTHON` to the venv's).
pub fn python() -> String {
    std::env::var("THREATMON_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// A receiver process; killed when dropped.
pub struct Receiver {
    child: Child,
    log: PathBuf,
    /// Where it listens, on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Receiver {
    /// Starts `tests/receivers/<script>` with `args`; `secret` (in `RECEIVER_SECRET`) is what
    /// `webhook.py` verifies signatures with (empty: none).
    pub async fn start(script: &str, secret: &str, args: &[&str]) -> Receiver {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port_file = dir.path().join("port");
        let log = dir.path().join("received.jsonl");
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("receivers")
            .join(script);
        let child = Command::new(python())
            .arg(path)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .args(args)
            .env("RECEIVER_SECRET", secret)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {script} (the venv of scripts/tools): {e}"));
        let port = eventually(Duration::from_secs(20), "the receiver to listen", || {
            let port_file = port_file.clone();
            async move { std::fs::read_to_string(port_file).ok()?.trim().parse().ok() }
        })
        .await;
        Receiver {
            child,
            log,
            port,
            _dir: dir,
        }
    }

    /// `webhook.py`, verifying each signature with `secret`.
    pub async fn webhook(secret: &str, args: &[&str]) -> Receiver {
        Receiver::start("webhook.py", secret, args).await
    }

    /// Its `/hook` URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// What it logged, in order (a line still being written is left out).
    pub fn received(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|line| serde_json::from_str(line).expect("a receiver's log line is JSON"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
