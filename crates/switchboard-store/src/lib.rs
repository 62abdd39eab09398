//! Switchboard's storage: the `Store` trait and its backends.
//!
//! Handlers and workers see only `Arc<dyn Store>`. Each backend owns its
//! migrations and implements the same behaviour; the conformance tests in
//! `tests/` state that behaviour once.
//!
//! *Invariant*: every change of a message's status happens in the same
//! transaction as the event row that records it, and is decided by
//! `switchboard_core::state::transition`.

mod error;
mod model;
pub mod sql;

pub use error::StoreError;
pub use model::{
    AcceptOutcome, AcceptRequest, Accepted, ApiKey, AttemptOutcome, AttemptRecord, AttemptReport,
    ClaimedMessage, ConsentChange, ConsentChangeRecord, ConsentRecord, ConsoleSession,
    ContactConsent, ConversationSummary, EndpointChanges, EndpointRecord, EventData, EventRecord,
    GroupCommitStats, InboundOutcome, InboundRecord, IncomingReceipt, IntegrationRecord,
    MessageDetail, MessageFilter, MessagePage, MessageRecord, NewInbound, NewSender,
    ProviderDeletion, ProviderHealth, ProviderRecord, ReceiptKind, ReceiptOutcome, ReceiptPass,
    Redelivery, Sender, SenderCreation, StatusCounts, SyncStats, TemplateRecord, TransitionOutcome,
    WalWrites, WebhookAttemptRecord, WebhookAttemptReport, WebhookEvent, WebhookJob,
    WebhookOutcome, Workspace, WorkspaceStats,
};

use std::time::Duration;

/// Transport or throttle failures a message may have on one provider before
/// it fails over to the next sender of its channel, unless the provider
/// sets its own `attempt_budget`.
pub const DEFAULT_ATTEMPT_BUDGET: u32 = 2;

use async_trait::async_trait;
use switchboard_core::{Channel, MessageId, Timestamp, WorkspaceId};

