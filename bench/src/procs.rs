//! The services under test as real processes (the binaries beside this one), their
//! peak memory, and facts about the machine.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running `ingestor`, `alerter` or `api`.
pub struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// The directory holding this binary, where `cargo build --release --workspace --bins` puts
/// the services too.
fn binaries_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("this program has no directory")
}

/// The build the services run from, `release` or `debug` (the name of the directory they
/// are in), for the report.
pub fn build_profile() -> String {
    binaries_dir()
        .ok()
        .and_then(|dir| {
            dir.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A free loopback port (bound, then released for the service to take).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl Service {
    /// Starts `name` with `env`, logging to `<log_dir>/<name>.log`.
    pub fn start(name: &'static str, env: &[(&str, String)], log_dir: &Path) -> Result<Service> {
        let binary = binaries_dir()?.join(name);
        if !binary.exists() {
            bail!(
                "{} is missing: build the services first (`cargo build --release --workspace --bins`, \
                 which scripts/bench does)",
                binary.display()
            );
        }
        // BENCH_LOG_DIR keeps the services' logs after the run (they go to a temporary
        // directory otherwise), BENCH_SERVICE_LOG sets their RUST_LOG: for a closer look at
        // one run, e.g. `BENCH_SERVICE_LOG=warn,common::worker=debug,ingestor=debug`.
        let log = match std::env::var_os("BENCH_LOG_DIR") {
            Some(keep) => {
                let run = log_dir.file_name().unwrap_or_default().to_string_lossy();
                Path::new(&keep).join(format!("{run}-{name}.log"))
            }
            None => log_dir.join(format!("{name}.log")),
        };
        let file = std::fs::File::create(&log).context("creating a log file")?;
        let mut command = Command::new(&binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SERVICE_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Service { name, child, log })
    }

    /// Waits until `url` answers 200 (a readiness endpoint), or fails with the log's tail.
    pub async fn wait_ready(&mut self, url: &str) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}): {}", self.name, self.log_tail());
            }
            if let Ok(response) = client.get(url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not ready after 60 s: {}", self.name, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The most memory the process has held (peak resident set, `VmHWM`), in MiB.
    pub fn peak_memory_mib(&self) -> Result<f64> {
        peak_memory_mib(self.child.id())
    }

    /// Stops the service with SIGTERM (as an operator would) and waits for it; returns its
    /// peak memory read just before.
    pub fn stop(mut self) -> Result<f64> {
        let peak = self.peak_memory_mib()?;
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("{} did not stop within 30 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(peak)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Peak resident memory of process `pid` in MiB, from `/proc/<pid>/status`.
pub fn peak_memory_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc status")?;
    Ok(kib / 1024.0)
}

/// What the figures were measured on.
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Total memory in GiB.
    pub memory_gib: f64,
    /// `git describe`-like commit of the tree measured.
    pub commit: String,
    /// The nats-server version.
    pub nats_server: String,
    /// The SQLite library version.
    pub sqlite: String,
    /// When (UTC).
    pub date: String,
}

impl Machine {
    /// Reads the machine's facts.
    pub fn describe(sqlite: String) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_gib = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|kib| kib / 1024.0 / 1024.0)
            .unwrap_or(0.0);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let commit = output("git", &["rev-parse", "--short=12", "HEAD"])
            .map(|hash| {
                let dirty = output("git", &["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|s| !s.is_empty());
                if dirty {
                    format!("{hash}+changes")
                } else {
                    hash
                }
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let nats_server = testkit_nats_version();
        Machine {
            cpu,
            cores,
            memory_gib,
            commit,
            nats_server,
            sqlite,
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn testkit_nats_version() -> String {
    for program in ["nats-server", "/usr/sbin/nats-server"] {
        if let Some(version) = output(program, &["--version"]) {
            return version;
        }
    }
    "unknown".to_owned()
}

/// CPU time of a process so far (user + system), in seconds, from `/proc/<pid>/stat`; 0 when
/// it cannot be read (the process is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / clock_ticks_per_second()
}

/// The kernel's clock tick (`getconf CLK_TCK`; 100 on Linux almost everywhere).
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Process ids of every process whose command name is `name` (e.g. the `postgres` server's
/// backends), from `/proc`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

/// Busy and total CPU time of the whole machine so far, in seconds, from `/proc/stat`.
pub fn machine_cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().sum();
    // idle and iowait are the 4th and 5th values.
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    let hz = clock_ticks_per_second();
    ((total - idle) / hz, total / hz)
}

/// Where the machine's CPU went over a span: per process group, in CPU seconds.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    /// `(who, CPU seconds)`, in a fixed order.
    pub by_process: Vec<(&'static str, f64)>,
    /// The whole machine's busy CPU seconds.
    pub machine_busy: f64,
    /// The whole machine's CPU seconds (busy + idle): cores × wall time.
    pub machine_total: f64,
    /// Events the span handled (set by the caller).
    pub events: u64,
}

/// A snapshot of CPU counters, to subtract from a later one.
pub struct CpuMeter {
    groups: Vec<(&'static str, Vec<u32>, f64)>,
    busy: f64,
    total: f64,
}

impl CpuMeter {
    /// Starts measuring `groups` (a name and its process ids) and the whole machine.
    pub fn start(groups: Vec<(&'static str, Vec<u32>)>) -> CpuMeter {
        let (busy, total) = machine_cpu_seconds();
        CpuMeter {
            groups: groups
                .into_iter()
                .map(|(name, pids)| {
                    let used = pids.iter().map(|&pid| cpu_seconds(pid)).sum();
                    (name, pids, used)
                })
                .collect(),
            busy,
            total,
        }
    }

    /// What each group and the machine used since [`CpuMeter::start`].
    pub fn stop(&self) -> CpuUse {
        let (busy, total) = machine_cpu_seconds();
        CpuUse {
            by_process: self
                .groups
                .iter()
                .map(|(name, pids, before)| {
                    let now: f64 = pids.iter().map(|&pid| cpu_seconds(pid)).sum();
                    (*name, (now - before).max(0.0))
                })
                .collect(),
            machine_busy: busy - self.busy,
            machine_total: total - self.total,
            events: 0,
        }
    }
}
