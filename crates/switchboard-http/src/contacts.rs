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
    let text = |f: &str| match crate::body::optional_text(&body, f)? {
        Some(s) if s.len() > 200 => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            format!("`{f}` is limited to 200 bytes"),
        )
        .with_field(f)),
        // PostgreSQL's text cannot hold a NUL (SQLite's can).
        Some(s) if s.contains('\0') => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            format!("`{f}` must not contain NUL characters"),
        )
        .with_field(f)),
        other => Ok(other),
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

/// One contact's consent on one channel, in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactEntry {
    /// E.164 number.
    pub phone: String,
    /// Channel.
    pub channel: String,
    /// `opted_in` or `opted_out`.
    pub state: String,
    /// Source of the last change.
    pub source: String,
    /// Jurisdiction.
    pub jurisdiction: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

/// A page of contacts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContactList {
    /// By phone, then channel.
    pub data: Vec<ContactEntry>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/contacts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContactParams {
    /// `opted_in` or `opted_out`.
    pub state: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

/// Contacts with a recorded consent (for exports and suppression lists).
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts", params(ContactParams),
    responses((status = 200, body = ContactList), (status = 422, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    axum::extract::Query(p): axum::extract::Query<ContactParams>,
) -> Result<Json<ContactList>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_limit",
            "`limit` must be from 1 to 1000",
        )
        .with_field("limit"));
    }
    if let Some(s) = &p.state
        && s != "opted_in"
        && s != "opted_out"
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_state",
            "`state` is opted_in or opted_out",
        )
        .with_field("state"));
    }
    let mut rows = state
        .store
        .list_contacts(
            &ctx.workspace_id,
            p.state.as_deref(),
            p.cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last()
            .map(|(phone, r)| format!("{phone}|{}", r.channel))
    } else {
        None
    };
    let data = rows
        .into_iter()
        .map(|(phone, r)| ContactEntry {
            phone,
            channel: r.channel,
            state: r.state,
            source: r.source,
            jurisdiction: r.jurisdiction,
            updated_at: r.updated_at.to_rfc3339(),
        })
        .collect();
    Ok(Json(ContactList { data, next_cursor }))
}

/// A bulk import (`records` of `{phone, channel?, state?, jurisdiction?}`).
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportRequest {
    /// Up to 5000 records; `channel` defaults to `sms`, `state` to `opted_out`.
    pub records: Vec<Value>,
}

/// The most records one import request takes.
pub const MAX_IMPORT: usize = 5000;
/// The largest import request body.
pub const MAX_IMPORT_BYTES: usize = 1024 * 1024;

/// Import consent records (e.g. an existing suppression list) in one
/// transaction. All records are checked first; one bad record refuses the
/// whole request, naming it. Imports emit no `contact.*` events.
#[utoipa::path(post, path = "/v1/contacts/import", tag = "contacts", request_body = ImportRequest,
    responses((status = 200, description = "{\"imported\", \"changed\", \"unchanged\"}"), (status = 422, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn import(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    crate::body::JsonBody(body): crate::body::JsonBody,
) -> Result<Json<Value>, ApiError> {
    let Some(records) = body.get("records").and_then(Value::as_array) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            "`records` must be an array",
        )
        .with_field("records"));
    };
    if records.len() > MAX_IMPORT {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_records",
            format!("at most {MAX_IMPORT} records per request"),
        )
        .with_field("records"));
    }
    let now = state.clock.now();
    let mut changes = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let field = |f: &str| format!("records[{i}].{f}");
        let text = |f: &str| r.get(f).and_then(Value::as_str);
        let p = PhoneNumber::parse(text("phone").unwrap_or("")).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_phone",
                format!("record {i}: the phone number {e}"),
            )
            .with_field(&field("phone"))
        })?;
        let channel = match text("channel") {
            None => Channel::Sms,
            Some(c) => Channel::parse(c).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_channel",
                    format!("record {i}: unknown channel `{c}`"),
                )
                .with_field(&field("channel"))
            })?,
        };
        let st = text("state").unwrap_or("opted_out");
        if st != "opted_out" && st != "opted_in" {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_state",
                format!("record {i}: state is opted_in or opted_out"),
            )
            .with_field(&field("state")));
        }
        changes.push(ConsentChange {
            workspace_id: ctx.workspace_id.clone(),
            phone: p.as_str().to_owned(),
            channel: channel.as_str().to_owned(),
            state: st.to_owned(),
            source: "import".into(),
            jurisdiction: text("jurisdiction").map(|j| j.chars().take(200).collect()),
            detail: Some("imported".into()),
            at: now,
        });
    }
    let n = changes.len();
    let (changed, unchanged) = state.store.import_consent(changes).await?;
    Ok(Json(
        serde_json::json!({ "imported": n, "changed": changed, "unchanged": unchanged }),
    ))
}
