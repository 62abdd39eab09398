//! The server under test: the real `switchboard` binary in a child process,
//! so its CPU time and peak memory are its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Stopped with SIGTERM first (`stop_gracefully` when it started).
    graceful: bool,
}

/// CPU seconds (user + system), peak resident memory and bytes written
/// to storage of a process.
#[derive(Debug, Clone)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
    /// `write_bytes` of `/proc/<pid>/io`: the file pages the process
    /// dirtied (the WAL, the database file, the simulator's ledger),
    /// counted when dirtied, whether or not written back yet.
    pub disk_write_bytes: u64,
    /// Each of the process's threads: its group (`thread_group`), its
    /// seconds on a CPU and waiting in the run queue for one so far, by
    /// thread id (`threads_of`).
    pub threads: Threads,
    /// The machine's CPU time so far (`/proc/stat`), if it could be read.
    pub machine: Option<MachineTicks>,
    /// This program's own CPU seconds so far: the load generator and the
    /// webhook receiver, on the same cores as the server.
    pub bench_cpu_seconds: f64,
    /// When this was read.
    pub at: Instant,
}

/// A process's threads by id: each one's group (`thread_group`), its
/// seconds on a CPU and its seconds waiting in the run queue for one.
pub type Threads = std::collections::HashMap<u32, (&'static str, f64, f64)>;

/// The machine's CPU time over all its CPUs, in ticks of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTicks {
    /// Idle, waiting for I/O included.
    pub idle: u64,
    /// Taken by the hypervisor for other guests (a shared VM's steal).
    pub steal: u64,
    /// Every state but the guests' (counted in user already).
    pub total: u64,
}

/// Where the CPU went over a run: the server's threads by group, this
/// program, and what was left idle or stolen, each in percent of one core
/// (so the machine's cores add up to 100 each).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CpuSplit {
    /// The server's threads by group (`thread_group`), percent of one core.
    pub server_threads: std::collections::BTreeMap<&'static str, f64>,
    /// This program (load generator and receiver), percent of one core.
    pub bench_cpu_percent: Option<f64>,
    /// The machine's idle time, percent of one core (two cores: up to 200).
    pub machine_idle_percent: Option<f64>,
    /// Time the hypervisor gave to other guests, percent of one core.
    pub machine_steal_percent: Option<f64>,
}

impl Usage {
    /// The writer thread's (`db-writer`) seconds on a CPU and waiting in
    /// the run queue for one so far, if this reading found it.
    fn writer(&self) -> Option<(f64, f64)> {
        self.threads
            .values()
            .find(|t| t.0 == "writer")
            .map(|t| (t.1, t.2))
    }

