//! SMPP 3.4: an ESME (client) bound as a transceiver to a carrier's SMSC.
//!
//! One connection per provider instance, owned by a background task that
//! connects, binds, answers `enquire_link`, sends its own on a timer, reads
//! responses and `deliver_sm`, and reconnects with backoff when the link
//! drops or stops answering. A send splits the text into parts
//! (`text::encode`), and submits each with a sequence number, waiting for
//! its `submit_sm_resp`; at most `window` submits are outstanding on the
//! link. `ESME_RTHROTTLED` and `ESME_RMSGQFUL` pause the link and shrink the
//! window (it grows back one step per ten accepted submits); the submit is
//! tried again after the pause, so throttling slows sending without losing
//! messages. `deliver_sm` is a delivery receipt (by `esm_class`, read from
//! the `receipted_message_id`/`message_state` TLVs or the Appendix B text)
//! or a message from a handset; either is handed to the gateway's `Sink`
//! and acknowledged only once stored.
//!
//! The message id Switchboard keeps is the first part's; receipts for later
//! parts are mapped to it while this process runs (a failure of any part
//! fails the message).

pub mod pdu;
pub mod smsc;
pub mod text;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use switchboard_core::{ErrorClass, ReceiptKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::callback::{CallbackItem, Delivered, InboundItem, Sink};
use crate::registry::{SpecError, section};
use crate::{Provider, ProviderError, SendAccepted, SendRequest};
use pdu::{Body, Pdu, Sm, cmd, status, tag};

/// How to reach one SMSC.
#[derive(Clone)]
pub struct SmppConfig {
    /// SMSC host.
    pub host: String,
    /// SMSC port (2775 by convention).
    pub port: u16,
    /// `system_id` to bind with.
    pub system_id: String,
    /// Bind password.
    pub password: String,
    /// `system_type`, if the SMSC wants one.
    pub system_type: String,
    /// Most `submit_sm` outstanding at once.
    pub window: usize,
    /// Idle time before sending `enquire_link`.
    pub enquire_link: Duration,
    /// How long a response may take before the link counts as dead.
    pub response_timeout: Duration,
    /// First and longest wait between reconnection attempts.
    pub reconnect: (Duration, Duration),
    /// TON/NPI of our source addresses (5/0 alphanumeric is picked for
    /// addresses with letters).
    pub source_ton_npi: (u8, u8),
    /// TON/NPI of destination numbers (1/1: international, E.164).
    pub dest_ton_npi: (u8, u8),
    /// Pack GSM 03.38 septets (some SMSCs want 8 septets in 7 octets).
    pub gsm7_packed: bool,
    /// How the SMSC writes message ids in receipts compared with
    /// `submit_sm_resp` (some answer in hex and report in decimal).
    pub receipt_ids: ReceiptIds,
    /// Times a throttled submit is tried again on the link before the
    /// dispatcher gets a throttle error.
    pub throttle_retries: u32,
}

impl std::fmt::Debug for SmppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmppConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("system_id", &self.system_id)
            .field("password", &"[redacted]")
            .field("window", &self.window)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecConfig {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    system_id: String,
    #[serde(default)]
    system_type: Option<String>,
    #[serde(default)]
    window: Option<usize>,
    #[serde(default)]
    enquire_link_seconds: Option<u64>,
    #[serde(default)]
    response_timeout_ms: Option<u64>,
    #[serde(default)]
    source_ton: Option<u8>,
    #[serde(default)]
    source_npi: Option<u8>,
    #[serde(default)]
    dest_ton: Option<u8>,
    #[serde(default)]
    dest_npi: Option<u8>,
    #[serde(default)]
    gsm7_packed: Option<bool>,
    #[serde(default)]
    receipt_id_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecCredentials {
    password: String,
}

impl SmppConfig {
    /// Reads a stored provider's settings: `config` `{host, port?,
    /// system_id, system_type?, window?, enquire_link_seconds?,
    /// response_timeout_ms?, source_ton?, source_npi?, dest_ton?, dest_npi?,
    /// gsm7_packed?, receipt_id_format?}` and `credentials` `{password}`.
    pub fn from_spec(
        config: &serde_json::Value,
        credentials: &serde_json::Value,
    ) -> Result<Self, SpecError> {
        let c: SpecConfig = section("config", config)?;
        let k: SpecCredentials = section("credentials", credentials)?;
        if c.host.trim().is_empty() || c.host.len() > 253 || c.host.contains(['/', ' ']) {
            return Err(SpecError::new("config.host", "a host name or IP address"));
        }
        if c.system_id.is_empty() || c.system_id.len() > 15 {
            return Err(SpecError::new(
                "config.system_id",
                "1 to 15 characters (SMPP 3.4)",
            ));
        }
        if k.password.len() > 8 {
            return Err(SpecError::new(
                "credentials.password",
                "at most 8 characters (SMPP 3.4)",
            ));
        }
        let system_type = c.system_type.unwrap_or_default();
        if system_type.len() > 12 {
            return Err(SpecError::new(
                "config.system_type",
                "at most 12 characters",
            ));
        }
        let window = c.window.unwrap_or(10);
        if !(1..=1000).contains(&window) {
            return Err(SpecError::new("config.window", "from 1 to 1000"));
        }
        let enquire = c.enquire_link_seconds.unwrap_or(30);
        if !(1..=3600).contains(&enquire) {
            return Err(SpecError::new(
                "config.enquire_link_seconds",
                "from 1 to 3600",
            ));
        }
        let timeout = c.response_timeout_ms.unwrap_or(10_000);
        if !(50..=120_000).contains(&timeout) {
            return Err(SpecError::new(
                "config.response_timeout_ms",
                "from 50 to 120000",
            ));
        }
        Ok(SmppConfig {
            host: c.host,
            port: c.port.unwrap_or(2775),
            system_id: c.system_id,
            password: k.password,
            system_type,
            window,
            enquire_link: Duration::from_secs(enquire),
            response_timeout: Duration::from_millis(timeout),
            reconnect: (Duration::from_millis(500), Duration::from_secs(30)),
            source_ton_npi: (c.source_ton.unwrap_or(1), c.source_npi.unwrap_or(1)),
            dest_ton_npi: (c.dest_ton.unwrap_or(1), c.dest_npi.unwrap_or(1)),
            gsm7_packed: c.gsm7_packed.unwrap_or(false),
            receipt_ids: match c.receipt_id_format.as_deref() {
                None | Some("same") => ReceiptIds::Same,
                Some("decimal_in_receipts") => ReceiptIds::DecimalInReceipts,
                Some("hex_in_receipts") => ReceiptIds::HexInReceipts,
                Some(_) => {
                    return Err(SpecError::new(
                        "config.receipt_id_format",
                        "`same`, `decimal_in_receipts` (submit_sm_resp in hex) or `hex_in_receipts`",
                    ));
                }
            },
            throttle_retries: 5,
        })
    }
}

/// How an SMSC's receipts name the message ids its `submit_sm_resp` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptIds {
    /// The same string.
    Same,
    /// `submit_sm_resp` in hex, receipts in decimal.
    DecimalInReceipts,
    /// `submit_sm_resp` in decimal, receipts in hex.
    HexInReceipts,
}

impl ReceiptIds {
    /// The id a message keeps, from `submit_sm_resp`'s: numeric ids are
    /// kept in decimal when the two differ, so that receipts match.
    fn submitted_id(self, id: &str) -> String {
        match self {
            ReceiptIds::Same => id.to_owned(),
            ReceiptIds::DecimalInReceipts => {
                u128::from_str_radix(id, 16).map_or_else(|_| id.to_owned(), |n| n.to_string())
            }
            ReceiptIds::HexInReceipts => normalise_decimal(id).unwrap_or_else(|| id.to_owned()),
        }
    }

