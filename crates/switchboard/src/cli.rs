//! The command line: `serve`, and admin commands that work on a stopped
//! gateway's data directory directly or on a running one over HTTP.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use switchboard_core::{Clock, SystemClock};
use switchboard_store::sql::SqlStore;
use switchboard_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::config::{Config, Secret};

/// Switchboard: a messaging gateway between CRMs and SMS/WhatsApp providers.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite database and simulator ledger).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL instead of the embedded SQLite:
    /// `postgres://user@host:5432/db` (default: SWITCHBOARD_DATABASE_URL).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: API and workers in one process.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// What this node does: `all` (default), `api` (HTTP API only) or
        /// `worker` (sending, receipts, webhooks). Needs --database-url
        /// unless `all`.
        #[arg(long, value_name = "ROLE")]
        role: Option<crate::config::Role>,
        #[command(flatten)]
        common: Common,
    },
    /// Apply the database migrations and exit (they are also applied at start).
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Manage workspaces.
    Workspace {
        #[command(subcommand)]
        action: WorkspaceAction,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        remote: Remote,
    },
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        remote: Remote,
    },
    /// Manage provider instances (Twilio accounts, WhatsApp numbers).
    Provider {
        #[command(subcommand)]
        action: ProviderAction,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        remote: Remote,
    },
    /// Manage a workspace's senders (its addresses, and their failover order).
    Sender {
        #[command(subcommand)]
        action: SenderAction,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        remote: Remote,
    },
    /// Manage the AutomateNexus rules of a workspace, on a running gateway.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
        #[command(flatten)]
        common: Common,
    },
    /// Import or export consent (suppression lists) as CSV, on a running gateway.
    Contacts {
        #[command(subcommand)]
        action: ContactsAction,
        #[command(flatten)]
        common: Common,
    },
    /// Inspect the built-in simulator.
    Sim {
        #[command(subcommand)]
        action: SimAction,
        #[command(flatten)]
        common: Common,
    },
}

/// How to reach a running gateway when its data directory is in use.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// Base URL of the running gateway (default: http:// + the configured listen address).
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Admin token (default: SWITCHBOARD_ADMIN_TOKEN).
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "SWITCHBOARD_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

/// Workspace commands.
#[derive(Debug, Subcommand)]
pub enum WorkspaceAction {
    /// Create a workspace (it can send through the simulator at once).
    Create {
        /// Display name.
        name: String,
    },
    /// List workspaces.
    List,
}

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Create an API key; the secret is printed once.
    Create {
        /// Workspace id (`ws_…`).
        workspace: String,
    },
    /// List a workspace's keys (hints only, never secrets).
    List {
        /// Workspace id (`ws_…`).
        workspace: String,
    },
    /// Revoke a key: it is refused from then on.
    Revoke {
        /// Workspace id (`ws_…`).
        workspace: String,
        /// Key id (`key_…`).
        key: String,
    },
}

/// Provider commands.
#[derive(Debug, Subcommand)]
pub enum ProviderAction {
    /// Add a provider. Prints its id and the callback URL to give the provider.
    ///
    /// Example: `switchboard provider add twilio --set account_sid=AC…
    /// --credential auth_token=env:TWILIO_AUTH_TOKEN`
    Add {
        /// `twilio` or `whatsapp_cloud`.
        kind: String,
        #[command(flatten)]
        settings: ProviderSettings,
    },
    /// List providers (credentials as hints only).
    List,
    /// Show one provider.
    Show {
        /// Provider id (`pr_…`).
        id: String,
    },
    /// Change a provider: only what is given changes (rotate one credential alone).
    Update {
        /// Provider id (`pr_…`).
        id: String,
        #[command(flatten)]
        settings: ProviderSettings,
    },
    /// Remove a provider that no sender uses.
    Remove {
        /// Provider id (`pr_…`).
        id: String,
    },
}

