//! The webhook deliverer: claim → render → sign → POST → classify → record.
//!
//! Destinations are checked against the SSRF policy whenever a connection
//! is made, literal addresses and every address a name resolves to: the
//! HTTP client (`http1.rs`) dials only addresses that passed, so there is
//! no window between the check and the connection. The policy is fixed for
//! the client's life, so a kept connection needs no new check. Redirects
//! are not followed.

use foldhash::{HashMap, HashMapExt};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_core::netpolicy::{Cidr, forbidden_reason};
use switchboard_core::webhook_signature::{WebhookSecret, signature_header};
use switchboard_core::{Clock, Timestamp};
use switchboard_store::{
    Store, StoreError, WebhookAttemptReport, WebhookEvent, WebhookJob, WebhookOutcome,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::Batcher;
use crate::http1;

/// Characters of a response body kept in the attempt log.
pub const RESPONSE_BODY_CHARS: usize = 1000;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// A destination refused by the SSRF policy.
#[derive(Debug, thiserror::Error)]
#[error(
    "destination refused: {ip} is a {reason} address (allow it with SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS)"
)]
pub struct RefusedDestination {
    ip: IpAddr,
    reason: &'static str,
}

/// Refuses `addrs` if any of them is refused: a name that resolves to one
/// public and one private address is refused, or the private one could be
/// dialled.
fn check_addrs(addrs: &[SocketAddr], allow: &[Cidr]) -> Result<(), RefusedDestination> {
    for a in addrs {
        if let Some(reason) = forbidden_reason(a.ip(), allow) {
            return Err(RefusedDestination { ip: a.ip(), reason });
        }
    }
    Ok(())
}

/// The addresses a URL's host stands for, every one of them allowed by
/// the policy: the literal address, or every address the name resolves to
/// now. The deliverer's client dials only these (`http1.rs`), and an
/// endpoint's URL is checked with them when it is created.
pub(crate) async fn checked_addrs(
    host: &url::Host<&str>,
    port: u16,
    allow: &[Cidr],
) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = match *host {
        url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        url::Host::Domain(d) => tokio::net::lookup_host((d, port))
            .await
            .map_err(|e| format!("cannot resolve {d}: {e}"))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    check_addrs(&addrs, allow).map_err(|e| e.to_string())?;
    Ok(addrs)
}

/// Checks a URL's destination now: the literal address, or every address
/// its host resolves to.
pub async fn check_destination(url: &str, allow: &[Cidr]) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    let host = parsed.host().ok_or("the URL has no host")?;
    checked_addrs(&host, port, allow).await.map(drop)
}

/// How the deliverer works.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Deliveries claimed per round trip.
    pub batch: usize,
    /// Deliveries in flight at once (`run`).
    pub concurrency: usize,
    /// Claim lease; must exceed the longest endpoint timeout (60 s).
    pub lease: Duration,
    /// Networks allowed despite the SSRF policy.
    pub allow_networks: Vec<Cidr>,
    /// Longest sleep when nothing is due.
    pub idle_poll: Duration,
}

/// The least time between a claim that found nothing and the next one made
/// on a wake-up (`WebhookDeliverer::run`).
const EMPTY_CLAIM_GAP: Duration = Duration::from_millis(10);

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            batch: 256,
            concurrency: 512,
            lease: Duration::from_secs(90),
            allow_networks: Vec::new(),
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// Delivers webhook events.
#[derive(Debug, Clone)]
pub struct WebhookDeliverer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    client: http1::Client,
    config: WebhookConfig,
    // Writes the results of concurrent deliveries together (see `batch.rs`).
    results: Batcher<WebhookAttemptReport, Result<(), StoreError>>,
    // Endpoint URLs as parsed, by their text: a busy endpoint's URL was
    // parsed again for every delivery.
    urls: std::sync::Mutex<HashMap<String, url::Url>>,
}

/// Most parsed endpoint URLs kept; past it the cache starts again.
const URL_CACHE: usize = 1_024;

/// Most delivery results written in one store call.
const RESULT_BATCH: usize = 512;

/// The envelope of SPEC §4.
pub fn envelope(job: &WebhookJob) -> Value {
    envelope_value(&job.event, &job.endpoint.id)
}

fn envelope_value(event: &WebhookEvent, endpoint_id: &str) -> Value {
    json!({
        "id": event.id,
        "event": event.event_type,
        "timestamp": event.created_at.to_rfc3339(),
        "webhook_id": endpoint_id,
        "account_id": event.workspace_id.as_str(),
        "data": event.data.value(),
    })
}