    /// The id a receipt names, in the form the message kept.
    fn receipt_id(self, id: &str) -> String {
        match self {
            ReceiptIds::Same => id.to_owned(),
            ReceiptIds::DecimalInReceipts => normalise_decimal(id).unwrap_or_else(|| id.to_owned()),
            ReceiptIds::HexInReceipts => {
                u128::from_str_radix(id, 16).map_or_else(|_| id.to_owned(), |n| n.to_string())
            }
        }
    }
}

/// Leading zeros dropped from a decimal id; `None` if it is not one.
fn normalise_decimal(id: &str) -> Option<String> {
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .then(|| id.parse::<u128>().ok().map(|n| n.to_string()))
        .flatten()
}

/// What a submit got back.
type Reply = Result<Pdu, ProviderError>;

/// The window: how many submits may be outstanding, and how many are.
struct Window {
    /// (outstanding, size).
    counts: Mutex<(usize, usize)>,
    freed: tokio::sync::Notify,
}

/// One outstanding submit's place in the window, given back on drop (also
/// when the send is abandoned).
struct Slot<'a>(&'a Window);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lock().0 -= 1;
        self.0.freed.notify_waiters();
    }
}

impl Window {
    fn new(size: usize) -> Window {
        Window {
            counts: Mutex::new((0, size)),
            freed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, usize)> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn acquire(&self) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut c = self.lock();
                if c.0 < c.1 {
                    c.0 += 1;
                    return Slot(self);
                }
            }
            freed.await;
        }
    }

    fn size(&self) -> usize {
        self.lock().1
    }

    /// Sets the size (at least 1); a larger window lets waiters in.
    fn resize(&self, size: usize) {
        self.lock().1 = size.max(1);
        self.freed.notify_waiters();
    }
}

