//! The composition root: builds every part from the configuration and runs
//! them. Nothing here decides anything about messages.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use switchboard_core::secret::new_token;
use switchboard_core::telemetry::Metrics;
use switchboard_core::{Clock, ProviderId, RetryPolicy};
use switchboard_http::auth::hash_secret;
use switchboard_http::rate_limit::{RateLimitConfig, RateLimiter};
use switchboard_http::webhooks::WebhookGateway;
use switchboard_http::{AppParts, AppState, HttpConfig, KeyCache};
use switchboard_providers::sim::{SIM_PROVIDER_ID, SimConfig, SimProvider};
use switchboard_providers::{Connector, Providers};
use switchboard_store::Store;
use switchboard_store::sql::SqlStore;
use switchboard_store::{StoreError, WebhookAttemptRecord, WebhookJob};
use switchboard_worker::webhooks::check_template;
use switchboard_worker::{WebhookConfig, WebhookDeliverer, Worker, WorkerConfig};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret};

/// A built, not yet running, Switchboard.
#[derive(Debug)]
pub struct App {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Dispatcher and receipt pump.
    pub worker: Worker,
    /// The API.
    pub router: Router,
    /// The simulator (for its ledger).
    pub sim: Arc<SimProvider>,
    /// The webhook deliverer.
    pub webhooks: WebhookDeliverer,
    /// Set when this start generated the admin token: print it once.
    pub generated_admin_token: Option<String>,
    /// The configured public base URL, if any.
    pub public_url: Option<String>,
    /// This node's providers (the simulator and the configured ones).
    pub providers: Providers,
    /// How often configured providers are read again (changes made on
    /// other nodes).
    pub settings_refresh: Duration,
}

/// The admin token's hash: from the configuration if given (and stored),
/// else the stored one, else a new token that is stored and returned.
async fn admin_token(
    store: &dyn Store,
    configured: Option<&Secret>,
) -> anyhow::Result<(String, Option<String>)> {
    if let Some(Secret(token)) = configured {
        let hash = hash_secret(token);
        if store.admin_token_hash().await?.as_deref() != Some(hash.as_str()) {
            store.set_admin_token_hash(&hash).await?;
        }
        return Ok((hash, None));
    }
    if let Some(hash) = store.admin_token_hash().await? {
        return Ok((hash, None));
    }
    let token = new_token("sbadmin_");
    let hash = hash_secret(&token);
    store.set_admin_token_hash(&hash).await?;
    Ok((hash, Some(token)))
}

/// The deliverer as the HTTP edge sees it.
#[derive(Debug)]
struct Gateway {
    deliverer: WebhookDeliverer,
    store: Arc<dyn Store>,
}

#[async_trait::async_trait]
impl WebhookGateway for Gateway {
    async fn check_destination(&self, url: &str) -> Result<(), String> {
        self.deliverer.check_destination(url).await
    }

    fn check_template(&self, source: &str) -> Result<(), String> {
        check_template(source)
    }

    async fn attempt_now(&self, job: WebhookJob) -> Result<WebhookAttemptRecord, StoreError> {
        let report = self.deliverer.attempt(&job).await;
        let record = WebhookAttemptRecord {
            id: String::new(),
            delivery_id: Some(report.delivery_id.clone()),
            event_id: report.event_id.clone(),
            attempt: report.attempt,
            trigger: report.trigger.clone(),
            status_code: report.status_code,
            error: report.error.clone(),
            response_body: report.response_body.clone(),
            duration_ms: report.duration_ms,
            created_at: report.finished_at,
        };
        self.store.complete_webhook_attempt(report).await?;
        Ok(record)
    }
}

/// What the HTTP edge shares, from the configuration.
fn http_state(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    admin_hash: String,
    webhooks: WebhookDeliverer,
    providers: Providers,
) -> AppParts {
    AppParts {
        store: store.clone(),
        clock,
        metrics: Arc::new(Metrics::default()),
        wake: Arc::new(Notify::new()),
        admin_token_hash: admin_hash.into(),
        limiter: Arc::new(RateLimiter::new(RateLimitConfig {
            per_second: config.rate_limit.per_second,
            burst: config.rate_limit.burst,
        })),
        keys: Arc::new(KeyCache::new(Duration::from_secs(
            config.auth_cache_seconds,
        ))),
        webhooks: Arc::new(Gateway {
            deliverer: webhooks,
            store,
        }),
        providers,
        public_url: config.public_url.as_deref().map(Arc::from),
        console: switchboard_http::console::ConsoleConfig {
            idle: Duration::from_secs(config.console_session_minutes * 60),
        },
    }
}

