//! The records the store reads and writes.

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};
use switchboard_core::message::NewMessage;
use switchboard_core::retry::GiveUpReason;
use switchboard_core::{
    Channel, ErrorClass, EventType, MessageId, ProviderId, Status, Timestamp, WorkspaceId,
};

/// A tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    /// Id.
    pub id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// myCRMSIM routing alias.
    pub location_id: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
}

/// An API key, without its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// Public id (`key_…`).
    pub id: String,
    /// The workspace it opens.
    pub workspace_id: WorkspaceId,
    /// The first characters of the secret, to recognise it.
    pub hint: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// When it was revoked; a revoked key opens nothing.
    pub revoked_at: Option<Timestamp>,
}

/// An address a workspace may send from on a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Sender {
    /// Id (`snd_…`).
    pub id: String,
    /// The channel.
    pub channel: Channel,
    /// The provider that carries it.
    pub provider_id: ProviderId,
    /// The address (number, alphanumeric id, …).
    pub address: String,
    /// Used when a submission names no `from`.
    pub is_default: bool,
    /// Place in the channel's failover order after the default (lower first).
    pub priority: i64,
}

/// A sender to add to a workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSender {
    /// The channel.
    pub channel: Channel,
    /// The provider that carries it.
    pub provider_id: ProviderId,
    /// The address.
    pub address: String,
    /// Make it the channel's default (the previous default stays, second).
    pub is_default: bool,
    /// Place in the failover order after the default (lower first).
    pub priority: i64,
}

/// A configured provider instance (a Twilio account, a WhatsApp number, an
/// SMPP link). Its credentials are stored apart from its configuration and
/// only ever shown as hints.
#[derive(Clone, PartialEq)]
pub struct ProviderRecord {
    /// Id (`pr_…`).
    pub id: ProviderId,
    /// Connector kind: `sim`, `twilio`, `whatsapp_cloud`, `smpp`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Non-secret settings (JSON object).
    pub config: serde_json::Value,
    /// Secrets (JSON object of strings).
    pub credentials: serde_json::Value,
    /// Transport or throttle failures on this provider before a message
    /// fails over to the next sender of its channel (`None`: the default).
    pub attempt_budget: Option<u32>,
    /// Throughput limit, sends per second, and its burst.
    pub rate: Option<(f64, f64)>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change; connectors are rebuilt when it moves.
    pub updated_at: Timestamp,
}

/// What deleting a provider did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderDeletion {
    /// Gone.
    Deleted,
    /// No such provider.
    NotFound,
    /// Senders still route through it: remove them first.
    InUse {
        /// How many.
        senders: u64,
    },
}

/// What adding a sender did.
#[derive(Debug, Clone, PartialEq)]
pub enum SenderCreation {
    /// Added.
    Created(Sender),
    /// The workspace already has this address on this channel.
    Duplicate,
    /// No such provider.
    UnknownProvider,
}

impl std::fmt::Debug for ProviderRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("config", &self.config)
            .field("credentials", &"[redacted]")
            .field("attempt_budget", &self.attempt_budget)
            .field("rate", &self.rate)
            .finish()
    }
}

/// A validated submission and what the store needs to keep it.
#[derive(Debug, Clone)]
pub struct AcceptRequest {
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// The message.
    pub message: NewMessage,
    /// Hash of the canonical request, to tell an idempotent replay from a conflict.
    pub request_hash: String,
    /// Provider chosen at submit.
    pub provider_id: ProviderId,
    /// Sender address chosen at submit.
    pub from: String,
    /// Acceptance time.
    pub now: Timestamp,
    /// Sent even to an opted-out recipient (a STOP confirmation).
    pub consent_exempt: bool,
    /// Held by quiet hours until this time (scheduled).
    pub hold_until: Option<Timestamp>,
    /// Refuse unless the recipient has a recorded opt-in on the channel.
    pub require_opt_in: bool,
}

/// The 202 answer to a submission; the same again for an idempotent replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// Message id.
    pub id: MessageId,
    /// The status it was stored in (`queued` or `scheduled`).
    pub status: Status,
    /// Echo of the caller's reference.
    pub client_ref: Option<String>,
    /// Segments of the body.
    pub segments: u32,
    /// Encoding of the body.
    pub encoding: String,
    /// When it was accepted.
    pub created_at: Timestamp,
}