/// A bound link, as senders see it.
struct Link {
    /// PDUs to write.
    out: mpsc::Sender<Vec<u8>>,
    /// Responses awaited, by sequence number.
    pending: Mutex<HashMap<u32, oneshot::Sender<Reply>>>,
    /// Submits outstanding at once (the window; shrunk by throttling).
    window: Window,
    /// Accepted submits since the window last changed.
    accepted: AtomicUsize,
    /// Sending pauses until then (throttled).
    paused_until: Mutex<Option<Instant>>,
    /// Throttle answers in a row.
    throttled: AtomicU32,
}

impl Link {
    fn take(&self, seq: u32) -> Option<oneshot::Sender<Reply>> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq)
    }

    /// Fails everything outstanding (the link is gone).
    fn fail_all(&self, why: &str) {
        let waiting: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (_, tx) in waiting {
            let _ = tx.send(Err(ProviderError::new(
                ErrorClass::Transport,
                "smpp_connection_lost",
                why.to_owned(),
            )));
        }
    }
}

struct Shared {
    cfg: SmppConfig,
    provider_id: String,
    sink: Option<Sink>,
    link: watch::Sender<Option<Arc<Link>>>,
    /// `connecting`, `bound`, or why the last bind failed.
    state: Mutex<String>,
    seq: AtomicU32,
    reference: AtomicU8,
    /// Later parts' SMSC ids → the first part's (what the message keeps).
    heads: Mutex<HashMap<String, String>>,
}

impl Shared {
    fn next_seq(&self) -> u32 {
        // 1 to 0x7FFFFFFF, wrapping.
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        (n % 0x7FFF_FFFE) + 2
    }

    fn set_state(&self, s: impl Into<String>) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s.into();
    }
}

/// The SMPP connector: a `Provider` whose receipts and inbound messages
/// arrive on its own connection and go to the gateway's `Sink`.
pub struct Smpp {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Smpp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smpp")
            .field("cfg", &self.shared.cfg)
            .finish_non_exhaustive()
    }
}

impl Drop for Smpp {
    fn drop(&mut self) {
        let link = self.shared.link.borrow().clone();
        let Some(link) = link else {
            self.task.abort();
            return;
        };
        link.fail_all("the provider was removed");
        // Say goodbye: an `unbind`, then the link closes (its answer is not
        // awaited for long).
        let unbind = Pdu::empty(cmd::UNBIND, status::OK, self.shared.next_seq()).encode();
        let sent = link.out.try_send(unbind).is_ok();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if sent => {
                let task = self.task.abort_handle();
                rt.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    task.abort();
                });
            }
            _ => self.task.abort(),
        }
    }
}

