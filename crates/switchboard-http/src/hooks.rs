//! Generic hooks: `POST /hooks/{hook_id}` for any CRM that can fire an
//! HTTP request ("send a webhook" actions in HubSpot workflows, Zapier, Make,
//! n8n, a plain curl).
//!
//! A hook has an authentication (a token in a header, or an HMAC of the raw
//! body in a header, with its algorithm and encoding) and a mapping from the
//! request's body (JSON, or a form read as an object of strings) to the
//! fields of `POST /v1/messages`. A mapping value that starts with `/` is a
//! JSON pointer into the body; one with `{{` is a template expression
//! rendered with the body's fields; anything else is a literal. The mapped
//! message goes through the one submit path.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, response::IntoResponse};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use switchboard_core::secret::new_token;
use switchboard_store::IntegrationRecord;

use crate::auth::hash_secret;
use crate::body::{JsonBody, RawBody};
use crate::error::{ApiError, ErrorResponse};
use crate::state::{AppState, WorkspaceCtx};

/// The message fields a mapping may set.
const TARGETS: &[&str] = &[
    "to",
    "body",
    "template",
    "variables",
    "client_ref",
    "channel",
    "from",
    "category",
    "priority",
    "timezone",
    "idempotency_key",
    "metadata",
    "media_urls",
];

fn err(status: StatusCode, code: &'static str, field: &str, m: impl Into<String>) -> ApiError {
    ApiError::new(status, code, m).with_field(field)
}

fn unprocessable(code: &'static str, field: &str, m: impl Into<String>) -> ApiError {
    err(StatusCode::UNPROCESSABLE_ENTITY, code, field, m)
}

/// Reads `auth` from a create body; answers the stored settings and the
/// secret to show once.
fn auth(v: Option<&Value>) -> Result<(Value, String), ApiError> {
    let a = v.and_then(Value::as_object).ok_or_else(|| {
        unprocessable(
            "missing_field",
            "auth",
            "`auth` is {\"type\":\"token\",\"header\":…} or {\"type\":\"hmac\",\"header\":…,\"algorithm\":\"sha256\",\"encoding\":\"hex\"}",
        )
    })?;
    let header = a
        .get("header")
        .and_then(Value::as_str)
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 64
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .ok_or_else(|| {
            unprocessable(
                "invalid_auth",
                "auth.header",
                "a header name: letters, digits and `-`",
            )
        })?
        .to_ascii_lowercase();
    let secret = match a.get("secret") {
        None | Some(Value::Null) => new_token("hk_"),
        Some(Value::String(s)) if (16..=512).contains(&s.len()) => s.clone(),
        Some(_) => {
            return Err(unprocessable(
                "invalid_auth",
                "auth.secret",
                "16 to 512 characters",
            ));
        }
    };
    let kind = a.get("type").and_then(Value::as_str).unwrap_or("");
    let stored = match kind {
        "token" => json!({"type": "token", "header": header}),
        "hmac" => {
            let algorithm = a
                .get("algorithm")
                .and_then(Value::as_str)
                .unwrap_or("sha256");
            let encoding = a.get("encoding").and_then(Value::as_str).unwrap_or("hex");
            if !matches!(algorithm, "sha256" | "sha1") {
                return Err(unprocessable(
                    "invalid_auth",
                    "auth.algorithm",
                    "`sha256` or `sha1`",
                ));
            }
            if !matches!(encoding, "hex" | "base64") {
                return Err(unprocessable(
                    "invalid_auth",
                    "auth.encoding",
                    "`hex` or `base64`",
                ));
            }
            let prefix = a.get("prefix").and_then(Value::as_str).unwrap_or("");
            json!({"type": "hmac", "header": header, "algorithm": algorithm, "encoding": encoding, "prefix": prefix, "secret": secret})
        }
        _ => {
            return Err(unprocessable(
                "invalid_auth",
                "auth.type",
                "`token` or `hmac`",
            ));
        }
    };
    Ok((stored, secret))
}