/// What `accept_message` did.
#[derive(Debug, Clone, PartialEq)]
pub enum AcceptOutcome {
    /// A new message was stored.
    Created(Accepted),
    /// The idempotency key was seen with the same request: nothing new stored.
    Replayed(Accepted),
    /// The idempotency key was seen with a different request.
    Conflict {
        /// The message that holds the key.
        existing: MessageId,
    },
    /// The recipient has opted out of this channel: nothing stored.
    OptedOut,
    /// The workspace requires a recorded opt-in and there is none: nothing stored.
    OptInRequired,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    /// Id.
    pub id: MessageId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Recipient (E.164).
    pub to: String,
    /// Sender address.
    pub from: Option<String>,
    /// Channel.
    pub channel: String,
    /// Text.
    pub body: String,
    /// Media.
    pub media_urls: Vec<String>,
    /// Encoding.
    pub encoding: String,
    /// Segments.
    pub segments: u32,
    /// Caller's reference.
    pub client_ref: Option<String>,
    /// Caller's metadata.
    pub metadata: Option<Map<String, Value>>,
    /// Category.
    pub category: String,
    /// Priority.
    pub priority: String,
    /// Recipient zone.
    pub timezone: Option<String>,
    /// Current status.
    pub status: Status,
    /// Provider.
    pub provider_id: Option<String>,
    /// Provider's id for it, once sent.
    pub provider_message_id: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Next due time while scheduled or queued.
    pub next_attempt_at: Option<Timestamp>,
    /// Requested send time.
    pub send_at: Option<Timestamp>,
    /// Expiry.
    pub expires_at: Timestamp,
    /// Last error code.
    pub error_code: Option<String>,
    /// Last error message.
    pub error_message: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Accepted at.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// The WhatsApp template it is sent as, if any.
    pub whatsapp_template: Option<switchboard_core::message::ChannelTemplate>,
}

/// One entry of a message's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Event id.
    pub id: String,
    /// Event type.
    pub event_type: String,
    /// Status after the event.
    pub status: String,
    /// Free-text detail.
    pub detail: Option<String>,
    /// Error code, if the event records a failure.
    pub error_code: Option<String>,
    /// When.
    pub created_at: Timestamp,
}

/// One send attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Provider used.
    pub provider_id: String,
    /// Start.
    pub started_at: Timestamp,
    /// Duration in ms.
    pub duration_ms: i64,
    /// `accepted`, `failed` or `interrupted`.
    pub outcome: String,
    /// Error class, for failures.
    pub error_class: Option<String>,
    /// Error code.
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
    /// Provider's id, when accepted.
    pub provider_message_id: Option<String>,
}

/// A message with its timeline and attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageDetail {
    /// The message.
    pub message: MessageRecord,
    /// Events, oldest first.
    pub events: Vec<EventRecord>,
    /// Attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// Filters for listing messages.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only to this number.
    pub to: Option<String>,
    /// Only with this reference.
    pub client_ref: Option<String>,
    /// Created at or after.
    pub created_after: Option<Timestamp>,
    /// Created before.
    pub created_before: Option<Timestamp>,
    /// Continue after this id (exclusive), from a previous page.
    pub cursor: Option<MessageId>,
    /// Page size.
    pub limit: usize,
}

/// A page of messages.
#[derive(Debug, Clone)]
pub struct MessagePage {
    /// Messages, newest first.
    pub data: Vec<MessageRecord>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<MessageId>,
}

/// A message claimed for one send attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedMessage {
    /// Id; also the idempotency key given to the provider.
    pub id: MessageId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Recipient.
    pub to: String,
    /// Sender address.
    pub from: String,
    /// Channel.
    pub channel: String,
    /// Text.
    pub body: String,
    /// Media.
    pub media_urls: Vec<String>,
    /// Provider to use.
    pub provider_id: ProviderId,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// A provider template to send instead of the text.
    pub template: Option<switchboard_core::message::ChannelTemplate>,
    /// Expiry.
    pub expires_at: Timestamp,
    /// When it was claimed.
    pub claimed_at: Timestamp,
    /// When it was accepted.
    pub created_at: Timestamp,
}

