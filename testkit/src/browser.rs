//! A real headless browser for tests: Debian's `chromium`, offline but for loopback.
//!
//! Every external request fails: a proxy that nothing listens on takes all traffic but
//! loopback's (which Chromium never proxies), and host names other than 127.0.0.1 resolve to
//! nothing. A page that renders here needs nothing from the network. No tool downloads a
//! browser of its own: a missing `chromium` panics naming the package to install.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where Debian's `chromium` package installs the browser (its `/usr/bin/chromium` is a
/// shell wrapper around it).
const CHROMIUM_LIB: &str = "/usr/lib/chromium/chromium";
/// How long one page load may take, wall clock, before the browser is killed.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a running browser is checked for having finished.
const POLL: Duration = Duration::from_millis(50);

/// Headless Chromium with a fresh profile and no network route but loopback.
pub struct Chromium {
    binary: PathBuf,
    profile: TempDir,
}

impl Chromium {
    /// Finds the browser; panics with how to install it when it is missing.
    pub fn new() -> Chromium {
        let binary = [PathBuf::from(CHROMIUM_LIB)]
            .into_iter()
            .chain(
                std::env::var_os("PATH")
                    .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|dir| dir.join("chromium")),
            )
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "chromium not found at {CHROMIUM_LIB} or on PATH; install Debian's \
                     (`apt-get install chromium chromium-driver`, or ./scripts/tools as root)"
                )
            });
        let profile = tempfile::Builder::new()
            .prefix("threatmon-chromium-")
            .tempdir()
            .expect("create a temporary Chromium profile");
        Chromium { binary, profile }
    }

    /// The flags every run gets: headless, a fresh profile, no background traffic, and no
    /// route anywhere but loopback.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--headless")
            .arg("--no-sandbox")
            .arg("--disable-gpu")
            .arg("--disable-quic")
            .arg("--no-first-run")
            .arg("--disable-background-networking")
            .arg("--disable-component-update")
            .arg("--disable-sync")
            .arg("--disable-dev-shm-usage")
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .arg("--proxy-server=127.0.0.1:9")
            .arg("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Loads `url`, lets its scripts run for up to `budget` of virtual time (the browser
    /// stops early once the page is idle), and returns the rendered DOM as HTML. Panics with
    /// the browser's own words when it fails or takes longer than a minute.
    pub fn dump_dom(&self, url: &str, budget: Duration) -> String {
        let mut child = self
            .command()
            .arg(format!("--virtual-time-budget={}", budget.as_millis()))
            .arg("--dump-dom")
            .arg(url)
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", self.binary.display()));
        // Read both pipes on threads, so a chatty browser never blocks on a full pipe.
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
        });
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut text).map(|_| text)
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for chromium") {
                break status;
            }
            if started.elapsed() > LOAD_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish loading {url} within {LOAD_TIMEOUT:?}");
            }
            std::thread::sleep(POLL);
        };
        let dom = out.join().expect("stdout reader").unwrap_or_default();
        let log = err.join().expect("stderr reader").unwrap_or_default();
        assert!(
            status.success(),
            "chromium failed on {url} ({status}):\n{}",
            crate::tail(&log, 40)
        );
        dom
    }
}

impl Default for Chromium {
    fn default() -> Self {
        Chromium::new()
    }
}