/// `envelope_value` serialized without building it: the same bytes (a
/// `Value` object's keys come out sorted, so the fields are written in that
/// order), with the event's data copied in as the text it already is
/// (`EventData`).
fn envelope_json(event: &WebhookEvent, endpoint_id: &str) -> Vec<u8> {
    use switchboard_core::json_text::push_str;
    let data = event.data.json();
    let mut out = String::with_capacity(data.len() + 192);
    out.push_str("{\"account_id\":");
    push_str(&mut out, event.workspace_id.as_str());
    out.push_str(",\"data\":");
    out.push_str(data);
    out.push_str(",\"event\":");
    push_str(&mut out, &event.event_type);
    out.push_str(",\"id\":");
    push_str(&mut out, &event.id);
    out.push_str(",\"timestamp\":");
    push_str(&mut out, &event.created_at.to_rfc3339());
    out.push_str(",\"webhook_id\":");
    push_str(&mut out, endpoint_id);
    out.push('}');
    out.into_bytes()
}

fn form_encode(v: &Value) -> String {
    let Value::Object(m) = v else {
        return String::new();
    };
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    m.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{}={}", enc(k), enc(&text))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Renders the body an endpoint receives.
pub fn render_body(job: &WebhookJob) -> Result<(Vec<u8>, &'static str), String> {
    if job.endpoint.format != "template" && job.endpoint.content_type != "form" {
        // The standard envelope, the common case.
        return Ok((
            envelope_json(&job.event, &job.endpoint.id),
            "application/json",
        ));
    }
    let env = envelope(job);
    if job.endpoint.format == "template" {
        let source = job.endpoint.template.as_deref().unwrap_or("");
        let mut jinja = minijinja::Environment::new();
        jinja.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let rendered = jinja
            .render_str(source, minijinja::context! { event => minijinja::Value::from(minijinja::value::Serde(&env)) })
            .map_err(|e| format!("the payload template failed: {e}"))?;
        let ct = if job.endpoint.content_type == "form" {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        return Ok((rendered.into_bytes(), ct));
    }
    Ok((
        form_encode(&env).into_bytes(),
        "application/x-www-form-urlencoded",
    ))
}

/// Checks a payload template's syntax.
pub fn check_template(source: &str) -> Result<(), String> {
    let jinja = minijinja::Environment::new();
    jinja
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn retry_after(resp: &http1::Response) -> Option<Duration> {
    resp.header("retry-after")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// The body's first `RESPONSE_BODY_CHARS` characters.
fn body_prefix(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(RESPONSE_BODY_CHARS)
        .collect()
}

impl WebhookDeliverer {
    /// A deliverer over the store.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: WebhookConfig) -> Self {
        let client = http1::Client::new(
            config.allow_networks.clone(),
            concat!("Switchboard-Webhooks/", env!("CARGO_PKG_VERSION")),
        );
        WebhookDeliverer {
            inner: Arc::new(Inner {
                store: store.clone(),
                clock,
                client,
                config,
                results: Batcher::new(RESULT_BATCH, {
                    let store = store.clone();
                    Box::new(move |reports| {
                        let store = store.clone();
                        Box::pin(async move { store.complete_webhook_attempts(reports).await })
                    })
                }),
                urls: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Checks a destination against the SSRF policy.
    pub async fn check_destination(&self, url: &str) -> Result<(), String> {
        check_destination(url, &self.inner.config.allow_networks).await
    }

    /// Makes one attempt of a job and decides what follows (no store writes).
    pub async fn attempt(&self, job: &WebhookJob) -> WebhookAttemptReport {
        let started = Instant::now();
        let rendered = render_body(job);
        // A payload template that renders nothing for an event leaves it out
        // (adapters that report only some events: 2X's opt-outs).
        let skipped = job.endpoint.format == "template"
            && rendered
                .as_ref()
                .is_ok_and(|(b, _)| b.iter().all(u8::is_ascii_whitespace));
        let (status_code, error, body, retry_after) = if skipped {
            let why = "skipped: the payload template rendered nothing for this event";
            (None, None, Some(why.to_owned()), None)
        } else {
            match self.call(job, rendered).await {
                Ok((status, body, retry_after)) => (Some(status), None, Some(body), retry_after),
                Err(e) => (None, Some(e), None, None),
            }
        };
        let now = self.inner.clock.now();
        let ok = skipped || status_code.is_some_and(|s| (200..300).contains(&s));
        let outcome = if ok {
            WebhookOutcome::Succeeded
        } else if status_code == Some(410) {
            WebhookOutcome::Gone
        } else if job.trigger == "test" {
            WebhookOutcome::GaveUp
        } else {
            next_attempt(
                &job.endpoint.retry_schedule,
                job.attempt,
                now,
                retry_after,
                fastrand::f64(),
            )
        };
        WebhookAttemptReport {
            delivery_id: job.delivery_id.clone(),
            endpoint_id: job.endpoint.id.clone(),
            event_id: job.event.id.clone(),
            attempt: job.attempt,
            trigger: job.trigger.clone(),
            status_code,
            error,
            response_body: body,
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            finished_at: now,
            outcome,
        }
    }

    /// The endpoint's URL, parsed once while it is in use.
    fn endpoint_url(&self, text: &str) -> Result<url::Url, String> {
        let mut urls = self.inner.urls.lock().expect("url cache lock");
        if let Some(url) = urls.get(text) {
            return Ok(url.clone());
        }
        let url = url::Url::parse(text).map_err(|err| format!("invalid URL: {err}"))?;
        if urls.len() >= URL_CACHE {
            urls.clear();
        }
        urls.insert(text.to_owned(), url.clone());
        Ok(url)
    }

    async fn call(
        &self,
        job: &WebhookJob,
        rendered: Result<(Vec<u8>, &'static str), String>,
    ) -> Result<(u16, String, Option<Duration>), String> {
        let e = &job.endpoint;
        let url = self.endpoint_url(&e.url)?;
        let (body, content_type) = rendered?;
        let now = self.inner.clock.now();
        let ts = now.as_millis() / 1000;
        let mut secrets = vec![WebhookSecret::parse(&e.secret).map_err(|err| err.to_string())?];
        if let (Some(prev), Some(until)) = (&e.previous_secret, e.previous_secret_until)
            && now < until
        {
            secrets.push(WebhookSecret::parse(prev).map_err(|err| err.to_string())?);
        }
        let refs: Vec<&WebhookSecret> = secrets.iter().collect();
        let signature = signature_header(&refs, &job.event.id, ts, &body);
        let ts = ts.to_string();
        let mut headers: Vec<(&str, &str)> = vec![
            ("content-type", content_type),
            ("webhook-id", &job.event.id),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &signature),
        ];
        headers.extend(e.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let resp = self
            .inner
            .client
            .send(&http1::Request {
                method: &e.method,
                url: &url,
                headers: &headers,
                body: &body,
                timeout: Duration::from_millis(u64::from(e.timeout_ms)),
                keep: RESPONSE_BODY_CHARS * 4,
            })
            .await?;
        Ok((resp.status, body_prefix(&resp.body), retry_after(&resp)))
    }

    async fn run_job(&self, job: WebhookJob) {
        let report = self.attempt(&job).await;
        match self.inner.results.submit(report).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::error!(delivery = %job.delivery_id, error = %e, "recording a webhook attempt failed");
            }
            None => {
                tracing::error!(delivery = %job.delivery_id, "recording a webhook attempt failed: the result writer stopped");
            }
        }
    }

    /// Claims what is due and delivers it. Returns how many were attempted.
    pub async fn deliver_once(&self) -> Result<usize, StoreError> {
        let inner = &self.inner;
        let jobs = inner
            .store
            .claim_webhook_deliveries(inner.clock.now(), inner.config.batch, inner.config.lease)
            .await?;
        let n = jobs.len();
        let mut tasks = JoinSet::new();
        for job in jobs {
            let me = self.clone();
            tasks.spawn(Box::pin(async move { me.run_job(job).await }));
        }
        while tasks.join_next().await.is_some() {}
        Ok(n)
    }

    /// When a delivery may next become claimable
    /// (`Store::next_webhook_due_at`).
    pub async fn next_due_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.inner
            .store
            .next_webhook_due_at(self.inner.clock.now())
            .await
    }

    /// Runs until `shutdown`, finishing the attempts in flight. Claims
    /// whenever there is room under `concurrency`, not batch by batch: a
    /// slow endpoint holds its own deliveries, not the next claim.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = &self.inner.config;
        // Deliveries this node commits wake the loop; the idle poll finds
        // the rest (retries falling due, another node's work).
        let signals = self.inner.store.signals();
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = permits.available_permits().min(config.batch);
            if free == 0 {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let jobs = self
                .inner
                .store
                .claim_webhook_deliveries(self.inner.clock.now(), free, config.lease)
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "webhook pass failed");
                    Vec::new()
                });
            if jobs.is_empty() {
                let poll = config.idle_poll;
                let wait = match self.next_due_at().await {
                    Ok(Some(t)) => t
                        .since(self.inner.clock.now())
                        .clamp(Duration::from_millis(5), poll),
                    _ => poll,
                };
                tokio::select! {
                    // A delivery that finishes may free the next of its message.
                    Some(_) = tasks.join_next() => {}
                    () = signals.deliveries.notified() => {
                        // On PostgreSQL every batch that recorded events
                        // wakes the deliverer, deliveries or not: claim at
                        // most every `EMPTY_CLAIM_GAP` after finding none,
                        // not once per write batch.
                        tokio::select! {
                            () = tokio::time::sleep(EMPTY_CLAIM_GAP) => {}
                            () = shutdown.cancelled() => break,
                        }
                    }
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            for job in jobs {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed");
                let me = self.clone();
                // Boxed: a delivery's future is about 3.6 KB (its HTTP/1.1
                // exchange inline), and tokio copies a task's future whole
                // as it moves it into the task's cell and again as the
                // task's output takes its place; boxed, each copy is a
                // pointer. The deliverer's instructions a delivery −4%
                // (bench/HISTORY.md, "Forty-seventh session").
                tasks.spawn(Box::pin(async move {
                    me.run_job(job).await;
                    drop(permit);
                }));
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// The retry decision after failed attempt `attempt` (1-based): the
/// schedule's delay for it with up to 20% jitter (never early), or the
/// endpoint's `Retry-After` if later; give up when the schedule is used up.
pub fn next_attempt(
    schedule: &[u32],
    attempt: u32,
    now: Timestamp,
    retry_after: Option<Duration>,
    unit: f64,
) -> WebhookOutcome {
    let Some(secs) = schedule.get(attempt.saturating_sub(1) as usize) else {
        return WebhookOutcome::GaveUp;
    };
    let base = Duration::from_secs(u64::from(*secs));
    let delay = base.mul_f64(1.0 + 0.2 * unit.clamp(0.0, 1.0));
    let delay = retry_after.map_or(delay, |ra| delay.max(ra));
    WebhookOutcome::RetryAt(now.plus(delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp::from_millis(1_000_000);

    #[test]
    fn the_schedule_is_followed_then_exhausted() {
        let s = [60, 300];
        assert_eq!(
            next_attempt(&s, 1, T, None, 0.0),
            WebhookOutcome::RetryAt(T.plus(Duration::from_secs(60)))
        );
        assert_eq!(
            next_attempt(&s, 2, T, None, 1.0),
            WebhookOutcome::RetryAt(T.plus(Duration::from_secs(360)))
        );
        assert_eq!(next_attempt(&s, 3, T, None, 0.5), WebhookOutcome::GaveUp);
        assert_eq!(next_attempt(&[], 1, T, None, 0.5), WebhookOutcome::GaveUp);
    }

    #[test]
    fn retry_after_pushes_the_retry_later_never_earlier() {
        let s = [60];
        assert_eq!(
            next_attempt(&s, 1, T, Some(Duration::from_secs(600)), 0.0),
            WebhookOutcome::RetryAt(T.plus(Duration::from_secs(600)))
        );
        assert_eq!(
            next_attempt(&s, 1, T, Some(Duration::from_secs(1)), 0.0),
            WebhookOutcome::RetryAt(T.plus(Duration::from_secs(60)))
        );
    }

    #[test]
    fn the_envelope_serialized_directly_is_the_envelope_value_byte_for_byte() {
        let event = WebhookEvent {
            id: "evt_01JD000000000000000000000".into(),
            event_type: "message.delivered".into(),
            created_at: T,
            workspace_id: switchboard_core::WorkspaceId::new_at(T),
            data: switchboard_store::EventData::of(&json!({
                "object": "message", "id": "msg_1", "body": "quote \" and ✓ and \n",
                "metadata": {"z": 1, "a": [true, null, 2.5]}, "error_code": null,
            })),
        };
        assert_eq!(
            envelope_json(&event, "we_1"),
            envelope_value(&event, "we_1").to_string().into_bytes()
        );
        // Texts that JSON escapes, in every field written by hand.
        let odd = WebhookEvent {
            id: "evt_\"1\"\\".into(),
            event_type: "message.\u{1}\n\t🎉".into(),
            ..event
        };
        for endpoint in ["we_1", "we_\"x\"\r", ""] {
            assert_eq!(
                envelope_json(&odd, endpoint),
                envelope_value(&odd, endpoint).to_string().into_bytes()
            );
        }
    }

    #[test]
    fn form_bodies_are_url_encoded() {
        let v = json!({"event": "message.sent", "data": {"a": "b c"}});
        assert_eq!(
            form_encode(&v),
            "data=%7B%22a%22%3A%22b+c%22%7D&event=message.sent"
        );
    }
}