/// How an attempt ended, as decided by the dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The provider accepted it.
    Accepted {
        /// Provider's message id.
        provider_message_id: String,
    },
    /// A transient failure; retry at `next_at`.
    Retry {
        /// Error class.
        class: ErrorClass,
        /// Error code.
        code: String,
        /// Error message.
        message: String,
        /// Next attempt.
        next_at: Timestamp,
    },
    /// Give up: the message fails (or is suppressed for a consent error).
    GiveUp {
        /// Error class.
        class: ErrorClass,
        /// Provider's error code.
        code: String,
        /// Error message.
        message: String,
        /// Why no retry.
        reason: GiveUpReason,
    },
    /// The message expired before the attempt could be made.
    Expired,
}

/// The result of one attempt, reported by the dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptReport {
    /// Message.
    pub message_id: MessageId,
    /// Attempt number the claim handed out.
    pub attempt: u32,
    /// Provider used.
    pub provider_id: ProviderId,
    /// When the attempt started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Outcome.
    pub outcome: AttemptOutcome,
}

/// A provider receipt as the thin receiver stores it (`Store::receive_receipts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingReceipt {
    /// The provider's id of the message.
    pub provider_message_id: String,
    /// What happened.
    pub kind: ReceiptKind,
    /// The provider's error code for a failure, if it gave one.
    pub error_code: Option<String>,
    /// The receipt as it arrived.
    pub raw: Option<String>,
}

/// What a state-changing call did.
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionOutcome {
    /// The message moved; this event was recorded.
    Applied {
        /// New status.
        status: Status,
        /// Event recorded.
        event: EventType,
    },
    /// The message was not in a state that allows it; nothing changed.
    Refused {
        /// Its current status.
        status: Status,
    },
    /// The report belongs to a claim that is no longer current (the lease
    /// was taken over); it was logged as an attempt but changed nothing.
    Stale,
}

pub use switchboard_core::ReceiptKind;

/// What one pass over the receipt inbox did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiptPass {
    /// Receipts that moved a message.
    pub applied: u64,
    /// Late or duplicate receipts, recorded and ignored.
    pub ignored: u64,
    /// Receipts whose message is not known yet (checked again later).
    pub waiting: u64,
    /// Receipts given up on after a day without a message.
    pub unmatched: u64,
}

/// What applying a receipt did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiptOutcome {
    /// The message moved.
    Applied {
        /// The message.
        message_id: MessageId,
        /// New status.
        status: Status,
    },
    /// Late or duplicate: recorded and ignored.
    Ignored {
        /// The message.
        message_id: MessageId,
        /// Its status, unchanged.
        status: Status,
    },
    /// No message has that provider id (yet).
    UnknownMessage,
}

/// Messages by status, for `/metrics` (`sql::counts`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusCounts {
    /// The statuses that have messages, each with its count. Those a
    /// message holds until a provider has it (`scheduled`, `queued`,
    /// `sending`) are counted at every call; the others may come from an
    /// earlier count, `age` old.
    pub by_status: Vec<(Status, u64)>,
    /// How old the counts of the statuses past the queue are: zero when
    /// this call counted them.
    pub age: std::time::Duration,
}

impl StatusCounts {
    /// The count of `status` (zero if it has no messages).
    pub fn of(&self, status: Status) -> u64 {
        self.by_status
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }
}

/// Counters of the writer's group commit, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Transactions committed by the writer.
    pub commits: u64,
    /// Jobs (accepts, claims, updates) carried by those commits.
    pub jobs: u64,
    /// The largest batch seen.
    pub max_batch: u64,
    /// Batches whose accepts, stored without reading first (PostgreSQL),
    /// were refused (a stored idempotency key, an opt-out) and run again
    /// with their reads.
    pub rechecked: u64,
    /// How long the writer thread has spent in transactions of accepts
    /// only. With the next two, how busy the node's one serial stage is:
    /// at one second per second, every write waits for it.
    pub busy_accepts: std::time::Duration,
    /// … in transactions of its other jobs (on PostgreSQL, where a batch
    /// is one transaction, also those with accepts among them).
    pub busy_jobs: std::time::Duration,
    /// … in its chore's steps (SQLite's written-behind sweep).
    pub busy_chore: std::time::Duration,
    /// Where the accepts answered so far waited (`AcceptWaits`).
    pub accept_waits: AcceptWaits,
    /// What the sync thread did to make the commits durable (`SyncStats`).
    pub syncs: SyncStats,
    /// On SQLite, the writes to the WAL through the writer's VFS
    /// (`switchboard_walvfs`, counted for the whole process).
    pub wal_writes: Option<WalWrites>,
}