/// Checks a mapping: known targets, each a string (pointer, template or
/// literal) or, for `metadata` and `variables`, an object of them.
fn mapping(v: Option<&Value>) -> Result<Value, ApiError> {
    let m = v.and_then(Value::as_object).ok_or_else(|| {
        unprocessable(
            "missing_field",
            "mapping",
            "`mapping` is an object from message fields to JSON pointers, templates or literals",
        )
    })?;
    for (k, v) in m {
        let field = format!("mapping.{k}");
        if !TARGETS.contains(&k.as_str()) {
            return Err(unprocessable(
                "invalid_mapping",
                &field,
                format!("not a message field; one of {}", TARGETS.join(", ")),
            ));
        }
        let ok = match (k.as_str(), v) {
            (_, Value::String(s)) => check_expr(s).is_ok(),
            ("metadata" | "variables", Value::Object(o)) => o
                .values()
                .all(|x| x.as_str().is_some_and(|s| check_expr(s).is_ok())),
            _ => false,
        };
        if !ok {
            return Err(unprocessable(
                "invalid_mapping",
                &field,
                "a JSON pointer (/a/b), a template ({{ a.b }}) or a literal string",
            ));
        }
    }
    if !m.contains_key("to") {
        return Err(unprocessable(
            "invalid_mapping",
            "mapping.to",
            "the mapping needs `to`",
        ));
    }
    if !m.contains_key("body") && !m.contains_key("template") {
        return Err(unprocessable(
            "invalid_mapping",
            "mapping.body",
            "the mapping needs `body` or `template`",
        ));
    }
    Ok(Value::Object(m.clone()))
}

fn check_expr(s: &str) -> Result<(), String> {
    if s.contains("{{") || s.contains("{%") {
        minijinja::Environment::new()
            .template_from_str(s)
            .map(drop)
            .map_err(|e| e.to_string())
    } else {
        Ok(())
    }
}

/// One mapped value from the request body.
fn resolve(expr: &str, body: &Value) -> Result<Value, String> {
    if expr.starts_with('/') {
        return Ok(body.pointer(expr).cloned().unwrap_or(Value::Null));
    }
    if expr.contains("{{") || expr.contains("{%") {
        let env = minijinja::Environment::new();
        let out = env
            .render_str(expr, minijinja::Value::from(minijinja::value::Serde(body)))
            .map_err(|e| e.to_string())?;
        return Ok(Value::String(out));
    }
    Ok(Value::String(expr.to_owned()))
}

/// Create a hook: `name`, `auth` and `mapping`. The answer shows its token
/// or HMAC secret once, and the path to give the CRM.
#[utoipa::path(post, path = "/v1/hooks", tag = "adapters", request_body = Object,
    responses((status = 201, body = Object), (status = 400, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let obj = crate::body::object(&body, &["name", "auth", "mapping"])?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("hook")
        .to_owned();
    let (auth, secret) = auth(obj.get("auth"))?;
    let mapping = mapping(obj.get("mapping"))?;
    let now = state.clock.now();
    let id = format!(
        "hook_{}",
        &switchboard_core::EventId::new_at(now).as_str()[4..]
    );
    let token_hash = if auth["type"] == "token" {
        hash_secret(&secret)
    } else {
        hash_secret(&format!("hook:{id}"))
    };
    let record = IntegrationRecord {
        id: id.clone(),
        workspace_id: ctx.workspace_id.clone(),
        kind: format!("hook:{id}"),
        header: auth["header"].as_str().unwrap_or("").to_owned(),
        token_hash,
        config: json!({"name": name, "auth": auth, "mapping": mapping}),
        created_at: now,
    };
    if !state.store.put_integration(record).await? {
        return Err(unprocessable(
            "invalid_auth",
            "auth.secret",
            "choose another token",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "name": name,
            "path": format!("/hooks/{id}"),
            "auth": {"type": auth["type"], "header": auth["header"], "algorithm": auth.get("algorithm"), "encoding": auth.get("encoding")},
            "secret": secret,
            "mapping": mapping,
        })),
    ))
}

/// Is the request authentic for this hook?
fn authentic(config: &Value, token_hash: &str, headers: &HeaderMap, raw: &[u8]) -> bool {
    let a = &config["auth"];
    let Some(value) = a["header"]
        .as_str()
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if a["type"] == "token" {
        let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
        return crate::auth::same(&hash_secret(token), token_hash);
    }
    let secret = a["secret"].as_str().unwrap_or("").as_bytes();
    let claimed = value.trim();
    let claimed = claimed
        .strip_prefix(a["prefix"].as_str().unwrap_or(""))
        .unwrap_or(claimed);
    let decoded = if a["encoding"] == "base64" {
        base64::engine::general_purpose::STANDARD
            .decode(claimed)
            .ok()
    } else {
        hex::decode(claimed).ok()
    };
    let Some(claimed) = decoded else {
        return false;
    };
    if a["algorithm"] == "sha1" {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("any key length");
        mac.update(raw);
        mac.verify_slice(&claimed).is_ok()
    } else {
        crate::auth::hmac_sha256_matches(secret, raw, &claimed)
    }
}

