use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use switchboard_core::telemetry::Metrics;
use switchboard_core::{Clock, ErrorClass, ProviderId, RetryDecision, RetryPolicy};
use switchboard_providers::sim::{MAX_CALLBACK_RECEIPTS, SIM_PROVIDER_ID, SimProvider};
use switchboard_providers::{ProviderError, Providers, SendRequest};
use switchboard_store::{
    AttemptOutcome, AttemptReport, ClaimedMessage, Store, StoreError, TransitionOutcome,
};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::Batcher;

/// How the dispatcher works.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Messages claimed per store round trip.
    pub batch: usize,
    /// Provider calls in flight at once.
    pub concurrency: usize,
    /// How long a claim is held before another node may take it over. Must
    /// exceed `send_timeout`.
    pub lease: Duration,
    /// Longest a provider call may take before it counts as a transport error.
    pub send_timeout: Duration,
    /// Retry limits.
    pub retry: RetryPolicy,
    /// Longest sleep when nothing is due (new work wakes it earlier).
    pub idle_poll: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch: 256,
            concurrency: 512,
            lease: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// The dispatcher and receipt pump, sharing one store and provider set.
#[derive(Debug, Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    providers: Providers,
    sim: Option<Arc<SimProvider>>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    // Notified after a send, so that the receipt pump, if idle, looks when
    // the simulator's receipt for it falls due.
    sent: Notify,
    // Where the simulator's network posts its receipt callbacks: the
    // gateway's own `/callbacks/pr_sim`, known once the listener is bound.
    sim_callback_url: OnceLock<String>,
    http: reqwest::Client,
    // Writes the results of concurrent sends together.
    results: Batcher<AttemptReport, Result<TransitionOutcome, StoreError>>,
}

/// Most attempt results written in one store call.
const RESULT_BATCH: usize = 512;