impl Smpp {
    /// Starts the connection task (it connects and binds at once, and
    /// keeps doing so). Must be called inside a Tokio runtime.
    pub fn start(cfg: SmppConfig, provider_id: &str, sink: Option<Sink>) -> Smpp {
        let (link, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            cfg,
            provider_id: provider_id.to_owned(),
            sink,
            link,
            state: Mutex::new("connecting".into()),
            seq: AtomicU32::new(0),
            reference: AtomicU8::new(fastrand::u8(..)),
            heads: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(run(shared.clone()));
        Smpp { shared, task }
    }

    /// `connecting`, `bound`, or why the link is down.
    pub fn link_state(&self) -> String {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the link is bound (for up to `wait`).
    async fn bound(&self, wait: Duration) -> Result<Arc<Link>, ProviderError> {
        let mut rx = self.shared.link.subscribe();
        let found = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        match found {
            Ok(Ok(link)) => Ok(link.clone().expect("waited for Some")),
            _ => Err(ProviderError::new(
                ErrorClass::Transport,
                "smpp_not_bound",
                format!(
                    "not bound to the SMSC at {}:{} ({})",
                    self.shared.cfg.host,
                    self.shared.cfg.port,
                    self.link_state()
                ),
            )),
        }
    }

    /// Submits one part and answers the SMSC's message id, trying again
    /// after a pause while the SMSC throttles.
    async fn submit(&self, sm: Sm) -> Result<String, ProviderError> {
        let cfg = &self.shared.cfg;
        let mut tries = 0;
        loop {
            let link = self.bound(cfg.response_timeout).await?;
            let pause = *link.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = pause {
                tokio::time::sleep_until(until).await;
            }
            let slot = link.window.acquire().await;
            let seq = self.shared.next_seq();
            let (tx, rx) = oneshot::channel();
            link.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(seq, tx);
            let bytes = Pdu {
                command_id: cmd::SUBMIT_SM,
                status: status::OK,
                sequence: seq,
                body: Body::Sm(Box::new(sm.clone())),
            }
            .encode();
            if link.out.send(bytes).await.is_err() {
                link.take(seq);
                return Err(ProviderError::new(
                    ErrorClass::Transport,
                    "smpp_connection_lost",
                    "the link closed before the submit was written",
                ));
            }
            let reply = match tokio::time::timeout(cfg.response_timeout, rx).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => Err(ProviderError::new(
                    ErrorClass::Transport,
                    "smpp_connection_lost",
                    "the link closed before the SMSC answered",
                )),
                Err(_) => {
                    link.take(seq);
                    Err(ProviderError::new(
                        ErrorClass::Transport,
                        "timeout",
                        format!("no submit_sm_resp within {:?}", cfg.response_timeout),
                    ))
                }
            };
            drop(slot);
            let resp = reply?;
            if resp.command_id == cmd::GENERIC_NACK {
                return Err(ProviderError::new(
                    ErrorClass::Transport,
                    "smpp_generic_nack",
                    format!(
                        "the SMSC could not read the submit (status {:#x})",
                        resp.status
                    ),
                ));
            }
            match resp.status {
                status::OK => {
                    link.throttled.store(0, Ordering::Relaxed);
                    grow(&link, cfg.window);
                    return match resp.body {
                        Body::SmResp { message_id } if !message_id.is_empty() => Ok(message_id),
                        _ => Err(ProviderError::new(
                            ErrorClass::Transport,
                            "upstream_bad_response",
                            "submit_sm_resp without a message_id",
                        )),
                    };
                }
                status::THROTTLED | status::MSGQFUL if tries < cfg.throttle_retries => {
                    tries += 1;
                    throttle(&link);
                }
                code => return Err(classify(code)),
            }
        }
    }
}

/// The SMSC throttled: pause the link (200 ms doubling, at most 5 s) and
/// shrink the window by one.
fn throttle(link: &Link) {
    let n = link.throttled.fetch_add(1, Ordering::Relaxed).min(5);
    let wait = Duration::from_millis(200 << n).min(Duration::from_secs(5));
    *link.paused_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + wait);
    link.accepted.store(0, Ordering::Relaxed);
    link.window.resize(link.window.size() - 1);
}