/// The syncs that made the writer's commits durable (SQLite: the WAL's
/// `fdatasync`; PostgreSQL: the sync connection's flushing commit), those
/// that succeeded: how many, the time they took, and the commits they
/// covered. `took / count` is the disk's sync under the node's own load,
/// which every durable write waits for (`AcceptWaits::durable`); `commits
/// / count` is how many commits one sync carries. PostgreSQL's batches of
/// accepts in flight are durable by their own commit and pass no sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Syncs that succeeded.
    pub count: u64,
    /// The time they took, in all.
    pub took: std::time::Duration,
    /// The commits they made durable.
    pub commits: u64,
}

/// Where accepted messages waited, summed over every accept the writer
/// has answered: from the store's call (`Store::accept_message`) to the
/// writer taking it into a batch (`queued`: the jobs ahead of it, and its
/// chore's step), to that batch's commit (`batch`: the accepts' statements,
/// a batch in flight ahead, the commit), to its answer once the commit is
/// durable (`durable`: the sync thread's sync; nothing for a PostgreSQL
/// batch in flight, durable by its own commit), to the caller's task
/// running again (`resumed`: a runtime worker's wait). Their sum over
/// `count` is the store's part of a 202; the HTTP request and answer are
/// the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptWaits {
    /// Accepts timed: those that reached a batch and were answered.
    pub count: u64,
    /// Waiting for the writer to take them.
    pub queued: std::time::Duration,
    /// From then to their batch's commit.
    pub batch: std::time::Duration,
    /// From the commit to their answer.
    pub durable: std::time::Duration,
    /// From the answer to the caller running again.
    pub resumed: std::time::Duration,
}

/// Writes to SQLite's WAL through the writer's VFS, as the VFS counts
/// them: SQLite asks for two per frame (its header, its page); the VFS
/// makes about one per commit.
pub use switchboard_walvfs::Stats as WalWrites;

/// A webhook endpoint as stored (secrets included: never render it whole).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRecord {
    /// Id (`wh_…`).
    pub id: String,
    /// Owner.
    pub workspace_id: WorkspaceId,
    /// Destination.
    pub url: String,
    /// HTTP method.
    pub method: String,
    /// `json` or `form`.
    pub content_type: String,
    /// Subscribed types; `None` for every event.
    pub event_types: Option<Vec<String>>,
    /// Custom headers.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Description.
    pub description: Option<String>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why it was disabled automatically.
    pub disabled_reason: Option<String>,
    /// `standard` or `template`.
    pub format: String,
    /// Payload template.
    pub template: Option<String>,
    /// Seconds before each retry.
    pub retry_schedule: Vec<u32>,
    /// Per-attempt timeout.
    pub timeout_ms: u32,
    /// Consecutive failures before disabling.
    pub disable_after: u32,
    /// Failures in a row so far.
    pub consecutive_failures: u32,
    /// Current secret (`whsec_…`).
    pub secret: String,
    /// Previous secret, still signing during the rotation grace period.
    pub previous_secret: Option<String>,
    /// End of the grace period.
    pub previous_secret_until: Option<Timestamp>,
    /// Created.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// One event as a webhook carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// Event id; the `webhook-id` header, stable across retries.
    pub id: String,
    /// Event type.
    pub event_type: String,
    /// When it happened.
    pub created_at: Timestamp,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// The message, inbound message, contact or other object it is about.
    pub data: EventData,
}

/// An event's `data` as the JSON text its deliveries carry, written at
/// most once per claimed event and copied into each delivery's envelope as
/// it is. A message event's text is written where it is first asked for
/// (`json`), on the deliverer's task, not where the delivery is claimed:
/// the claim runs on the writer thread, the one serial stage, and only
/// moves the message's columns into the data (`EventData::message`). The
/// deliveries of one event claimed together share the data and its text
/// (clones share both). The text is what `serde_json` writes for a
/// `Value` of the same data: compact, with the keys of every object in
/// order.
#[derive(Clone)]
pub struct EventData(Arc<DataInner>);

