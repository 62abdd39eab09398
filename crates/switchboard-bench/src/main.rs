//! `switchboard-bench`: measures Switchboard's hot paths against this
//! machine's own ceiling and prints a table (saved as JSON under
//! `bench/results/`). Run it with `bench/run` (see BENCHMARKS.md).
//!
//! Every scenario starts the real `switchboard` binary in a child process on
//! loopback, drives it with this program's own keep-alive load generator
//! (fixed concurrency, bounded in count and time) and reads the server's CPU
//! time and peak RSS from `/proc`.

mod compare;
mod latency;
mod load;
mod receiver;
mod server;
mod targets;
mod waits;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;
use serde_json::{Value, json};

use crate::load::{LoadResult, MakeRequest, quantile};
use crate::receiver::Receiver;
use crate::server::{ADMIN_TOKEN, Server, Usage};
use crate::waits::AcceptWaits;

/// Benchmarks of the Switchboard gateway.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard-bench", version, about)]
struct Args {
    /// Scenarios to run: noop, accept, accept-bare, accept-pg, accept-pg-bare, e2e, e2e-all, e2e-pg, webhooks, webhooks-pg, or all.
    #[arg(default_value = "all")]
    scenarios: Vec<String>,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per HTTP scenario (noop, accept, accept-pg).
    #[arg(long, default_value_t = 200_000)]
    requests: usize,
    /// Longest time an HTTP scenario runs, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Messages in the end-to-end scenarios.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Messages in `e2e-pg` (fewer: it runs at a few hundred a second).
    #[arg(long, default_value_t = 20_000)]
    pg_messages: usize,
    /// Distinct recipients the submitted messages go to, in a shuffled
    /// order (a CRM's contact list). A number the server has not judged
    /// yet is validated against libphonenumber's metadata; one it has is
    /// a cache hit, so more contacts than the server's cache of numbers
    /// holds (16,384) measure the cold path.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=MAX_CONTACTS))]
    contacts: u64,
    /// Messages whose events the webhook scenario fans out.
    #[arg(long, default_value_t = 2_500)]
    fanout_messages: usize,
    /// Endpoints in the webhook scenario.
    #[arg(long, default_value_t = 8)]
    endpoints: usize,
    /// Other workspaces on the node in the end-to-end scenarios, each with
    /// a webhook endpoint subscribed to every event, to which nothing is
    /// sent (a node shared by many customers): what the benchmark's events
    /// cost when the fan-out has many endpoints to choose from.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    tenants: u64,
    /// PostgreSQL for accept-pg (a schema of its own is made and dropped).
    #[arg(long, env = "SWITCHBOARD_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Puts PostgreSQL this many milliseconds away in each direction (a
    /// delaying proxy on loopback), as a database on another host is.
    #[arg(long, default_value_t = 0)]
    pg_latency_ms: u64,
    /// Parts of the product the bare probe (`accept-bare`) adds to its
    /// floor, comma-separated: request (the API key's hash, the body as a
    /// JSON value, the request hash), row (the product's message row and
    /// text id), indexes (with row: the four indexes an accept writes, or
    /// one by name: by_workspace, by_status, queued, by_ref), compact
    /// (with row: integer keys instead of text).
    #[arg(long, default_value = "")]
    bare_with: String,
    /// Where results are written.
    #[arg(long, default_value = "bench/results")]
    out: std::path::PathBuf,
    /// Passes over the scenarios, one after another, so that every
    /// scenario is measured in the same minutes as the others each time.
    /// The table shows each scenario's median round, and the targets say
    /// in how many rounds they were met.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Another `switchboard` binary to compare this build with (say, a
    /// build of an earlier commit copied aside). Every round runs each
    /// scenario on both, one right after the other, the baseline first in
    /// odd rounds; a last table gives each pair's ratio and their median.
    /// The main table and the targets are this build's.
    #[arg(long)]
    baseline: Option<std::path::PathBuf>,
    /// The `switchboard` binary this run measures, instead of the one
    /// beside this program (say, a profile-instrumented build, `bench/pgo`).
    #[arg(long)]
    server: Option<std::path::PathBuf>,
    /// Stop each server with SIGTERM and wait up to 30 s for it to exit
    /// before killing it, instead of killing it at once: for a build that
    /// writes something as it exits, such as a profile-instrumented one.
    /// The bare probes do not handle SIGTERM: leave them out.
    #[arg(long)]
    graceful_stop: bool,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
struct Row {
    scenario: String,
    what: String,
    count: usize,
    errors: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_cpu_seconds: f64,
    server_cpu_percent: f64,
    server_peak_rss_mb: f64,
    /// CPU of the server's PostgreSQL backends over the run, percent of
    /// one core (PostgreSQL on this machine; none on SQLite).
    db_cpu_percent: Option<f64>,
    /// Kilobytes the server wrote to storage per request or message (not
    /// counted on PostgreSQL, whose server process writes them).
    server_disk_kb_per_op: Option<f64>,
    /// The writer thread over the run (`Row::with_threads`).
    #[serde(flatten)]
    writer: Writer,
    /// Where the machine's CPU went over the run (`Row::with_threads`).
    #[serde(flatten)]
    cpu: server::CpuSplit,
    notes: String,
    extra: Value,
}

/// The writer thread (`db-writer`) over a run, where it could be read.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Writer {
    /// Percent of the time on a CPU, and percent waiting in the run queue
    /// for one (`Usage::writer_percent`).
    writer_cpu_percent: Option<f64>,
    writer_wait_percent: Option<f64>,
    /// Its CPU time per request, message or delivery, µs.
    writer_cpu_us_per_op: Option<f64>,
}

