//! The myCRMSIM-compatible adapter (SPEC §6, seed 003).
//!
//! - `PUT /v1/compat/mycrmsim` sets the workspace's `location_id` and the
//!   URL (with custom headers) that receives myCRMSIM's `STATUS-UPDATE` and
//!   `MESSAGE` callbacks. The callbacks are an ordinary webhook endpoint
//!   with a payload template, so they are signed, retried and logged like
//!   every other delivery.
//! - `POST /compat/mycrmsim/webhook` takes myCRMSIM's send payload, checks
//!   it as myCRMSIM does (400 for a missing `location_id`, `user_id`,
//!   `message` or `message_id`, a bad channel or phone), and submits it
//!   through the one submit path with `message_id` as the idempotency key
//!   and `client_ref`. 200 means accepted.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, response::IntoResponse};
use serde::Serialize;
use serde_json::{Map, Value, json};
use switchboard_core::{Channel, PhoneNumber};
use utoipa::ToSchema;

use crate::body::JsonBody;
use crate::error::{ApiError, ErrorResponse};
use crate::state::{AppState, WorkspaceCtx};

/// How the myCRMSIM endpoint is told apart from the workspace's others.
pub const ENDPOINT_DESCRIPTION: &str = "myCRMSIM status updates and inbound messages";

/// The events myCRMSIM reports.
const EVENTS: &[&str] = &[
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.undelivered",
    "message.expired",
    "message.suppressed",
    "message.received",
];

/// The payload template: `STATUS-UPDATE` keyed by the caller's
/// `message_id` (our `client_ref`), or `MESSAGE` for a reply.
fn template(location_id: &str) -> String {
    let loc = Value::String(location_id.to_owned()).to_string();
    format!(
        r#"{{%- set d = event.data -%}}
{{%- if event.event == "message.received" -%}}
{{"type":"MESSAGE","location_id":{loc},"phone":{{{{ d.from|tojson }}}},"message":{{{{ d.text|tojson }}}},"isMe":false,"attachments":{{{{ d.media_urls|tojson }}}}}}
{{%- else -%}}
{{"type":"STATUS-UPDATE","location_id":{loc},"message_id":{{{{ d.client_ref|tojson }}}},"status":"{{% if event.event == "message.sent" %}}SENT{{% elif event.event == "message.delivered" %}}DELIVERED{{% else %}}FAILED{{% endif %}}"}}
{{%- endif -%}}"#
    )
}

/// The adapter's settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct MycrmsimSettings {
    /// The workspace's myCRMSIM location id.
    pub location_id: String,
    /// The webhook endpoint that carries `STATUS-UPDATE` and `MESSAGE`.
    pub endpoint_id: String,
    /// Where they go.
    pub url: String,
}

fn bad(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message).with_field(field)
}

/// Connect the workspace to myCRMSIM: `location_id`, the `url` for its
/// callbacks, and `headers` sent with each (e.g. `Authorization`). Calling
/// it again changes them.
#[utoipa::path(put, path = "/v1/compat/mycrmsim", tag = "adapters", request_body = Object,
    responses((status = 200, body = MycrmsimSettings), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn configure(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    JsonBody(body): JsonBody,
) -> Result<Json<MycrmsimSettings>, ApiError> {
    let obj = crate::body::object(&body, &["location_id", "url", "headers"])?;
    let location_id = obj
        .get("location_id")
        .and_then(Value::as_str)
        .filter(|l| {
            !l.is_empty()
                && l.len() <= 64
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_location_id",
                "`location_id` is 1 to 64 letters, digits, `-`, `_` or `.`",
            )
            .with_field("location_id")
        })?;
    let mut endpoint = Map::new();
    for k in ["url", "headers"] {
        if let Some(v) = obj.get(k) {
            endpoint.insert(k.into(), v.clone());
        }
    }
    endpoint.insert("event_types".into(), json!(EVENTS));
    endpoint.insert("format".into(), json!("template"));
    endpoint.insert("template".into(), json!(template(location_id)));
    endpoint.insert("description".into(), json!(ENDPOINT_DESCRIPTION));
    let ws = &ctx.workspace_id;
    // Checked before the location is taken, saved after.
    let pending =
        crate::webhooks::AdapterEndpoint::check(&state, ws, Value::Object(endpoint)).await?;
    if !state.store.set_location_id(ws, location_id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "location_id_taken",
            format!("another workspace already has location_id {location_id}"),
        )
        .with_field("location_id"));
    }
    let record = pending.save(&state, ws).await?;
    Ok(Json(MycrmsimSettings {
        location_id: location_id.to_owned(),
        endpoint_id: record.id,
        url: record.url,
    }))
}