/// One step back towards the full window per ten accepted submits.
fn grow(link: &Link, max: usize) {
    if link.accepted.fetch_add(1, Ordering::Relaxed) + 1 < 10 {
        return;
    }
    link.accepted.store(0, Ordering::Relaxed);
    let size = link.window.size();
    if size < max {
        link.window.resize(size + 1);
    }
}

/// What an SMPP command status means for the message.
pub fn classify(code: u32) -> ProviderError {
    let (class, ours) = match code {
        status::THROTTLED | status::MSGQFUL => (ErrorClass::Throttled, "rate_limited"),
        status::INVDSTADR => (ErrorClass::Permanent, "invalid_number"),
        status::INVSRCADR => (ErrorClass::Permanent, "invalid_sender"),
        status::INVMSGLEN => (ErrorClass::Permanent, "invalid_body"),
        status::SYSERR | status::SUBMITFAIL | status::INVBNDSTS | status::X_T_APPN => {
            (ErrorClass::Transport, "upstream_unavailable")
        }
        _ => (ErrorClass::Permanent, "provider_rejected"),
    };
    ProviderError::new(
        class,
        ours,
        format!("the SMSC answered status {code:#010x}"),
    )
}

/// An address and the TON/NPI to send it with: an E.164 number as
/// international digits, letters as alphanumeric.
fn address(addr: &str, ton_npi: (u8, u8)) -> (String, u8, u8) {
    if let Some(digits) = addr.strip_prefix('+') {
        (digits.to_owned(), ton_npi.0, ton_npi.1)
    } else if addr.bytes().all(|b| b.is_ascii_digit()) {
        (addr.to_owned(), 0, 1)
    } else {
        (addr.to_owned(), 5, 0)
    }
}

#[async_trait]
impl Provider for Smpp {
    async fn send(&self, req: &SendRequest) -> Result<SendAccepted, ProviderError> {
        let cfg = &self.shared.cfg;
        // SMS carries no attachments: media go as links in the text.
        let mut body = req.body.clone();
        for url in &req.media_urls {
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str(url);
        }
        let reference = self.shared.reference.fetch_add(1, Ordering::Relaxed);
        let encoded = text::encode(&body, reference, cfg.gsm7_packed);
        let (source, s_ton, s_npi) = address(&req.from, cfg.source_ton_npi);
        let (dest, d_ton, d_npi) = address(&req.to, cfg.dest_ton_npi);
        let mut ids = Vec::with_capacity(encoded.parts.len());
        for part in encoded.parts {
            let sm = Sm {
                source_ton: s_ton,
                source_npi: s_npi,
                source_addr: source.clone(),
                dest_ton: d_ton,
                dest_npi: d_npi,
                destination_addr: dest.clone(),
                esm_class: encoded.esm_class,
                registered_delivery: 1,
                data_coding: encoded.data_coding,
                short_message: part,
                ..Sm::default()
            };
            let id = self.submit(sm).await?;
            ids.push(cfg.receipt_ids.submitted_id(&id));
        }
        let head = ids.first().cloned().unwrap_or_default();
        if ids.len() > 1 {
            let mut heads = self.shared.heads.lock().unwrap_or_else(|e| e.into_inner());
            if heads.len() > 100_000 {
                heads.clear();
            }
            for id in &ids[1..] {
                heads.insert(id.clone(), head.clone());
            }
        }
        Ok(SendAccepted {
            provider_message_id: head,
        })
    }

    fn link_state(&self) -> Option<String> {
        Some(Smpp::link_state(self))
    }
}

/// Connects, binds and serves the link, again and again, with backoff.
async fn run(shared: Arc<Shared>) {
    let (min, max) = shared.cfg.reconnect;
    let mut wait = min;
    loop {
        match connect_and_bind(&shared).await {
            Ok(stream) => {
                wait = min;
                shared.set_state("bound");
                tracing::info!(provider = %shared.provider_id, host = %shared.cfg.host, "SMPP bound");
                let why = serve(&shared, stream).await;
                shared.set_state(format!("reconnecting: {why}"));
                tracing::warn!(provider = %shared.provider_id, reason = %why, "SMPP link lost; reconnecting");
            }
            Err(why) => {
                shared.set_state(format!("bind failed: {why}"));
                tracing::warn!(provider = %shared.provider_id, reason = %why, retry_in = ?wait, "SMPP bind failed");
            }
        }
        tokio::time::sleep(
            wait + Duration::from_millis(fastrand::u64(..=wait.as_millis() as u64 / 4 + 1)),
        )
        .await;
        wait = (wait * 2).min(max);
    }
}

