//! What the operator console's overview and conversation pages read, and the
//! live segment counter: `GET /v1/stats`, `GET /v1/conversations`,
//! `POST /v1/messages/preview`. Plain API routes, usable by any client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_core::segments::analyze;
use switchboard_core::state::ALL_STATUSES;
use switchboard_core::template::{self, TemplateError};
use switchboard_core::{Encoding, ProviderId, Status};
use utoipa::{IntoParams, ToSchema};

use crate::body::{JsonBody, object};
use crate::error::{ApiError, ErrorResponse};
use crate::state::{AppState, WorkspaceCtx};

/// Parameters of `GET /v1/stats`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// `hour` (default: twelve 5-minute buckets) or `day` (24 hourly buckets).
    pub window: Option<String>,
}

/// Messages created in one bucket of the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBucket {
    /// Start of the bucket, RFC 3339.
    pub start: String,
    /// Messages created (accepted) in it.
    pub submitted: u64,
    /// Of those, now `delivered` or `read`.
    pub delivered: u64,
    /// Of those, now `failed`, `undelivered` or `expired`.
    pub failed: u64,
}

/// A provider's attempts in the window, with its link.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderStats {
    /// Provider id.
    pub id: String,
    /// `sim`, `twilio`, `whatsapp`, `smpp`, or `null` if it no longer exists.
    pub kind: Option<String>,
    /// `ok`, or `error` with `problem` when its settings cannot be used.
    pub status: String,
    /// Why it cannot be used.
    pub problem: Option<String>,
    /// SMPP: `bound` or why not.
    pub link: Option<String>,
    /// Attempts in the window (this workspace's messages).
    pub attempts: u64,
    /// Attempts that did not hand the message over.
    pub errors: u64,
    /// Attempts refused for throughput.
    pub throttled: u64,
    /// `errors / attempts`, or `null` without attempts.
    pub error_rate: Option<f64>,
}

/// An endpoint that is failing or disabled.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointHealth {
    /// Endpoint id.
    pub id: String,
    /// URL.
    pub url: String,
    /// False once disabled.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Failures in a row.
    pub consecutive_failures: u32,
}

/// A workspace's pipeline at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    /// `hour` or `day`.
    pub window: String,
    /// Start of the window, RFC 3339.
    pub since: String,
    /// End of the window (now), RFC 3339.
    pub until: String,
    /// Width of a bucket.
    pub bucket_seconds: u64,
    /// Messages created in the window by current status (every status, 0 included).
    pub counts: BTreeMap<String, u64>,
    /// `delivered / (delivered + failed)` over the window, `null` with neither.
    pub delivery_rate: Option<f64>,
    /// Throughput and delivery over time, oldest first.
    pub series: Vec<StatsBucket>,
    /// Messages waiting now, whenever created: `scheduled`, `queued`, `sending`, `total`.
    pub queue: BTreeMap<String, u64>,
    /// Providers this workspace's messages were attempted on in the window.
    pub providers: Vec<ProviderStats>,
    /// Webhook endpoints that are failing or disabled.
    pub endpoints: Vec<EndpointHealth>,
}

fn delivered(s: Status) -> bool {
    matches!(s, Status::Delivered | Status::Read)
}

fn failed(s: Status) -> bool {
    matches!(s, Status::Failed | Status::Undelivered | Status::Expired)
}

fn rate(good: u64, bad: u64) -> Option<f64> {
    let all = good + bad;
    #[allow(clippy::cast_precision_loss)]
    (all > 0).then(|| good as f64 / all as f64)
}

