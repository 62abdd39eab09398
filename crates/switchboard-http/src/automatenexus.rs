//! The AutomateNexus event receiver (SPEC §6, seed 002).
//!
//! AutomateNexus posts its webhook envelope `{event, timestamp, webhook_id,
//! account_id, data}` signed with `X-AutomateNexus-Signature` (hex
//! HMAC-SHA256 of the raw body, optionally `sha256=`-prefixed). Switchboard
//! checks the signature in constant time, refuses a delivery whose
//! timestamp is outside the tolerance or that it has seen before (same
//! `webhook_id` and `timestamp`), and then finds the first rule whose event
//! and conditions match: it sends the rule's template to the rule's
//! recipient, with the event's `data` as the template's variables, through
//! the one submit path. An event no rule matches is acknowledged and logged.
//!
//! - `PUT /v1/compat/automatenexus`: the workspace's receiver (its URL, the
//!   signing secret, the tolerance).
//! - `POST/GET /v1/compat/automatenexus/rules`,
//!   `DELETE /v1/compat/automatenexus/rules/{id}`: the rules.
//! - `POST /compat/automatenexus/{integration_id}`: the receiver.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, response::IntoResponse};
use serde::Serialize;
use serde_json::{Map, Value, json};
use switchboard_core::secret::new_token;
use switchboard_core::{PhoneNumber, Timestamp, WorkspaceId};
use switchboard_store::IntegrationRecord;
use utoipa::ToSchema;

use crate::auth::hash_secret;
use crate::body::{JsonBody, RawBody};
use crate::error::{ApiError, ErrorResponse};
use crate::state::{AppState, WorkspaceCtx};

const KIND: &str = "automatenexus";
const DEFAULT_TOLERANCE: u64 = 300;

fn err(status: StatusCode, code: &'static str, field: &str, m: impl Into<String>) -> ApiError {
    ApiError::new(status, code, m).with_field(field)
}

fn object(body: &Value, allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    crate::body::object(body, allowed).cloned()
}

/// The key that finds a workspace's receiver (one per workspace).
fn workspace_key(ws: &WorkspaceId) -> String {
    hash_secret(&format!("automatenexus:{ws}"))
}

async fn receiver(state: &AppState, ws: &WorkspaceId) -> Result<IntegrationRecord, ApiError> {
    state
        .store
        .find_integration(KIND, &workspace_key(ws))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_configured",
                "set the receiver up first with PUT /v1/compat/automatenexus",
            )
        })
}

/// The receiver's settings. `secret` appears only when it was made here.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiverSettings {
    /// Its id, in its URL.
    pub integration_id: String,
    /// Where AutomateNexus posts (give it this URL, after your host).
    pub path: String,
    /// The signing secret, shown once when Switchboard made it.
    pub secret: Option<String>,
    /// How far an event's `timestamp` may be from now, seconds.
    pub tolerance_seconds: u64,
    /// The rules, in the order they are tried.
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<Value>,
}

fn settings_of(i: &IntegrationRecord, secret: Option<String>) -> ReceiverSettings {
    ReceiverSettings {
        path: format!("/compat/automatenexus/{}", i.id),
        integration_id: i.id.clone(),
        secret,
        tolerance_seconds: i.config["tolerance_seconds"]
            .as_u64()
            .unwrap_or(DEFAULT_TOLERANCE),
        rules: i.config["rules"].as_array().cloned().unwrap_or_default(),
    }
}