async fn read_pdu(
    stream: &mut (impl AsyncReadExt + Unpin),
) -> Result<Result<Pdu, (u32, pdu::PduError)>, String> {
    let mut head = [0u8; 4];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| format!("reading: {e}"))?;
    let len = u32::from_be_bytes(head) as usize;
    if !(16..=pdu::MAX_PDU).contains(&len) {
        // Framing is lost: nothing after this can be trusted.
        return Err(format!("a PDU claims {len} octets"));
    }
    let mut buf = vec![0u8; len];
    buf[..4].copy_from_slice(&head);
    stream
        .read_exact(&mut buf[4..])
        .await
        .map_err(|e| format!("reading: {e}"))?;
    let seq = u32::from_be_bytes(buf[12..16].try_into().expect("4 bytes"));
    Ok(Pdu::decode(&buf).map_err(|e| (seq, e)))
}

/// What the reader task hands over: a PDU, an unreadable one (with its
/// sequence number), or why the connection ended.
type Read = Result<Result<Pdu, (u32, pdu::PduError)>, String>;

/// Reads PDUs in a task of its own (a read cut short by `select!` would
/// lose the stream's framing) until the connection ends.
fn spawn_reader(
    mut reader: impl AsyncReadExt + Unpin + Send + 'static,
) -> (mpsc::Receiver<Read>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        loop {
            let read = read_pdu(&mut reader).await;
            let end = read.is_err();
            if tx.send(read).await.is_err() || end {
                break;
            }
        }
    });
    (rx, task)
}

