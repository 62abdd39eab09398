//! Store behaviour, stated once. Runs on SQLite; the PostgreSQL backend
//! will run the same cases.

mod group_commit;
mod messages;

use std::sync::Arc;

use serde_json::json;
use switchboard_core::{NewMessage, ProviderId, SubmitInput, Timestamp, WorkspaceId};
use switchboard_store::sql::SqliteStore;
use switchboard_store::{AcceptRequest, Store};
use tempfile::TempDir;

pub const T0: Timestamp = Timestamp::from_millis(1_790_000_000_000);

pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub ws: WorkspaceId,
    _dir: TempDir,
}

pub async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let ws = store.create_workspace("test", T0).await.unwrap().id;
    Fixture {
        store,
        ws,
        _dir: dir,
    }
}

pub fn request(ws: &WorkspaceId, body: serde_json::Value, hash: &str) -> AcceptRequest {
    let input = SubmitInput::from_json(&body).unwrap();
    AcceptRequest {
        workspace_id: ws.clone(),
        message: NewMessage::parse(input, None, T0).unwrap(),
        request_hash: hash.to_owned(),
        provider_id: ProviderId::parse("pr_sim").unwrap(),
        from: "Switchboard".into(),
        now: T0,
        consent_exempt: false,
        hold_until: None,
        require_opt_in: false,
    }
}

pub fn simple(ws: &WorkspaceId) -> AcceptRequest {
    request(ws, json!({"to": "+14155550123", "body": "hi"}), "h")
}