impl Row {
    fn http(scenario: &str, what: &str, r: &LoadResult, before: Usage, after: Usage) -> Row {
        let cpu = after.cpu_seconds - before.cpu_seconds;
        Row {
            scenario: scenario.into(),
            what: what.into(),
            count: r.ok,
            errors: r.errors,
            per_second: r.rate(),
            p50_ms: r.quantile_ms(0.50),
            p99_ms: r.quantile_ms(0.99),
            max_ms: r.quantile_ms(1.0),
            server_cpu_seconds: cpu,
            server_cpu_percent: 100.0 * cpu / r.elapsed.as_secs_f64().max(1e-9),
            server_peak_rss_mb: after.peak_rss_mb,
            db_cpu_percent: None,
            server_disk_kb_per_op: Some(after.disk_kb_per(&before, r.ok)),
            writer: Writer::default(),
            cpu: server::CpuSplit::default(),
            notes: String::new(),
            extra: Value::Null,
        }
        .with_threads(&before, &after)
    }

    /// The writer thread's share of the run between the two readings, and
    /// where the rest of the machine's CPU went.
    fn with_threads(mut self, before: &Usage, after: &Usage) -> Row {
        let w = after.writer_percent(before);
        self.writer = Writer {
            writer_cpu_percent: w.map(|w| w.0),
            writer_wait_percent: w.map(|w| w.1),
            writer_cpu_us_per_op: after.writer_us_per(before, self.count),
        };
        self.cpu = after.cpu_split(before);
        self
    }

    /// Where the CPU went over a span of its own, where the run's end
    /// reading comes after a tail the figures should not count.
    fn with_cpu_split(mut self, split: server::CpuSplit) -> Row {
        self.cpu = split;
        self
    }

    /// The disk figure does not apply (PostgreSQL writes in its own process).
    fn on_postgres(mut self) -> Row {
        self.server_disk_kb_per_op = None;
        self
    }

    /// Notes the database's distance, if `--pg-latency-ms` set one.
    fn with_pg_latency(mut self, args: &Args) -> Row {
        if args.pg_latency_ms > 0 {
            self.notes = format!(
                "PostgreSQL {} ms away each way; {}",
                args.pg_latency_ms, self.notes
            );
        }
        self
    }
}

async fn admin(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let r = client
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        bail!("{path}: {status} {v}");
    }
    Ok(v)
}

/// A workspace and its API key.
async fn workspace(base: &str) -> anyhow::Result<String> {
    let client = load::client();
    let ws = admin(&client, base, "/v1/workspaces", json!({"name": "bench"})).await?;
    let id = ws["id"].as_str().context("workspace id")?;
    let key = admin(
        &client,
        base,
        &format!("/v1/workspaces/{id}/keys"),
        json!({}),
    )
    .await?;
    Ok(key["key"].as_str().context("key")?.to_owned())
}