// Behind the `Arc`, one allocation either way: boxing the larger variant
// would add a second to every message event's data.
#[allow(clippy::large_enum_variant)]
enum DataInner {
    /// Written when it was made (`EventData::of`).
    Text(String),
    /// A message event's, written the first time it is asked for.
    Message {
        data: MessageEventData,
        text: OnceLock<String>,
    },
}

/// A message as its events' `data` shows it: the columns of its row the
/// data names, read where the delivery is claimed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MessagePayload {
    pub id: String,
    pub to: String,
    pub from: Option<String>,
    pub channel: String,
    pub body: String,
    pub media_urls: Vec<String>,
    pub encoding: String,
    pub segments: i64,
    pub client_ref: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub category: String,
    pub priority: i64,
    pub provider_id: Option<String>,
    pub provider_message_id: Option<String>,
    pub created_at: i64,
}

/// A message event's data before its text is written: the message, with
/// the status and error of the moment the event was recorded.
struct MessageEventData {
    message: MessagePayload,
    status: String,
    error_code: Option<String>,
    detail: Option<String>,
}

impl MessageEventData {
    /// Written by hand from the row's values, in key order, so the text is
    /// what the same data as a `Value` object writes (a test holds the two
    /// together): a derived `Serialize` escaped every key again for every
    /// event (`switchboard_core::json_text`).
    fn write(&self) -> String {
        use switchboard_core::json_text::{push_int, push_opt_str, push_str};
        let m = &self.message;
        let mut out = String::with_capacity(448 + m.body.len());
        out.push_str("{\"body\":");
        push_str(&mut out, &m.body);
        out.push_str(",\"category\":");
        push_str(&mut out, &m.category);
        out.push_str(",\"channel\":");
        push_str(&mut out, &m.channel);
        out.push_str(",\"client_ref\":");
        push_opt_str(&mut out, m.client_ref.as_deref());
        out.push_str(",\"created_at\":");
        push_str(&mut out, &Timestamp::from_millis(m.created_at).to_rfc3339());
        out.push_str(",\"detail\":");
        push_opt_str(&mut out, self.detail.as_deref());
        out.push_str(",\"encoding\":");
        push_str(&mut out, &m.encoding);
        out.push_str(",\"error_code\":");
        push_opt_str(&mut out, self.error_code.as_deref());
        out.push_str(",\"from\":");
        push_opt_str(&mut out, m.from.as_deref());
        out.push_str(",\"id\":");
        push_str(&mut out, &m.id);
        out.push_str(",\"media_urls\":[");
        for (i, url) in m.media_urls.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_str(&mut out, url);
        }
        out.push_str("],\"metadata\":");
        match &m.metadata {
            Some(map) => {
                out.push_str(&serde_json::to_string(map).expect("a JSON object serializes"))
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"object\":\"message\",\"priority\":");
        out.push_str(if m.priority > 0 {
            "\"high\""
        } else {
            "\"normal\""
        });
        out.push_str(",\"provider_id\":");
        push_opt_str(&mut out, m.provider_id.as_deref());
        out.push_str(",\"provider_message_id\":");
        push_opt_str(&mut out, m.provider_message_id.as_deref());
        out.push_str(",\"segments\":");
        push_int(&mut out, m.segments);
        out.push_str(",\"status\":");
        push_str(&mut out, &self.status);
        out.push_str(",\"to\":");
        push_str(&mut out, &m.to);
        out.push('}');
        out
    }
}

impl EventData {
    /// The data of `v`, which serializes as a `Value` would (an object's
    /// fields in key order).
    pub fn of<T: serde::Serialize + ?Sized>(v: &T) -> Self {
        EventData(Arc::new(DataInner::Text(
            serde_json::to_string(v).expect("event data serializes"),
        )))
    }

    /// The data of a message event: `message` as the API shows it, with the
    /// status and error of the moment the event was recorded. Its text is
    /// written when it is first asked for.
    pub(crate) fn message(
        message: MessagePayload,
        status: String,
        error_code: Option<String>,
        detail: Option<String>,
    ) -> Self {
        EventData(Arc::new(DataInner::Message {
            data: MessageEventData {
                message,
                status,
                error_code,
                detail,
            },
            text: OnceLock::new(),
        }))
    }

