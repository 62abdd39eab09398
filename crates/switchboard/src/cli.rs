//! The command line: `serve`, and admin commands that work on a stopped
//! gateway's data directory directly or on a running one over HTTP.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use switchboard_core::{Clock, SystemClock, WorkspaceId};
use switchboard_http::admin::{issue_key, workspace_name};
use switchboard_store::sqlite::SqliteStore;
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
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: API and workers in one process.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
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
    if let Some(addr) = listen {
        config.listen = addr;
    }
    config.validate()?;
    Ok(config)
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen, common } => serve(load_config(&common, listen)?).await,
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
        Command::Key {
            action: KeyAction::Create { workspace },
            common,
            remote,
        } => {
            let config = load_config(&common, None)?;
            let admin = Admin::connect(&config, &remote).await?;
            let key = admin.create_key(&workspace).await?;
            println!("{}", serde_json::to_string_pretty(&key)?);
            eprintln!("Store the key now: it is shown only once.");
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
    println!(
        "switchboard listening on http://{addr} (data in {})",
        config.data_dir.display()
    );
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "started");
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    app::serve(app, listener, shutdown, true).await?;
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
    Local(Box<SqliteStore>),
    Remote {
        client: reqwest::Client,
        url: String,
        token: String,
    },
}

impl Admin {
    async fn connect(config: &Config, remote: &Remote) -> anyhow::Result<Admin> {
        if remote.url.is_none() {
            match SqliteStore::open(&config.data_dir) {
                Ok(store) => return Ok(Admin::Local(Box::new(store))),
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

    async fn create_key(&self, workspace: &str) -> anyhow::Result<Value> {
        match self {
            Admin::Local(store) => {
                let ws = WorkspaceId::parse(workspace)
                    .map_err(|_| anyhow::anyhow!("{workspace:?} is not a workspace id (ws_…)"))?;
                if store.get_workspace(&ws).await?.is_none() {
                    bail!("no workspace {ws}");
                }
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