/// A provider's settings on the command line.
#[derive(Debug, Clone, Args)]
pub struct ProviderSettings {
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// A setting, `key=value` (repeatable); a JSON number or boolean is
    /// taken as such, `key=` removes it.
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A secret, `key=value` (repeatable). The value may be `env:NAME` (read
    /// from the environment) or `file:PATH` (read from a file), which keeps
    /// it out of the shell's history.
    #[arg(long, value_name = "KEY=VALUE")]
    pub credential: Vec<String>,
    /// Transport or throttle failures before a message fails over to the
    /// channel's next sender (default 2).
    #[arg(long)]
    pub attempt_budget: Option<u32>,
    /// Throughput limit, sends per second across all nodes.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Burst of the throughput limit (default: the rate).
    #[arg(long)]
    pub burst: Option<f64>,
}

/// Sender commands.
#[derive(Debug, Subcommand)]
pub enum SenderAction {
    /// Add an address a workspace sends from, through a provider.
    Add {
        /// Workspace id (`ws_…`).
        workspace: String,
        /// Provider id (`pr_…`).
        #[arg(long)]
        provider: String,
        /// The address: an E.164 number, an alphanumeric id, …
        #[arg(long)]
        address: String,
        /// Channel (default sms).
        #[arg(long)]
        channel: Option<String>,
        /// Make it the channel's default sender (first in its failover route).
        #[arg(long)]
        default: bool,
        /// Place in the channel's failover route after the default (lower first; default 100).
        #[arg(long)]
        priority: Option<i64>,
    },
    /// List a workspace's senders, each channel in failover order.
    List {
        /// Workspace id (`ws_…`).
        workspace: String,
    },
    /// Remove a sender.
    Remove {
        /// Workspace id (`ws_…`).
        workspace: String,
        /// Sender id (`snd_…`).
        sender: String,
    },
}

/// AutomateNexus rule commands.
#[derive(Debug, Subcommand)]
pub enum RulesAction {
    /// Add a rule: when `event` arrives and every condition holds, send
    /// `template` to `to` (or the number at `to-path` in the event).
    ///
    /// Example: `switchboard rules add --event deal.stage_changed --equals
    /// data.new_stage=Negotiation --template deal_update --to +14155550199`
    Add {
        /// The event type, e.g. `deal.stage_changed`.
        #[arg(long)]
        event: String,
        /// The template to send (its name).
        #[arg(long)]
        template: String,
        /// A fixed recipient (E.164).
        #[arg(long)]
        to: Option<String>,
        /// Where the event holds the recipient, e.g. `data.phone`.
        #[arg(long)]
        to_path: Option<String>,
        /// Condition `PATH=VALUE` (repeatable); VALUE is JSON if it parses.
        #[arg(long, value_name = "PATH=VALUE")]
        equals: Vec<String>,
        /// Condition `PATH=A,B,…`: one of these (repeatable).
        #[arg(long = "in", value_name = "PATH=A,B")]
        one_of: Vec<String>,
        /// Condition: PATH is present (repeatable).
        #[arg(long, value_name = "PATH")]
        exists: Vec<String>,
        /// Where the event holds your reference, e.g. `data.id`.
        #[arg(long)]
        client_ref_path: Option<String>,
        #[command(flatten)]
        api: ApiAccess,
    },
    /// List the rules, in the order they are tried.
    List {
        #[command(flatten)]
        api: ApiAccess,
    },
    /// Remove a rule.
    Remove {
        /// Rule id (`rule_…`).
        id: String,
        #[command(flatten)]
        api: ApiAccess,
    },
}

/// Consent import and export.
#[derive(Debug, Subcommand)]
pub enum ContactsAction {
    /// Import a CSV with a `phone` column and optional `channel` (default
    /// sms), `state` (default opted_out) and `jurisdiction` columns.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Import the valid rows and report the others, instead of refusing the file.
        #[arg(long)]
        skip_invalid: bool,
        #[command(flatten)]
        api: ApiAccess,
    },
    /// Export recorded consent as CSV (phone, channel, state, source, jurisdiction, updated_at).
    Export {
        /// Only `opted_out` or `opted_in`.
        #[arg(long)]
        state: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        api: ApiAccess,
    },
}

/// How to reach a running gateway with a workspace key.
#[derive(Debug, Clone, Args)]
pub struct ApiAccess {
    /// Workspace API key (default: SWITCHBOARD_API_KEY).
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub key: String,
    /// Base URL of the gateway (default: http:// + the configured listen address).
    #[arg(long)]
    pub url: Option<String>,
}

