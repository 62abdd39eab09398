//! The server under test: the real `switchboard` binary in a child process,
//! so its CPU time and peak memory are its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// The admin token every benchmark server starts with.
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// A running server.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Its data directory (the simulator's ledger lives there).
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// CPU seconds (user + system), peak resident memory and bytes written
/// to storage of a process.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
    /// `write_bytes` of `/proc/<pid>/io`: the file pages the process
    /// dirtied (the WAL, the database file, the simulator's ledger),
    /// counted when dirtied, whether or not written back yet.
    pub disk_write_bytes: u64,
    /// The writer thread's (`db-writer`) time on a CPU and time waiting
    /// in the run queue for one, in seconds (`/proc/<pid>/task/*/schedstat`).
    pub writer: Option<(f64, f64)>,
    /// When this was read.
    pub at: std::time::Instant,
}

impl Usage {
    /// The writer thread's seconds on a CPU and waiting for one between
    /// `before` and `self`, if both readings found it.
    fn writer_since(&self, before: &Usage) -> Option<(f64, f64)> {
        let ((run1, wait1), (run0, wait0)) = (self.writer?, before.writer?);
        Some((run1 - run0, wait1 - wait0))
    }

    /// The writer thread's share of the time between `before` and `self`:
    /// percent on a CPU, percent waiting for one. Together they say how
    /// near the one serial stage is to saturation: at 100 it is never
    /// idle, and what it waits for is a CPU.
    pub fn writer_percent(&self, before: &Usage) -> Option<(f64, f64)> {
        let (run, wait) = self.writer_since(before)?;
        let wall = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        Some((100.0 * run / wall, 100.0 * wait / wall))
    }

    /// The writer thread's CPU time between `before` and `self`, in µs
    /// per one of `ops` operations: steadier from run to run than a rate,
    /// as it does not count the time the writer waits for a core.
    pub fn writer_us_per(&self, before: &Usage, ops: usize) -> Option<f64> {
        let (run, _) = self.writer_since(before)?;
        (ops > 0).then(|| 1e6 * run / ops as f64)
    }

    /// Kilobytes written to storage between `before` and `self`, per
    /// `ops` operations.
    pub fn disk_kb_per(&self, before: &Usage, ops: usize) -> f64 {
        self.disk_write_bytes
            .saturating_sub(before.disk_write_bytes) as f64
            / 1024.0
            / ops.max(1) as f64
    }
}

/// The binary the next servers run instead of the one beside this program
/// (`--baseline`).
static INSTEAD: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Makes the servers started from now on run `bin`, or with `None` the
/// binary beside this program again.
pub fn use_binary(bin: Option<PathBuf>) {
    *INSTEAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = bin;
}

/// The `switchboard` binary beside this one (both are built by `bench/run`),
/// unless `use_binary` named another.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = INSTEAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
    {
        return Ok(bin);
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("switchboard");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (`bench/run` does: cargo build --release -p switchboard -p switchboard-bench)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The bare accept probe beside this program (`src/bin/switchboard-bare.rs`),
/// whatever `use_binary` names: it is the floor every build is read
/// against, not a build under test.
pub fn bare_binary() -> anyhow::Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("switchboard-bare");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (`bench/run` does: cargo build --release -p switchboard -p switchboard-bench)",
            bin.display()
        );
    }
    Ok(bin)
}

impl Server {
    /// Starts `switchboard serve` with `env` on a free loopback port and a
    /// fresh data directory, and waits until it listens.
    pub fn start(env: &[(&str, String)]) -> anyhow::Result<Server> {
        let mut cmd = Command::new(binary()?);
        cmd.arg("serve");
        Server::start_command(cmd, env)
    }

    /// Starts the bare accept probe (`bare_binary`) the same way, with
    /// the parts of the product listed in `with` (`SWITCHBOARD_BARE_WITH`),
    /// on PostgreSQL at `database_url` if given.
    pub fn start_bare(with: &str, database_url: Option<&str>) -> anyhow::Result<Server> {
        let mut cmd = Command::new(bare_binary()?);
        if let Some(url) = database_url {
            cmd.args(["--database-url", url]);
        }
        Server::start_command(cmd, &[("SWITCHBOARD_BARE_WITH", with.to_owned())])
    }

    /// Runs `cmd --listen 127.0.0.1:0 --data-dir <fresh>` with `env` and
    /// waits for its `switchboard listening on <base>` line.
    fn start_command(mut cmd: Command, env: &[(&str, String)]) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().to_path_buf();
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SWITCHBOARD_LOG", "error")
            .env("SWITCHBOARD_RATE_LIMIT_PER_SECOND", "10000000")
            .env("SWITCHBOARD_RATE_LIMIT_BURST", "10000000")
            .env("SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("starting switchboard")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let Some(line) = lines.next() else {
                bail!("switchboard exited before listening");
            };
            let line = line?;
            if let Some(rest) = line.strip_prefix("switchboard listening on ") {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            base,
            data_dir,
            _dir: Some(dir),
        })
    }

    /// The process id, for `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time and peak RSS so far, from `/proc`.
    pub fn usage(&self) -> Usage {
        usage_of(self.pid())
    }

    /// Stops the server (SIGKILL: its state is thrown away with its directory).
    pub fn stop(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data_dir.clone()
    }

    /// Keeps the data directory after the server stops.
    pub fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds and peak RSS of `pid` (Linux `/proc`; zeros elsewhere).
pub fn usage_of(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let disk_write_bytes = io
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Usage {
        // USER_HZ is 100 on Linux.
        cpu_seconds: ticks / 100.0,
        peak_rss_mb: hwm_kb / 1024.0,
        disk_write_bytes,
        writer: writer_schedstat(pid),
        at: std::time::Instant::now(),
    }
}

/// The `db-writer` thread's run and run-queue wait, in seconds: the first
/// two fields of its `schedstat` (nanoseconds; Linux with schedstats).
fn writer_schedstat(pid: u32) -> Option<(f64, f64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        if comm.trim_end() != "db-writer" {
            return None;
        }
        let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        let mut f = stat.split_whitespace().map(|v| v.parse::<f64>().ok());
        Some((f.next()?? / 1e9, f.next()?? / 1e9))
    })
}

/// The simulator's ledger of a stopped server: (distinct sends, repeated calls).
pub fn ledger(data_dir: &Path) -> anyhow::Result<(usize, u32)> {
    let rows = switchboard_providers::sim::read_ledger(data_dir)?;
    let sends = rows
        .iter()
        .filter(|r| r.provider_message_id.is_some())
        .count();
    let repeated = rows.iter().map(|r| r.calls_after_accept).sum();
    Ok((sends, repeated))
}