/// Counts by status, throughput and delivery rate over time, queue depth,
/// provider health and failing endpoints.
#[utoipa::path(get, path = "/v1/stats", tag = "console", params(StatsParams),
    responses((status = 200, body = StatsResponse), (status = 400, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn stats(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Query(p): Query<StatsParams>,
) -> Result<Json<StatsResponse>, ApiError> {
    let (window, span, buckets) = match p.window.as_deref().unwrap_or("hour") {
        "hour" => ("hour", Duration::from_secs(3600), 12u32),
        "day" => ("day", Duration::from_secs(86_400), 24u32),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_window",
                format!("`window` must be `hour` or `day`, not `{other}`"),
            )
            .with_field("window"));
        }
    };
    let until = state.clock.now();
    let since = until.minus(span);
    let raw = state
        .store
        .workspace_stats(&ctx.workspace_id, since, until, buckets)
        .await?;
    let width = span / buckets;
    let mut counts: BTreeMap<String, u64> = ALL_STATUSES
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for (s, n) in &raw.by_status {
        counts.insert(s.as_str().to_owned(), *n);
    }
    let mut series: Vec<StatsBucket> = (0..buckets)
        .map(|i| StatsBucket {
            start: since.plus(width * i).to_rfc3339(),
            submitted: 0,
            delivered: 0,
            failed: 0,
        })
        .collect();
    for (i, s, n) in &raw.series {
        if let Some(b) = series.get_mut(*i as usize) {
            b.submitted += n;
            if delivered(*s) {
                b.delivered += n;
            } else if failed(*s) {
                b.failed += n;
            }
        }
    }
    let good: u64 = series.iter().map(|b| b.delivered).sum();
    let bad: u64 = series.iter().map(|b| b.failed).sum();
    let mut queue: BTreeMap<String, u64> = ["scheduled", "queued", "sending"]
        .into_iter()
        .map(|s| (s.to_owned(), 0))
        .collect();
    for (s, n) in &raw.queue {
        queue.insert(s.as_str().to_owned(), *n);
    }
    let total = raw.queue.iter().map(|(_, n)| n).sum();
    queue.insert("total".to_owned(), total);
    let providers = raw
        .providers
        .into_iter()
        .map(|h| {
            let id = ProviderId::parse(&h.provider_id).ok();
            let problem = id.as_ref().and_then(|id| state.providers.problem(id));
            ProviderStats {
                kind: id.as_ref().and_then(|id| state.providers.kind(id)),
                status: if problem.is_some() { "error" } else { "ok" }.to_owned(),
                problem: problem.map(|e| e.to_string()),
                link: id.as_ref().and_then(|id| state.providers.link_state(id)),
                error_rate: rate(h.errors, h.attempts.saturating_sub(h.errors)),
                attempts: h.attempts,
                errors: h.errors,
                throttled: h.throttled,
                id: h.provider_id,
            }
        })
        .collect();
    let endpoints = state
        .store
        .list_endpoints(&ctx.workspace_id)
        .await?
        .into_iter()
        .filter(|e| !e.enabled || e.consecutive_failures > 0)
        .map(|e| EndpointHealth {
            id: e.id,
            url: e.url,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            consecutive_failures: e.consecutive_failures,
        })
        .collect();
    Ok(Json(StatsResponse {
        window: window.to_owned(),
        since: since.to_rfc3339(),
        until: until.to_rfc3339(),
        bucket_seconds: width.as_secs(),
        counts,
        delivery_rate: rate(good, bad),
        series,
        queue,
        providers,
        endpoints,
    }))
}

/// Parameters of `GET /v1/conversations`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversationParams {
    /// How far back, in days: 1 to 90 (default 7).
    pub days: Option<String>,
    /// 1 to 200 (default 50).
    pub limit: Option<String>,
}

/// A number the workspace exchanged messages with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationResponse {
    /// E.164 number.
    pub phone: String,
    /// The latest message either way, RFC 3339.
    pub last_at: String,
    /// Messages sent to it in the period.
    pub outbound: u64,
    /// Messages received from it in the period.
    pub inbound: u64,
}

/// Numbers with recent messages either way.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationList {
    /// Latest first.
    pub data: Vec<ConversationResponse>,
}

fn bounded(raw: Option<&str>, field: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!("`{field}` must be a whole number from 1 to {max}"),
        )
        .with_field(field)),
    }
}

