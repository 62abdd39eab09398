//! `/v1/webhooks`: endpoints, their attempt log, test sends, secret
//! rotation and redelivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_core::webhook_endpoint::EndpointSettings;
use switchboard_core::webhook_signature::WebhookSecret;
use switchboard_core::{EventId, Timestamp, ValidationError};
use switchboard_store::{EndpointRecord, Redelivery, WebhookAttemptRecord, WebhookJob};
use utoipa::{IntoParams, ToSchema};

use crate::body::JsonBody;
use crate::error::{ApiError, ErrorResponse};
use crate::state::{AppState, WorkspaceCtx};

/// What the HTTP edge needs from the webhook deliverer.
#[async_trait::async_trait]
pub trait WebhookGateway: Send + Sync + std::fmt::Debug {
    /// Checks a URL's addresses against the SSRF policy.
    async fn check_destination(&self, url: &str) -> Result<(), String>;
    /// Checks a payload template's syntax.
    fn check_template(&self, source: &str) -> Result<(), String>;
    /// Makes one attempt of a claimed job now and records it.
    async fn attempt_now(
        &self,
        job: WebhookJob,
    ) -> Result<WebhookAttemptRecord, switchboard_store::StoreError>;
}

/// A webhook endpoint. `secret` appears only when it is created or rotated.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointResponse {
    /// Id (`wh_…`).
    pub id: String,
    /// Destination.
    pub url: String,
    /// `POST`, `PUT` or `PATCH`.
    pub method: String,
    /// `json` or `form`.
    pub content_type: String,
    /// Subscribed event types; null for every event.
    pub event_types: Option<Vec<String>>,
    /// Custom headers.
    pub headers: BTreeMap<String, String>,
    /// Description.
    pub description: Option<String>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why it was disabled automatically.
    pub disabled_reason: Option<String>,
    /// `standard` or `template`.
    pub format: String,
    /// Payload template (MiniJinja, with `event` as input).
    pub template: Option<String>,
    /// Seconds before each retry.
    pub retry_schedule: Vec<u32>,
    /// Per-attempt timeout.
    pub timeout_ms: u32,
    /// Consecutive failures before it is disabled.
    pub disable_after: u32,
    /// Failures in a row so far.
    pub consecutive_failures: u32,
    /// The signing secret (`whsec_…`): only in create and rotate answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When the previous secret stops signing, during a rotation.
    pub previous_secret_expires_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl EndpointResponse {
    fn from_record(e: EndpointRecord, show_secret: bool, now: Timestamp) -> Self {
        EndpointResponse {
            secret: show_secret.then(|| e.secret.clone()),
            previous_secret_expires_at: e
                .previous_secret_until
                .filter(|t| *t > now)
                .map(Timestamp::to_rfc3339),
            id: e.id,
            url: e.url,
            method: e.method,
            content_type: e.content_type,
            event_types: e.event_types,
            headers: e.headers,
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            format: e.format,
            template: e.template,
            retry_schedule: e.retry_schedule,
            timeout_ms: e.timeout_ms,
            disable_after: e.disable_after,
            consecutive_failures: e.consecutive_failures,
            created_at: e.created_at.to_rfc3339(),
            updated_at: e.updated_at.to_rfc3339(),
        }
    }
}

/// Endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    /// Oldest first.
    pub data: Vec<EndpointResponse>,
    /// Always null: not paginated.
    pub next_cursor: Option<String>,
}

/// One logged attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptLogEntry {
    /// Attempt id.
    pub id: String,
    /// Event delivered.
    pub event_id: String,
    /// Attempt number for this event.
    pub attempt: u32,
    /// `scheduled`, `manual` or `test`.
    pub trigger: String,
    /// HTTP status, when a response came.
    pub status_code: Option<u16>,
    /// Transport error, when none came.
    pub error: Option<String>,
    /// First 1000 characters of the response body.
    pub response_body: Option<String>,
    /// Duration.
    pub duration_ms: i64,
    /// RFC 3339.
    pub created_at: String,
}

impl From<WebhookAttemptRecord> for AttemptLogEntry {
    fn from(a: WebhookAttemptRecord) -> Self {
        AttemptLogEntry {
            id: a.id,
            event_id: a.event_id,
            attempt: a.attempt,
            trigger: a.trigger,
            status_code: a.status_code,
            error: a.error,
            response_body: a.response_body,
            duration_ms: a.duration_ms,
            created_at: a.created_at.to_rfc3339(),
        }
    }
}

/// An attempt log page.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptLog {
    /// Newest first.
    pub data: Vec<AttemptLogEntry>,
    /// Always null: the log shows the newest `limit` attempts.
    pub next_cursor: Option<String>,
}

/// Attempt log parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptParams {
    /// 1 to 250 (default 50).
    pub limit: Option<usize>,
}