async fn connect_and_bind(shared: &Shared) -> Result<TcpStream, String> {
    let cfg = &shared.cfg;
    let mut stream = tokio::time::timeout(
        cfg.response_timeout,
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    .map_err(|_| "connecting timed out".to_owned())?
    .map_err(|e| format!("connecting: {e}"))?;
    let _ = stream.set_nodelay(true);
    let seq = shared.next_seq();
    let bind = Pdu {
        command_id: cmd::BIND_TRANSCEIVER,
        status: status::OK,
        sequence: seq,
        body: Body::Bind {
            system_id: cfg.system_id.clone(),
            password: cfg.password.clone(),
            system_type: cfg.system_type.clone(),
            interface_version: 0x34,
            addr_ton: 0,
            addr_npi: 0,
            address_range: String::new(),
        },
    };
    stream
        .write_all(&bind.encode())
        .await
        .map_err(|e| format!("writing the bind: {e}"))?;
    let resp = tokio::time::timeout(cfg.response_timeout, read_pdu(&mut stream))
        .await
        .map_err(|_| "no bind_transceiver_resp".to_owned())??
        .map_err(|(_, e)| e.to_string())?;
    match resp {
        Pdu {
            command_id: cmd::BIND_TRANSCEIVER_RESP,
            status: status::OK,
            ..
        } => Ok(stream),
        Pdu {
            command_id: cmd::BIND_TRANSCEIVER_RESP,
            status: code,
            ..
        } => Err(format!(
            "the SMSC refused the bind with status {code:#010x}{}",
            match code {
                status::INVPASWD => " (wrong password)",
                status::INVSYSID => " (unknown system_id)",
                status::BINDFAIL => " (bind failed)",
                status::ALYBND => " (already bound)",
                _ => "",
            }
        )),
        other => Err(format!(
            "expected bind_transceiver_resp, got command {:#010x}",
            other.command_id
        )),
    }
}

/// Serves a bound link until it fails; returns why.
async fn serve(shared: &Arc<Shared>, stream: TcpStream) -> String {
    let cfg = &shared.cfg;
    let (reader, mut writer) = stream.into_split();
    let (mut reads, read_task) = spawn_reader(reader);
    // Also when this future is dropped (the provider was removed).
    let _reader = AbortOnDrop(read_task.abort_handle());
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(cfg.window * 2 + 16);
    let link = Arc::new(Link {
        out: out_tx.clone(),
        pending: Mutex::new(HashMap::new()),
        window: Window::new(cfg.window),
        accepted: AtomicUsize::new(0),
        paused_until: Mutex::new(None),
        throttled: AtomicU32::new(0),
    });
    shared.link.send_replace(Some(link.clone()));
    let mut write_task = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if let Err(e) = writer.write_all(&bytes).await {
                return format!("writing: {e}");
            }
        }
        "the writer stopped".to_owned()
    });
    let _writer = AbortOnDrop(write_task.abort_handle());
    let mut last_heard = Instant::now();
    let mut ping: Option<(u32, Instant)> = None;
    let why = loop {
        let tick = tokio::time::sleep(Duration::from_millis(100).min(cfg.enquire_link));
        tokio::select! {
            read = reads.recv() => {
                last_heard = Instant::now();
                match read {
                    None => break "the reader stopped".to_owned(),
                    Some(Err(why)) => break why,
                    Some(Ok(Err((seq, e)))) => {
                        tracing::warn!(provider = %shared.provider_id, error = %e, "unreadable PDU from the SMSC");
                        let nack = Pdu::empty(cmd::GENERIC_NACK, status::INVCMDLEN, seq).encode();
                        let _ = out_tx.send(nack).await;
                    }
                    Some(Ok(Ok(pdu))) => {
                        if let Some(why) = on_pdu(shared, &link, &out_tx, pdu, &mut ping).await {
                            break why;
                        }
                    }
                }
            }
            why = &mut write_task => break why.unwrap_or_else(|e| e.to_string()),
            () = tick => {
                if let Some((_, sent)) = ping
                    && sent.elapsed() > cfg.response_timeout
                {
                    break "no enquire_link_resp".to_owned();
                }
                if ping.is_none() && last_heard.elapsed() >= cfg.enquire_link {
                    let seq = shared.next_seq();
                    ping = Some((seq, Instant::now()));
                    let _ = out_tx.send(Pdu::empty(cmd::ENQUIRE_LINK, 0, seq).encode()).await;
                }
            }
        }
    };
    shared.link.send_replace(None);
    link.fail_all(&why);
    write_task.abort();
    why
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Handles one PDU from the SMSC; `Some(why)` ends the link.
async fn on_pdu(
    shared: &Arc<Shared>,
    link: &Arc<Link>,
    out: &mpsc::Sender<Vec<u8>>,
    pdu: Pdu,
    ping: &mut Option<(u32, Instant)>,
) -> Option<String> {
    match pdu.command_id {
        cmd::SUBMIT_SM_RESP | cmd::GENERIC_NACK => {
            if let Some(tx) = link.take(pdu.sequence) {
                let _ = tx.send(Ok(pdu));
            }
        }
        cmd::ENQUIRE_LINK_RESP if ping.is_some_and(|(seq, _)| seq == pdu.sequence) => {
            *ping = None;
        }
        cmd::ENQUIRE_LINK => {
            let _ = out
                .send(Pdu::empty(cmd::ENQUIRE_LINK_RESP, 0, pdu.sequence).encode())
                .await;
        }
        cmd::UNBIND => {
            // No new submits on a link that is closing: they wait for the next.
            shared.link.send_replace(None);
            let _ = out
                .send(Pdu::empty(cmd::UNBIND_RESP, 0, pdu.sequence).encode())
                .await;
            // Let the writer flush the answer.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Some("the SMSC unbound".into());
        }
        cmd::DELIVER_SM => {
            let Body::Sm(sm) = pdu.body else {
                return None;
            };
            let items = read_deliver(shared, &sm);
            let (shared, out, seq) = (shared.clone(), out.clone(), pdu.sequence);
            // Acknowledged once stored; a temporary error makes the SMSC
            // deliver it again.
            tokio::spawn(async move {
                let stored = hand_over(&shared, items).await;
                let code = if stored { status::OK } else { status::X_T_APPN };
                let resp = Pdu {
                    command_id: cmd::DELIVER_SM_RESP,
                    status: code,
                    sequence: seq,
                    body: Body::SmResp {
                        message_id: String::new(),
                    },
                };
                let _ = out.send(resp.encode()).await;
            });
        }
        cmd::UNBIND_RESP => return Some("unbound".into()),
        other if other & 0x8000_0000 == 0 => {
            let _ = out
                .send(Pdu::empty(cmd::GENERIC_NACK, status::INVCMDID, pdu.sequence).encode())
                .await;
        }
        _ => {}
    }
    None
}