/// Simulator commands.
#[derive(Debug, Subcommand)]
pub enum SimAction {
    /// Summarise the simulator's ledger: calls, sends and duplicates.
    Sends,
    /// Inject a reply from a recipient (as if the network delivered it);
    /// keywords such as STOP are handled. Talks to the running gateway.
    Reply {
        /// The replying number (E.164).
        #[arg(long)]
        from: String,
        /// The text of the reply.
        #[arg(long)]
        text: String,
        /// The workspace address it replies to.
        #[arg(long)]
        to: Option<String>,
        /// Channel (default sms).
        #[arg(long)]
        channel: Option<String>,
        /// Workspace API key (default: SWITCHBOARD_API_KEY).
        #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
        key: String,
        /// Base URL of the gateway (default: http:// + the configured listen address).
        #[arg(long)]
        url: Option<String>,
    },
}

fn load_config(common: &Common, listen: Option<std::net::SocketAddr>) -> anyhow::Result<Config> {
    let mut config = Config::load(common.config.as_deref(), std::env::vars())?;
    if let Some(dir) = &common.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(url) = &common.database_url {
        config.database_url = Some(Secret(url.clone()));
    }
    if let Some(addr) = listen {
        config.listen = addr;
    }
    config.validate()?;
    Ok(config)
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            role,
            common,
        } => {
            let mut config = load_config(&common, listen)?;
            if let Some(role) = role {
                config.role = role;
                config.validate()?;
            }
            serve(config).await
        }
        Command::Migrate { common } => {
            let config = load_config(&common, None)?;
            // Opening a store applies what is missing.
            let store = app::open_store(&config).await?;
            store.ping().await?;
            match &config.database_url {
                Some(_) => println!("PostgreSQL schema is up to date"),
                None => println!(
                    "SQLite schema in {} is up to date",
                    config.data_dir.display()
                ),
            }
            Ok(())
        }
        Command::Workspace {
            action,
            common,
            remote,
        } => {
            let config = load_config(&common, None)?;
            let admin = Admin::connect(&config, &remote).await?;
            let out = match action {
                WorkspaceAction::Create { name } => {
                    admin
                        .post("/v1/workspaces", Some(serde_json::json!({ "name": name })))
                        .await?
                }
                WorkspaceAction::List => admin.get("/v1/workspaces").await?,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Command::Rules { action, common } => {
            let config = load_config(&common, None)?;
            rules(action, &config).await
        }
        Command::Contacts { action, common } => {
            let config = load_config(&common, None)?;
            contacts(action, &config).await
        }
        Command::Key {
            action,
            common,
            remote,
        } => {
            let config = load_config(&common, None)?;
            let admin = Admin::connect(&config, &remote).await?;
            let out = match &action {
                KeyAction::Create { workspace } => {
                    admin
                        .post(&format!("/v1/workspaces/{}/keys", segment(workspace)), None)
                        .await?
                }
                KeyAction::List { workspace } => {
                    admin
                        .get(&format!("/v1/workspaces/{}/keys", segment(workspace)))
                        .await?
                }
                KeyAction::Revoke { workspace, key } => {
                    admin
                        .call(
                            reqwest::Method::DELETE,
                            &format!(
                                "/v1/workspaces/{}/keys/{}",
                                segment(workspace),
                                segment(key)
                            ),
                            None,
                        )
                        .await?
                }
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            if matches!(action, KeyAction::Create { .. }) {
                eprintln!("Store the key now: it is shown only once.");
            }
            Ok(())
        }
        Command::Provider {
            action,
            common,
            remote,
        } => {
            let config = load_config(&common, None)?;
            let admin = Admin::connect(&config, &remote).await?;
            provider(action, &admin).await
        }
        Command::Sender {
            action,
            common,
            remote,
        } => {
            let config = load_config(&common, None)?;
            let admin = Admin::connect(&config, &remote).await?;
            sender(action, &admin).await
        }
        Command::Sim {
            action:
                SimAction::Reply {
                    from,
                    text,
                    to,
                    channel,
                    key,
                    url,
                },
            common,
        } => {
            let config = load_config(&common, None)?;
            let url = url.unwrap_or_else(|| format!("http://{}", config.listen));
            let mut body = serde_json::json!({ "from": from, "text": text });
            if let Some(to) = to {
                body["to"] = Value::String(to);
            }
            if let Some(channel) = channel {
                body["channel"] = Value::String(channel);
            }
            let resp = reqwest::Client::new()
                .post(format!("{}/v1/sim/inbound", url.trim_end_matches('/')))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .with_context(|| format!("calling {url}"))?;
            let status = resp.status();
            let value: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!(
                    "{status}: {}",
                    value["error"]["message"]
                        .as_str()
                        .unwrap_or("unexpected answer")
                );
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        Command::Sim {
            action: SimAction::Sends,
            common,
        } => {
            let config = load_config(&common, None)?;
            let sends = switchboard_providers::sim::read_ledger(&config.data_dir)
                .context("reading the simulator's ledger")?;
            let accepted = sends
                .iter()
                .filter(|s| s.provider_message_id.is_some())
                .count();
            let calls: u64 = sends.iter().map(|s| u64::from(s.calls)).sum();
            let dup: u64 = sends.iter().map(|s| u64::from(s.calls_after_accept)).sum();
            println!(
                "messages seen   {}\nsends accepted  {accepted}\nprovider calls  {calls}\nrepeat calls after acceptance (deduplicated, not re-sent)  {dup}",
                sends.len()
            );
            Ok(())
        }
    }
}

/// Rows of an import file, checked: the valid records and the problems.
fn read_import(file: &std::path::Path) -> anyhow::Result<(Vec<Value>, Vec<String>)> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(file)
        .with_context(|| format!("reading {}", file.display()))?;
    let headers: Vec<String> = reader
        .headers()?
        .iter()
        .map(str::to_ascii_lowercase)
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let phone_col = col("phone").context("the CSV needs a `phone` column")?;
    let (channel_col, state_col, jurisdiction_col) =
        (col("channel"), col("state"), col("jurisdiction"));
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let get = |c: Option<usize>| c.and_then(|c| row.get(c)).filter(|v| !v.is_empty());
        let phone = row.get(phone_col).unwrap_or("");
        if let Err(e) = switchboard_core::PhoneNumber::parse(phone) {
            problems.push(format!("line {line}: phone {phone:?} {e}"));
            continue;
        }
        let channel = get(channel_col).unwrap_or("sms");
        if switchboard_core::Channel::parse(channel).is_none() {
            problems.push(format!("line {line}: unknown channel {channel:?}"));
            continue;
        }
        let state = get(state_col).unwrap_or("opted_out");
        if state != "opted_out" && state != "opted_in" {
            problems.push(format!(
                "line {line}: state {state:?} is not opted_in or opted_out"
            ));
            continue;
        }
        let mut rec = serde_json::json!({"phone": phone, "channel": channel, "state": state});
        if let Some(j) = get(jurisdiction_col) {
            rec["jurisdiction"] = Value::String(j.to_owned());
        }
        records.push(rec);
    }
    Ok((records, problems))
}

