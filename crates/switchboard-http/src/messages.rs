//! `/v1/messages`: submit, read, list, cancel.
//!
//! The hot path, in order: `JsonBody` → `SubmitInput::from_json` →
//! `NewMessage::parse` → sender resolution → `Store::accept_message` (the
//! group commit) → 202.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use switchboard_core::{MessageId, NewMessage, Status, SubmitInput, Timestamp};
use switchboard_store::{
    AcceptOutcome, AcceptRequest, Accepted, MessageDetail, MessageFilter, MessageRecord,
    TransitionOutcome,
};
use utoipa::{IntoParams, ToSchema};

use crate::body::JsonBody;
use crate::error::{ApiError, ErrorResponse};
use crate::state::{AppState, WorkspaceCtx};

/// A message submission (SPEC §3). Exactly one of `body`, `template` (or
/// `media_urls` alone) carries the content.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubmitMessageRequest {
    /// Recipient in E.164, e.g. `+14155550123`.
    pub to: String,
    /// Sender address; defaults to the workspace's default sender for the channel.
    pub from: Option<String>,
    /// `sms` (default), `whatsapp`, `imessage` or `rcs`.
    pub channel: Option<String>,
    /// Text, at most 1600 characters.
    pub body: Option<String>,
    /// A stored template and its variables.
    pub template: Option<TemplateRefDoc>,
    /// Up to 10 http(s) media URLs.
    pub media_urls: Option<Vec<String>>,
    /// Your id for the message, echoed in events (at most 255 bytes).
    pub client_ref: Option<String>,
    /// Any JSON object, echoed in events (at most 8 KiB).
    pub metadata: Option<Map<String, Value>>,
    /// RFC 3339 time to send at; at most 30 days ahead.
    pub send_at: Option<String>,
    /// Give up if not sent within this many seconds (10 to 604800; default 86400).
    pub ttl_seconds: Option<u64>,
    /// `transactional` (default) or `marketing`.
    pub category: Option<String>,
    /// `normal` (default) or `high`.
    pub priority: Option<String>,
    /// Recipient time zone: IANA name or `UTC-8` style.
    pub timezone: Option<String>,
    /// Alternative to the `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// WhatsApp only: send this template approved at Meta instead of free
    /// text; required to start a conversation more than 24 hours after the
    /// customer's last message. `body` is then optional (kept as the
    /// timeline's text).
    pub whatsapp_template: Option<WhatsAppTemplateDoc>,
}

/// A WhatsApp message template approved at Meta.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct WhatsAppTemplateDoc {
    /// The template's name, e.g. `order_update`.
    pub name: String,
    /// Its language code, e.g. `en_US`.
    pub language: String,
    /// The body's `{{1}}`, `{{2}}`, … parameters, in order.
    pub parameters: Option<Vec<String>>,
}

/// A template reference.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct TemplateRefDoc {
    /// Template name.
    pub name: String,
    /// Variables.
    pub variables: Option<Map<String, Value>>,
}

/// The answer to an accepted submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedResponse {
    /// Message id (`msg_…`).
    pub id: String,
    /// `queued` or `scheduled`.
    pub status: String,
    /// Your reference.
    pub client_ref: Option<String>,
    /// SMS segments the body costs.
    pub segments: u32,
    /// `GSM-7` or `UCS-2`.
    pub encoding: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<Accepted> for AcceptedResponse {
    fn from(a: Accepted) -> Self {
        AcceptedResponse {
            id: a.id.to_string(),
            status: a.status.as_str().to_owned(),
            client_ref: a.client_ref,
            segments: a.segments,
            encoding: a.encoding,
            created_at: a.created_at.to_rfc3339(),
        }
    }
}

impl AcceptedResponse {
    /// The 202's body: what serde_json writes for this struct (its fields
    /// in the order declared), written by hand (`switchboard_core::json_text`;
    /// a test holds the two together).
    fn json(&self) -> String {
        use switchboard_core::json_text::{push_int, push_opt_str, push_str};
        let mut out = String::with_capacity(160);
        out.push_str("{\"id\":");
        push_str(&mut out, &self.id);
        out.push_str(",\"status\":");
        push_str(&mut out, &self.status);
        out.push_str(",\"client_ref\":");
        push_opt_str(&mut out, self.client_ref.as_deref());
        out.push_str(",\"segments\":");
        push_int(&mut out, i64::from(self.segments));
        out.push_str(",\"encoding\":");
        push_str(&mut out, &self.encoding);
        out.push_str(",\"created_at\":");
        push_str(&mut out, &self.created_at);
        out.push('}');
        out
    }
}