/// Serves the admin API over `store` on a loopback port, for this process
/// only: how the CLI manages a stopped gateway's data, with exactly the
/// checks and answers of a running one. Returns the base URL and a token
/// made for this process; the server stops with `shutdown`.
pub async fn local_admin(
    config: &Config,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> anyhow::Result<(String, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock: Arc<dyn Clock> = Arc::new(switchboard_core::SystemClock);
    let token = new_token("sbadmin_");
    let webhooks = WebhookDeliverer::new(store.clone(), clock.clone(), WebhookConfig::default());
    let state = AppState::new(http_state(
        config,
        store,
        clock,
        hash_secret(&token),
        webhooks,
        Providers::offline(),
    ));
    let router = switchboard_http::router(
        state,
        HttpConfig {
            max_body_bytes: config.max_body_bytes,
            serve_api: true,
        },
    );
    let listener = listen((std::net::Ipv4Addr::LOCALHOST, 0).into())?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    Ok((format!("http://{addr}"), token))
}

/// Opens the configured store: PostgreSQL if `database_url` is set (its
/// migrations applied), else SQLite in the data directory.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.database_url {
        Some(Secret(url)) => Arc::new(
            SqlStore::connect_postgres_async(url, config.database_pool)
                .await
                .context("connecting to PostgreSQL (database_url)")?,
        ),
        None => Arc::new(SqlStore::open(&config.data_dir).with_context(|| {
            format!("opening the data directory {}", config.data_dir.display())
        })?),
    })
}

/// Builds the app from configuration, on the given clock.
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    config.validate()?;
    // One TLS stack for the whole process (rustls on ring); an error only
    // means another part of the process installed it first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = open_store(config).await?;
    let (admin_hash, generated_admin_token) =
        admin_token(store.as_ref(), config.admin_token.as_ref()).await?;
    // On SQLite this process holds the data directory's lock, so nothing
    // else can be sending: work left in flight by a previous process is
    // claimable now. (On PostgreSQL this does nothing: leases decide.)
    let recovered = store.recover_in_flight().await?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "resuming messages that were in flight when the previous process stopped"
        );
    }
    let sim_config = SimConfig {
        latency: Duration::from_millis(config.sim.latency_ms),
        receipt_delay: Duration::from_millis(config.sim.receipt_delay_ms),
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let sim = Arc::new(
        SimProvider::open(&config.data_dir, sim_config, clock.clone())
            .context("opening the simulator's ledger")?,
    );
    // The simulator's throughput limit, shared by every node on the database.
    let rate = config.sim.rate_per_second;
    store
        .set_provider_rate(
            SIM_PROVIDER_ID,
            (rate > 0.0).then_some((rate, rate.max(1.0))),
        )
        .await?;
    let providers = Providers::default();
    providers.insert(
        ProviderId::parse(SIM_PROVIDER_ID).expect("valid id"),
        Connector {
            provider: sim.clone(),
            callbacks: Some(sim.clone()),
        },
    );
    // Socket-connected providers (SMPP) hand over receipts and replies here;
    // `ingest_received` stores them as the callback route would.
    let (sink, received) = tokio::sync::mpsc::channel(256);
    providers.set_sink(sink);
    // Configured providers (Twilio accounts, WhatsApp numbers, SMPP links);
    // rebuilt when they change (`refresh_providers`).
    switchboard_http::providers::reload(store.as_ref(), &providers).await?;
    let metrics = Arc::new(Metrics::default());
    let wake = Arc::new(Notify::new());
    let d = &config.dispatcher;
    let worker_config = WorkerConfig {
        batch: d.batch,
        concurrency: d.concurrency,
        lease: config.lease(),
        send_timeout: Duration::from_millis(d.send_timeout_ms),
        retry: RetryPolicy {
            base: Duration::from_millis(d.backoff_base_ms),
            cap: Duration::from_secs(d.backoff_cap_seconds),
            max_attempts: d.max_attempts,
        },
        idle_poll: Duration::from_millis(d.idle_poll_ms),
    };
    let worker = Worker::new(
        store.clone(),
        providers.clone(),
        Some(sim.clone()),
        clock.clone(),
        worker_config,
        metrics.clone(),
        wake.clone(),
    );
    let webhook_config = WebhookConfig {
        allow_networks: switchboard_core::netpolicy::parse_allow_list(
            &config.webhook_allow_networks,
        )?,
        lease: Duration::from_secs(config.webhook_lease_seconds),
        idle_poll: Duration::from_millis(d.idle_poll_ms),
        ..WebhookConfig::default()
    };
    let webhooks = WebhookDeliverer::new(store.clone(), clock.clone(), webhook_config);
    let mut state = http_state(
        config,
        store.clone(),
        clock,
        admin_hash,
        webhooks.clone(),
        providers.clone(),
    );
    // Shared with the worker: its counters and its wake-up.
    state.metrics = metrics;
    state.wake = wake;
    let state = AppState::new(state);
    tokio::spawn(ingest_received(state.clone(), received));
    let router = switchboard_http::router(
        state,
        HttpConfig {
            max_body_bytes: config.max_body_bytes,
            serve_api: config.role.serves_api(),
        },
    );
    Ok(App {
        providers,
        settings_refresh: Duration::from_secs(config.auth_cache_seconds.max(1)),
        public_url: config.public_url.clone(),
        store,
        worker,
        router,
        sim,
        webhooks,
        generated_admin_token,
    })
}