async fn contacts(action: ContactsAction, config: &Config) -> anyhow::Result<()> {
    let base = |api: &ApiAccess| {
        api.url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen))
            .trim_end_matches('/')
            .to_owned()
    };
    let client = reqwest::Client::new();
    match action {
        ContactsAction::Import {
            file,
            skip_invalid,
            api,
        } => {
            let (records, problems) = read_import(&file)?;
            for p in problems.iter().take(20) {
                eprintln!("{p}");
            }
            if problems.len() > 20 {
                eprintln!("… and {} more", problems.len() - 20);
            }
            if !problems.is_empty() && !skip_invalid {
                bail!(
                    "{} invalid rows; nothing imported (fix them, or pass --skip-invalid)",
                    problems.len()
                );
            }
            let url = format!("{}/v1/contacts/import", base(&api));
            let (mut changed, mut done) = (0u64, 0usize);
            for chunk in records.chunks(500) {
                let resp = client
                    .post(&url)
                    .bearer_auth(&api.key)
                    .json(&serde_json::json!({ "records": chunk }))
                    .send()
                    .await
                    .with_context(|| format!("calling {url}"))?;
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    bail!(
                        "{status} after {done} records: {}",
                        v["error"]["message"]
                            .as_str()
                            .unwrap_or("unexpected answer")
                    );
                }
                changed += v["changed"].as_u64().unwrap_or(0);
                done += chunk.len();
                eprintln!("imported {done}/{}", records.len());
            }
            println!(
                "{}",
                serde_json::json!({"imported": done, "changed": changed, "skipped": problems.len()})
            );
            Ok(())
        }
        ContactsAction::Export { state, out, api } => {
            let sink: Box<dyn std::io::Write> = match &out {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                ),
                None => Box::new(std::io::stdout()),
            };
            let mut writer = csv::Writer::from_writer(sink);
            writer.write_record([
                "phone",
                "channel",
                "state",
                "source",
                "jurisdiction",
                "updated_at",
            ])?;
            let mut cursor: Option<String> = None;
            let mut n = 0usize;
            loop {
                let mut url = reqwest::Url::parse(&format!("{}/v1/contacts", base(&api)))
                    .context("the gateway URL")?;
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("limit", "1000");
                    if let Some(s) = &state {
                        q.append_pair("state", s);
                    }
                    if let Some(c) = &cursor {
                        q.append_pair("cursor", c);
                    }
                }
                let req = client.get(url).bearer_auth(&api.key);
                let resp = req.send().await.context("calling the gateway")?;
                let status = resp.status();
                let page: Value = resp.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    bail!(
                        "{status}: {}",
                        page["error"]["message"]
                            .as_str()
                            .unwrap_or("unexpected answer")
                    );
                }
                for c in page["data"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    let f = |k: &str| c[k].as_str().unwrap_or("").to_owned();
                    writer.write_record([
                        f("phone"),
                        f("channel"),
                        f("state"),
                        f("source"),
                        f("jurisdiction"),
                        f("updated_at"),
                    ])?;
                    n += 1;
                }
                if out.is_some() {
                    eprintln!("exported {n}");
                }
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            writer.flush()?;
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Phone-number metadata loads while the store opens, before the first
    // request would load it.
    let phones = tokio::task::spawn_blocking(switchboard_core::phone::PhoneNumber::warm);
    let app = app::build(&config, clock).await?;
    phones.await.context("loading the phone-number metadata")?;
    if let Some(token) = &app.generated_admin_token {
        // Printed once, on the start that created it; only its hash is kept.
        println!(
            "Generated the instance admin token (shown only this once):\n\n    {token}\n\nUse it as `Authorization: Bearer <token>` on /v1/workspaces, or set SWITCHBOARD_ADMIN_TOKEN.\n"
        );
    }
    let listener =
        app::listen(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let storage = match &config.database_url {
        Some(_) => "PostgreSQL".to_owned(),
        None => format!("SQLite in {}", config.data_dir.display()),
    };
    println!(
        "switchboard listening on http://{addr} (role {}, {storage})",
        config.role
    );
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "started");
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    if config.dispatcher.paused {
        println!("dispatch is paused: messages are accepted and stored, nothing is sent");
    }
    let workers = config.role.runs_workers() && !config.dispatcher.paused;
    app::serve(app, listener, shutdown, workers).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested: finishing requests and sends in flight");
    token.cancel();
}