impl Worker {
    /// A worker over these parts. `wake` is notified by the accept path when
    /// new work is stored, so a fresh message is claimed at once.
    pub fn new(
        store: Arc<dyn Store>,
        providers: Providers,
        sim: Option<Arc<SimProvider>>,
        clock: Arc<dyn Clock>,
        config: WorkerConfig,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Self {
        Worker {
            inner: Arc::new(Inner {
                store: store.clone(),
                providers,
                sim,
                clock,
                config,
                metrics,
                wake,
                sent: Notify::new(),
                sim_callback_url: OnceLock::new(),
                results: Batcher::new(RESULT_BATCH, {
                    let store = store.clone();
                    Box::new(move |reports| {
                        let store = store.clone();
                        Box::pin(async move { store.complete_attempts(reports).await })
                    })
                }),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("an HTTP client without custom TLS settings builds"),
            }),
        }
    }

    /// Sets the gateway's base URL (`http://127.0.0.1:8080`): the simulator
    /// posts its receipts to `{base}/callbacks/pr_sim`, as a real provider
    /// would, and every configured provider is told `{base}/callbacks/{id}`.
    /// Only the first call counts for the simulator.
    pub fn set_callback_base(&self, base: &str) {
        self.inner.providers.set_callback_base(base);
        let _ = self.inner.sim_callback_url.set(format!(
            "{}/callbacks/{SIM_PROVIDER_ID}",
            base.trim_end_matches('/')
        ));
    }

    /// Claims what is due and sends it, waiting for every send to finish.
    /// Returns how many messages were claimed.
    pub async fn dispatch_once(&self) -> Result<usize, StoreError> {
        let inner = &self.inner;
        let claimed = inner
            .store
            .claim_due(inner.clock.now(), inner.config.batch, inner.config.lease)
            .await?;
        let n = claimed.len();
        let mut tasks = JoinSet::new();
        for m in claimed {
            let inner = self.inner.clone();
            tasks.spawn(Box::pin(async move { inner.process(m).await }));
        }
        while tasks.join_next().await.is_some() {}
        Ok(n)
    }

    /// Has the simulator's network post its due receipts to the gateway's
    /// callback receiver (as a real provider's would), then applies what the
    /// receipt inbox has due. Returns how many receipts were handed over or
    /// settled.
    pub async fn pump_receipts_once(&self) -> Result<usize, StoreError> {
        let now = self.inner.clock.now();
        let mut fed = 0;
        if let Some(sim) = &self.inner.sim
            && let Some(url) = self.inner.sim_callback_url.get()
        {
            let due = sim
                .due_receipts(now, MAX_CALLBACK_RECEIPTS)
                .await
                .map_err(|e| StoreError::Corrupt(format!("sim ledger: {e}")))?;
            if !due.is_empty() {
                let body = SimProvider::callback_body(&due);
                let signature = sim.sign_callback(&body, now);
                let sent = self
                    .inner
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-sim-signature", signature)
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        fed = due.len();
                        sim.mark_reported(due.into_iter().map(|r| r.id).collect())
                            .await
                            .map_err(|e| StoreError::Corrupt(format!("sim ledger: {e}")))?;
                    }
                    // Like a provider's network: keep them and call again on the next pass.
                    Ok(r) => {
                        tracing::warn!(status = %r.status(), "the receipt callback was refused; the simulator will call again")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the receipt callback failed; the simulator will call again")
                    }
                }
            }
        }
        let pass = self.inner.store.process_receipts(now, 1000).await?;
        if pass.unmatched > 0 {
            tracing::warn!(
                unmatched = pass.unmatched,
                "receipts matched no message for a day; kept as unmatched"
            );
        }
        Ok(fed
            + usize::try_from(pass.applied + pass.ignored + pass.unmatched).unwrap_or(usize::MAX))
    }

    /// Runs dispatch and receipt passes until a pass finds nothing to do at
    /// the clock's current time. For tests and the CLI; no timers involved.
    pub async fn run_until_idle(&self) -> Result<(), StoreError> {
        loop {
            let sent = self.dispatch_once().await?;
            let receipts = self.pump_receipts_once().await?;
            if sent == 0 && receipts == 0 {
                return Ok(());
            }
        }
    }

    /// The earliest time anything (a message or a receipt) becomes due.
    pub async fn next_due_at(&self) -> Result<Option<switchboard_core::Timestamp>, StoreError> {
        let message = self.inner.store.next_due_at().await?;
        let receipt = match &self.inner.sim {
            Some(sim) => sim
                .next_receipt_at()
                .await
                .map_err(|e| StoreError::Corrupt(format!("sim ledger: {e}")))?,
            None => None,
        };
        Ok(match (message, receipt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Runs until `shutdown` is cancelled, then stops claiming and waits for
    /// the sends in flight to finish (each bounded by the send timeout).
    pub async fn run(self, shutdown: CancellationToken) {
        let receipts = tokio::spawn(self.clone().run_receipts(shutdown.clone()));
        let inner = &self.inner;
        let permits = Arc::new(Semaphore::new(inner.config.concurrency));
        let mut tasks = JoinSet::new();
        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = permits.available_permits().min(inner.config.batch);
            if free == 0 {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let claimed = match inner
                .store
                .claim_due(inner.clock.now(), free, inner.config.lease)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "claiming due messages failed");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                let wait = self.idle_wait().await;
                tokio::select! {
                    () = inner.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            for m in claimed {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed");
                let inner = self.inner.clone();
                // Boxed, as a webhook delivery's task is (see
                // `WebhookDeliverer::run`): a send's future is about 1.3 KB.
                tasks.spawn(Box::pin(async move {
                    inner.process(m).await;
                    drop(permit);
                }));
            }
        }
        let in_flight = tasks.len();
        if in_flight > 0 {
            tracing::info!(in_flight, "draining sends in flight");
        }
        while tasks.join_next().await.is_some() {}
        let _ = receipts.await;
    }

    async fn idle_wait(&self) -> Duration {
        let poll = self.inner.config.idle_poll;
        match self.inner.store.next_due_at().await {
            // Due now yet nothing was claimed: another node holds it, or its
            // provider's throughput limit is used up. Look again shortly.
            Ok(Some(t)) => t
                .since(self.inner.clock.now())
                .clamp(Duration::from_millis(10), poll),
            _ => poll,
        }
    }

    async fn run_receipts(self, shutdown: CancellationToken) {
        // Also without the simulator: every provider's receipts land in the
        // inbox, and storing them wakes this loop.
        let signals = self.inner.store.signals();
        while !shutdown.is_cancelled() {
            let applied = self.pump_receipts_once().await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "receipt pass failed");
                0
            });
            if applied == 0 {
                // A simulator receipt already pending falls due before the
                // receipt of any later send: a send need not wake the pump
                // then, only when nothing is pending.
                let (wait, pending) = self.receipt_wait().await;
                tokio::select! {
                    () = signals.receipts.notified() => {}
                    () = self.inner.sent.notified(), if !pending => {}
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }

    /// How long an idle receipt pump sleeps: until the simulator's next
    /// receipt falls due, at most the idle poll (which also bounds how late
    /// a receipt waiting for its message is checked again); and whether a
    /// simulator receipt is pending.
    async fn receipt_wait(&self) -> (Duration, bool) {
        let poll = self.inner.config.idle_poll;
        let Some(sim) = &self.inner.sim else {
            return (poll, false);
        };
        match sim.next_receipt_at().await {
            // Due but not handed over (the callback refused, or not yet
            // possible): try again shortly, as before.
            Ok(Some(t)) => (
                t.since(self.inner.clock.now())
                    .clamp(Duration::from_millis(20), poll),
                true,
            ),
            _ => (poll, false),
        }
    }
}

impl Inner {
    async fn process(&self, m: ClaimedMessage) {
        let started = self.clock.now();
        let outcome = if m.expires_at <= started {
            AttemptOutcome::Expired
        } else {
            let result = self.send(&m).await;
            let now = self.clock.now();
            self.metrics.send_duration.observe(now.since(started));
            match result {
                Ok(provider_message_id) => {
                    self.metrics
                        .attempts_accepted
                        .fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .dispatch_latency
                        .observe(now.since(m.created_at));
                    AttemptOutcome::Accepted {
                        provider_message_id,
                    }
                }
                Err(e) => {
                    self.metrics.attempt_failed(e.class);
                    let decision = self.config.retry.decide(
                        m.attempt,
                        e.class,
                        now,
                        m.expires_at,
                        fastrand::f64(),
                        e.retry_after,
                    );
                    match decision {
                        RetryDecision::RetryAt(next_at) => AttemptOutcome::Retry {
                            class: e.class,
                            code: e.code,
                            message: e.message,
                            next_at,
                        },
                        RetryDecision::GiveUp(reason) => AttemptOutcome::GiveUp {
                            class: e.class,
                            code: e.code,
                            message: e.message,
                            reason,
                        },
                    }
                }
            }
        };
        let report = AttemptReport {
            message_id: m.id.clone(),
            attempt: m.attempt,
            provider_id: m.provider_id.clone(),
            started_at: started,
            finished_at: self.clock.now(),
            outcome,
        };
        match self.results.submit(report).await {
            Some(Ok(_)) => {}
            // The lease runs out and the message is claimed again; the
            // provider sees the same idempotency key.
            Some(Err(e)) => {
                tracing::error!(message_id = %m.id, error = %e, "recording an attempt failed")
            }
            None => {
                tracing::error!(message_id = %m.id, "recording an attempt failed: the result writer stopped")
            }
        }
        if self.sim.is_some() {
            self.sent.notify_one();
        }
    }

    async fn send(&self, m: &ClaimedMessage) -> Result<String, ProviderError> {
        let Some(provider) = self.providers.get(&m.provider_id) else {
            return Err(unknown_provider(&m.provider_id));
        };
        let req = SendRequest {
            idempotency_key: m.id.to_string(),
            to: m.to.clone(),
            from: m.from.clone(),
            channel: m.channel.clone(),
            body: m.body.clone(),
            media_urls: m.media_urls.clone(),
            template: m.template.clone(),
        };
        match tokio::time::timeout(self.config.send_timeout, provider.send(&req)).await {
            Ok(Ok(accepted)) => Ok(accepted.provider_message_id),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ProviderError::new(
                ErrorClass::Transport,
                "timeout",
                format!(
                    "no answer from the provider within {:?}",
                    self.config.send_timeout
                ),
            )),
        }
    }
}

/// A provider this node does not know (yet: another node may have just
/// added it, and this one loads it on its next refresh) is a transport
/// failure: the message retries, or fails over.
fn unknown_provider(id: &ProviderId) -> ProviderError {
    ProviderError::new(
        ErrorClass::Transport,
        "unknown_provider",
        format!("provider {id} is not configured on this node"),
    )
}