/// How many connections may wait to be accepted (`listen`'s backlog).
/// Tokio's `TcpListener::bind` asks for 128, as the standard library does:
/// a burst of more new connections than that (a CRM's workers starting
/// together, a fleet reconnecting after a deploy) overflows the queue,
/// and the kernel drops their SYNs, which the clients send again only
/// after a second. Linux caps this at `net.core.somaxconn` (4,096 by
/// default).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with `LISTEN_BACKLOG` (and `SO_REUSEADDR`, as
/// `TcpListener::bind` sets, so a restart can bind at once).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The base URL providers (and the simulator) call back on: the configured
/// public URL, else this listener's address (loopback if it listens on all).
pub fn callback_base(public_url: Option<&str>, addr: std::net::SocketAddr) -> String {
    if let Some(url) = public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
}

/// Serves the API on `listener` and, if `run_workers`, runs the dispatcher,
/// until `shutdown` is cancelled; then stops accepting, finishes the requests
/// and sends in flight, and returns. The simulator's callback address is set
/// before this returns its future, so work driven by hand sees it too.
pub fn serve(
    app: App,
    listener: TcpListener,
    shutdown: CancellationToken,
    run_workers: bool,
) -> impl std::future::Future<Output = anyhow::Result<()>> {
    if let Ok(addr) = listener.local_addr() {
        app.worker
            .set_callback_base(&callback_base(app.public_url.as_deref(), addr));
    }
    serve_inner(app, listener, shutdown, run_workers)
}

async fn serve_inner(
    app: App,
    listener: TcpListener,
    shutdown: CancellationToken,
    run_workers: bool,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let worker = run_workers.then(|| tokio::spawn(app.worker.clone().run(shutdown.clone())));
    let webhooks = run_workers.then(|| tokio::spawn(app.webhooks.clone().run(shutdown.clone())));
    let refresh = tokio::spawn(refresh_providers(
        app.store.clone(),
        app.providers.clone(),
        app.settings_refresh,
        shutdown.clone(),
    ));
    let listener = listener.tap_io(|tcp| {
        // Small JSON answers must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app.router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving HTTP")?;
    refresh.abort();
    if let Some(worker) = worker {
        worker.await.context("the worker task failed")?;
    }
    if let Some(webhooks) = webhooks {
        webhooks.await.context("the webhook task failed")?;
    }
    Ok(())
}

/// Reads the configured providers again every `every`, so that a provider
/// added, changed or removed through another node is used here too.
async fn refresh_providers(
    store: Arc<dyn Store>,
    providers: Providers,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(e) = switchboard_http::providers::reload(store.as_ref(), &providers).await {
            tracing::warn!(error = %e, "reading the configured providers failed; keeping the current ones");
        }
    }
}

/// Stores what socket-connected providers received, and tells each whether
/// it is durable (they acknowledge the carrier only then).
async fn ingest_received(
    state: AppState,
    mut received: tokio::sync::mpsc::Receiver<switchboard_providers::callback::Delivered>,
) {
    while let Some(d) = received.recv().await {
        let now = state.clock.now();
        let stored = match switchboard_http::callbacks::ingest(&state, &d.provider_id, d.items, now)
            .await
        {
            Ok(ack) => {
                if ack.receipts > 0 {
                    state.wake.notify_one();
                }
                true
            }
            Err(e) => {
                tracing::warn!(provider = %d.provider_id, error = ?e, "storing what the provider delivered failed; it will deliver again");
                false
            }
        };
        let _ = d.done.send(stored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of new connections larger than tokio's default backlog (128)
    /// is queued, not dropped: each connects at once though nothing accepts
    /// yet (a dropped SYN would be sent again only after a second, and
    /// again and again while the queue stays full).
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_listen_queue() {
        let listener = listen((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connects = tokio::task::JoinSet::new();
        for _ in 0..400 {
            connects.spawn(tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(addr),
            ));
        }
        let streams = connects.join_all().await;
        let connected = streams.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(connected, 400, "connections dropped by a full listen queue");
        // And they are served: the first is accepted as usual.
        let (_, peer) = listener.accept().await.unwrap();
        assert!(peer.ip().is_loopback());
    }
}