/// One timeline entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResponse {
    /// Event id.
    pub id: String,
    /// Event type, e.g. `message.delivered`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Status after the event.
    pub status: String,
    /// Detail.
    pub detail: Option<String>,
    /// Error code.
    pub error_code: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// One send attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptResponse {
    /// Attempt number.
    pub attempt: u32,
    /// Provider.
    pub provider_id: String,
    /// RFC 3339.
    pub started_at: String,
    /// Duration.
    pub duration_ms: i64,
    /// `accepted`, `failed` or `interrupted`.
    pub outcome: String,
    /// `transport`, `throttled`, `permanent` or `consent`.
    pub error_class: Option<String>,
    /// Error code.
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
    /// Provider's id.
    pub provider_message_id: Option<String>,
}

/// A message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    /// Id.
    pub id: String,
    /// Recipient.
    pub to: String,
    /// Sender.
    pub from: Option<String>,
    /// Channel.
    pub channel: String,
    /// Text.
    pub body: String,
    /// Media.
    pub media_urls: Vec<String>,
    /// Status.
    pub status: String,
    /// Encoding.
    pub encoding: String,
    /// Segments.
    pub segments: u32,
    /// Your reference.
    pub client_ref: Option<String>,
    /// Your metadata.
    pub metadata: Option<Map<String, Value>>,
    /// Category.
    pub category: String,
    /// Priority.
    pub priority: String,
    /// Recipient zone.
    pub timezone: Option<String>,
    /// Provider.
    pub provider_id: Option<String>,
    /// Provider's id.
    pub provider_message_id: Option<String>,
    /// Attempts made.
    pub attempt_count: u32,
    /// Next attempt, while waiting.
    pub next_attempt_at: Option<String>,
    /// Requested send time.
    pub send_at: Option<String>,
    /// Expiry.
    pub expires_at: String,
    /// Last error code.
    pub error_code: Option<String>,
    /// Last error message.
    pub error_message: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The WhatsApp template it is sent as, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub whatsapp_template: Option<Value>,
    /// The timeline, oldest first (single-message reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventResponse>>,
    /// Attempts, oldest first (single-message reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptResponse>>,
}

fn rfc(t: Option<Timestamp>) -> Option<String> {
    t.map(Timestamp::to_rfc3339)
}

impl From<MessageRecord> for MessageResponse {
    fn from(m: MessageRecord) -> Self {
        MessageResponse {
            id: m.id.to_string(),
            to: m.to,
            from: m.from,
            channel: m.channel,
            body: m.body,
            media_urls: m.media_urls,
            status: m.status.as_str().to_owned(),
            encoding: m.encoding,
            segments: m.segments,
            client_ref: m.client_ref,
            metadata: m.metadata,
            category: m.category,
            priority: m.priority,
            timezone: m.timezone,
            provider_id: m.provider_id,
            provider_message_id: m.provider_message_id,
            attempt_count: m.attempts,
            next_attempt_at: rfc(m.next_attempt_at),
            send_at: rfc(m.send_at),
            expires_at: m.expires_at.to_rfc3339(),
            error_code: m.error_code,
            error_message: m.error_message,
            created_at: m.created_at.to_rfc3339(),
            updated_at: m.updated_at.to_rfc3339(),
            whatsapp_template: m
                .whatsapp_template
                .map(|t| serde_json::to_value(t).expect("json serializes")),
            events: None,
            attempts: None,
        }
    }
}

impl From<MessageDetail> for MessageResponse {
    fn from(d: MessageDetail) -> Self {
        let mut r = MessageResponse::from(d.message);
        r.events = Some(
            d.events
                .into_iter()
                .map(|e| EventResponse {
                    id: e.id,
                    event_type: e.event_type,
                    status: e.status,
                    detail: e.detail,
                    error_code: e.error_code,
                    created_at: e.created_at.to_rfc3339(),
                })
                .collect(),
        );
        r.attempts = Some(
            d.attempts
                .into_iter()
                .map(|a| AttemptResponse {
                    attempt: a.attempt,
                    provider_id: a.provider_id,
                    started_at: a.started_at.to_rfc3339(),
                    duration_ms: a.duration_ms,
                    outcome: a.outcome,
                    error_class: a.error_class,
                    error_code: a.error_code,
                    error_message: a.error_message,
                    provider_message_id: a.provider_message_id,
                })
                .collect(),
        );
        r
    }
}

