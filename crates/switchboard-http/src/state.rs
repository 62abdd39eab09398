//! What every handler can reach.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use switchboard_core::telemetry::Metrics;
use switchboard_core::{Channel, Clock, WorkspaceId};
use switchboard_store::{Sender, Store};
use tokio::sync::Notify;

use crate::rate_limit::RateLimiter;

/// Shared state of the HTTP edge.
#[derive(Debug, Clone)]
pub struct AppState {
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
/// per request. Keys are never deleted in this version, so entries never go
/// stale; revocation must evict here.
#[derive(Debug, Default)]
pub struct KeyCache {
    // A std RwLock: held only to look up or insert.
    by_hash: RwLock<HashMap<String, Arc<WorkspaceCtx>>>,
}

impl KeyCache {
    /// A cached context.
    pub fn get(&self, hash: &str) -> Option<Arc<WorkspaceCtx>> {
        self.by_hash
            .read()
            .expect("key cache lock")
            .get(hash)
            .cloned()
    }

    /// Caches a context.
    pub fn insert(&self, hash: String, ctx: Arc<WorkspaceCtx>) {
        self.by_hash
            .write()
            .expect("key cache lock")
            .insert(hash, ctx);
    }
}
