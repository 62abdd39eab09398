//! The 2X-compatible adapter (SPEC §6, seed 004).
//!
//! - `PUT /v1/compat/2x` connects the workspace: the header 2X sends its
//!   token in, and the token (given, or made here and shown once). Only its
//!   hash is kept.
//! - `POST /compat/2x/send-text/` takes 2X's text webhook, authenticated by
//!   that header and token (not an API key). `pre-call` texts go out at once
//!   (priority `high`: never held by quiet hours); `post-voicemail` texts are
//!   ordinary marketing texts, held in the recipient's quiet hours. The
//!   record fields (`record_*`, `meta`, `workflow_*`, `agent_key`) are kept
//!   as metadata, so every event of the message echoes them. 2X's `id` is
//!   the idempotency key: a webhook 2X repeats is the same message.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, response::IntoResponse};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use switchboard_core::secret::new_token;
use switchboard_store::IntegrationRecord;
use utoipa::ToSchema;

use crate::auth::hash_secret;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorResponse};
use crate::state::{AppState, WorkspaceCtx};

const KIND: &str = "2x";

/// The connection's settings. `auth_token` appears only when it was made here.
#[derive(Debug, Serialize, ToSchema)]
pub struct TwoXSettings {
    /// The header 2X sends the token in.
    pub auth_header: String,
    /// The token, shown once when Switchboard made it.
    pub auth_token: Option<String>,
    /// Where 2X posts texts.
    pub path: String,
    /// The webhook endpoint that reports opt-outs to 2X, if `opt_out_url` was given.
    pub opt_out_endpoint: Option<String>,
}

const FIELDS: &[&str] = &[
    "auth_header",
    "auth_token",
    "opt_out_url",
    "opt_out_headers",
];

/// How the opt-out endpoint is told apart from the workspace's others.
pub const OPT_OUT_DESCRIPTION: &str = "2X opt-outs";

/// 2X's opt-out report, only for contacts whose last text came through 2X
/// (for the others it renders nothing, and the delivery is skipped). The
/// record fields of that text ride along.
const OPT_OUT_TEMPLATE: &str = r#"{%- set lm = event.data.last_message -%}
{%- if lm and lm.metadata and "source" in lm.metadata and lm.metadata.source == "2x" -%}
{"type":"opt-out","record_phone_number":{{ event.data.phone|tojson }},"channel":{{ event.data.channel|tojson }},"opted_out_at":{{ event.timestamp|tojson }},"record":{{ lm.metadata|tojson }}}
{%- endif -%}"#;

fn bad(
    status: StatusCode,
    code: &'static str,
    field: &str,
    message: impl Into<String>,
) -> ApiError {
    ApiError::new(status, code, message).with_field(field)
}

/// Connect the workspace to 2X: `auth_header` (default `Authorization`)
/// and `auth_token` (at least 16 characters; made here if left out), and
/// optionally `opt_out_url` (with `opt_out_headers`) to which opt-outs of
/// contacts that came through 2X are reported. Calling it again replaces
/// them.
#[utoipa::path(put, path = "/v1/compat/2x", tag = "adapters", request_body = Object,
    responses((status = 200, body = TwoXSettings), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn configure(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    JsonBody(body): JsonBody,
) -> Result<Json<TwoXSettings>, ApiError> {
    let obj = crate::body::object(&body, FIELDS)?;
    let header = match obj.get("auth_header") {
        None | Some(Value::Null) => "authorization".to_owned(),
        Some(Value::String(h))
            if !h.is_empty()
                && h.len() <= 64
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            h.to_ascii_lowercase()
        }
        Some(_) => {
            return Err(bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_header",
                "auth_header",
                "`auth_header` is a header name: letters, digits and `-`",
            ));
        }
    };
    let (token, made) = match obj.get("auth_token") {
        None | Some(Value::Null) => (new_token("2x_"), true),
        Some(Value::String(t))
            if (16..=512).contains(&t.len()) && !t.chars().any(char::is_control) =>
        {
            (t.clone(), false)
        }
        Some(_) => {
            return Err(bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_token",
                "auth_token",
                "`auth_token` is 16 to 512 printable characters",
            ));
        }
    };
    // Opt-outs of contacts that came through 2X go to 2X's opt-out URL.
    let opt_out = match obj.get("opt_out_url") {
        None | Some(Value::Null) => None,
        Some(url) => {
            let mut e = json!({
                "url": url,
                "event_types": ["contact.opted_out"],
                "format": "template",
                "template": OPT_OUT_TEMPLATE,
                "description": OPT_OUT_DESCRIPTION,
            });
            if let Some(h) = obj.get("opt_out_headers") {
                e["headers"] = h.clone();
            }
            Some(
                crate::webhooks::AdapterEndpoint::check(&state, &ctx.workspace_id, e)
                    .await
                    .map_err(|mut e| {
                        e.field = e.field.map(|f| format!("opt_out_{f}"));
                        e
                    })?,
            )
        }
    };
    let now = state.clock.now();
    let record = IntegrationRecord {
        id: format!(
            "int_{}",
            &switchboard_core::EventId::new_at(now).as_str()[4..]
        ),
        workspace_id: ctx.workspace_id.clone(),
        kind: KIND.into(),
        header: header.clone(),
        token_hash: hash_secret(&token),
        config: json!({}),
        created_at: now,
    };
    if !state.store.put_integration(record).await? {
        return Err(bad(
            StatusCode::CONFLICT,
            "token_taken",
            "auth_token",
            "another workspace's 2X connection uses this token; choose another",
        ));
    }
    let opt_out_endpoint = match opt_out {
        Some(p) => Some(p.save(&state, &ctx.workspace_id).await?.id),
        None => None,
    };
    Ok(Json(TwoXSettings {
        opt_out_endpoint,
        auth_header: header,
        auth_token: made.then_some(token),
        path: "/compat/2x/send-text/".into(),
    }))
}