/// `n` other workspaces, each with an endpoint at `url` subscribed to
/// every event (`--tenants`), made eight at a time.
async fn tenants(base: &str, n: u64, url: &str) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let made = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (base, url, made) = (base.to_owned(), url.to_owned(), made.clone());
        tasks.push(tokio::spawn(async move {
            while made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let key = workspace(&base).await?;
                create_endpoint(&base, &key, &url, None).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    eprintln!(
        "  {n} other workspaces with an endpoint each, made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn create_endpoint(
    base: &str,
    key: &str,
    url: &str,
    events: Option<Vec<&str>>,
) -> anyhow::Result<(String, String)> {
    let r = load::client()
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(key)
        .json(&json!({"url": url, "event_types": events}))
        .send()
        .await?;
    let v: Value = r.json().await?;
    Ok((
        v["id"].as_str().context("endpoint id")?.to_owned(),
        v["secret"].as_str().context("endpoint secret")?.to_owned(),
    ))
}

fn message_request(base: &str, key: &str, contacts: u64) -> MakeRequest {
    let host = load::authority(base).to_owned();
    let auth = format!("Bearer {key}");
    // Every request carries its own idempotency key, as CRM integrations
    // do (the key read is part of the accept path): random-looking, as a
    // CRM's UUIDs are, so each lands anywhere in the key index, not at its
    // right edge. The recipients are a CRM's list of contacts (10,000
    // unless `--contacts`), in an order that is not the list's.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Arc::new(move |i: usize, buf: &mut Vec<u8>| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u64;
        let (exchange, line) = recipient(mix(n) % contacts);
        let (k1, k2) = (mix(n ^ 0x5157_4254), mix(n.wrapping_add(0x9e37)));
        let body = format!(
            r#"{{"to":"+1415{exchange:03}{line:04}","body":"Benchmark message {i}","client_ref":"b{i}","idempotency_key":"{k1:016x}-{k2:016x}"}}"#
        );
        load::post_json(buf, &host, "/v1/messages", &auth, body.as_bytes());
    })
}

/// The most contacts `recipient` can tell apart: 9,000 lines in each of
/// the 700 exchanges 200–899.
const MAX_CONTACTS: u64 = 9_000 * 700;

/// Contact number `contact`'s exchange and line in area code 415: lines
/// 1000–9999, since the simulator's special numbers (`sim::behaviour_for`)
/// all end in 0xxx and these are numbers that are simply delivered, in
/// exchanges from 200 up (10,000 contacts use 200 and 201). Every
/// `contact` below `MAX_CONTACTS` has a number of its own.
fn recipient(contact: u64) -> (u64, u64) {
    (200 + contact / 9_000, 1_000 + contact % 9_000)
}

/// SplitMix64's finalizer: distinct inputs give distinct, well-spread
/// outputs, so keys and contacts look random but repeat across runs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 2,000 requests (at most 5 s) to warm the server, then the measured run;
/// returns it with the server's usage from before it, and what `also`
/// read then (the database's CPU).
async fn warm_then_measure<T, F: std::future::Future<Output = T>>(
    args: &Args,
    server: &Server,
    make: MakeRequest,
    expect: u16,
    also: impl FnOnce() -> F,
) -> (load::LoadResult, server::Usage, T) {
    let host = load::authority(&server.base);
    load::run(
        host,
        args.concurrency,
        2_000,
        Duration::from_secs(5),
        expect,
        make.clone(),
    )
    .await;
    let also = also().await;
    let before = server.usage();
    let r = load::run(
        host,
        args.concurrency,
        args.requests,
        Duration::from_secs(args.seconds),
        expect,
        make,
    )
    .await;
    (r, before, also)
}

async fn noop(args: &Args) -> anyhow::Result<Row> {
    let server = Server::start(&[("SWITCHBOARD_DISPATCH_PAUSED", "true".into())])?;
    let host = load::authority(&server.base).to_owned();
    let make: MakeRequest = Arc::new(move |_, b: &mut Vec<u8>| load::get(b, &host, "/healthz"));
    let (r, before, ()) = warm_then_measure(args, &server, make, 200, || async {}).await;
    let mut row = Row::http(
        "noop",
        "GET /healthz (same server stack)",
        &r,
        before,
        server.usage(),
    );
    row.notes = "the ceiling of this machine's HTTP path".into();
    Ok(row)
}

async fn accept(
    args: &Args,
    scenario: &str,
    env: &[(&str, String)],
    db: Option<&Backends>,
) -> anyhow::Result<Row> {
    let mut env = env.to_vec();
    env.push(("SWITCHBOARD_DISPATCH_PAUSED", "true".into()));
    let server = Server::start(&env)?;
    let key = workspace(&server.base).await?;
    let make = message_request(&server.base, &key, args.contacts);
    let base = server.base.clone();
    let (r, before, (db_cpu, waits_before)) =
        warm_then_measure(args, &server, make, 202, || async {
            (DbCpu::start(db).await, AcceptWaits::read(&base).await)
        })
        .await;
    let db_used = db_cpu.used();
    // Where the measured accepts waited in the server (not the warm-up's).
    let waits = AcceptWaits::read(&server.base)
        .await
        .zip(waits_before)
        .map(|(after, before)| after.since(&before));
    let mut row = Row::http(
        scenario,
        "POST /v1/messages, 202 after COMMIT",
        &r,
        before,
        server.usage(),
    );
    row.db_cpu_percent = db_used.map(|cpu| 100.0 * cpu / r.elapsed.as_secs_f64().max(1e-9));
    row.notes = match group_commits(&server.base).await {
        Some((commits, writes, rechecked)) => format!(
            "dispatch paused; {:.0} writes per commit{}",
            writes / commits.max(1.0),
            rechecked_note(db, rechecked)
        ),
        None => "dispatch paused: the accept path alone".into(),
    };
    if let Some(note) = waits.as_ref().and_then(AcceptWaits::note) {
        row.notes = format!("{}; {note}", row.notes);
    }
    row.extra = json!({"accept_waits": waits.map(|w| w.json())});
    Ok(row)
}

/// The issue's bare accept probe (`switchboard-bare`): `accept`'s requests
/// against axum, serde and one SQLite writer, nothing else. Not a build
/// under test: the floor of a durable accept on this machine, beside
/// `noop`'s ceiling.
async fn accept_bare(args: &Args) -> anyhow::Result<Row> {
    let mut row = bare(
        args,
        "accept-bare",
        "POST /v1/messages on the bare probe (axum, serde, one SQLite writer)",
        None,
    )
    .await?;
    row.notes = if args.bare_with.is_empty() {
        "the issue's bare probe: one table, fsync per commit; no keys, validation, idempotency or indexes".into()
    } else {
        format!(
            "the issue's bare probe with {}; fsync per commit",
            args.bare_with
        )
    };
    Ok(row)
}

/// The bare probe on PostgreSQL (`switchboard-bare --database-url`): the
/// issue's "bare group-commit probe", one multi-row insert per batch, in
/// a schema of its own; the floor `accept-pg` is read against.
async fn accept_pg_bare(args: &Args) -> anyhow::Result<Row> {
    let Some(url) = &args.database_url else {
        bail!("accept-pg-bare needs --database-url (or SWITCHBOARD_BENCH_DATABASE_URL)");
    };
    let schema = Schema::create_async(url, "bare").await?;
    let backends = Backends::of(url, &schema);
    let row = async {
        let server_url = pg_url_for_server(args, backends.server_url(&schema)).await?;
        bare(
            args,
            "accept-pg-bare",
            "POST /v1/messages on the bare probe, PostgreSQL (one multi-row insert per batch)",
            Some((&server_url, &backends)),
        )
        .await
    }
    .await;
    tokio::task::spawn_blocking(move || drop(schema)).await?;
    let mut row = row?;
    row.notes = "the issue's bare group-commit probe on PostgreSQL: one table, one insert per batch, synchronous commit".into();
    Ok(row.on_postgres().with_pg_latency(args))
}

/// Runs `accept`'s requests against the bare probe, on SQLite or, given
/// its URL and backends, on PostgreSQL.
async fn bare(
    args: &Args,
    scenario: &str,
    what: &str,
    pg: Option<(&str, &Backends)>,
) -> anyhow::Result<Row> {
    let server = Server::start_bare(&args.bare_with, pg.map(|(url, _)| url))?;
    let make = message_request(&server.base, "none", args.contacts);
    let db = pg.map(|(_, backends)| backends);
    let (r, before, db_cpu) =
        warm_then_measure(args, &server, make, 202, || DbCpu::start(db)).await;
    let mut row = Row::http(scenario, what, &r, before, server.usage());
    row.db_cpu_percent = db_cpu
        .used()
        .map(|cpu| 100.0 * cpu / r.elapsed.as_secs_f64().max(1e-9));
    Ok(row)
}

/// ", N batches rechecked" on PostgreSQL (`group_commits`), nothing on
/// SQLite, which never stores accepts blind.
fn rechecked_note(db: Option<&Backends>, rechecked: f64) -> String {
    match db {
        Some(_) => format!(", {rechecked:.0} batches rechecked"),
        None => String::new(),
    }
}

/// The writer's commits, the writes they carried, and the batches whose
/// blind accepts were refused and run again (PostgreSQL), from `/metrics`.
async fn group_commits(base: &str) -> Option<(f64, f64, f64)> {
    let text = server::metrics(base).await?;
    let metric = |series| server::metric(&text, series);
    Some((
        metric("switchboard_group_commits_total")?,
        metric("switchboard_group_commit_jobs_total")?,
        metric("switchboard_group_commit_rechecked_total")?,
    ))
}

use switchboard_store::sql::scratch::ScratchSchema as Schema;

/// A PostgreSQL scenario: `run` against a schema of its own on
/// `--database-url` (the server's environment names it; `Backends` are its
/// connections, whose CPU is read), dropped after.
async fn with_postgres(
    args: &Args,
    scenario: &str,
    run: impl AsyncFnOnce(&[(&str, String)], &Backends) -> anyhow::Result<Row>,
) -> anyhow::Result<Row> {
    let Some(url) = &args.database_url else {
        bail!("{scenario} needs --database-url (or SWITCHBOARD_BENCH_DATABASE_URL)");
    };
    let schema = Schema::create_async(url, "bench").await?;
    let backends = Backends::of(url, &schema);
    let server_url = pg_url_for_server(args, backends.server_url(&schema)).await?;
    let row = run(&[("SWITCHBOARD_DATABASE_URL", server_url)], &backends).await;
    tokio::task::spawn_blocking(move || drop(schema)).await?;
    row.map(|r| r.on_postgres().with_pg_latency(args))
}

async fn accept_pg(args: &Args) -> anyhow::Result<Row> {
    with_postgres(args, "accept-pg", async |env, db| {
        accept(args, "accept-pg", env, Some(db)).await
    })
    .await
}

/// The server's PostgreSQL backends, for their CPU: found by the
/// application name its connections carry (the scratch schema's, unique
/// to the run), their CPU time read from `/proc` when PostgreSQL runs on
/// this machine.
struct Backends {
    base: String,
    application_name: String,
}

impl Backends {
    fn of(base: &str, schema: &Schema) -> Backends {
        Backends {
            base: base.to_owned(),
            application_name: schema.name().to_owned(),
        }
    }

    /// The schema's URL with the application name set.
    fn server_url(&self, schema: &Schema) -> String {
        format!(
            "{}&application_name={}",
            schema.url(),
            self.application_name
        )
    }

    /// The backends' process ids (the server's connections are made at
    /// its start, so they are read once).
    async fn pids(&self) -> Option<Vec<u32>> {
        let (base, app) = (self.base.clone(), self.application_name.clone());
        tokio::task::spawn_blocking(move || {
            switchboard_store::sql::scratch::backend_pids(&base, &app)
        })
        .await
        .ok()?
        .ok()
    }
}

/// The CPU the server's PostgreSQL backends use from a start on; nothing
/// without `Backends`, or when they cannot be read (another host's
/// PostgreSQL, or no backend found).
struct DbCpu {
    pids: Vec<u32>,
    start: Option<f64>,
}

impl DbCpu {
    async fn start(db: Option<&Backends>) -> DbCpu {
        let pids = match db {
            Some(db) => db.pids().await.unwrap_or_default(),
            None => Vec::new(),
        };
        let start = seconds_of(&pids);
        DbCpu { pids, start }
    }

    /// CPU seconds used since the start.
    fn used(&self) -> Option<f64> {
        Some(seconds_of(&self.pids)? - self.start?)
    }
}

/// The CPU seconds of PostgreSQL processes so far; none if `pids` is empty
/// or one of them is not a PostgreSQL process of this machine (a process
/// id from another host's server may name one of this host's).
fn seconds_of(pids: &[u32]) -> Option<f64> {
    let mut total = 0.0;
    for pid in pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if comm.trim() != "postgres" {
            return None;
        }
        total += server::usage_of(*pid).cpu_seconds;
    }
    (!pids.is_empty()).then_some(total)
}