/// Admin operations over HTTP: on a running gateway, or, when the data is
/// not in use (or shared, on PostgreSQL), on an admin API served by this
/// process for the length of the command, so that both give the same
/// checks and answers.
struct Admin {
    client: reqwest::Client,
    url: String,
    token: String,
    /// Stops this process's own admin server, if it runs one.
    _local: Option<tokio_util::sync::DropGuard>,
}

impl Admin {
    async fn connect(config: &Config, remote: &Remote) -> anyhow::Result<Admin> {
        let local_store = if config.database_url.is_some() {
            // A shared database has no exclusive lock: work on it directly.
            Some(app::open_store(config).await?)
        } else if remote.url.is_none() {
            match SqlStore::open(&config.data_dir) {
                Ok(store) => Some(Arc::new(store) as Arc<dyn Store>),
                Err(StoreError::DataDir(reason)) if reason.contains("in use") => None,
                Err(e) => return Err(e).context("opening the data directory"),
            }
        } else {
            None
        };
        let client = reqwest::Client::new();
        if let Some(store) = local_store {
            let stop = CancellationToken::new();
            let (url, token) = app::local_admin(config, store, stop.clone()).await?;
            return Ok(Admin {
                client,
                url,
                token,
                _local: Some(stop.drop_guard()),
            });
        }
        let url = remote
            .url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen));
        let token = remote
            .admin_token
            .clone()
            .or_else(|| config.admin_token.clone().map(|Secret(t)| t))
            .context("the gateway is running and holds the data directory: pass --admin-token (or set SWITCHBOARD_ADMIN_TOKEN) to manage it over HTTP")?;
        Ok(Admin {
            client,
            url: url.trim_end_matches('/').to_owned(),
            token,
            _local: None,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let Admin {
            client, url, token, ..
        } = self;
        call_json(client, method, &format!("{url}{path}"), token, body).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, body).await
    }
}