/// Everything Switchboard stores, behind one object-safe trait.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The stored hash of the instance admin token, if one was set.
    async fn admin_token_hash(&self) -> Result<Option<String>, StoreError>;
    /// Stores the hash of the instance admin token.
    async fn set_admin_token_hash(&self, hash: &str) -> Result<(), StoreError>;

    /// Creates a workspace, with the built-in `sim` sender on every channel.
    async fn create_workspace(&self, name: &str, now: Timestamp) -> Result<Workspace, StoreError>;
    /// A workspace by id.
    async fn get_workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>, StoreError>;
    /// Sets a workspace's myCRMSIM `location_id`; `false` if another
    /// workspace has it.
    async fn set_location_id(
        &self,
        workspace: &WorkspaceId,
        location_id: &str,
    ) -> Result<bool, StoreError>;
    /// Connects a CRM adapter to a workspace (replacing its previous
    /// connection of that kind); `false` if the token is another's.
    async fn put_integration(&self, integration: IntegrationRecord) -> Result<bool, StoreError>;
    /// The adapter connection of `kind` whose token has this hash.
    async fn find_integration(
        &self,
        kind: &str,
        token_hash: &str,
    ) -> Result<Option<IntegrationRecord>, StoreError>;
    /// A workspace's adapter connections, oldest first.
    async fn list_integrations(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<IntegrationRecord>, StoreError>;
    /// Removes an adapter connection; `false` if there was none.
    async fn delete_integration(&self, id: &str) -> Result<bool, StoreError>;
    /// An adapter connection by id.
    async fn get_integration(&self, id: &str) -> Result<Option<IntegrationRecord>, StoreError>;
    /// Replaces an adapter connection's settings; `false` if there is none.
    async fn set_integration_config(
        &self,
        id: &str,
        config: serde_json::Value,
    ) -> Result<bool, StoreError>;
    /// Records that a delivery (e.g. AutomateNexus's `webhook_id` and
    /// `timestamp`) reached an adapter; `false` if it had before (a replay).
    /// Records older than `forget_before` are dropped.
    async fn first_delivery(
        &self,
        integration_id: &str,
        delivery_key: &str,
        now: Timestamp,
        forget_before: Timestamp,
    ) -> Result<bool, StoreError>;
    /// The headers the adapters of `kind` authenticate with.
    async fn integration_headers(&self, kind: &str) -> Result<Vec<String>, StoreError>;
    /// All workspaces, oldest first.
    async fn list_workspaces(&self) -> Result<Vec<Workspace>, StoreError>;
    /// Stores a new API key (only its hash) for a workspace.
    async fn create_api_key(
        &self,
        workspace: &WorkspaceId,
        key_hash: &str,
        hint: &str,
        now: Timestamp,
    ) -> Result<ApiKey, StoreError>;
    /// Finds the live key with this hash.
    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;
    /// Every key of a workspace, revoked ones included, oldest first.
    async fn list_api_keys(&self, workspace: &WorkspaceId) -> Result<Vec<ApiKey>, StoreError>;
    /// Revokes a key; `None` if the workspace has no such key. Revoking a
    /// revoked key changes nothing.
    async fn revoke_api_key(
        &self,
        workspace: &WorkspaceId,
        key_id: &str,
        now: Timestamp,
    ) -> Result<Option<ApiKey>, StoreError>;
    /// The senders of a workspace on a channel, default first.
    /// The workspaces (at most two: more than one is ambiguous) whose sender
    /// on `channel` through `provider` has `address`; routes inbound messages.
    async fn sender_owners(
        &self,
        provider: &str,
        channel: Channel,
        address: &str,
    ) -> Result<Vec<WorkspaceId>, StoreError>;
    async fn senders(
        &self,
        workspace: &WorkspaceId,
        channel: Channel,
    ) -> Result<Vec<Sender>, StoreError>;

    /// Every sender of a workspace, by channel, each channel in route order.
    async fn all_senders(&self, workspace: &WorkspaceId) -> Result<Vec<Sender>, StoreError>;
    /// Adds a sender to a workspace; a new default demotes the old one.
    async fn create_sender(
        &self,
        workspace: &WorkspaceId,
        sender: NewSender,
        now: Timestamp,
    ) -> Result<SenderCreation, StoreError>;
    /// Removes a sender (the next in its route becomes the default if it
    /// was); `None` if the workspace has no such sender.
    async fn delete_sender(
        &self,
        workspace: &WorkspaceId,
        id: &str,
    ) -> Result<Option<Sender>, StoreError>;

    /// Stores a new provider instance.
    async fn create_provider(&self, provider: ProviderRecord) -> Result<(), StoreError>;
    /// Replaces a provider's settings; `false` if there is no such provider.
    async fn update_provider(&self, provider: ProviderRecord) -> Result<bool, StoreError>;
    /// Every provider instance, the built-in simulator first.
    async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError>;
    /// One provider instance.
    async fn get_provider(&self, id: &str) -> Result<Option<ProviderRecord>, StoreError>;
    /// Deletes a provider no sender routes through.
    async fn delete_provider(&self, id: &str) -> Result<ProviderDeletion, StoreError>;

    /// Stores a message (or finds its idempotent twin) and answers only after
    /// the transaction holding it has committed.
    async fn accept_message(&self, req: AcceptRequest) -> Result<AcceptOutcome, StoreError>;
    /// A message of a workspace with its timeline and attempts.
    async fn get_message(
        &self,
        workspace: &WorkspaceId,
        id: &MessageId,
    ) -> Result<Option<MessageDetail>, StoreError>;
    /// Messages of a workspace, newest first.
    async fn list_messages(
        &self,
        workspace: &WorkspaceId,
        filter: &MessageFilter,
    ) -> Result<MessagePage, StoreError>;
    /// Cancels a `scheduled` or `queued` message.
    async fn cancel_message(
        &self,
        workspace: &WorkspaceId,
        id: &MessageId,
        now: Timestamp,
    ) -> Result<Option<TransitionOutcome>, StoreError>;

    /// Releases due scheduled messages, expires stale ones, and claims up to
    /// `limit` due messages (and messages whose lease ran out) for sending.
    async fn claim_due(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedMessage>, StoreError>;
    /// Records the result of an attempt and moves the message on.
    async fn complete_attempt(
        &self,
        report: AttemptReport,
    ) -> Result<TransitionOutcome, StoreError>;
    /// Records the results of many attempts in one write, each exactly as
    /// `complete_attempt` would; one result per report, in order. A report
    /// that fails fails alone (the others are then recorded one by one).
    async fn complete_attempts(
        &self,
        reports: Vec<AttemptReport>,
    ) -> Vec<Result<TransitionOutcome, StoreError>>;
    /// Applies a provider receipt to the message it names.
    async fn apply_receipt(
        &self,
        provider_id: &str,
        provider_message_id: &str,
        kind: ReceiptKind,
        error_code: Option<&str>,
        detail: Option<&str>,
        now: Timestamp,
    ) -> Result<ReceiptOutcome, StoreError>;
    /// The thin receiver's write: stores a provider receipt as it arrived
    /// (with the provider's error code for a failure, if it gave one);
    /// `false` if the same (provider, id, kind) was stored before.
    async fn receive_receipt(
        &self,
        provider_id: &str,
        provider_message_id: &str,
        kind: ReceiptKind,
        error_code: Option<&str>,
        raw: Option<&str>,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// `receive_receipt` for every receipt of one callback, in one write:
    /// all are stored or none. One flag per receipt, in order (`false` for
    /// a duplicate, also of an earlier receipt in the same list).
    async fn receive_receipts(
        &self,
        provider_id: &str,
        receipts: Vec<IncomingReceipt>,
        now: Timestamp,
    ) -> Result<Vec<bool>, StoreError>;
    /// Applies due receipts from the inbox, in lifecycle order per message.
    async fn process_receipts(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<ReceiptPass, StoreError>;
    /// Sets a provider's throughput limit (sends per second, with a burst of
    /// `burst`), or removes it (`None`). The limit holds across every node
    /// sharing the database.
    async fn set_provider_rate(
        &self,
        provider_id: &str,
        rate: Option<(f64, f64)>,
    ) -> Result<(), StoreError>;
    /// Makes all in-flight work (message sends and webhook deliveries)
    /// claimable at once. Only for a backend that knows it is the single node
    /// (SQLite holds an exclusive lock on its data dir).
    async fn recover_in_flight(&self) -> Result<u64, StoreError>;
    /// The earliest time at which some message becomes due, if any.
    async fn next_due_at(&self) -> Result<Option<Timestamp>, StoreError>;
    /// Message counts by status, for `/metrics`: the queue's statuses
    /// counted now, the others at most as often as their count's cost
    /// allows (`sql::counts`).
    async fn status_counts(&self) -> Result<StatusCounts, StoreError>;
    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Counters of the accept path's group commit.
    fn group_commit_stats(&self) -> GroupCommitStats;
    /// What this node's idle workers wait on: notified after a commit that
    /// created webhook deliveries or stored provider receipts.
    fn signals(&self) -> std::sync::Arc<sql::WorkSignals>;

    /// Creates a webhook endpoint from validated settings.
    async fn create_endpoint(
        &self,
        workspace: &WorkspaceId,
        settings: &EndpointChanges,
        id: &str,
        secret: &str,
        now: Timestamp,
    ) -> Result<EndpointRecord, StoreError>;
    /// The workspace's endpoints.
    async fn list_endpoints(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<EndpointRecord>, StoreError>;
    /// One endpoint of the workspace.
    async fn get_endpoint(
        &self,
        workspace: &WorkspaceId,
        id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError>;
    /// Applies a partial update; re-enabling resets the failure count.
    async fn update_endpoint(
        &self,
        workspace: &WorkspaceId,
        id: &str,
        changes: &EndpointChanges,
        now: Timestamp,
    ) -> Result<Option<EndpointRecord>, StoreError>;
    /// Deletes an endpoint and cancels its pending deliveries.
    async fn delete_endpoint(
        &self,
        workspace: &WorkspaceId,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Replaces an endpoint's secret; the old one signs too until `grace_until`.
    async fn rotate_endpoint_secret(
        &self,
        workspace: &WorkspaceId,
        id: &str,
        new_secret: &str,
        grace_until: Timestamp,
        now: Timestamp,
    ) -> Result<Option<EndpointRecord>, StoreError>;
    /// Claims due webhook deliveries (per-message order kept).
    async fn claim_webhook_deliveries(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<WebhookJob>, StoreError>;
    /// Logs a webhook attempt and applies its outcome.
    async fn complete_webhook_attempt(
        &self,
        report: WebhookAttemptReport,
    ) -> Result<(), StoreError>;
    /// `complete_webhook_attempt` for many reports in one write; one
    /// result per report, in order. A report that fails fails alone.
    async fn complete_webhook_attempts(
        &self,
        reports: Vec<WebhookAttemptReport>,
    ) -> Vec<Result<(), StoreError>>;
    /// An endpoint's attempt log, newest first; `None` if no such endpoint.
    async fn webhook_attempts(
        &self,
        workspace: &WorkspaceId,
        endpoint_id: &str,
        limit: usize,
    ) -> Result<Option<Vec<WebhookAttemptRecord>>, StoreError>;
    /// Queues events again for an endpoint.
    async fn redeliver(
        &self,
        workspace: &WorkspaceId,
        endpoint_id: &str,
        what: &Redelivery,
        now: Timestamp,
    ) -> Result<Option<usize>, StoreError>;
    /// Records a `webhook.test` event and claims its delivery for the caller.
    async fn webhook_test_job(
        &self,
        workspace: &WorkspaceId,
        endpoint_id: &str,
        now: Timestamp,
    ) -> Result<Option<WebhookJob>, StoreError>;
    /// The earliest time after `now` at which a webhook delivery may become
    /// claimable (a retry's time, a lease's end); what is due by `now` but
    /// waits for an earlier delivery of its message is left out. Never
    /// later than the truth, possibly earlier.
    async fn next_webhook_due_at(&self, now: Timestamp) -> Result<Option<Timestamp>, StoreError>;

    /// Stores a template; `None` if the name is taken in the workspace.
    async fn create_template(
        &self,
        template: TemplateRecord,
    ) -> Result<Option<TemplateRecord>, StoreError>;
    /// The workspace's templates by name.
    async fn list_templates(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<TemplateRecord>, StoreError>;
    /// A template by id (`tpl_…`) or name.
    async fn get_template(
        &self,
        workspace: &WorkspaceId,
        id_or_name: &str,
    ) -> Result<Option<TemplateRecord>, StoreError>;
    /// Replaces a template's name, body and variants: `None` if it does not
    /// exist, `Some(Err(()))` if the new name is taken.
    #[allow(clippy::result_unit_err)]
    async fn update_template(
        &self,
        template: TemplateRecord,
    ) -> Result<Option<Result<TemplateRecord, ()>>, StoreError>;
    /// Stores an inbound message (deduplicated by provider id), records
    /// `message.received`, and applies a STOP/START keyword to consent.
    async fn record_inbound(&self, inbound: NewInbound) -> Result<InboundOutcome, StoreError>;
    /// When `phone` last wrote to the workspace on `channel`, if ever
    /// (WhatsApp's 24-hour customer-service window runs from it).
    async fn last_inbound_at(
        &self,
        workspace: &WorkspaceId,
        phone: &str,
        channel: Channel,
    ) -> Result<Option<Timestamp>, StoreError>;
    /// Inbound messages of a workspace, newest first.
    async fn list_inbound(
        &self,
        workspace: &WorkspaceId,
        phone: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InboundRecord>, StoreError>;
    /// A workspace's settings document (`None` if no such workspace).
    async fn workspace_settings(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Option<serde_json::Value>, StoreError>;
    /// Replaces a workspace's settings document.
    async fn set_workspace_settings(
        &self,
        workspace: &WorkspaceId,
        settings: &serde_json::Value,
    ) -> Result<bool, StoreError>;
    /// Records a consent change (and its event, if the state changed).
    /// Returns whether the state changed.
    async fn change_consent(&self, change: ConsentChange) -> Result<bool, StoreError>;
    /// Records many consent changes in one transaction, without events.
    /// Returns (changed, unchanged).
    async fn import_consent(&self, changes: Vec<ConsentChange>) -> Result<(u64, u64), StoreError>;
    /// Contacts with recorded consent, by phone and channel, after `cursor`.
    async fn list_contacts(
        &self,
        workspace: &WorkspaceId,
        state: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, ConsentRecord)>, StoreError>;
    /// A number's consent per channel, and its history.
    async fn contact_consent(
        &self,
        workspace: &WorkspaceId,
        phone: &str,
    ) -> Result<ContactConsent, StoreError>;
    /// Deletes a template (by id or name).
    async fn delete_template(&self, workspace: &WorkspaceId, id: &str) -> Result<bool, StoreError>;

    // --- operator console
    /// Stores a console session (and forgets those past their end).
    async fn create_session(&self, session: ConsoleSession) -> Result<(), StoreError>;
    /// A session by its hash, if live and its API key is not revoked.
    async fn find_session(
        &self,
        id_hash: &str,
        now: Timestamp,
    ) -> Result<Option<ConsoleSession>, StoreError>;
    /// Records a session's use and moves its end.
    async fn touch_session(
        &self,
        id_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Ends a session.
    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError>;
    /// Counts and series of a workspace's messages created in `[since, until)`.
    async fn workspace_stats(
        &self,
        workspace: &WorkspaceId,
        since: Timestamp,
        until: Timestamp,
        buckets: u32,
    ) -> Result<WorkspaceStats, StoreError>;
    /// Numbers the workspace exchanged messages with since `since`, latest first.
    async fn conversations(
        &self,
        workspace: &WorkspaceId,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, StoreError>;
}