/// The database URL the server is given: `url`, or with
/// `--pg-latency-ms`, a delaying proxy in front of it.
async fn pg_url_for_server(args: &Args, url: String) -> anyhow::Result<String> {
    if args.pg_latency_ms == 0 {
        return Ok(url);
    }
    latency::in_front_of(&url, Duration::from_millis(args.pg_latency_ms)).await
}

/// A server whose simulator sends at once and reports each delivery
/// `receipt_delay_ms` later, with `env` (the database).
fn sim_server(receipt_delay_ms: u64, env: &[(&str, String)]) -> anyhow::Result<Server> {
    let mut server_env = vec![
        ("SWITCHBOARD_SIM_LATENCY_MS", "0".to_owned()),
        (
            "SWITCHBOARD_SIM_RECEIPT_DELAY_MS",
            receipt_delay_ms.to_string(),
        ),
    ];
    server_env.extend(env.iter().cloned());
    Server::start(&server_env)
}

/// `e2e` on PostgreSQL (no target: the one-node figure is SQLite's).
async fn e2e_pg(args: &Args) -> anyhow::Result<Row> {
    let args = Args {
        messages: args.pg_messages,
        ..args.clone()
    };
    with_postgres(&args, "e2e-pg", async |env, db| {
        e2e(&args, "e2e-pg", false, env, Some(db)).await
    })
    .await
}

