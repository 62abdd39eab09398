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
use switchboard_http::{AppState, HttpConfig, KeyCache};
use switchboard_providers::Providers;
use switchboard_providers::sim::{SimConfig, SimProvider};
use switchboard_store::Store;
use switchboard_store::sqlite::SqliteStore;
use switchboard_worker::{Worker, WorkerConfig};
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
    /// Set when this start generated the admin token: print it once.
    pub generated_admin_token: Option<String>,
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

/// Builds the app from configuration, on the given clock.
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    config.validate()?;
    let sqlite = SqliteStore::open(&config.data_dir)
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let (admin_hash, generated_admin_token) =
        admin_token(store.as_ref(), config.admin_token.as_ref()).await?;
    // This process holds the data directory's lock, so nothing else can be
    // sending: work left in flight by a previous process is claimable now.
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
    let sim = Arc::new(
        SimProvider::open(&config.data_dir, sim_config, clock.clone())
            .context("opening the simulator's ledger")?,
    );
    let mut providers = Providers::default();
    providers.insert(ProviderId::parse("pr_sim").expect("valid id"), sim.clone());
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
        idle_poll: Duration::from_secs(1),
    };
    let worker = Worker::new(
        store.clone(),
        providers,
        Some(sim.clone()),
        clock.clone(),
        worker_config,
        metrics.clone(),
        wake.clone(),
    );
    let state = AppState {
        store: store.clone(),
        clock,
        metrics,
        wake,
        admin_token_hash: admin_hash.into(),
        limiter: Arc::new(RateLimiter::new(RateLimitConfig {
            per_second: config.rate_limit.per_second,
            burst: config.rate_limit.burst,
        })),
        keys: Arc::new(KeyCache::default()),
    };
    let router = switchboard_http::router(
        state,
        HttpConfig {
            max_body_bytes: config.max_body_bytes,
        },
    );
    Ok(App {
        store,
        worker,
        router,
        sim,
        generated_admin_token,
    })
}

/// Serves the API on `listener` and, if `run_workers`, runs the dispatcher,
/// until `shutdown` is cancelled; then stops accepting, finishes the requests
/// and sends in flight, and returns.
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: CancellationToken,
    run_workers: bool,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let worker = run_workers.then(|| tokio::spawn(app.worker.clone().run(shutdown.clone())));
    let listener = listener.tap_io(|tcp| {
        // Small JSON answers must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app.router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving HTTP")?;
    if let Some(worker) = worker {
        worker.await.context("the worker task failed")?;
    }
    Ok(())
}