/// The answer to an accepted send.
#[derive(Debug, Serialize, ToSchema)]
pub struct MycrmsimAccepted {
    /// `queued`: accepted, not yet delivered.
    pub status: String,
    /// Your `message_id`, which later `STATUS-UPDATE`s carry.
    pub message_id: String,
    /// Switchboard's id for it.
    pub id: String,
}

/// A required string field, present and not blank.
fn required<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    code: &'static str,
) -> Result<&'a str, ApiError> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(bad(
            code,
            field,
            format!("`{field}` is required and must not be empty"),
        )),
        Some(_) => Err(bad(
            "invalid_type",
            field,
            format!("`{field}` must be a string"),
        )),
    }
}

/// Send a message the way myCRMSIM takes it: `location_id`, `user_id`,
/// `phone` (E.164), `message`, `attachments` (media URLs), `message_id`
/// (your id: the idempotency key, echoed in status updates) and `channel`
/// (`imessage`, `whatsapp`, `sms` or `rcs`). 200 means accepted, not
/// delivered; watch the `STATUS-UPDATE` callbacks.
#[utoipa::path(post, path = "/compat/mycrmsim/webhook", tag = "adapters", request_body = Object,
    responses((status = 200, body = MycrmsimAccepted), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn send(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let obj = body.as_object().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body must be a JSON object",
        )
    })?;
    let location_id = required(obj, "location_id", "missing_location_id")?;
    let message_id = required(obj, "message_id", "missing_message_id")?;
    let user_id = match obj.get("user_id") {
        Some(Value::Number(n)) => n.to_string(),
        _ => required(obj, "user_id", "missing_user_id")?.to_owned(),
    };
    let message = required(obj, "message", "missing_message")?;
    let channel = match obj.get("channel") {
        Some(Value::String(c)) if Channel::parse(c).is_some() => c.as_str(),
        Some(other) => {
            return Err(bad(
                "invalid_channel",
                "channel",
                format!("invalid channel {other}: one of imessage, whatsapp, sms, rcs"),
            ));
        }
        None => {
            return Err(bad(
                "invalid_channel",
                "channel",
                "`channel` is required: one of imessage, whatsapp, sms, rcs",
            ));
        }
    };
    let phone = obj.get("phone").and_then(Value::as_str).unwrap_or("");
    if PhoneNumber::parse(phone).is_err() {
        return Err(bad(
            "invalid_phone",
            "phone",
            format!("invalid phone number format {phone:?}: use E.164, e.g. +14155550123"),
        ));
    }
    let attachments = match obj.get("attachments") {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(a @ Value::Array(items)) if items.iter().all(Value::is_string) => a.clone(),
        Some(_) => {
            return Err(bad(
                "invalid_attachments",
                "attachments",
                "`attachments` must be an array of media URLs",
            ));
        }
    };
    let workspace = state
        .store
        .get_workspace(&ctx.workspace_id)
        .await?
        .ok_or_else(|| ApiError::not_found("workspace"))?;
    if workspace.location_id.as_deref() != Some(location_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_location",
            format!("location_id {location_id} is not this workspace's (set it with PUT /v1/compat/mycrmsim)"),
        )
        .with_field("location_id"));
    }
    let submit = json!({
        "to": phone,
        "channel": channel,
        "body": message,
        "media_urls": attachments,
        "client_ref": message_id,
        "idempotency_key": message_id,
        "metadata": {"source": "mycrmsim", "user_id": user_id, "location_id": location_id},
    });
    let (accepted, _) = crate::messages::submit_json(&state, &ctx, None, &submit).await?;
    Ok((
        StatusCode::OK,
        Json(MycrmsimAccepted {
            status: accepted.status,
            message_id: message_id.to_owned(),
            id: accepted.id,
        }),
    ))
}