/// Set up (or change) the workspace's AutomateNexus receiver: `secret`
/// (the signing secret configured in AutomateNexus, at least 16
/// characters; made here if left out) and `tolerance_seconds` (default 300).
#[utoipa::path(put, path = "/v1/compat/automatenexus", tag = "adapters", request_body = Object,
    responses((status = 200, body = ReceiverSettings), (status = 400, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn configure(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    JsonBody(body): JsonBody,
) -> Result<Json<ReceiverSettings>, ApiError> {
    let obj = object(&body, &["secret", "tolerance_seconds"])?;
    let current = state
        .store
        .find_integration(KIND, &workspace_key(&ctx.workspace_id))
        .await?;
    let (secret, made) = match obj.get("secret") {
        Some(Value::String(s)) if (16..=512).contains(&s.len()) => (Some(s.clone()), false),
        Some(_) => {
            return Err(err(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_secret",
                "secret",
                "`secret` is 16 to 512 characters",
            ));
        }
        None if current.is_some() => (None, false),
        None => (Some(new_token("anws_")), true),
    };
    let tolerance = match obj.get("tolerance_seconds") {
        None => current
            .as_ref()
            .and_then(|c| c.config["tolerance_seconds"].as_u64())
            .unwrap_or(DEFAULT_TOLERANCE),
        Some(v) => v
            .as_u64()
            .filter(|t| (30..=86_400).contains(t))
            .ok_or_else(|| {
                err(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_tolerance",
                    "tolerance_seconds",
                    "`tolerance_seconds` is a whole number from 30 to 86400",
                )
            })?,
    };
    let record = match current {
        Some(mut c) => {
            if let Some(s) = &secret {
                c.config["secret"] = json!(s);
            }
            c.config["tolerance_seconds"] = json!(tolerance);
            state
                .store
                .set_integration_config(&c.id, c.config.clone())
                .await?;
            c
        }
        None => {
            let now = state.clock.now();
            let record = IntegrationRecord {
                id: format!(
                    "an_{}",
                    &switchboard_core::EventId::new_at(now).as_str()[4..]
                ),
                workspace_id: ctx.workspace_id.clone(),
                kind: KIND.into(),
                header: "x-automatenexus-signature".into(),
                token_hash: workspace_key(&ctx.workspace_id),
                config: json!({"secret": secret, "tolerance_seconds": tolerance, "rules": []}),
                created_at: now,
            };
            state.store.put_integration(record.clone()).await?;
            record
        }
    };
    Ok(Json(settings_of(&record, secret.filter(|_| made))))
}

/// The value at a dot path (`data.owner.id`) of the envelope.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| match v {
        Value::Object(m) => m.get(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 200
        && p.split('.').all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Checks a rule from a create body and gives it an id.
async fn rule(state: &AppState, ctx: &WorkspaceCtx, body: &Value) -> Result<Value, ApiError> {
    let obj = object(
        body,
        &[
            "event",
            "conditions",
            "template",
            "to",
            "to_path",
            "client_ref_path",
            "channel",
        ],
    )?;
    let unprocessable =
        |code, field: &str, m: &str| err(StatusCode::UNPROCESSABLE_ENTITY, code, field, m);
    obj.get("event")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty() && e.len() <= 100 && !e.contains(char::is_whitespace))
        .ok_or_else(|| {
            unprocessable(
                "invalid_event",
                "event",
                "`event` is the event type, e.g. deal.stage_changed",
            )
        })?;
    let conditions = match obj.get("conditions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => {
            return Err(unprocessable(
                "invalid_conditions",
                "conditions",
                "`conditions` is an array",
            ));
        }
    };
    for (i, c) in conditions.iter().enumerate() {
        let field = format!("conditions[{i}]");
        let ok = c.as_object().is_some_and(|m| {
            m.get("path")
                .and_then(Value::as_str)
                .is_some_and(valid_path)
                && m.len() == 2
                && (m.contains_key("equals")
                    || m.get("in").is_some_and(Value::is_array)
                    || m.get("exists").is_some_and(Value::is_boolean))
        });
        if !ok {
            return Err(unprocessable(
                "invalid_conditions",
                &field,
                "a condition is {\"path\": \"data.new_stage\", and one of \"equals\": value, \"in\": [values], \"exists\": true|false}",
            ));
        }
    }
    let template = obj.get("template").and_then(Value::as_str).ok_or_else(|| {
        unprocessable(
            "missing_field",
            "template",
            "`template` (a template's name) is required",
        )
    })?;
    if state
        .store
        .get_template(&ctx.workspace_id, template)
        .await?
        .is_none()
    {
        return Err(unprocessable(
            "unknown_template",
            "template",
            "no template by this name; create it with POST /v1/templates",
        ));
    }
    match (
        obj.get("to").and_then(Value::as_str),
        obj.get("to_path").and_then(Value::as_str),
    ) {
        (Some(to), None) if PhoneNumber::parse(to).is_ok() => {}
        (None, Some(p)) if valid_path(p) => {}
        _ => {
            return Err(unprocessable(
                "invalid_recipient",
                "to",
                "give either `to` (an E.164 number) or `to_path` (where the event holds one, e.g. data.phone)",
            ));
        }
    }
    if let Some(p) = obj.get("client_ref_path")
        && !p.as_str().is_some_and(valid_path)
    {
        return Err(unprocessable(
            "invalid_path",
            "client_ref_path",
            "a dot path such as data.id",
        ));
    }
    let mut rule = obj;
    rule.insert(
        "id".into(),
        json!(format!(
            "rule_{}",
            &switchboard_core::EventId::new_at(state.clock.now()).as_str()[4..]
        )),
    );
    Ok(Value::Object(rule))
}

/// Add a rule: `event`, `conditions` (all must hold), `template`, `to` or
/// `to_path`, and optionally `client_ref_path` and `channel`. Rules are
/// tried in the order they were added; the first that matches sends.
#[utoipa::path(post, path = "/v1/compat/automatenexus/rules", tag = "adapters", request_body = Object,
    responses((status = 201, body = Object), (status = 400, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn add_rule(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut r = receiver(&state, &ctx.workspace_id).await?;
    let rule = rule(&state, &ctx, &body).await?;
    let rules = r.config["rules"].as_array().cloned().unwrap_or_default();
    if rules.len() >= 100 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_rules",
            "at most 100 rules",
        ));
    }
    let mut rules = rules;
    rules.push(rule.clone());
    r.config["rules"] = Value::Array(rules);
    state.store.set_integration_config(&r.id, r.config).await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

/// The rules, in the order they are tried.
#[utoipa::path(get, path = "/v1/compat/automatenexus/rules", tag = "adapters",
    responses((status = 200, body = Object), (status = 404, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn list_rules(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
) -> Result<Json<Value>, ApiError> {
    let r = receiver(&state, &ctx.workspace_id).await?;
    Ok(Json(
        json!({"data": r.config["rules"], "next_cursor": null}),
    ))
}

/// Remove a rule.
#[utoipa::path(delete, path = "/v1/compat/automatenexus/rules/{id}", tag = "adapters",
    params(("id" = String, Path, description = "Rule id")),
    responses((status = 204), (status = 404, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn delete_rule(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut r = receiver(&state, &ctx.workspace_id).await?;
    let mut rules = r.config["rules"].as_array().cloned().unwrap_or_default();
    let before = rules.len();
    rules.retain(|x| x["id"] != id.as_str());
    if rules.len() == before {
        return Err(ApiError::not_found("rule"));
    }
    r.config["rules"] = Value::Array(rules);
    state.store.set_integration_config(&r.id, r.config).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Does `rule` match the envelope?
fn matches(rule: &Value, envelope: &Value) -> bool {
    rule["event"] == envelope["event"]
        && rule["conditions"].as_array().is_none_or(|cs| {
            cs.iter().all(|c| {
                let path = c["path"].as_str().unwrap_or("");
                let v = at(envelope, path).filter(|v| !v.is_null());
                if let Some(want) = c.get("equals") {
                    v == Some(want)
                } else if let Some(Value::Array(list)) = c.get("in") {
                    v.is_some_and(|v| list.contains(v))
                } else {
                    c["exists"].as_bool() == Some(v.is_some())
                }
            })
        })
}

/// Is `signature` (hex, optionally `sha256=`) the HMAC-SHA256 of `body`?
fn signed(secret: &str, body: &[u8], signature: &str) -> bool {
    let hex_sig = signature.trim();
    let hex_sig = hex_sig.strip_prefix("sha256=").unwrap_or(hex_sig);
    let Ok(claimed) = hex::decode(hex_sig) else {
        return false;
    };
    crate::auth::hmac_sha256_matches(secret.as_bytes(), body, &claimed)
}

/// What the receiver did with an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceivedEvent {
    /// Whether a rule matched.
    pub matched: bool,
    /// The rule that matched.
    pub rule_id: Option<String>,
    /// The message it sent.
    pub message_id: Option<String>,
}

/// Receive an AutomateNexus webhook delivery, signed with
/// `X-AutomateNexus-Signature`.
#[utoipa::path(post, path = "/compat/automatenexus/{integration_id}", tag = "adapters",
    params(("integration_id" = String, Path, description = "The receiver's id")),
    request_body = Object,
    responses((status = 200, body = ReceivedEvent), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn receive(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    let r = state
        .store
        .get_integration(&id)
        .await?
        .filter(|r| r.kind == KIND)
        .ok_or_else(|| ApiError::not_found("AutomateNexus receiver"))?;
    let secret = r.config["secret"].as_str().unwrap_or("");
    let signature = headers
        .get("x-automatenexus-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !signed(secret, &body, signature) {
        tracing::warn!(receiver = %id, "AutomateNexus delivery with a wrong or missing signature refused");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "X-AutomateNexus-Signature is missing or does not match the body",
        ));
    }
    let envelope: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let text = |k: &str| envelope.get(k).and_then(Value::as_str);
    let (Some(event), Some(ts), Some(webhook_id)) =
        (text("event"), text("timestamp"), text("webhook_id"))
    else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_event",
            "the envelope needs `event`, `timestamp` and `webhook_id`",
        ));
    };
    let now = state.clock.now();
    let tolerance = r.config["tolerance_seconds"]
        .as_u64()
        .unwrap_or(DEFAULT_TOLERANCE);
    let at_time = Timestamp::parse_rfc3339(ts).ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            "malformed_event",
            "timestamp",
            "`timestamp` is not an RFC 3339 time",
        )
    })?;
    let skew = (now.as_millis() - at_time.as_millis()).unsigned_abs() / 1000;
    if skew > tolerance {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "stale_event",
            format!(
                "the event's timestamp is {skew} s from now; at most {tolerance} s are accepted"
            ),
        ));
    }
    let forget = Timestamp::from_millis(
        now.as_millis() - 2 * 1000 * i64::try_from(tolerance).unwrap_or(300),
    );
    if !state
        .store
        .first_delivery(&id, &format!("{webhook_id}|{ts}"), now, forget)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "replayed_event",
            "this delivery (webhook_id and timestamp) was received before",
        ));
    }
    let rules = r.config["rules"].as_array().cloned().unwrap_or_default();
    let Some(rule) = rules.iter().find(|rule| matches(rule, &envelope)) else {
        tracing::info!(receiver = %id, event, "AutomateNexus event matched no rule; acknowledged");
        return Ok(Json(ReceivedEvent {
            matched: false,
            rule_id: None,
            message_id: None,
        }));
    };
    let to = match (rule.get("to"), rule["to_path"].as_str()) {
        (Some(to), _) => to.clone(),
        (None, Some(p)) => at(&envelope, p).cloned().unwrap_or(Value::Null),
        (None, None) => Value::Null,
    };
    let mut variables = envelope["data"].as_object().cloned().unwrap_or_default();
    variables.insert("event".into(), json!(event));
    let client_ref = rule["client_ref_path"]
        .as_str()
        .and_then(|p| at(&envelope, p))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .unwrap_or_else(|| webhook_id.to_owned());
    let mut submit = json!({
        "to": to,
        "template": {"name": rule["template"], "variables": variables},
        "client_ref": client_ref,
        "idempotency_key": format!("an:{webhook_id}:{ts}"),
        "metadata": {"source": "automatenexus", "event": event, "webhook_id": webhook_id, "account_id": envelope["account_id"], "rule_id": rule["id"]},
    });
    if let Some(c) = rule.get("channel") {
        submit["channel"] = c.clone();
    }
    let ctx = crate::auth::workspace_ctx(&state, r.workspace_id.clone(), r.id.clone()).await?;
    let (accepted, _) = crate::messages::submit_json(&state, &ctx, None, &submit).await?;
    Ok(Json(ReceivedEvent {
        matched: true,
        rule_id: rule["id"].as_str().map(str::to_owned),
        message_id: Some(accepted.id),
    }))
}