    /// The JSON text, written the first time it is asked for.
    pub fn json(&self) -> &str {
        match &*self.0 {
            DataInner::Text(text) => text,
            DataInner::Message { data, text } => text.get_or_init(|| data.write()),
        }
    }

    /// The data as a `Value` (for templates and tests).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.json()).expect("event data is JSON written by serde_json")
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl Eq for EventData {}

impl std::fmt::Debug for EventData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EventData").field(&self.json()).finish()
    }
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookJob {
    /// Delivery id (`{event id}/{endpoint id}`).
    pub delivery_id: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// `scheduled`, `manual` or `test`.
    pub trigger: String,
    /// Where to: shared by the jobs of one claim that go to the same
    /// endpoint.
    pub endpoint: std::sync::Arc<EndpointRecord>,
    /// What.
    pub event: WebhookEvent,
}

/// How a webhook attempt ended, as decided by the deliverer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// 2xx.
    Succeeded,
    /// Failed; try again at this time.
    RetryAt(Timestamp),
    /// Failed and the schedule is used up.
    GaveUp,
    /// 410 Gone: the endpoint is disabled.
    Gone,
}

/// The result of one webhook attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAttemptReport {
    /// Delivery.
    pub delivery_id: String,
    /// Endpoint.
    pub endpoint_id: String,
    /// Event.
    pub event_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// What started it.
    pub trigger: String,
    /// HTTP status, if a response came.
    pub status_code: Option<u16>,
    /// Transport error, if none came.
    pub error: Option<String>,
    /// First 1000 characters of the response body.
    pub response_body: Option<String>,
    /// Duration.
    pub duration_ms: i64,
    /// When it ended.
    pub finished_at: Timestamp,
    /// What follows.
    pub outcome: WebhookOutcome,
}

/// One logged webhook attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAttemptRecord {
    /// Attempt id.
    pub id: String,
    /// Delivery.
    pub delivery_id: Option<String>,
    /// Event.
    pub event_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// `scheduled`, `manual` or `test`.
    pub trigger: String,
    /// HTTP status.
    pub status_code: Option<u16>,
    /// Transport error.
    pub error: Option<String>,
    /// First 1000 characters of the response body.
    pub response_body: Option<String>,
    /// Duration.
    pub duration_ms: i64,
    /// When.
    pub created_at: Timestamp,
}

/// What to deliver again.
#[derive(Debug, Clone, PartialEq)]
pub enum Redelivery {
    /// One event.
    Event(String),
    /// Every event of the workspace created in `[since, until)` that the endpoint subscribes to.
    Range {
        /// From (inclusive).
        since: Timestamp,
        /// To (exclusive).
        until: Timestamp,
    },
}

/// A partial update of an endpoint's settings, already validated.
pub type EndpointChanges = switchboard_core::webhook_endpoint::EndpointSettings;

/// A message template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateRecord {
    /// Id (`tpl_…`).
    pub id: String,
    /// Owner.
    pub workspace_id: WorkspaceId,
    /// Name, unique in the workspace; submissions refer to it.
    pub name: String,
    /// Default body.
    pub body: String,
    /// Bodies per channel (`sms`, `whatsapp`, …) that replace the default.
    pub variants: std::collections::BTreeMap<String, String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// Consent of one phone number on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentRecord {
    /// Channel.
    pub channel: String,
    /// `opted_in` or `opted_out`.
    pub state: String,
    /// Where the last change came from: `keyword`, `api`, `crm`, `import`.
    pub source: String,
    /// Legal context, e.g. `US-TCPA`.
    pub jurisdiction: Option<String>,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// One change of consent.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentChange {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// E.164 number.
    pub phone: String,
    /// Channel.
    pub channel: String,
    /// `opted_in` or `opted_out`.
    pub state: String,
    /// `keyword`, `api`, `crm`, `import`.
    pub source: String,
    /// Legal context.
    pub jurisdiction: Option<String>,
    /// Free text (e.g. the keyword received).
    pub detail: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// A phone number's consent: current state per channel and full history.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContactConsent {
    /// Current state per channel.
    pub current: Vec<ConsentRecord>,
    /// Every change, oldest first.
    pub history: Vec<ConsentChangeRecord>,
}