async fn hand_over(shared: &Shared, items: Vec<CallbackItem>) -> bool {
    if items.is_empty() {
        return true;
    }
    let Some(sink) = &shared.sink else {
        return false;
    };
    let (done, stored) = oneshot::channel();
    let delivered = Delivered {
        provider_id: shared.provider_id.clone(),
        items,
        done,
    };
    if sink.send(delivered).await.is_err() {
        return false;
    }
    stored.await.unwrap_or(false)
}

/// A number as E.164 when the SMSC gave it as international digits.
fn e164(addr: &str, ton: u8) -> String {
    if ton == 1 && !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_digit()) {
        format!("+{addr}")
    } else {
        addr.to_owned()
    }
}

/// What a `deliver_sm` reports: a receipt, or a message from a handset.
fn read_deliver(shared: &Shared, sm: &Sm) -> Vec<CallbackItem> {
    let content = sm
        .tlv(tag::MESSAGE_PAYLOAD)
        .filter(|_| sm.short_message.is_empty())
        .unwrap_or(&sm.short_message);
    let is_receipt = sm.esm_class & 0x3C == text::ESM_RECEIPT;
    let body = text::decode(content, sm.data_coding, sm.esm_class);
    if !is_receipt {
        return vec![CallbackItem::Inbound(InboundItem {
            from: e164(&sm.source_addr, sm.source_ton),
            to: e164(&sm.destination_addr, sm.dest_ton),
            channel: "sms".into(),
            text: body,
            media_urls: Vec::new(),
            provider_message_id: None,
        })];
    }
    let parsed = text::parse_receipt(&body);
    let id = sm
        .tlv(tag::RECEIPTED_MESSAGE_ID)
        .map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned())
        .filter(|v| !v.is_empty())
        .or_else(|| parsed.as_ref().map(|p| p.id.clone()))
        .map(|id| shared.cfg.receipt_ids.receipt_id(&id));
    let state = sm
        .tlv(tag::MESSAGE_STATE)
        .and_then(|v| v.first().copied())
        .and_then(text::message_state_name)
        .map(str::to_owned)
        .or_else(|| parsed.as_ref().map(|p| p.stat.clone()));
    let (Some(id), Some(state)) = (id, state) else {
        tracing::warn!(provider = %shared.provider_id, text = %body, "a delivery receipt without an id or state; ignored");
        return Vec::new();
    };
    let (kind, code) = match state.as_str() {
        "DELIVRD" => (ReceiptKind::Delivered, None),
        "UNDELIV" => (ReceiptKind::Undelivered, Some("undeliverable")),
        "EXPIRED" => (ReceiptKind::Undelivered, Some("expired_at_smsc")),
        "DELETED" => (ReceiptKind::Undelivered, Some("deleted_at_smsc")),
        "REJECTD" => (ReceiptKind::Undelivered, Some("rejected_by_smsc")),
        "UNKNOWN" => (ReceiptKind::Undelivered, Some("unknown_delivery_state")),
        // ENROUTE, ACCEPTD: not final.
        _ => return Vec::new(),
    };
    let head = shared
        .heads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .cloned();
    let id = match head {
        // A later part delivered: the first part's receipt speaks for the message.
        Some(_) if kind == ReceiptKind::Delivered => return Vec::new(),
        Some(head) => head,
        None => id,
    };
    let raw = serde_json::json!({
        "receipt": body,
        "state": state,
        "err": parsed.and_then(|p| p.err),
    })
    .to_string();
    vec![CallbackItem::Receipt {
        provider_message_id: id,
        kind,
        error_code: code.map(str::to_owned),
        raw,
    }]
}