/// The workspace whose 2X token this request carries.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<WorkspaceCtx, ApiError> {
    for name in state.store.integration_headers(KIND).await? {
        let Some(value) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        // 2X sends the token as configured; a `Bearer ` prefix is tolerated.
        let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
        if let Some(i) = state
            .store
            .find_integration(KIND, &hash_secret(token))
            .await?
            .filter(|i| i.header == name)
        {
            return crate::auth::workspace_ctx(state, i.workspace_id, i.id).await;
        }
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "no 2X connection has this header and token",
    ))
}

/// The answer to an accepted text.
#[derive(Debug, Serialize, ToSchema)]
pub struct TwoXAccepted {
    /// `queued`, or `scheduled` when held by quiet hours.
    pub status: String,
    /// Switchboard's id for it.
    pub id: String,
}

/// The record fields kept as metadata.
const RECORD_FIELDS: &[&str] = &[
    "id",
    "agent_key",
    "record_phone_number",
    "record_first_name",
    "record_last_name",
    "record_zip_code",
    "record_timezone",
    "meta",
    "workflow_key",
    "workflow_day",
    "workflow_call",
    "workflow_end",
    "type",
];

/// Take a 2X text webhook (`/send-text/`), authenticated by the connection's
/// header and token.
#[utoipa::path(post, path = "/compat/2x/send-text/", tag = "adapters", request_body = Object,
    responses((status = 200, body = TwoXAccepted), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn send_text(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let ctx = authenticate(&state, &headers).await?;
    let obj = body.as_object().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body must be a JSON object",
        )
    })?;
    let kind = obj.get("type").and_then(Value::as_str);
    let priority = match kind {
        Some("pre-call") => "high",
        Some("post-voicemail") => "normal",
        _ => {
            return Err(bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_text_type",
                "type",
                "`type` is `pre-call` or `post-voicemail`",
            ));
        }
    };
    let id = match obj.get("id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => {
            return Err(bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_field",
                "id",
                "`id` (2X's id for the text) is required",
            ));
        }
    };
    let metadata: Map<String, Value> = std::iter::once(("source".to_owned(), json!("2x")))
        .chain(
            RECORD_FIELDS
                .iter()
                .filter_map(|k| obj.get(*k).map(|v| ((*k).to_owned(), v.clone()))),
        )
        .collect();
    let mut submit = json!({
        "to": obj.get("record_phone_number").cloned().unwrap_or(Value::Null),
        "body": obj.get("message").cloned().unwrap_or(Value::Null),
        "category": "marketing",
        "priority": priority,
        "client_ref": format!("2x-{id}"),
        "idempotency_key": format!("2x-{id}"),
        "metadata": metadata,
    });
    if let Some(tz) = obj
        .get("record_timezone")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        submit["timezone"] = json!(tz);
    }
    let (accepted, _) = crate::messages::submit_json(&state, &ctx, None, &submit)
        .await
        .map_err(|mut e| {
            // Name 2X's fields, not ours.
            let renamed = match e.field.as_deref() {
                Some("to") => Some("record_phone_number"),
                Some("body") => Some("message"),
                Some("timezone") => Some("record_timezone"),
                _ => None,
            };
            if let Some(f) = renamed {
                e = e.with_field(f);
            }
            e
        })?;
    Ok((
        StatusCode::OK,
        Json(TwoXAccepted {
            status: accepted.status,
            id: accepted.id,
        }),
    ))
}