/// Settings of an endpoint, as accepted by create and update.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct EndpointRequest {
    /// Destination (http or https); required on create.
    pub url: Option<String>,
    /// `POST` (default), `PUT` or `PATCH`.
    pub method: Option<String>,
    /// `json` (default) or `form`.
    pub content_type: Option<String>,
    /// Event types to receive; null or absent for every event.
    pub event_types: Option<Vec<String>>,
    /// Custom headers.
    pub headers: Option<BTreeMap<String, String>>,
    /// Description.
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// `standard` (default) or `template`.
    pub format: Option<String>,
    /// MiniJinja template rendered with `event` (the standard envelope).
    pub template: Option<String>,
    /// Seconds before each retry, 0 to 10 entries (default 60, 300, 1800, 7200, 86400).
    pub retry_schedule: Option<Vec<u32>>,
    /// 5000 to 60000 (default 30000).
    pub timeout_ms: Option<u32>,
    /// 1 to 10000 (default 50).
    pub disable_after: Option<u32>,
}

/// Rotation parameters.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct RotateRequest {
    /// How long the old secret keeps signing, 0 to 604800 seconds (default 86400).
    pub grace_seconds: Option<u64>,
}

/// What to redeliver: `event_id`, or `since` and `until`.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct RedeliverRequest {
    /// One event.
    pub event_id: Option<String>,
    /// Range start (RFC 3339, inclusive).
    pub since: Option<String>,
    /// Range end (RFC 3339, exclusive).
    pub until: Option<String>,
}

fn unprocessable(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
}

async fn vet(
    state: &AppState,
    s: &EndpointSettings,
    current: Option<&EndpointRecord>,
) -> Result<(), ApiError> {
    if let Some(url) = &s.url {
        state
            .webhooks
            .check_destination(url)
            .await
            .map_err(|e| unprocessable("destination_not_allowed", "url", e))?;
    }
    let format = s
        .format
        .as_deref()
        .or(current.map(|c| c.format.as_str()))
        .unwrap_or("standard");
    let template = match &s.template {
        Some(t) => t.clone(),
        None => current.and_then(|c| c.template.clone()),
    };
    if format == "template" {
        let t = template.ok_or_else(|| {
            unprocessable(
                "missing_field",
                "template",
                "`format: template` needs a `template`",
            )
        })?;
        state.webhooks.check_template(&t).map_err(|e| {
            unprocessable(
                "invalid_template",
                "template",
                format!("the template does not parse: {e}"),
            )
        })?;
    }
    Ok(())
}

fn settings(body: &Value, creating: bool) -> Result<EndpointSettings, ApiError> {
    EndpointSettings::from_json(body, creating).map_err(|e: ValidationError| e.into())
}

/// Create an endpoint. The answer holds its signing secret.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = EndpointRequest,
    responses((status = 201, body = EndpointResponse), (status = 400, body = ErrorResponse), (status = 422, description = "Invalid settings, or a destination refused by the SSRF policy", body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<EndpointResponse>), ApiError> {
    let s = settings(&body, true)?;
    vet(&state, &s, None).await?;
    let now = state.clock.now();
    let id = format!("wh_{}", &EventId::new_at(now).as_str()[4..]);
    let secret = WebhookSecret::generate().expose();
    let e = state
        .store
        .create_endpoint(&ctx.workspace_id, &s, &id, &secret, now)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(EndpointResponse::from_record(e, true, now)),
    ))
}

/// List endpoints.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, body = EndpointList)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
) -> Result<Json<EndpointList>, ApiError> {
    let now = state.clock.now();
    let data = state
        .store
        .list_endpoints(&ctx.workspace_id)
        .await?
        .into_iter()
        .map(|e| EndpointResponse::from_record(e, false, now))
        .collect();
    Ok(Json(EndpointList {
        data,
        next_cursor: None,
    }))
}

async fn find(state: &AppState, ctx: &WorkspaceCtx, id: &str) -> Result<EndpointRecord, ApiError> {
    state
        .store
        .get_endpoint(&ctx.workspace_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

/// An endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = EndpointResponse), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
) -> Result<Json<EndpointResponse>, ApiError> {
    Ok(Json(EndpointResponse::from_record(
        find(&state, &ctx, &id).await?,
        false,
        state.clock.now(),
    )))
}

/// Change an endpoint; `enabled: true` re-enables a disabled one.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), request_body = EndpointRequest,
    responses((status = 200, body = EndpointResponse), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<EndpointResponse>, ApiError> {
    let current = find(&state, &ctx, &id).await?;
    let s = settings(&body, false)?;
    vet(&state, &s, Some(&current)).await?;
    let now = state.clock.now();
    let e = state
        .store
        .update_endpoint(&ctx.workspace_id, &id, &s, now)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    Ok(Json(EndpointResponse::from_record(e, false, now)))
}

/// Delete an endpoint; its pending deliveries are canceled.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .store
        .delete_endpoint(&ctx.workspace_id, &id, state.clock.now())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook endpoint"))
    }
}

