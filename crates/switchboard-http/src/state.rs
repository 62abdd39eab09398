//! What every handler can reach.

use foldhash::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use switchboard_core::telemetry::Metrics;
use switchboard_core::{Channel, Clock, WorkspaceId};
use switchboard_store::{Sender, Store};
use tokio::sync::Notify;

use crate::rate_limit::RateLimiter;

/// Shared state of the HTTP edge: one allocation, so that the clone axum
/// makes for every extractor and middleware of every request is one
/// reference count, not one per part (the accept profile showed the parts'
/// clones and drops at about 4% of the request threads).
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// The state of these parts.
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct AppParts {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Notified when new work is stored.
    pub wake: Arc<Notify>,
    /// SHA-256 (hex) of the instance admin token.
    pub admin_token_hash: Arc<str>,
    /// Per-key limits.
    pub limiter: Arc<RateLimiter>,
    /// Authenticated keys, by key hash.
    pub keys: Arc<KeyCache>,
    /// The webhook deliverer's checks and immediate sends.
    pub webhooks: Arc<dyn crate::webhooks::WebhookGateway>,
    /// This node's providers: their callback readers, and rebuilt when the
    /// admin API changes them.
    pub providers: switchboard_providers::Providers,
    /// The gateway's public base URL (what providers call), when it differs
    /// from the request's `Host`.
    pub public_url: Option<Arc<str>>,
    /// The operator console's settings.
    pub console: crate::console::ConsoleConfig,
}

/// What a request authenticated with an API key may act as.
#[derive(Debug)]
pub struct WorkspaceCtx {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The key's id (rate limits are per key).
    pub key_id: String,
    /// Senders by channel, default first.
    pub senders: HashMap<&'static str, Vec<Sender>>,
}

impl WorkspaceCtx {
    /// The sender for a submission: the named `from`, or the channel's default.
    pub fn sender(&self, channel: Channel, from: Option<&str>) -> Option<&Sender> {
        let list = self.senders.get(channel.as_str())?;
        match from {
            Some(addr) => list.iter().find(|s| s.address == addr),
            None => list.first(),
        }
    }
}

/// Keys that have authenticated, so the hot path does not read the database
/// per request.
///
/// *Invariant*: an entry is trusted for at most `ttl`, so a key revoked or a
/// sender changed on another node takes effect here within that time; a
/// change made through this node evicts at once (`evict_key`,
/// `evict_workspace`).
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    // A std RwLock: held only to look up, insert or evict.
    by_hash: RwLock<HashMap<String, (Instant, Arc<WorkspaceCtx>)>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::new(Duration::from_secs(10))
    }
}

impl KeyCache {
    /// A cache whose entries are trusted for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        KeyCache {
            ttl,
            by_hash: RwLock::default(),
        }
    }

    /// A cached context still within its time.
    pub fn get(&self, hash: &str) -> Option<Arc<WorkspaceCtx>> {
        let map = self.by_hash.read().expect("key cache lock");
        let (at, ctx) = map.get(hash)?;
        (at.elapsed() < self.ttl).then(|| ctx.clone())
    }

    /// Caches a context.
    pub fn insert(&self, hash: String, ctx: Arc<WorkspaceCtx>) {
        let mut map = self.by_hash.write().expect("key cache lock");
        // Entries past their time are dropped whenever the map grows.
        if map.len() >= 1024 {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        map.insert(hash, (Instant::now(), ctx));
    }

    /// Forgets a key (it was revoked).
    pub fn evict_key(&self, key_id: &str) {
        self.by_hash
            .write()
            .expect("key cache lock")
            .retain(|_, (_, ctx)| ctx.key_id != key_id);
    }

    /// Forgets every key of a workspace (its senders or settings changed).
    pub fn evict_workspace(&self, workspace: &WorkspaceId) {
        self.by_hash
            .write()
            .expect("key cache lock")
            .retain(|_, (_, ctx)| &ctx.workspace_id != workspace);
    }
}
