//! The README's first command, as a newcomer runs it: `./scripts/dev` brings everything up,
//! the lines it prints work as printed, and Ctrl-C leaves no process behind.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use testkit::free_port;

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The printed line that starts with `label`, without the label.
fn printed<'a>(lines: &'a [String], label: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in {lines:#?}"))
        .trim()
}

/// Kills the whole process group if the test fails half-way, so nothing outlives it.
struct KillGroupOnDrop(u32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0)])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn the_quick_start_runs_everything_its_printed_lines_work_and_ctrl_c_stops_it_all() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let data = tempfile::tempdir().unwrap();
    let (nats_port, api_port) = (free_port(), free_port());
    let mut script = Command::new("bash");
    script
        .arg("scripts/dev")
        .current_dir(&workspace)
        .env_remove("SECRET_KEY")
        .env_remove("ADMIN_USERNAME")
        .env_remove("ADMIN_PASSWORD")
        .env_remove("DATABASE_URL")
        .env("THREATMON_DATA_DIR", data.path())
        .env("NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
        .env("API_ADDR", format!("127.0.0.1:{api_port}"))
        .env(
            "INGESTOR_METRICS_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("ALERTER_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        // Its own process group, so that Ctrl-C can be sent to it as a terminal would.
        .process_group(0);
    // The variables cargo sets for this test would make the script's build rerun build scripts.
    for (name, _) in std::env::vars() {
        if name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR" {
            script.env_remove(name);
        }
    }
    let mut child = script.spawn().unwrap();
    let group = child.id();
    let _cleanup = KillGroupOnDrop(group);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // It may build first: allow for that.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("threatmon is running"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("the quick start never said it was running: {lines:#?}"),
        }
    }
    // The rest of the banner follows at once.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        lines.push(line);
    }
    assert!(
        lines.iter().any(|l| l.contains("LOCAL QUICK START")),
        "the loud warning: {lines:#?}"
    );
    assert!(answers(nats_port) && answers(api_port));

    let login = Command::new("sh")
        .args(["-c", printed(&lines, "log in:")])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&login.stdout);
    assert!(
        body.contains("\"access\""),
        "the printed login works: {body}"
    );
    let publish = Command::new("sh")
        .args(["-c", printed(&lines, "publish:")])
        .output()
        .unwrap();
    assert!(
        publish.status.success(),
        "the printed publish works: {}",
        String::from_utf8_lossy(&publish.stderr)
    );

    Command::new("kill")
        .args(["-s", "INT", "--", &format!("-{group}")])
        .status()
        .unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the quick start did not stop on Ctrl-C")
        .unwrap();
    // Nothing it started is left: no process in its group, nothing on its ports.
    let leftovers = Command::new("pgrep")
        .args(["-g", &group.to_string()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&leftovers.stdout).trim().is_empty(),
        "processes left behind: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
    assert!(
        !answers(nats_port) && !answers(api_port),
        "ports still served"
    );
}
