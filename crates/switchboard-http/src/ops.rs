//! Operations: health, readiness, Prometheus metrics, the OpenAPI document.

use std::fmt::Write;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use switchboard_core::state::ALL_STATUSES;
use utoipa::OpenApi;

use crate::openapi::ApiDoc;
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Ready"), (status = 503, description = "Database unavailable")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": "database"})),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::with_capacity(4096);
    state.metrics.render(&mut out);
    let gc = state.store.group_commit_stats();
    let _ = writeln!(
        out,
        "# HELP switchboard_group_commits_total Write transactions committed by the group-commit writer.\n# TYPE switchboard_group_commits_total counter\nswitchboard_group_commits_total {}",
        gc.commits
    );
    let _ = writeln!(
        out,
        "# HELP switchboard_group_commit_jobs_total Writes carried by those transactions.\n# TYPE switchboard_group_commit_jobs_total counter\nswitchboard_group_commit_jobs_total {}",
        gc.jobs
    );
    let _ = writeln!(
        out,
        "# HELP switchboard_group_commit_max_batch Largest number of writes in one transaction.\n# TYPE switchboard_group_commit_max_batch gauge\nswitchboard_group_commit_max_batch {}",
        gc.max_batch
    );
    let _ = writeln!(
        out,
        "# HELP switchboard_group_commit_rechecked_total Batches whose accepts, stored without reading first (PostgreSQL), were refused (a stored idempotency key, an opt-out) and run again with their reads.\n# TYPE switchboard_group_commit_rechecked_total counter\nswitchboard_group_commit_rechecked_total {}",
        gc.rechecked
    );
    let _ = writeln!(
        out,
        "# HELP switchboard_group_commit_busy_seconds_total Time the writer thread spent writing: transactions of accepts only, of other jobs, and its chore's steps (SQLite's written-behind sweep). A rate near 1 means the node's one serial stage is saturated and writes queue for it.\n# TYPE switchboard_group_commit_busy_seconds_total counter"
    );
    for (work, busy) in [
        ("accepts", gc.busy_accepts),
        ("jobs", gc.busy_jobs),
        ("chore", gc.busy_chore),
    ] {
        let _ = writeln!(
            out,
            "switchboard_group_commit_busy_seconds_total{{work=\"{work}\"}} {:.6}",
            busy.as_secs_f64()
        );
    }
    let waits = gc.accept_waits;
    let _ = writeln!(
        out,
        "# HELP switchboard_accept_wait_seconds Where accepted messages waited between the API's call to store them and their answer: queued for the writer to take them into a batch, in that batch until its commit, from the commit until it was durable and they were answered, and for the request's task to run again. Each stage's sum over its count is its mean; together they are the store's part of a 202.\n# TYPE switchboard_accept_wait_seconds summary"
    );
    for (stage, waited) in [
        ("queued", waits.queued),
        ("batch", waits.batch),
        ("durable", waits.durable),
        ("resumed", waits.resumed),
    ] {
        let _ = writeln!(
            out,
            "switchboard_accept_wait_seconds_sum{{stage=\"{stage}\"}} {:.6}\nswitchboard_accept_wait_seconds_count{{stage=\"{stage}\"}} {}",
            waited.as_secs_f64(),
            waits.count
        );
    }
    let syncs = gc.syncs;
    let _ = writeln!(
        out,
        "# HELP switchboard_group_commit_sync_seconds The syncs that made the writer's commits durable (SQLite: the WAL's fdatasync; PostgreSQL: the sync connection's flushing commit) and the time they took: the sum over the count is the disk's sync under this node's load, which a durable write waits for.\n# TYPE switchboard_group_commit_sync_seconds summary\nswitchboard_group_commit_sync_seconds_sum {:.6}\nswitchboard_group_commit_sync_seconds_count {}",
        syncs.took.as_secs_f64(),
        syncs.count
    );
    let _ = writeln!(
        out,
        "# HELP switchboard_group_commit_synced_total Commits made durable by those syncs (over the syncs' count: commits per sync).\n# TYPE switchboard_group_commit_synced_total counter\nswitchboard_group_commit_synced_total {}",
        syncs.commits
    );
    if let Some(wal) = gc.wal_writes {
        let _ = writeln!(
            out,
            "# HELP switchboard_sqlite_wal_writes_total Writes to SQLite's WAL by the writer: those SQLite asked for (two per frame: its header, its page) and those made (one per commit, its frames together).\n# TYPE switchboard_sqlite_wal_writes_total counter\nswitchboard_sqlite_wal_writes_total{{kind=\"asked\"}} {}\nswitchboard_sqlite_wal_writes_total{{kind=\"made\"}} {}",
            wal.asked, wal.made
        );
    }
    match state.store.status_counts().await {
        Ok(counts) => {
            let _ = writeln!(
                out,
                "# HELP switchboard_messages Messages by current status. scheduled, queued and sending are counted at every scrape; the others as often as the count's cost allows on a large database (switchboard_messages_counted_age_seconds).\n# TYPE switchboard_messages gauge"
            );
            for s in ALL_STATUSES {
                let _ = writeln!(
                    out,
                    "switchboard_messages{{status=\"{}\"}} {}",
                    s.as_str(),
                    counts.of(s)
                );
            }
            let _ = writeln!(
                out,
                "# HELP switchboard_messages_counted_age_seconds How old switchboard_messages' counts of the statuses past the queue are: 0 when this scrape counted them. Counting them reads every message, so once a count takes 100 ms or more it is made again only when it is twenty times as old as it took.\n# TYPE switchboard_messages_counted_age_seconds gauge\nswitchboard_messages_counted_age_seconds {:.3}",
                counts.age.as_secs_f64()
            );
            let depth = counts.queue_depth();
            let _ = writeln!(
                out,
                "# HELP switchboard_queue_depth Messages not yet handed to a provider (scheduled, queued, sending).\n# TYPE switchboard_queue_depth gauge\nswitchboard_queue_depth {depth}"
            );
        }
        Err(e) => tracing::warn!(error = %e, "status counts for /metrics failed"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