/// Replace the signing secret; the old one keeps signing during the grace period.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path)), request_body = RotateRequest,
    responses((status = 200, body = EndpointResponse), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn rotate(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<EndpointResponse>, ApiError> {
    // The body is optional: an empty one means the default grace period.
    let body: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&raw).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the request body is not valid JSON: {e}"),
            )
        })?
    };
    let grace = match body.get("grace_seconds") {
        None | Some(Value::Null) => 86_400,
        Some(v) => v.as_u64().filter(|s| *s <= 604_800).ok_or_else(|| {
            unprocessable(
                "invalid_value",
                "grace_seconds",
                "`grace_seconds` must be from 0 to 604800",
            )
        })?,
    };
    let now = state.clock.now();
    let secret = WebhookSecret::generate().expose();
    let e = state
        .store
        .rotate_endpoint_secret(
            &ctx.workspace_id,
            &id,
            &secret,
            now.plus(Duration::from_secs(grace)),
            now,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    Ok(Json(EndpointResponse::from_record(e, true, now)))
}

/// The attempt log, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/attempts", tag = "webhooks", params(("id" = String, Path), AttemptParams),
    responses((status = 200, body = AttemptLog), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn attempts(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
    Query(p): Query<AttemptParams>,
) -> Result<Json<AttemptLog>, ApiError> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=250).contains(&limit) {
        return Err(unprocessable(
            "invalid_limit",
            "limit",
            "`limit` must be from 1 to 250",
        ));
    }
    let list = state
        .store
        .webhook_attempts(&ctx.workspace_id, &id, limit)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    Ok(Json(AttemptLog {
        data: list.into_iter().map(AttemptLogEntry::from).collect(),
        next_cursor: None,
    }))
}

/// Send a `webhook.test` event now and return the attempt.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = AttemptLogEntry), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn test(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
) -> Result<Json<AttemptLogEntry>, ApiError> {
    let job = state
        .store
        .webhook_test_job(&ctx.workspace_id, &id, state.clock.now())
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    Ok(Json(state.webhooks.attempt_now(job).await?.into()))
}

/// Deliver one event, or every subscribed event of a time range, again.
#[utoipa::path(post, path = "/v1/webhooks/{id}/redeliver", tag = "webhooks", params(("id" = String, Path)), request_body = RedeliverRequest,
    responses((status = 202, description = "Queued; answers {\"queued\": n}"), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn redeliver(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let text = |f: &str| crate::body::optional_text(&body, f);
    let time = |f: &str| -> Result<Option<Timestamp>, ApiError> {
        text(f)?
            .map(|s| {
                Timestamp::parse_rfc3339(&s).ok_or_else(|| {
                    unprocessable("invalid_time", f, format!("`{f}` must be an RFC 3339 time"))
                })
            })
            .transpose()
    };
    let what = match (text("event_id")?, time("since")?, time("until")?) {
        (Some(e), None, None) => Redelivery::Event(e),
        (None, Some(since), until) => {
            // Without `until`, everything up to and including now.
            let until = until.unwrap_or(state.clock.now().plus(Duration::from_millis(1)));
            if until <= since {
                return Err(unprocessable(
                    "invalid_range",
                    "until",
                    "`until` must be after `since`",
                ));
            }
            Redelivery::Range { since, until }
        }
        _ => {
            return Err(unprocessable(
                "missing_field",
                "event_id",
                "give `event_id`, or `since` (and optionally `until`)",
            ));
        }
    };
    let n = state
        .store
        .redeliver(&ctx.workspace_id, &id, &what, state.clock.now())
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    if n == 0
        && let Redelivery::Event(_) = what
    {
        return Err(ApiError::not_found("event"));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": n }))))
}

/// The webhook endpoint a CRM adapter keeps for its callbacks (myCRMSIM's
/// status updates, 2X's opt-outs), told apart by its `description`: checked
/// first, then created or updated.
pub(crate) struct AdapterEndpoint {
    current: Option<EndpointRecord>,
    settings: EndpointSettings,
}

impl AdapterEndpoint {
    /// Checks `body` (endpoint settings with a `description`) as
    /// `POST /v1/webhooks` or `PATCH` would.
    pub(crate) async fn check(
        state: &AppState,
        ws: &switchboard_core::WorkspaceId,
        body: Value,
    ) -> Result<AdapterEndpoint, ApiError> {
        let description = body.get("description").and_then(Value::as_str);
        let current = state
            .store
            .list_endpoints(ws)
            .await?
            .into_iter()
            .find(|e| e.description.as_deref() == description);
        let settings = settings(&body, current.is_none())?;
        vet(state, &settings, current.as_ref()).await?;
        Ok(AdapterEndpoint { current, settings })
    }

    /// Creates or updates it.
    pub(crate) async fn save(
        self,
        state: &AppState,
        ws: &switchboard_core::WorkspaceId,
    ) -> Result<EndpointRecord, ApiError> {
        let now = state.clock.now();
        Ok(match self.current {
            Some(c) => state
                .store
                .update_endpoint(ws, &c.id, &self.settings, now)
                .await?
                .ok_or_else(|| ApiError::not_found("webhook endpoint"))?,
            None => {
                let id = format!("wh_{}", &EventId::new_at(now).as_str()[4..]);
                let secret = WebhookSecret::generate().expose();
                state
                    .store
                    .create_endpoint(ws, &self.settings, &id, &secret, now)
                    .await?
            }
        })
    }
}
