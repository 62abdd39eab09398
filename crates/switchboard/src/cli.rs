//! The command line: `serve`, and admin commands that work on a stopped
//! gateway's data directory directly or on a running one over HTTP.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use switchboard_core::{Clock, SystemClock, WorkspaceId};
use switchboard_http::admin::{ApiKeyInfo, issue_key, workspace_name};
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
            match action {
                WorkspaceAction::Create { name } => {
                    let ws = admin.create_workspace(&name).await?;
                    println!("{}", serde_json::to_string_pretty(&ws)?);
                }
                WorkspaceAction::List => {
                    let list = admin.list_workspaces().await?;
                    println!("{}", serde_json::to_string_pretty(&list)?);
                }
            }
            Ok(())
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
            match action {
                KeyAction::Create { workspace } => {
                    let key = admin.create_key(&workspace).await?;
                    println!("{}", serde_json::to_string_pretty(&key)?);
                    eprintln!("Store the key now: it is shown only once.");
                }
                KeyAction::List { workspace } => {
                    let keys = admin.list_keys(&workspace).await?;
                    println!("{}", serde_json::to_string_pretty(&keys)?);
                }
                KeyAction::Revoke { workspace, key } => {
                    let key = admin.revoke_key(&workspace, &key).await?;
                    println!("{}", serde_json::to_string_pretty(&key)?);
                }
            }
            Ok(())
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
    let app = app::build(&config, clock).await?;
    if let Some(token) = &app.generated_admin_token {
        // Printed once, on the start that created it; only its hash is kept.
        println!(
            "Generated the instance admin token (shown only this once):\n\n    {token}\n\nUse it as `Authorization: Bearer <token>` on /v1/workspaces, or set SWITCHBOARD_ADMIN_TOKEN.\n"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
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

/// Admin operations, on the data directory or over HTTP.
enum Admin {
    Local(Arc<dyn Store>),
    Remote {
        client: reqwest::Client,
        url: String,
        token: String,
    },
}

impl Admin {
    async fn connect(config: &Config, remote: &Remote) -> anyhow::Result<Admin> {
        if config.database_url.is_some() {
            // A shared database has no exclusive lock: work on it directly.
            return Ok(Admin::Local(app::open_store(config).await?));
        }
        if remote.url.is_none() {
            match SqlStore::open(&config.data_dir) {
                Ok(store) => return Ok(Admin::Local(Arc::new(store))),
                Err(StoreError::DataDir(reason)) if reason.contains("in use") => {}
                Err(e) => return Err(e).context("opening the data directory"),
            }
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
        Ok(Admin::Remote {
            client: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let Admin::Remote { client, url, token } = self else {
            unreachable!("only called remotely")
        };
        let mut req = client
            .request(method, format!("{url}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("calling {url}{path}"))?;
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
        Ok(value)
    }

    async fn create_workspace(&self, name: &str) -> anyhow::Result<Value> {
        match self {
            Admin::Local(store) => {
                let name = workspace_name(name).map_err(|e| anyhow::anyhow!(e.message))?;
                let ws = store.create_workspace(name, SystemClock.now()).await?;
                Ok(
                    serde_json::json!({"id": ws.id.to_string(), "name": ws.name, "created_at": ws.created_at.to_rfc3339()}),
                )
            }
            Admin::Remote { .. } => {
                self.call(
                    reqwest::Method::POST,
                    "/v1/workspaces",
                    Some(serde_json::json!({ "name": name })),
                )
                .await
            }
        }
    }

    async fn list_workspaces(&self) -> anyhow::Result<Value> {
        match self {
            Admin::Local(store) => {
                let list: Vec<Value> = store
                    .list_workspaces()
                    .await?
                    .into_iter()
                    .map(|w| serde_json::json!({"id": w.id.to_string(), "name": w.name, "created_at": w.created_at.to_rfc3339()}))
                    .collect();
                Ok(serde_json::json!({ "data": list }))
            }
            Admin::Remote { .. } => {
                self.call(reqwest::Method::GET, "/v1/workspaces", None)
                    .await
            }
        }
    }

    async fn list_keys(&self, workspace: &str) -> anyhow::Result<Value> {
        match self {
            Admin::Local(store) => {
                let ws = local_workspace(store.as_ref(), workspace).await?;
                let data: Vec<ApiKeyInfo> = store
                    .list_api_keys(&ws)
                    .await?
                    .into_iter()
                    .map(ApiKeyInfo::from)
                    .collect();
                Ok(serde_json::json!({ "data": data }))
            }
            Admin::Remote { .. } => {
                self.call(
                    reqwest::Method::GET,
                    &format!("/v1/workspaces/{workspace}/keys"),
                    None,
                )
                .await
            }
        }
    }

    async fn revoke_key(&self, workspace: &str, key: &str) -> anyhow::Result<Value> {
        match self {
            Admin::Local(store) => {
                let ws = local_workspace(store.as_ref(), workspace).await?;
                let revoked = store
                    .revoke_api_key(&ws, key, SystemClock.now())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("workspace {ws} has no key {key}"))?;
                Ok(serde_json::to_value(ApiKeyInfo::from(revoked))?)
            }
            Admin::Remote { .. } => {
                self.call(
                    reqwest::Method::DELETE,
                    &format!("/v1/workspaces/{workspace}/keys/{key}"),
                    None,
                )
                .await
            }
        }
    }

    async fn create_key(&self, workspace: &str) -> anyhow::Result<Value> {
        match self {
            Admin::Local(store) => {
                let ws = local_workspace(store.as_ref(), workspace).await?;
                let (key, secret) = issue_key(store.as_ref(), &ws, SystemClock.now()).await?;
                Ok(
                    serde_json::json!({"id": key.id, "workspace_id": ws.to_string(), "key": secret, "hint": key.hint}),
                )
            }
            Admin::Remote { .. } => {
                self.call(
                    reqwest::Method::POST,
                    &format!("/v1/workspaces/{workspace}/keys"),
                    None,
                )
                .await
            }
        }
    }
}

/// A workspace id that exists in a local store.
async fn local_workspace(store: &dyn Store, workspace: &str) -> anyhow::Result<WorkspaceId> {
    let ws = WorkspaceId::parse(workspace)
        .map_err(|_| anyhow::anyhow!("{workspace:?} is not a workspace id (ws_…)"))?;
    if store.get_workspace(&ws).await?.is_none() {
        bail!("no workspace {ws}");
    }
    Ok(ws)
}