/// A page of messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    /// Messages, newest first.
    pub data: Vec<MessageResponse>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Filters for `GET /v1/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only messages in this status.
    pub status: Option<String>,
    /// Only messages to this number (E.164).
    pub to: Option<String>,
    /// Only messages with this `client_ref`.
    pub client_ref: Option<String>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<String>,
    /// Created before (RFC 3339).
    pub created_before: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<usize>,
}

/// The bytes of a serialization, fed to a hash as they are written.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A request body's top-level object without its `idempotency_key`.
struct WithoutKey<'a>(&'a Map<String, Value>);

impl Serialize for WithoutKey<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .iter()
                .filter(|(k, _)| k.as_str() != "idempotency_key"),
        )
    }
}

/// The hash that tells an idempotent replay (same request) from a conflict:
/// SHA-256 of the body's compact JSON with every object's keys sorted and
/// without the top-level `idempotency_key` (the key itself is not part of
/// what is compared). serde_json's maps keep their keys sorted (its
/// `preserve_order` feature is off), so the body serializes canonically as
/// it is, straight into the hash: no sorted copy, no intermediate text.
/// (A field-order test fails if that feature is ever switched on.)
fn request_hash(body: &Value) -> String {
    let mut h = HashWriter(Sha256::new());
    let written = match body {
        Value::Object(m) => serde_json::to_writer(&mut h, &WithoutKey(m)),
        other => serde_json::to_writer(&mut h, other),
    };
    // Writing into a hash cannot fail, and a `Value` always serializes.
    debug_assert!(written.is_ok());
    switchboard_core::secret::hex_lower(&h.0.finalize())
}

fn idempotency_header(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "the Idempotency-Key header must be printable ASCII",
            )
            .with_field("Idempotency-Key")
        }),
    }
}

/// Submit a message.
#[utoipa::path(post, path = "/v1/messages", tag = "messages",
    request_body = SubmitMessageRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key and same body: the same answer and no second message. Same key, different body: 409.")),
    responses(
        (status = 202, description = "Stored durably; will be sent", body = AcceptedResponse),
        (status = 400, description = "Malformed JSON, wrong types or unknown fields", body = ErrorResponse),
        (status = 401, body = ErrorResponse), (status = 409, description = "Idempotency key reused with a different body", body = ErrorResponse),
        (status = 413, body = ErrorResponse), (status = 415, body = ErrorResponse),
        (status = 422, description = "Valid JSON, invalid content", body = ErrorResponse),
        (status = 429, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn submit(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let result = accept(&state, &ctx, &headers, &body).await;
    if result.is_err() {
        state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// How long after a customer's last message WhatsApp allows free-form
/// messages (its customer-service window).
pub const WHATSAPP_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Refuses free-form WhatsApp messages through the Cloud API to a number
/// that has not written in the last 24 hours: only an approved template
/// (`whatsapp_template`) may start the conversation. (The Cloud API would
/// refuse it too, with 131047, after it had been accepted.)
async fn check_whatsapp_window(
    state: &AppState,
    ctx: &WorkspaceCtx,
    message: &NewMessage,
    provider: &switchboard_core::ProviderId,
    now: Timestamp,
) -> Result<(), ApiError> {
    if message.channel != switchboard_core::Channel::Whatsapp
        || message.whatsapp_template.is_some()
        || state.providers.kind(provider).as_deref() != Some("whatsapp_cloud")
    {
        return Ok(());
    }
    let last = state
        .store
        .last_inbound_at(
            &ctx.workspace_id,
            message.to.as_str(),
            switchboard_core::Channel::Whatsapp,
        )
        .await?;
    if last.is_some_and(|t| now.since(t) < WHATSAPP_WINDOW) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "outside_customer_service_window",
        "WhatsApp allows free-form messages only within 24 hours of the customer's last message to you; send an approved template with `whatsapp_template` instead",
    )
    .with_field("whatsapp_template"))
}

async fn accept(
    state: &AppState,
    ctx: &WorkspaceCtx,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Response, ApiError> {
    let (accepted, replayed) = submit_json(state, ctx, idempotency_header(headers)?, body).await?;
    let json = [(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    let mut resp = (StatusCode::ACCEPTED, json, accepted.json()).into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// The one submit path (validation, templates, sender, consent, quiet
/// hours, idempotency) for a body in the `POST /v1/messages` shape, with
/// the `Idempotency-Key` header's value if any. Answers the accepted
/// message and whether it is an idempotent replay. Adapters translate their
/// payloads into this shape and call it.
pub async fn submit_json(
    state: &AppState,
    ctx: &WorkspaceCtx,
    header_key: Option<&str>,
    body: &Value,
) -> Result<(AcceptedResponse, bool), ApiError> {
    let input = SubmitInput::from_json(body)?;
    let now = state.clock.now();
    let message = NewMessage::parse(input, header_key, now)?;
    let message = crate::templates::render_into(state, ctx, message).await?;
    let sender = ctx
        .sender(message.channel, message.from.as_deref())
        .ok_or_else(|| match &message.from {
            Some(from) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_sender",
                format!(
                    "`{from}` is not a sender of this workspace on {}",
                    message.channel.as_str()
                ),
            )
            .with_field("from"),
            None => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "channel_not_enabled",
                format!(
                    "this workspace has no sender on {}",
                    message.channel.as_str()
                ),
            )
            .with_field("channel"),
        })?;
    check_whatsapp_window(state, ctx, &message, &sender.provider_id, now).await?;
    let (hold_until, require_opt_in) =
        crate::inbound::marketing_policy(state, ctx, &message, now).await?;
    let req = AcceptRequest {
        workspace_id: ctx.workspace_id.clone(),
        provider_id: sender.provider_id.clone(),
        from: sender.address.clone(),
        request_hash: request_hash(body),
        message,
        now,
        consent_exempt: false,
        hold_until,
        require_opt_in,
    };
    match state.store.accept_message(req).await? {
        AcceptOutcome::Created(a) => {
            state.metrics.accepted.fetch_add(1, Ordering::Relaxed);
            state.wake.notify_one();
            Ok((AcceptedResponse::from(a), false))
        }
        AcceptOutcome::Replayed(a) => {
            state.metrics.replayed.fetch_add(1, Ordering::Relaxed);
            Ok((AcceptedResponse::from(a), true))
        }
        AcceptOutcome::OptInRequired => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "opt_in_required",
            "this workspace sends marketing only to recipients with a recorded opt-in, and this one has none",
        )
        .with_field("to")),
        AcceptOutcome::OptedOut => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "recipient_opted_out",
            "the recipient has opted out of this channel; nothing was sent",
        )
        .with_field("to")),
        AcceptOutcome::Conflict { existing } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            format!(
                "this idempotency key was used for message {existing} with a different request body"
            ),
        )
        .with_field("Idempotency-Key")),
    }
}

fn parse_id(id: &str) -> Result<MessageId, ApiError> {
    // A malformed id cannot name a message: the same 404 as a missing one.
    MessageId::parse(id).map_err(|_| ApiError::not_found("message"))
}

/// A message with its event timeline and attempts.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, body = MessageResponse), (status = 404, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
) -> Result<Json<MessageResponse>, ApiError> {
    let id = parse_id(&id)?;
    let detail = state
        .store
        .get_message(&ctx.workspace_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Json(detail.into()))
}

fn time_param(v: Option<&str>, field: &str) -> Result<Option<Timestamp>, ApiError> {
    v.map(|s| {
        Timestamp::parse_rfc3339(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_time",
                format!("`{field}` must be an RFC 3339 time"),
            )
            .with_field(field)
        })
    })
    .transpose()
}

/// Messages of the workspace, newest first, with filters and a cursor.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(ListParams),
    responses((status = 200, body = MessageList), (status = 422, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Query(p): Query<ListParams>,
) -> Result<Json<MessageList>, ApiError> {
    let bad = |code, field: &str, msg: &str| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg).with_field(field)
    };
    let status = p
        .status
        .as_deref()
        .map(|s| Status::parse(s).ok_or_else(|| bad("invalid_status", "status", "unknown status")))
        .transpose()?;
    let cursor = p
        .cursor
        .as_deref()
        .map(|c| {
            MessageId::parse(c).map_err(|_| {
                bad(
                    "invalid_cursor",
                    "cursor",
                    "not a cursor from a previous page",
                )
            })
        })
        .transpose()?;
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(bad(
            "invalid_limit",
            "limit",
            "`limit` must be from 1 to 100",
        ));
    }
    let filter = MessageFilter {
        status,
        to: p.to,
        client_ref: p.client_ref,
        created_after: time_param(p.created_after.as_deref(), "created_after")?,
        created_before: time_param(p.created_before.as_deref(), "created_before")?,
        cursor,
        limit,
    };
    let page = state
        .store
        .list_messages(&ctx.workspace_id, &filter)
        .await?;
    Ok(Json(MessageList {
        data: page.data.into_iter().map(MessageResponse::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// Cancel a message that is still `scheduled` or `queued`.
#[utoipa::path(post, path = "/v1/messages/{id}/cancel", tag = "messages",
    params(("id" = String, Path, description = "Message id")),
    responses((status = 200, body = MessageResponse), (status = 404, body = ErrorResponse),
        (status = 409, description = "Already sending or past it", body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
) -> Result<Json<MessageResponse>, ApiError> {
    let id = parse_id(&id)?;
    match state
        .store
        .cancel_message(&ctx.workspace_id, &id, state.clock.now())
        .await?
    {
        None => Err(ApiError::not_found("message")),
        Some(TransitionOutcome::Refused { status }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancelable",
            format!(
                "the message is {} and can no longer be canceled",
                status.as_str()
            ),
        )),
        Some(_) => {
            let detail = state
                .store
                .get_message(&ctx.workspace_id, &id)
                .await?
                .ok_or_else(|| ApiError::not_found("message"))?;
            Ok(Json(detail.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_202_written_by_hand_is_what_serde_json_writes() {
        for (client_ref, segments) in [
            (None, 1),
            (Some("crm-77"), 10),
            (
                Some("quote \" backslash \\ nl \n ctl \u{1} del \u{7f} ✓ 🎉"),
                u32::MAX,
            ),
            (Some(""), 0),
        ] {
            let a = AcceptedResponse {
                id: "msg_01JD0000000000000000000000".into(),
                status: "queued".into(),
                client_ref: client_ref.map(str::to_owned),
                segments,
                encoding: "UCS-2".into(),
                created_at: "2026-12-06T19:53:26.123Z".into(),
            };
            assert_eq!(a.json(), serde_json::to_string(&a).unwrap());
        }
    }

    #[test]
    fn the_request_hash_ignores_field_order_and_the_key() {
        let a = json!({"to": "+1", "body": "x", "metadata": {"a": 1, "b": 2}});
        let b =
            json!({"metadata": {"b": 2, "a": 1}, "body": "x", "to": "+1", "idempotency_key": "k"});
        assert_eq!(request_hash(&a), request_hash(&b));
        let c = json!({"to": "+1", "body": "y"});
        assert_ne!(request_hash(&a), request_hash(&c));
    }

    /// The hash as it was first written (a sorted deep copy, the key
    /// removed, then its text hashed): stored hashes of earlier releases
    /// must still match, or a replay after an upgrade would be a conflict.
    fn reference_hash(body: &Value) -> String {
        fn canonical(v: &Value) -> Value {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    let mut out = Map::new();
                    for k in keys {
                        out.insert(k.clone(), canonical(&m[k]));
                    }
                    Value::Object(out)
                }
                Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
                other => other.clone(),
            }
        }
        let mut v = canonical(body);
        if let Value::Object(m) = &mut v {
            m.remove("idempotency_key");
        }
        hex::encode(Sha256::digest(v.to_string().as_bytes()))
    }

    #[test]
    fn the_request_hash_is_the_one_earlier_releases_stored() {
        let bodies = [
            json!({"to": "+14155550123", "body": "Benchmark message 1", "client_ref": "b1", "idempotency_key": "bench-1"}),
            json!({"idempotency_key": "only"}),
            json!({}),
            json!({"z": [3, {"y": null, "x": [true, false]}], "a": 1.5e300, "m": -0.0, "n": 18446744073709551615u64}),
            json!({"body": "quote \" backslash \\ tab \t nl \n ctl \u{1} emoji 🎉 é", "metadata": {"nested": {"idempotency_key": "kept below the top"}}}),
            json!(["not", "an", "object"]),
            json!("text"),
            json!(null),
        ];
        for b in &bodies {
            assert_eq!(request_hash(b), reference_hash(b), "{b}");
        }
    }
}