/// A path segment, percent-encoded.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A secret given as `env:NAME`, `file:PATH` or literally.
fn secret_value(key: &str, value: &str) -> anyhow::Result<String> {
    if let Some(name) = value.strip_prefix("env:") {
        return std::env::var(name)
            .with_context(|| format!("credential {key}: the environment has no {name}"));
    }
    if let Some(path) = value.strip_prefix("file:") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("credential {key}: reading {path}"))?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
    }
    Ok(value.to_owned())
}

/// The JSON body of a provider add or update.
fn provider_body(kind: Option<&str>, s: &ProviderSettings) -> anyhow::Result<Value> {
    let pairs = |list: &[String], what: &str| -> anyhow::Result<Vec<(String, String)>> {
        list.iter()
            .map(|kv| {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--{what} {kv:?}: expected KEY=VALUE"))?;
                Ok((k.trim().to_owned(), v.to_owned()))
            })
            .collect()
    };
    let mut config = serde_json::Map::new();
    for (k, v) in pairs(&s.set, "set")? {
        let value = if v.is_empty() {
            Value::Null
        } else {
            match serde_json::from_str::<Value>(&v) {
                Ok(n @ (Value::Number(_) | Value::Bool(_))) => n,
                _ => Value::String(v),
            }
        };
        config.insert(k, value);
    }
    let mut credentials = serde_json::Map::new();
    for (k, v) in pairs(&s.credential, "credential")? {
        let value = if v.is_empty() {
            Value::Null
        } else {
            Value::String(secret_value(&k, &v)?)
        };
        credentials.insert(k, value);
    }
    let mut body = serde_json::Map::new();
    if let Some(kind) = kind {
        body.insert("kind".into(), kind.into());
        body.insert("config".into(), Value::Object(config));
        body.insert("credentials".into(), Value::Object(credentials));
    } else {
        if !config.is_empty() {
            body.insert("config".into(), Value::Object(config));
        }
        if !credentials.is_empty() {
            body.insert("credentials".into(), Value::Object(credentials));
        }
    }
    if let Some(name) = &s.name {
        body.insert("name".into(), name.clone().into());
    }
    if let Some(b) = s.attempt_budget {
        body.insert("attempt_budget".into(), b.into());
    }
    if let Some(r) = s.rate {
        body.insert("rate_per_second".into(), r.into());
    }
    if let Some(b) = s.burst {
        body.insert("burst".into(), b.into());
    }
    Ok(Value::Object(body))
}