/// Messages submitted → sim → delivered → the receiver; `all_events` picks
/// the receiver's subscription (terminal events, or every event); `env`
/// goes to the server (the database).
async fn e2e(
    args: &Args,
    scenario: &str,
    all_events: bool,
    env: &[(&str, String)],
    db: Option<&Backends>,
) -> anyhow::Result<Row> {
    let mut server = sim_server(50, env)?;
    let key = workspace(&server.base).await?;
    let n = args.messages;
    // Subscribed to every event, a message makes four deliveries
    // (`message.queued` to `message.delivered`); to the terminal ones, one.
    let receiver = Receiver::start(if all_events { 4 * n } else { n }, n).await?;
    tenants(
        &server.base,
        args.tenants,
        &format!("{}/idle", receiver.base),
    )
    .await?;
    let events = (!all_events).then(|| vec!["message.delivered", "message.failed"]);
    let (_, secret) = create_endpoint(
        &server.base,
        &key,
        &format!("{}/hook/0", receiver.base),
        events,
    )
    .await?;
    receiver.endpoint(0, &secret)?;
    let db_cpu = DbCpu::start(db).await;
    let before = server.usage();
    let started = Instant::now();
    // Submit with fixed concurrency, remembering when each message went in.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let make = message_request(&server.base, &key, args.contacts);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (next, make) = (next.clone(), make.clone());
        let mut conn = load::Conn::new(load::authority(&server.base));
        tasks.push(tokio::spawn(async move {
            let mut request = Vec::with_capacity(512);
            let mut out = Vec::new();
            let mut answered = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                request.clear();
                make(i, &mut request);
                let t = Instant::now();
                match conn.send(&request).await {
                    Ok(r) if r.status == 202 => {
                        answered.push(t.elapsed().as_micros() as u64);
                        #[derive(serde::Deserialize)]
                        struct Accepted<'a> {
                            #[serde(borrow)]
                            id: std::borrow::Cow<'a, str>,
                        }
                        match serde_json::from_slice::<Accepted>(r.body) {
                            Ok(a) => out.push((a.id.into_owned(), t)),
                            Err(_) => errors += 1,
                        }
                    }
                    _ => errors += 1,
                }
            }
            (out, errors, answered)
        }));
    }
    let mut submitted: HashMap<String, Instant> = HashMap::with_capacity(n);
    let mut submit_errors = 0;
    // How long each 202 took (µs): in a closed loop the submit rate is
    // the concurrency over this.
    let mut answers: Vec<u64> = Vec::with_capacity(n);
    for t in tasks {
        let (out, errors, answered) = t.await?;
        submit_errors += errors;
        submitted.extend(out);
        answers.extend(answered);
    }
    answers.sort_unstable();
    let answer_ms = |q| quantile(&answers, q) as f64 / 1000.0;
    let submit_elapsed = started.elapsed();
    // Wait for every terminal webhook (bounded), showing progress.
    let deadline = Instant::now() + Duration::from_secs(120 + n as u64 / 500);
    let mut last_print = Instant::now();
    loop {
        let (_, _, terminal) = receiver.counts();
        if terminal >= submitted.len() || Instant::now() >= deadline {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {scenario}: {terminal}/{} terminal webhooks…",
                submitted.len()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Where the CPU went, over the run to its last terminal webhook.
    let drained = server.usage();
    // Let stragglers (duplicates, the every-event tail) arrive briefly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.usage();
    let db_used = db_cpu.used();
    let seen = receiver.seen();
    let mut lat: Vec<u64> = submitted
        .iter()
        .filter_map(|(id, t)| {
            seen.terminal
                .get(id)
                .map(|d| d.duration_since(*t).as_micros() as u64)
        })
        .collect();
    lat.sort_unstable();
    let last_terminal = seen.terminal.values().max().copied().unwrap_or(started);
    let wall = last_terminal.duration_since(started);
    let lost = submitted.len() - lat.len();
    // Every write of the run (and the few of its setup): how the drain's
    // stages batched, which sets what each message costs the disk.
    let commits = group_commits(&server.base).await;
    let waits = AcceptWaits::read(&server.base).await;
    let _dir = server.keep_dir();
    let data_dir = server.stop();
    let (sends, repeated) = server::ledger(&data_dir)?;
    let duplicate_sends = sends.saturating_sub(submitted.len());
    let cpu = after.cpu_seconds - before.cpu_seconds;
    Ok(Row {
        scenario: scenario.into(),
        what: if all_events {
            "submit → sim → delivered → every event to the receiver".into()
        } else {
            "submit → sim → delivered → terminal webhook".into()
        },
        count: lat.len(),
        errors: submit_errors,
        per_second: lat.len() as f64 / wall.as_secs_f64().max(1e-9),
        p50_ms: quantile(&lat, 0.50) as f64 / 1000.0,
        p99_ms: quantile(&lat, 0.99) as f64 / 1000.0,
        max_ms: quantile(&lat, 1.0) as f64 / 1000.0,
        server_cpu_seconds: cpu,
        server_cpu_percent: 100.0 * cpu / wall.as_secs_f64().max(1e-9),
        server_peak_rss_mb: after.peak_rss_mb,
        db_cpu_percent: db_used.map(|cpu| 100.0 * cpu / wall.as_secs_f64().max(1e-9)),
        server_disk_kb_per_op: Some(after.disk_kb_per(&before, lat.len())),
        writer: Writer::default(),
        cpu: server::CpuSplit::default(),
        notes: format!(
            "lost {lost}, duplicate sends {duplicate_sends}, repeated provider calls {repeated}, bad signatures {}; 202 in {:.2} ms p50, {:.2} ms p99; {}",
            seen.bad_signatures,
            answer_ms(0.5),
            answer_ms(0.99),
            match commits {
                Some((commits, writes, rechecked)) => format!(
                    "{:.1} writes per commit, {:.2} commits per message{}",
                    writes / commits.max(1.0),
                    commits / submitted.len().max(1) as f64,
                    rechecked_note(db, rechecked)
                ),
                None => "group commits not read (/metrics did not answer)".into(),
            },
        ) + &waits
            .as_ref()
            .and_then(AcceptWaits::note)
            .map(|n| format!("; {n}"))
            .unwrap_or_default(),
        extra: json!({
            "submitted": submitted.len(),
            "submit_seconds": submit_elapsed.as_secs_f64(),
            "accept_p50_ms": answer_ms(0.5),
            "accept_p99_ms": answer_ms(0.99),
            "lost": lost,
            "duplicate_sends": duplicate_sends,
            "repeated_provider_calls": repeated,
            "webhook_deliveries": seen.deliveries,
            "distinct_events": seen.distinct,
            "bad_signatures": seen.bad_signatures,
            "sim_receipt_delay_ms": 50,
            "group_commits": commits.map(|c| c.0),
            "group_commit_writes": commits.map(|c| c.1),
            "accept_waits": waits.map(|w| w.json()),
        }),
    }
    .with_threads(&before, &after)
    .with_cpu_split(drained.cpu_split(&before)))
}

/// `webhooks` on PostgreSQL (no target: the figure is SQLite's).
async fn webhooks_pg(args: &Args) -> anyhow::Result<Row> {
    with_postgres(args, "webhooks-pg", async |env, db| {
        webhooks(args, "webhooks-pg", env, Some(db)).await
    })
    .await
}

/// The events of `--fanout-messages` delivered messages, redelivered by
/// range to `--endpoints` endpoints at once; `env` goes to the server (the
/// database).
async fn webhooks(
    args: &Args,
    scenario: &str,
    env: &[(&str, String)],
    db: Option<&Backends>,
) -> anyhow::Result<Row> {
    let server = sim_server(10, env)?;
    let key = workspace(&server.base).await?;
    let since = jiff::Timestamp::now();
    let make = message_request(&server.base, &key, args.contacts);
    let r = load::run(
        load::authority(&server.base),
        args.concurrency,
        args.fanout_messages,
        Duration::from_secs(120),
        202,
        make,
    )
    .await;
    // Wait until every message is delivered, so no more events appear.
    let client = load::client();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = server::metrics(&server.base)
            .await
            .context("the server's /metrics did not answer")?;
        let delivered = server::metric(&m, "switchboard_messages{status=\"delivered\"}")
            .map_or(0, |n| n as usize);
        if delivered >= r.ok || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A delivered message's four events, to every endpoint.
    let receiver = Receiver::start(
        args.fanout_messages * 4 * args.endpoints,
        args.fanout_messages,
    )
    .await?;
    let mut ids = Vec::new();
    for n in 0..args.endpoints {
        let (id, secret) = create_endpoint(
            &server.base,
            &key,
            &format!("{}/hook/{n}", receiver.base),
            None,
        )
        .await?;
        receiver.endpoint(n, &secret)?;
        ids.push(id);
    }
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
    let db_cpu = DbCpu::start(db).await;
    let before = server.usage();
    let started = Instant::now();
    let mut queued = 0;
    for id in &ids {
        let v: Value = client
            .post(format!("{}/v1/webhooks/{id}/redeliver", server.base))
            .bearer_auth(&key)
            .json(&json!({"since": since.to_string(), "until": until.to_string()}))
            .send()
            .await?
            .json()
            .await?;
        queued += v["queued"].as_u64().unwrap_or(0) as usize;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (deliveries, _, _) = receiver.counts();
        if deliveries >= queued || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = server.usage();
    let db_used = db_cpu.used();
    let seen = receiver.seen();
    let wall = seen.last.unwrap_or(started).duration_since(started);
    let cpu = after.cpu_seconds - before.cpu_seconds;
    Ok(Row {
        scenario: scenario.into(),
        what: format!("signed deliveries, {} endpoints", args.endpoints),
        count: seen.deliveries,
        errors: queued.saturating_sub(seen.deliveries) + seen.bad_signatures,
        per_second: seen.deliveries as f64 / wall.as_secs_f64().max(1e-9),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        max_ms: f64::NAN,
        server_cpu_seconds: cpu,
        server_cpu_percent: 100.0 * cpu / wall.as_secs_f64().max(1e-9),
        server_peak_rss_mb: after.peak_rss_mb,
        db_cpu_percent: db_used.map(|cpu| 100.0 * cpu / wall.as_secs_f64().max(1e-9)),
        server_disk_kb_per_op: Some(after.disk_kb_per(&before, seen.deliveries)),
        writer: Writer::default(),
        cpu: server::CpuSplit::default(),
        notes: format!(
            "{queued} queued by range redelivery; bad signatures {}",
            seen.bad_signatures
        ),
        extra: json!({"queued": queued, "messages": r.ok}),
    }
    .with_threads(&before, &after))
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<10} {:>9} {:>7} {:>11} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>9}  notes",
        "scenario",
        "count",
        "errors",
        "per second",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cpu %",
        "db cpu %",
        "rss MB",
        "disk KB",
        "writer %"
    );
    for r in rows {
        let ms = |v: f64| {
            if v.is_nan() {
                "-".to_owned()
            } else {
                format!("{v:.2}")
            }
        };
        let disk = r
            .server_disk_kb_per_op
            .map_or_else(|| "-".to_owned(), |kb| format!("{kb:.2}"));
        let db_cpu = r
            .db_cpu_percent
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.0}"));
        // On a CPU + waiting for one.
        let writer = match (r.writer.writer_cpu_percent, r.writer.writer_wait_percent) {
            (Some(run), Some(wait)) => format!("{run:.0}+{wait:.0}"),
            _ => "-".to_owned(),
        };
        println!(
            "{:<10} {:>9} {:>7} {:>11.0} {:>8} {:>8} {:>8} {:>7.0} {:>8} {:>8.1} {:>8} {:>9}  {}",
            r.scenario,
            r.count,
            r.errors,
            r.per_second,
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.max_ms),
            r.server_cpu_percent,
            db_cpu,
            r.server_peak_rss_mb,
            disk,
            writer,
            r.notes
        );
    }
}