    /// The writer thread's seconds on a CPU and waiting for one between
    /// `before` and `self`, if both readings found it.
    fn writer_since(&self, before: &Usage) -> Option<(f64, f64)> {
        let ((run1, wait1), (run0, wait0)) = (self.writer()?, before.writer()?);
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

    /// Where the CPU went between `before` and `self` (`CpuSplit`). A
    /// thread that ended between the two readings is not counted.
    pub fn cpu_split(&self, before: &Usage) -> CpuSplit {
        let wall = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let mut server_threads = std::collections::BTreeMap::new();
        for (tid, (group, seconds, _)) in &self.threads {
            let earlier = before.threads.get(tid).map_or(0.0, |t| t.1);
            *server_threads.entry(*group).or_insert(0.0) +=
                100.0 * (seconds - earlier).max(0.0) / wall;
        }
        let machine = self.machine.zip(before.machine).map(|(a, b)| {
            let total = a.total.saturating_sub(b.total).max(1) as f64;
            // Percent of one core: the share of all ticks times the cores.
            let cores = wall_cores(total, wall);
            let share = |x: u64, y: u64| 100.0 * cores * x.saturating_sub(y) as f64 / total;
            (share(a.idle, b.idle), share(a.steal, b.steal))
        });
        CpuSplit {
            server_threads,
            bench_cpu_percent: (self.bench_cpu_seconds > 0.0)
                .then(|| 100.0 * (self.bench_cpu_seconds - before.bench_cpu_seconds) / wall),
            machine_idle_percent: machine.map(|m| m.0),
            machine_steal_percent: machine.map(|m| m.1),
        }
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
/// (`--baseline`, `--server`).
static INSTEAD: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Makes the servers started from now on run `bin`, or with `None` the
/// binary beside this program again.
pub fn use_binary(bin: Option<PathBuf>) {
    *INSTEAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = bin;
}

/// Whether servers are stopped with SIGTERM first (`--graceful-stop`).
static GRACEFUL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every server from now on stop with SIGTERM, waiting up to
/// `GRACE` for it to exit before it is killed: for a build that writes
/// something as it exits, such as a profile-instrumented one (`bench/pgo`).
pub fn stop_gracefully() {
    GRACEFUL.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// How long a graceful stop waits for the server to exit.
const GRACE: Duration = Duration::from_secs(30);

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
            graceful: GRACEFUL.load(std::sync::atomic::Ordering::Relaxed),
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

    /// Stops the server (SIGKILL: its state is thrown away with its
    /// directory; SIGTERM first with `stop_gracefully`).
    pub fn stop(mut self) -> PathBuf {
        self.end();
        self.data_dir.clone()
    }

    /// Ends the process: SIGKILL, or SIGTERM first if `graceful`, then
    /// SIGKILL if it has not exited within `GRACE`. Gives how it ended.
    fn end(&mut self) -> Option<std::process::ExitStatus> {
        if self.graceful && matches!(self.child.try_wait(), Ok(None)) {
            // kill(1), not a libc dependency for one call.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + GRACE;
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Ok(Some(status)) => return Some(status),
                    Err(_) => break,
                }
            }
            eprintln!(
                "server {} did not exit within {GRACE:?} of SIGTERM: killed",
                self.child.id()
            );
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// Keeps the data directory after the server stops.
    pub fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.end();
    }
}

/// The text of a server's `/metrics` at `base` (`None` if it does not
/// answer).
pub async fn metrics(base: &str) -> Option<String> {
    reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of `series` (a metric's name with its labels, as `/metrics`
/// writes it) in the text of a server's `/metrics`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// CPU seconds and peak RSS of `pid` (Linux `/proc`; zeros elsewhere).
pub fn usage_of(pid: u32) -> Usage {
    let cpu_seconds = cpu_seconds_of(&pid.to_string());
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
        cpu_seconds,
        peak_rss_mb: hwm_kb / 1024.0,
        disk_write_bytes,
        threads: threads_of(pid),
        machine: machine_ticks(),
        bench_cpu_seconds: cpu_seconds_of("self"),
        at: Instant::now(),
    }
}

/// The cores a span of `ticks` of every CPU's time stands for over `wall`
/// seconds (`/proc/stat` counts in USER_HZ, 100 a second, per CPU): the
/// machine's CPU count, read from the counts themselves.
fn wall_cores(ticks: f64, wall: f64) -> f64 {
    (ticks / 100.0 / wall).round().max(1.0)
}

/// User and system CPU seconds of `/proc/<pid>` (`self` for this process).
fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu_seconds(&stat)
}

/// User and system CPU seconds of a `stat` line of `/proc`.
fn stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces) start at ") ".
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// The group a server thread is counted in, by its name: the writer, its
/// sync and checkpoint threads, the simulator's ledger, the Tokio runtime's
/// threads (its workers and blocking pool), and the rest.
pub fn thread_group(comm: &str) -> &'static str {
    match comm {
        "db-writer" => "writer",
        "db-sync" => "sync",
        "db-checkpoint" => "checkpoint",
        "sim-ledger" => "sim ledger",
        c if c.starts_with("tokio") => "tokio",
        _ => "other",
    }
}