/// The numbers a workspace exchanged messages with recently, latest first:
/// the list of the console's conversation view.
#[utoipa::path(get, path = "/v1/conversations", tag = "console", params(ConversationParams),
    responses((status = 200, body = ConversationList), (status = 400, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn conversations(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Query(p): Query<ConversationParams>,
) -> Result<Json<ConversationList>, ApiError> {
    let days = bounded(p.days.as_deref(), "days", 7, 90)?;
    let limit = bounded(p.limit.as_deref(), "limit", 50, 200)?;
    let since = state.clock.now().minus(Duration::from_secs(days * 86_400));
    let rows = state
        .store
        .conversations(
            &ctx.workspace_id,
            since,
            usize::try_from(limit).unwrap_or(50),
        )
        .await?;
    Ok(Json(ConversationList {
        data: rows
            .into_iter()
            .map(|c| ConversationResponse {
                phone: c.phone,
                last_at: c.last_at.to_rfc3339(),
                outbound: c.outbound,
                inbound: c.inbound,
            })
            .collect(),
    }))
}

/// A text to count, or a template source to render with sample variables.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct PreviewRequest {
    /// The text; with `variables`, a template source (`{{name}}`).
    pub body: String,
    /// Sample values: when present, `body` is rendered as a template first.
    pub variables: Option<Map<String, Value>>,
}

/// How a text will be sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewResponse {
    /// The text as it will be sent (rendered, if `variables` were given).
    pub text: String,
    /// `GSM-7` or `UCS-2`.
    pub encoding: String,
    /// SMS parts.
    pub segments: u32,
    /// Septets (GSM-7) or UTF-16 units (UCS-2).
    pub units: u32,
    /// Characters.
    pub characters: usize,
    /// Units left in the last part before another part is needed.
    pub remaining_in_segment: u32,
    /// Variables the body names.
    pub variables: Vec<String>,
}

const MAX_PREVIEW_CHARS: usize = 1600;

/// Encoding and segment count of a text, or of a template rendered with
/// sample values: the console's live counter and template preview.
#[utoipa::path(post, path = "/v1/messages/preview", tag = "messages", request_body = PreviewRequest,
    responses((status = 200, body = PreviewResponse), (status = 400, body = ErrorResponse), (status = 422, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn preview(JsonBody(body): JsonBody) -> Result<Json<PreviewResponse>, ApiError> {
    let obj = object(&body, &["body", "variables"])?;
    let source = match obj.get("body") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                "`body` must be a string",
            )
            .with_field("body"));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_field",
                "`body` is required",
            )
            .with_field("body"));
        }
    };
    if source.chars().count() > MAX_PREVIEW_CHARS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "body_too_long",
            format!("`body` is longer than {MAX_PREVIEW_CHARS} characters"),
        )
        .with_field("body"));
    }
    let invalid = |e: TemplateError| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_template",
            format!("the template {e}"),
        )
        .with_field("body")
    };
    let (text, names) = match obj.get("variables") {
        None | Some(Value::Null) => (source.to_owned(), Vec::new()),
        Some(Value::Object(vars)) => {
            let names = template::variables(source).map_err(invalid)?;
            let text = template::render(source, vars).map_err(|e| match e {
                TemplateError::Missing(name) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing_template_variable",
                    format!("give a sample value for `{name}`"),
                )
                .with_field(&format!("variables.{name}")),
                TemplateError::NotText(name) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_template_variable",
                    format!("the variable `{name}` must be a string, number or boolean"),
                )
                .with_field(&format!("variables.{name}")),
                other => invalid(other),
            })?;
            (text, names)
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                "`variables` must be an object",
            )
            .with_field("variables"));
        }
    };
    let info = analyze(&text);
    let per_part = match (info.encoding, info.segments) {
        (Encoding::Gsm7, 1) => 160,
        (Encoding::Gsm7, _) => 153,
        (Encoding::Ucs2, 1) => 70,
        (Encoding::Ucs2, _) => 67,
    };
    let used_in_last = if info.units == 0 {
        0
    } else {
        info.units - (info.units - 1) / per_part * per_part
    };
    Ok(Json(PreviewResponse {
        characters: text.chars().count(),
        encoding: info.encoding.as_str().to_owned(),
        segments: info.segments,
        units: info.units,
        remaining_in_segment: per_part - used_in_last.min(per_part),
        variables: names,
        text,
    }))
}