/// Where the machine's CPU went in each row's run, in percent of one core
/// (the machine's cores add up to 100 each): the server's threads by group,
/// this program (load generator and receiver), and what was idle or taken
/// by the hypervisor. A figure the run could not read shows as `-`.
fn print_cpu_table(rows: &[Row]) {
    const GROUPS: [&str; 6] = [
        "tokio",
        "writer",
        "sync",
        "checkpoint",
        "sim ledger",
        "other",
    ];
    println!("\nWhere the CPU went (percent of one core; the server's threads by group):\n");
    print!("{:<14}", "scenario");
    for g in GROUPS {
        print!(" {g:>10}");
    }
    println!(
        " {:>10} {:>10} {:>10} {:>10}",
        "server", "bench", "idle", "steal"
    );
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    for r in rows {
        let t = &r.cpu.server_threads;
        print!("{:<14}", r.scenario);
        for g in GROUPS {
            print!(" {:>10}", pct(t.get(g).copied()));
        }
        let server = (!t.is_empty()).then(|| t.values().sum::<f64>());
        println!(
            " {:>10} {:>10} {:>10} {:>10}",
            pct(server),
            pct(r.cpu.bench_cpu_percent),
            pct(r.cpu.machine_idle_percent),
            pct(r.cpu.machine_steal_percent)
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let mut wanted: Vec<String> = args.scenarios.clone();
    if wanted.iter().any(|s| s == "all") {
        wanted = [
            "noop",
            "accept",
            "accept-bare",
            "accept-pg",
            "accept-pg-bare",
            "e2e",
            "e2e-all",
            "e2e-pg",
            "webhooks",
            "webhooks-pg",
        ]
        .map(String::from)
        .to_vec();
        if args.database_url.is_none() {
            wanted.retain(|s| !s.ends_with("-pg") && s != "accept-pg-bare");
            eprintln!(
                "accept-pg, accept-pg-bare, e2e-pg and webhooks-pg skipped: no --database-url"
            );
        }
    }
    if let Some(b) = &args.baseline
        && !b.is_file()
    {
        bail!("--baseline {}: no such file", b.display());
    }
    if let Some(b) = &args.server {
        if !b.is_file() {
            bail!("--server {}: no such file", b.display());
        }
        server::use_binary(Some(b.clone()));
    }
    if args.graceful_stop {
        server::stop_gracefully();
    }
    let machine = machine();
    eprintln!("machine: {machine}");
    let mut rounds: Vec<Vec<Row>> = Vec::new();
    let mut pairs: Vec<compare::Pair> = Vec::new();
    for round in 1..=args.rounds {
        let mut rows = Vec::new();
        for s in &wanted {
            if args.rounds > 1 {
                eprintln!("round {round} of {}: running {s}…", args.rounds);
            } else {
                eprintln!("running {s}…");
            }
            // The bare probes are not builds: they run once, unpaired.
            let Some(baseline) = args.baseline.as_ref().filter(|_| !s.ends_with("-bare")) else {
                let row = scenario(&args, s).await?;
                print_table(std::slice::from_ref(&row));
                rows.push(row);
                continue;
            };
            let (theirs, ours) = if round % 2 == 1 {
                let theirs = scenario_on(&args, s, Some(baseline)).await?;
                (theirs, scenario_on(&args, s, None).await?)
            } else {
                let ours = scenario_on(&args, s, None).await?;
                (scenario_on(&args, s, Some(baseline)).await?, ours)
            };
            // A pair in which either side had errors compares nothing.
            let clean = ours.errors == 0 && theirs.errors == 0;
            pairs.push(compare::Pair {
                scenario: s.clone(),
                round,
                baseline: if clean { theirs.per_second } else { 0.0 },
                this: ours.per_second,
                baseline_writer_us: theirs.writer.writer_cpu_us_per_op.filter(|_| clean),
                this_writer_us: ours.writer.writer_cpu_us_per_op,
            });
            rows.push(ours);
        }
        if args.rounds > 1 {
            println!("\nRound {round} of {}:", args.rounds);
            print_table(&rows);
        }
        rounds.push(rows);
    }
    let rows = medians(&rounds);
    if args.rounds > 1 {
        println!(
            "\nMedian of {} rounds (concurrency {}):",
            args.rounds, args.concurrency
        );
    } else {
        println!("\nAll results (concurrency {}):", args.concurrency);
    }
    print_table(&rows);
    print_cpu_table(&rows);
    // Over several rounds the medians may come from different rounds: the
    // targets' table gives each round's own ratio instead.
    if let (1, Some(noop), Some(accept)) = (
        args.rounds,
        rows.iter().find(|r| r.scenario == "noop"),
        rows.iter().find(|r| r.scenario == "accept"),
    ) {
        println!(
            "\naccept / noop = {:.0}% (target ≥ 50%, accept p99 ≤ 10 ms)",
            100.0 * accept.per_second / noop.per_second
        );
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|p| format!("{p:.0}%"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bare = targets::shares(&rounds, "accept-bare", "noop");
    if !bare.is_empty() {
        let accept = targets::shares(&rounds, "accept", "noop");
        let beside = if accept.is_empty() {
            String::new()
        } else {
            format!(" (accept {})", list(&accept))
        };
        println!(
            "\nThe bare probe's floor of a durable accept, round by round: accept-bare {} of noop{beside}",
            list(&bare)
        );
    }
    let pg = targets::shares(&rounds, "accept-pg", "accept-pg-bare");
    if !pg.is_empty() {
        println!(
            "accept-pg as a share of the bare probe on PostgreSQL, round by round: {}",
            list(&pg)
        );
    }
    let verdicts = targets::verdicts(&rounds);
    targets::print(&verdicts);
    let comparisons = compare::compare(&pairs);
    if let Some(b) = &args.baseline {
        compare::print(b, &comparisons);
    }
    std::fs::create_dir_all(&args.out)?;
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let doc = json!({
        "when": jiff::Timestamp::now().to_string(),
        "machine": machine,
        "concurrency": args.concurrency,
        "contacts": args.contacts,
        "tenants": args.tenants,
        "rounds": args.rounds,
        "rows": rows,
        "targets": verdicts,
        "all_rounds": if args.rounds > 1 { json!(rounds) } else { Value::Null },
        "baseline": match &args.baseline {
            Some(b) => json!({"binary": b, "pairs": pairs, "comparison": comparisons}),
            None => Value::Null,
        },
        // This run's build when it is not the binary beside the program.
        "server": args.server,
    });
    let text = serde_json::to_string_pretty(&doc)?;
    let path = args.out.join(format!("{stamp}.json"));
    std::fs::write(&path, &text)?;
    std::fs::write(args.out.join("latest.json"), &text)?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

/// Runs one scenario on the server binary `bin` (`--baseline`), or on
/// this build (`--server`, or the one beside this program), and prints its
/// row under which it was.
async fn scenario_on(
    args: &Args,
    name: &str,
    bin: Option<&std::path::Path>,
) -> anyhow::Result<Row> {
    server::use_binary(
        bin.map(std::path::Path::to_path_buf)
            .or_else(|| args.server.clone()),
    );
    let row = scenario(args, name).await;
    server::use_binary(args.server.clone());
    let row = row?;
    println!(
        "{}",
        if bin.is_some() {
            "baseline:"
        } else {
            "this build:"
        }
    );
    print_table(std::slice::from_ref(&row));
    Ok(row)
}

/// Runs one scenario by name.
async fn scenario(args: &Args, name: &str) -> anyhow::Result<Row> {
    match name {
        "noop" => noop(args).await,
        "accept" => accept(args, "accept", &[], None).await,
        "accept-bare" => accept_bare(args).await,
        "accept-pg-bare" => accept_pg_bare(args).await,
        "accept-pg" => accept_pg(args).await,
        "e2e" => e2e(args, "e2e", false, &[], None).await,
        "e2e-all" => e2e(args, "e2e-all", true, &[], None).await,
        "e2e-pg" => e2e_pg(args).await,
        "webhooks" => webhooks(args, "webhooks", &[], None).await,
        "webhooks-pg" => webhooks_pg(args).await,
        other => bail!("unknown scenario {other:?}"),
    }
}

/// Each scenario's median round by rate (the lower middle of an even
/// count), noting the range when there were several rounds.
fn medians(rounds: &[Vec<Row>]) -> Vec<Row> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|r| {
            let mut runs: Vec<&Row> = rounds
                .iter()
                .filter_map(|round| round.iter().find(|x| x.scenario == r.scenario))
                .collect();
            runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
            let mut median = runs[(runs.len() - 1) / 2].clone();
            if runs.len() > 1 {
                median.notes = format!(
                    "median of {} rounds ({:.0}–{:.0}/s); {}",
                    runs.len(),
                    runs[0].per_second,
                    runs[runs.len() - 1].per_second,
                    median.notes
                );
            }
            median
        })
        .collect()
}

/// What one durable commit costs this machine's disk: the latency of
/// `fdatasync` after appending 4 KB (one page) and 192 KB (about what a
/// commit of 25 accepts writes to the WAL), in the directory the servers'
/// data directories are made in. 200 syncs of each, at most 3 s each.
fn disk_probe() -> Value {
    use std::io::Write;
    let probe = |bytes: usize| -> Option<Value> {
        let dir = tempfile::tempdir().ok()?;
        let mut f = std::fs::File::create(dir.path().join("probe")).ok()?;
        let page = vec![0x5a_u8; bytes];
        let started = Instant::now();
        let mut lat = Vec::with_capacity(200);
        while lat.len() < 200 && started.elapsed() < Duration::from_secs(3) {
            f.write_all(&page).ok()?;
            let t = Instant::now();
            f.sync_data().ok()?;
            lat.push(t.elapsed().as_micros() as u64);
        }
        lat.sort_unstable();
        Some(json!({
            "kb": bytes / 1024,
            "syncs": lat.len(),
            "p50_ms": quantile(&lat, 0.50) as f64 / 1000.0,
            "p99_ms": quantile(&lat, 0.99) as f64 / 1000.0,
        }))
    };
    json!([probe(4096), probe(192 * 1024)])
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpus": cpus,
        "cpu_model": model,
        "os": std::env::consts::OS,
        "fdatasync": disk_probe(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(contact: u64) -> String {
        let (exchange, line) = recipient(contact);
        format!("+1415{exchange:03}{line:04}")
    }

    #[test]
    fn every_contact_has_a_valid_number_the_simulator_delivers() {
        // The first and last line of every exchange, and a contact in between.
        let contacts = (0..MAX_CONTACTS / 9_000)
            .flat_map(|e| [e * 9_000, e * 9_000 + 4_321, e * 9_000 + 8_999]);
        for contact in contacts {
            let to = number(contact);
            let parsed = switchboard_core::phone::PhoneNumber::parse(&to);
            assert_eq!(
                parsed.map(|p| p.to_string()),
                Ok(to.clone()),
                "contact {contact}"
            );
            assert_eq!(
                switchboard_providers::sim::behaviour_for(&to),
                switchboard_providers::sim::Behaviour::Deliver,
                "{to}"
            );
        }
    }

    #[test]
    fn contacts_have_numbers_of_their_own() {
        let mut seen = std::collections::HashSet::new();
        for contact in (0..MAX_CONTACTS).step_by(997).chain([MAX_CONTACTS - 1]) {
            assert!(seen.insert(number(contact)), "contact {contact}");
        }
        assert_eq!(number(0), "+14152001000");
        assert_eq!(number(MAX_CONTACTS - 1), "+14158999999");
    }
}