/// Receive a CRM's webhook on a hook: authenticated by the hook's token or
/// HMAC, mapped to a message, and submitted (202 with the message, as
/// `POST /v1/messages` answers).
#[utoipa::path(post, path = "/hooks/{hook_id}", tag = "adapters",
    params(("hook_id" = String, Path, description = "The hook's id")),
    request_body = Object,
    responses((status = 202, body = crate::messages::AcceptedResponse), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse)))]
pub async fn receive(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(raw): RawBody,
) -> Result<impl IntoResponse, ApiError> {
    let hook = state
        .store
        .get_integration(&id)
        .await?
        .filter(|h| h.kind == format!("hook:{id}"))
        .ok_or_else(|| ApiError::not_found("hook"))?;
    if !authentic(&hook.config, &hook.token_hash, &headers, &raw) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "the hook's token or signature is missing or wrong",
        ));
    }
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let body: Value = if is_form {
        Value::Object(
            url::form_urlencoded::parse(&raw)
                .into_owned()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    } else {
        serde_json::from_slice(&raw).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not JSON: {e}"),
            )
        })?
    };
    let mut submit = Map::new();
    let mapping = hook.config["mapping"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mapped = |expr: &str, field: &str| {
        resolve(expr, &body)
            .map_err(|e| unprocessable("mapping_failed", &format!("mapping.{field}"), e))
    };
    let mut variables = Map::new();
    for (k, v) in &mapping {
        match (k.as_str(), v) {
            ("metadata" | "variables", Value::Object(o)) => {
                let mut out = Map::new();
                for (name, expr) in o {
                    out.insert(
                        name.clone(),
                        mapped(expr.as_str().unwrap_or(""), &format!("{k}.{name}"))?,
                    );
                }
                if k == "metadata" {
                    submit.insert(k.clone(), Value::Object(out));
                } else {
                    variables = out;
                }
            }
            ("variables", Value::String(expr)) => {
                if let Value::Object(o) = mapped(expr, k)? {
                    variables = o;
                }
            }
            ("template", Value::String(expr)) => {
                submit.insert("template".into(), json!({"name": mapped(expr, k)?}));
            }
            ("media_urls", Value::String(expr)) => {
                let v = mapped(expr, k)?;
                submit.insert(k.clone(), if v.is_string() { json!([v]) } else { v });
            }
            (_, Value::String(expr)) => {
                let v = mapped(expr, k)?;
                // Numbers from a CRM's body are fine where text is wanted.
                let v = match v {
                    Value::Number(n) => Value::String(n.to_string()),
                    other => other,
                };
                submit.insert(k.clone(), v);
            }
            _ => {}
        }
    }
    if let Some(t) = submit.get_mut("template") {
        t["variables"] = Value::Object(variables);
    }
    let ctx =
        crate::auth::workspace_ctx(&state, hook.workspace_id.clone(), hook.id.clone()).await?;
    let (accepted, _) =
        crate::messages::submit_json(&state, &ctx, None, &Value::Object(submit)).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// The workspace's hooks (their secrets are not shown again).
#[utoipa::path(get, path = "/v1/hooks", tag = "adapters",
    responses((status = 200, body = Object)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = state
        .store
        .list_integrations(&ctx.workspace_id)
        .await?
        .into_iter()
        .filter(|h| h.kind.starts_with("hook:"))
        .map(|h| {
            let a = &h.config["auth"];
            json!({
                "id": h.id,
                "name": h.config["name"],
                "path": format!("/hooks/{}", h.id),
                "auth": {"type": a["type"], "header": a["header"], "algorithm": a.get("algorithm"), "encoding": a.get("encoding")},
                "mapping": h.config["mapping"],
                "created_at": h.created_at.to_rfc3339(),
            })
        })
        .collect();
    Ok(Json(json!({"data": data, "next_cursor": null})))
}

/// Remove a hook.
#[utoipa::path(delete, path = "/v1/hooks/{id}", tag = "adapters",
    params(("id" = String, Path, description = "Hook id")),
    responses((status = 204), (status = 404, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let found = state
        .store
        .get_integration(&id)
        .await?
        .filter(|h| h.workspace_id == ctx.workspace_id && h.kind == format!("hook:{id}"));
    if found.is_none() {
        return Err(ApiError::not_found("hook"));
    }
    state.store.delete_integration(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