/// A logged change.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentChangeRecord {
    /// Channel.
    pub channel: String,
    /// New state.
    pub state: String,
    /// Source.
    pub source: String,
    /// Jurisdiction.
    pub jurisdiction: Option<String>,
    /// Detail.
    pub detail: Option<String>,
    /// When.
    pub created_at: Timestamp,
}

/// An inbound message to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInbound {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Sender (E.164).
    pub from: String,
    /// The workspace's address it was sent to.
    pub to: Option<String>,
    /// Channel.
    pub channel: String,
    /// Text.
    pub text: String,
    /// Media.
    pub media_urls: Vec<String>,
    /// Provider that received it.
    pub provider_id: String,
    /// Provider's id (deduplicates repeated callbacks).
    pub provider_message_id: Option<String>,
    /// `stop`, `start` or `help` when the text is a keyword.
    pub keyword: Option<String>,
    /// When.
    pub now: Timestamp,
}

/// A stored inbound message.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRecord {
    /// Id (`in_…`).
    pub id: String,
    /// Sender.
    pub from: String,
    /// Address it was sent to.
    pub to: Option<String>,
    /// Channel.
    pub channel: String,
    /// Text.
    pub text: String,
    /// Media.
    pub media_urls: Vec<String>,
    /// The last outbound message to this number in the workspace.
    pub conversation_message_id: Option<String>,
    /// Keyword recognised.
    pub keyword: Option<String>,
    /// When.
    pub created_at: Timestamp,
}

/// What storing an inbound message did.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundOutcome {
    /// Stored, with `message.received`; a STOP/START changed consent if `consent_changed`.
    Stored {
        /// The message.
        inbound: InboundRecord,
        /// Whether a keyword changed the sender's consent.
        consent_changed: bool,
    },
    /// The provider sent this message before: nothing new.
    Duplicate(InboundRecord),
}

/// A CRM adapter's connection to a workspace, authenticated by a token of
/// its own in a header of its choosing (2X).
#[derive(Clone, PartialEq)]
pub struct IntegrationRecord {
    /// Id (`int_…`).
    pub id: String,
    /// The workspace it sends for.
    pub workspace_id: WorkspaceId,
    /// `2x`.
    pub kind: String,
    /// The header that carries the token.
    pub header: String,
    /// SHA-256 (hex) of the token.
    pub token_hash: String,
    /// The adapter's settings.
    pub config: serde_json::Value,
    /// Created.
    pub created_at: Timestamp,
}

impl std::fmt::Debug for IntegrationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationRecord")
            .field("id", &self.id)
            .field("workspace_id", &self.workspace_id)
            .field("kind", &self.kind)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// A signed-in console session. The cookie carries a random id; the store
/// keeps only its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleSession {
    /// SHA-256 (hex) of the cookie's value.
    pub id_hash: String,
    /// The workspace of the API key signed in with; `None` for the admin.
    pub workspace_id: Option<WorkspaceId>,
    /// The API key signed in with (revoking it ends the session).
    pub key_id: Option<String>,
    /// The token every state-changing request must echo.
    pub csrf_token: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it was last used (written at most once a minute).
    pub last_seen_at: Timestamp,
    /// When it ends unless used again.
    pub expires_at: Timestamp,
}

/// Counts and series of a workspace's messages over a time window, for the
/// console's overview.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkspaceStats {
    /// Messages created in the window, by current status.
    pub by_status: Vec<(Status, u64)>,
    /// `(bucket index, status, count)` of messages created in the window,
    /// bucketed by creation time.
    pub series: Vec<(u32, Status, u64)>,
    /// Messages waiting now (scheduled, queued, sending), whenever created.
    pub queue: Vec<(Status, u64)>,
    /// Send attempts in the window per provider.
    pub providers: Vec<ProviderHealth>,
}

/// A provider's attempts in a window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderHealth {
    /// Provider id.
    pub provider_id: String,
    /// Attempts.
    pub attempts: u64,
    /// Attempts that did not hand the message over.
    pub errors: u64,
    /// Attempts refused for throughput.
    pub throttled: u64,
}

/// A phone number's latest activity in a workspace (outbound or inbound).
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationSummary {
    /// E.164 number.
    pub phone: String,
    /// The latest message either way.
    pub last_at: Timestamp,
    /// Outbound messages in the period.
    pub outbound: u64,
    /// Inbound messages in the period.
    pub inbound: u64,
}