async fn provider(action: ProviderAction, admin: &Admin) -> anyhow::Result<()> {
    let out = match action {
        ProviderAction::Add { kind, settings } => {
            let p = admin
                .post(
                    "/v1/providers",
                    Some(provider_body(Some(&kind), &settings)?),
                )
                .await?;
            if let Some(url) = p["callback_url"].as_str() {
                eprintln!("Give the provider this callback URL: {url}");
            } else {
                eprintln!(
                    "Its callback URL is {{public_url}}/callbacks/{}; set public_url so that the provider can reach it.",
                    p["id"].as_str().unwrap_or("")
                );
            }
            p
        }
        ProviderAction::List => admin.get("/v1/providers").await?,
        ProviderAction::Show { id } => {
            admin
                .get(&format!("/v1/providers/{}", segment(&id)))
                .await?
        }
        ProviderAction::Update { id, settings } => {
            admin
                .call(
                    reqwest::Method::PATCH,
                    &format!("/v1/providers/{}", segment(&id)),
                    Some(provider_body(None, &settings)?),
                )
                .await?
        }
        ProviderAction::Remove { id } => {
            admin
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/providers/{}", segment(&id)),
                    None,
                )
                .await?;
            serde_json::json!({ "id": id, "deleted": true })
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn sender(action: SenderAction, admin: &Admin) -> anyhow::Result<()> {
    let out = match action {
        SenderAction::Add {
            workspace,
            provider,
            address,
            channel,
            default,
            priority,
        } => {
            let mut body = serde_json::json!({
                "provider_id": provider,
                "address": address,
                "default": default,
            });
            if let Some(c) = channel {
                body["channel"] = c.into();
            }
            if let Some(p) = priority {
                body["priority"] = p.into();
            }
            admin
                .post(
                    &format!("/v1/workspaces/{}/senders", segment(&workspace)),
                    Some(body),
                )
                .await?
        }
        SenderAction::List { workspace } => {
            admin
                .get(&format!("/v1/workspaces/{}/senders", segment(&workspace)))
                .await?
        }
        SenderAction::Remove { workspace, sender } => {
            admin
                .call(
                    reqwest::Method::DELETE,
                    &format!(
                        "/v1/workspaces/{}/senders/{}",
                        segment(&workspace),
                        segment(&sender)
                    ),
                    None,
                )
                .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// A value given on the command line: JSON if it parses, else a string.
fn cli_value(v: &str) -> Value {
    serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()))
}

async fn rules(action: RulesAction, config: &Config) -> anyhow::Result<()> {
    let (method, path, body, api) = match action {
        RulesAction::Add {
            event,
            template,
            to,
            to_path,
            equals,
            one_of,
            exists,
            client_ref_path,
            api,
        } => {
            let mut conditions = Vec::new();
            for c in &equals {
                let (path, v) = c
                    .split_once('=')
                    .with_context(|| format!("--equals {c:?}: expected PATH=VALUE"))?;
                conditions.push(serde_json::json!({"path": path, "equals": cli_value(v)}));
            }
            for c in &one_of {
                let (path, v) = c
                    .split_once('=')
                    .with_context(|| format!("--in {c:?}: expected PATH=A,B"))?;
                let list: Vec<Value> = v.split(',').map(cli_value).collect();
                conditions.push(serde_json::json!({"path": path, "in": list}));
            }
            for p in &exists {
                conditions.push(serde_json::json!({"path": p, "exists": true}));
            }
            let mut body =
                serde_json::json!({"event": event, "template": template, "conditions": conditions});
            if let Some(to) = to {
                body["to"] = to.into();
            }
            if let Some(p) = to_path {
                body["to_path"] = p.into();
            }
            if let Some(p) = client_ref_path {
                body["client_ref_path"] = p.into();
            }
            (
                reqwest::Method::POST,
                "/v1/compat/automatenexus/rules".to_owned(),
                Some(body),
                api,
            )
        }
        RulesAction::List { api } => (
            reqwest::Method::GET,
            "/v1/compat/automatenexus/rules".to_owned(),
            None,
            api,
        ),
        RulesAction::Remove { id, api } => (
            reqwest::Method::DELETE,
            format!("/v1/compat/automatenexus/rules/{}", segment(&id)),
            None,
            api,
        ),
    };
    let base = api
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen));
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let value = call_json(&reqwest::Client::new(), method, &url, &api.key, body).await?;
    if !value.is_null() {
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(())
}

/// One JSON call to the gateway with a bearer token; a refusal becomes an
/// error that says the status, the message and the field at fault.
async fn call_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    bearer: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = client.request(method, url).bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let field = value["error"]["field"]
            .as_str()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        bail!(
            "{status}: {}{field}",
            value["error"]["message"]
                .as_str()
                .unwrap_or("unexpected answer")
        );
    }
    Ok(value)
}
