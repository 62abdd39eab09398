//! `/v1/contacts/{phone}`: consent per channel, its history, and opt-out /
//! opt-in by API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_core::{Channel, PhoneNumber};
use switchboard_store::{ConsentChange, ContactConsent};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorResponse};
use crate::state::{AppState, WorkspaceCtx};

/// Consent on one channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentState {
    /// Channel.
    pub channel: String,
    /// `opted_in` or `opted_out`.
    pub state: String,
    /// `keyword`, `api`, `crm` or `import`.
    pub source: String,
    /// Legal context.
    pub jurisdiction: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

/// One change of consent.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentHistoryEntry {
    /// Channel.
    pub channel: String,
    /// New state.
    pub state: String,
    /// Source.
    pub source: String,
    /// Jurisdiction.
    pub jurisdiction: Option<String>,
    /// Detail, e.g. the keyword received.
    pub detail: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// A contact's consent.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactResponse {
    /// E.164 number.
    pub phone: String,
    /// Current consent per channel (a channel never recorded is absent).
    pub consent: Vec<ConsentState>,
    /// Every change, oldest first.
    pub history: Vec<ConsentHistoryEntry>,
}

/// Opt-out or opt-in parameters (all optional).
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConsentRequest {
    /// `sms` (default), `whatsapp`, `imessage` or `rcs`.
    pub channel: Option<String>,
    /// Legal context to record, e.g. `US-TCPA`.
    pub jurisdiction: Option<String>,
    /// Free text kept in the history.
    pub detail: Option<String>,
}

fn view(phone: &str, c: ContactConsent) -> ContactResponse {
    ContactResponse {
        phone: phone.to_owned(),
        consent: c
            .current
            .into_iter()
            .map(|r| ConsentState {
                channel: r.channel,
                state: r.state,
                source: r.source,
                jurisdiction: r.jurisdiction,
                updated_at: r.updated_at.to_rfc3339(),
            })
            .collect(),
        history: c
            .history
            .into_iter()
            .map(|h| ConsentHistoryEntry {
                channel: h.channel,
                state: h.state,
                source: h.source,
                jurisdiction: h.jurisdiction,
                detail: h.detail,
                created_at: h.created_at.to_rfc3339(),
            })
            .collect(),
    }
}

fn phone(raw: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(raw).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_phone",
            format!("the phone number {e}"),
        )
        .with_field("phone")
    })
}

/// A number's consent and history.
#[utoipa::path(get, path = "/v1/contacts/{phone}", tag = "contacts", params(("phone" = String, Path, description = "E.164, `+` may be written %2B")),
    responses((status = 200, body = ContactResponse), (status = 422, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(raw): Path<String>,
) -> Result<Json<ContactResponse>, ApiError> {
    let p = phone(&raw)?;
    Ok(Json(view(
        p.as_str(),
        state
            .store
            .contact_consent(&ctx.workspace_id, p.as_str())
            .await?,
    )))
}

async fn set(
    state: &AppState,
    ctx: &WorkspaceCtx,
    raw: &str,
    body: &Bytes,
    new_state: &str,
) -> Result<Json<ContactResponse>, ApiError> {
    let p = phone(raw)?;
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the request body is not valid JSON: {e}"),
            )
        })?
    };
    let Value::Object(obj) = &body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            "the request body must be a JSON object",
        ));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["channel", "jurisdiction", "detail"].contains(&k.as_str()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_field",
            format!("unknown field `{k}`"),
        )
        .with_field(k));
    }
    let text = |f: &str| match obj.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 200 => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            format!("`{f}` is limited to 200 bytes"),
        )
        .with_field(f)),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            format!("`{f}` must be a string"),
        )
        .with_field(f)),
    };
    let channel = match text("channel")? {
        None => Channel::Sms,
        Some(c) => Channel::parse(&c).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_channel",
                format!("unknown channel `{c}`"),
            )
            .with_field("channel")
        })?,
    };
    let change = ConsentChange {
        workspace_id: ctx.workspace_id.clone(),
        phone: p.as_str().to_owned(),
        channel: channel.as_str().to_owned(),
        state: new_state.to_owned(),
        source: "api".into(),
        jurisdiction: text("jurisdiction")?,
        detail: text("detail")?,
        at: state.clock.now(),
    };
    state.store.change_consent(change).await?;
    Ok(Json(view(
        p.as_str(),
        state
            .store
            .contact_consent(&ctx.workspace_id, p.as_str())
            .await?,
    )))
}

/// Opt a number out of a channel: submissions are refused, queued messages suppressed.
#[utoipa::path(post, path = "/v1/contacts/{phone}/opt-out", tag = "contacts", params(("phone" = String, Path)), request_body = ConsentRequest,
    responses((status = 200, body = ContactResponse), (status = 422, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn opt_out(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<ContactResponse>, ApiError> {
    set(&state, &ctx, &raw, &body, "opted_out").await
}

/// Opt a number (back) in to a channel.
#[utoipa::path(post, path = "/v1/contacts/{phone}/opt-in", tag = "contacts", params(("phone" = String, Path)), request_body = ConsentRequest,
    responses((status = 200, body = ContactResponse), (status = 422, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn opt_in(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<ContactResponse>, ApiError> {
    set(&state, &ctx, &raw, &body, "opted_in").await
}