/// Every thread of `pid`, by thread id: its group and its seconds on a
/// CPU and waiting in the run queue for one, from the first two fields of
/// its `schedstat` (nanoseconds; Linux with schedstats).
fn threads_of(pid: u32) -> Threads {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Threads::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let mut f = stat.split_whitespace().map(|v| v.parse::<f64>().ok());
            let (run, wait) = (f.next()??, f.next()??);
            Some((tid, (thread_group(comm.trim_end()), run / 1e9, wait / 1e9)))
        })
        .collect()
}

/// The machine's CPU time so far, from the first line of `/proc/stat`:
/// `cpu user nice system idle iowait irq softirq steal guest guest_nice`.
fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(stat.lines().next()?)
}

fn parse_machine_ticks(line: &str) -> Option<MachineTicks> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(MachineTicks {
        idle: at(3) + at(4),
        steal: at(7),
        total: (0..8).map(at).sum(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_read_by_its_whole_series() {
        let text = "# HELP x\nswitchboard_group_commits_total_x 9\nswitchboard_group_commits_total 42\nswitchboard_messages{status=\"delivered\"} 7\n";
        assert_eq!(metric(text, "switchboard_group_commits_total"), Some(42.0));
        assert_eq!(
            metric(text, "switchboard_messages{status=\"delivered\"}"),
            Some(7.0)
        );
        assert_eq!(metric(text, "switchboard_messages"), None);
        assert_eq!(metric(text, "switchboard_nothing"), None);
    }

    #[test]
    fn the_machine_line_of_proc_stat_is_read() {
        let t = parse_machine_ticks("cpu  100 5 50 800 20 1 2 30 0 0").unwrap();
        assert_eq!((t.idle, t.steal, t.total), (820, 30, 1008));
        assert!(parse_machine_ticks("cpu0 1 2 3 4").is_none());
        assert!(parse_machine_ticks("cpu  1 x 3").is_none());
        assert!(parse_machine_ticks("").is_none());
    }

    #[test]
    fn a_stat_line_gives_user_and_system_seconds() {
        // A command name with spaces and a parenthesis does not shift the fields.
        let line = "42 (a (b) c) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        assert!((stat_cpu_seconds(line) - 3.0).abs() < 1e-9);
        assert_eq!(stat_cpu_seconds(""), 0.0);
    }

    fn server_of(child: Child, graceful: bool) -> Server {
        Server {
            child,
            base: String::new(),
            data_dir: PathBuf::new(),
            _dir: None,
            graceful,
        }
    }

    #[test]
    fn a_graceful_stop_sends_sigterm_and_a_plain_one_sigkill() {
        use std::os::unix::process::ExitStatusExt;
        let sleeper = || Command::new("sleep").arg("30").spawn().expect("sleep(1)");
        let started = Instant::now();
        let graceful = server_of(sleeper(), true).end().expect("ended");
        assert_eq!(graceful.signal(), Some(15), "{graceful:?}");
        let plain = server_of(sleeper(), false).end().expect("ended");
        assert_eq!(plain.signal(), Some(9), "{plain:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn threads_are_grouped_by_name() {
        assert_eq!(thread_group("db-writer"), "writer");
        assert_eq!(thread_group("tokio-rt-worker"), "tokio");
        assert_eq!(thread_group("tokio-runtime-w"), "tokio");
        assert_eq!(thread_group("sim-ledger"), "sim ledger");
        assert_eq!(thread_group("switchboard"), "other");
    }

    #[test]
    fn this_process_is_read_and_split() {
        let before = usage_of(std::process::id());
        // Some work on this thread, so the split has something to count.
        let mut x = 0u64;
        let until = std::time::Instant::now() + std::time::Duration::from_millis(50);
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 7);
        let after = usage_of(std::process::id());
        let split = after.cpu_split(&before);
        let threads: f64 = split.server_threads.values().sum();
        assert!(threads > 20.0, "{split:?}");
        let idle = split
            .machine_idle_percent
            .expect("/proc/stat is read on Linux");
        assert!((0.0..=100.0 * 64.0).contains(&idle), "{split:?}");
    }
}
