//! `/v1/templates`: named bodies with `{{variable}}` placeholders and
//! per-channel variants, rendered strictly at submit.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_core::message::MAX_BODY_CHARS;
use switchboard_core::template::{self, TemplateError};
use switchboard_core::{Channel, EventId, NewMessage};
use switchboard_store::TemplateRecord;
use utoipa::ToSchema;

use crate::body::JsonBody;
use crate::error::{ApiError, ErrorResponse};
use crate::state::{AppState, WorkspaceCtx};

/// A template.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateResponse {
    /// Id (`tpl_…`).
    pub id: String,
    /// Name; submissions use it in `template.name`.
    pub name: String,
    /// Default body.
    pub body: String,
    /// Bodies per channel that replace the default.
    pub variants: BTreeMap<String, String>,
    /// Variables the bodies use.
    pub variables: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<TemplateRecord> for TemplateResponse {
    fn from(t: TemplateRecord) -> Self {
        let mut variables = template::variables(&t.body).unwrap_or_default();
        for v in t.variants.values() {
            for name in template::variables(v).unwrap_or_default() {
                if !variables.contains(&name) {
                    variables.push(name);
                }
            }
        }
        TemplateResponse {
            id: t.id,
            name: t.name,
            body: t.body,
            variants: t.variants,
            variables,
            created_at: t.created_at.to_rfc3339(),
            updated_at: t.updated_at.to_rfc3339(),
        }
    }
}

/// Templates.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    /// By name.
    pub data: Vec<TemplateResponse>,
    /// Always null: not paginated.
    pub next_cursor: Option<String>,
}

/// A template to create or change.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct TemplateRequest {
    /// 1 to 100 of letters, digits, `_`, `-`, `.`; required on create.
    pub name: Option<String>,
    /// Body with `{{variable}}` placeholders; required on create.
    pub body: Option<String>,
    /// Per-channel bodies (`sms`, `whatsapp`, `imessage`, `rcs`).
    pub variants: Option<BTreeMap<String, String>>,
}

fn bad(
    status: StatusCode,
    code: &'static str,
    field: &str,
    message: impl Into<String>,
) -> ApiError {
    ApiError::new(status, code, message).with_field(field)
}

fn check_body(field: &str, body: &str) -> Result<(), ApiError> {
    if body.trim().is_empty() {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_body",
            field,
            format!("`{field}` must not be empty"),
        ));
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "body_too_long",
            field,
            format!("`{field}` is limited to {MAX_BODY_CHARS} characters"),
        ));
    }
    // PostgreSQL's text cannot hold a NUL (SQLite's can), and a message's
    // body may not have one either.
    if body.contains('\0') {
        return Err(bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            field,
            format!("`{field}` must not contain NUL characters"),
        ));
    }
    template::variables(body).map_err(|e| {
        bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_template",
            field,
            e.to_string(),
        )
    })?;
    Ok(())
}

/// Name, body and variants of a request; `None` for fields not given.
type TemplateFields = (
    Option<String>,
    Option<String>,
    Option<BTreeMap<String, String>>,
);

/// The fields of a request, checked.
fn read(body: &Value) -> Result<TemplateFields, ApiError> {
    let Value::Object(obj) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            "the request body must be a JSON object",
        ));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["name", "body", "variants"].contains(&k.as_str()))
    {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "unknown_field",
            k,
            format!("unknown field `{k}`"),
        ));
    }
    let text = |f: &str| match obj.get(f) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            f,
            format!("`{f}` must be a string"),
        )),
    };
    let name = text("name")?;
    if let Some(n) = &name {
        let ok = (1..=100).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !ok {
            return Err(bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_name",
                "name",
                "`name` is 1 to 100 letters, digits, `_`, `-` or `.`",
            ));
        }
    }
    let body_text = text("body")?;
    if let Some(b) = &body_text {
        check_body("body", b)?;
    }
    let variants = match obj.get("variants") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (channel, v) in m {
                let field = format!("variants.{channel}");
                if Channel::parse(channel).is_none() {
                    return Err(bad(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_channel",
                        &field,
                        format!("unknown channel `{channel}`"),
                    ));
                }
                let v = v.as_str().ok_or_else(|| {
                    bad(
                        StatusCode::BAD_REQUEST,
                        "invalid_type",
                        &field,
                        "a variant is a string",
                    )
                })?;
                check_body(&field, v)?;
                out.insert(channel.clone(), v.to_owned());
            }
            Some(out)
        }
        Some(_) => {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                "variants",
                "`variants` must be an object of channel → body",
            ));
        }
    };
    Ok((name, body_text, variants))
}

/// Create a template.
#[utoipa::path(post, path = "/v1/templates", tag = "templates", request_body = TemplateRequest,
    responses((status = 201, body = TemplateResponse), (status = 409, description = "The name is taken", body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<TemplateResponse>), ApiError> {
    let (name, text, variants) = read(&body)?;
    let name = name.ok_or_else(|| {
        bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
            "name",
            "`name` is required",
        )
    })?;
    let text = text.ok_or_else(|| {
        bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
            "body",
            "`body` is required",
        )
    })?;
    let now = state.clock.now();
    let record = TemplateRecord {
        id: format!("tpl_{}", &EventId::new_at(now).as_str()[4..]),
        workspace_id: ctx.workspace_id.clone(),
        name,
        body: text,
        variants: variants.unwrap_or_default(),
        created_at: now,
        updated_at: now,
    };
    let created = state.store.create_template(record).await?.ok_or_else(|| {
        bad(
            StatusCode::CONFLICT,
            "template_exists",
            "name",
            "a template with this name exists in the workspace",
        )
    })?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// List templates.
#[utoipa::path(get, path = "/v1/templates", tag = "templates", responses((status = 200, body = TemplateList)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
) -> Result<Json<TemplateList>, ApiError> {
    let data = state
        .store
        .list_templates(&ctx.workspace_id)
        .await?
        .into_iter()
        .map(TemplateResponse::from)
        .collect();
    Ok(Json(TemplateList {
        data,
        next_cursor: None,
    }))
}

/// A template, by id or name.
#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path, description = "Id or name")),
    responses((status = 200, body = TemplateResponse), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
) -> Result<Json<TemplateResponse>, ApiError> {
    let t = state
        .store
        .get_template(&ctx.workspace_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    Ok(Json(t.into()))
}

/// Change a template's name, body or variants (`variants` replaces them all).
#[utoipa::path(patch, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path, description = "Id or name")), request_body = TemplateRequest,
    responses((status = 200, body = TemplateResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<TemplateResponse>, ApiError> {
    let (name, text, variants) = read(&body)?;
    let mut t = state
        .store
        .get_template(&ctx.workspace_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    if let Some(n) = name {
        t.name = n;
    }
    if let Some(b) = text {
        t.body = b;
    }
    if let Some(v) = variants {
        t.variants = v;
    }
    t.updated_at = state.clock.now();
    match state.store.update_template(t).await? {
        None => Err(ApiError::not_found("template")),
        Some(Err(())) => Err(bad(
            StatusCode::CONFLICT,
            "template_exists",
            "name",
            "a template with this name exists in the workspace",
        )),
        Some(Ok(t)) => Ok(Json(t.into())),
    }
}

/// Delete a template.
#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path, description = "Id or name")),
    responses((status = 204), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_template(&ctx.workspace_id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("template"))
    }
}

/// Renders a submission's template into its body (strictly).
pub async fn render_into(
    state: &AppState,
    ctx: &WorkspaceCtx,
    message: NewMessage,
) -> Result<NewMessage, ApiError> {
    let Some(t) = message.template.clone() else {
        return Ok(message);
    };
    let record = state
        .store
        .get_template(&ctx.workspace_id, &t.name)
        .await?
        .ok_or_else(|| {
            bad(
                StatusCode::UNPROCESSABLE_ENTITY,
                "template_not_found",
                "template.name",
                format!("no template named `{}` in this workspace", t.name),
            )
        })?;
    let source = record
        .variants
        .get(message.channel.as_str())
        .unwrap_or(&record.body);
    let rendered = template::render(source, &t.variables).map_err(|e| match e {
        TemplateError::Missing(name) => bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_template_variable",
            &format!("template.variables.{name}"),
            format!("the template `{}` needs the variable `{name}`", record.name),
        ),
        TemplateError::NotText(name) => bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_template_variable",
            &format!("template.variables.{name}"),
            format!("the variable `{name}` must be a string, number or boolean"),
        ),
        other => ApiError::internal(&other),
    })?;
    Ok(message.with_rendered_body(rendered)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_checked_field_by_field() {
        assert!(read(&json!({"name": "welcome", "body": "Hi {{name}}", "variants": {"whatsapp": "Hello {{name}}"}})).is_ok());
        for (body, code) in [
            (json!({"name": "bad name", "body": "x"}), "invalid_name"),
            (
                json!({"name": "a", "body": "Hi {{name"}),
                "invalid_template",
            ),
            (json!({"name": "a", "body": " "}), "empty_body"),
            (
                json!({"name": "a", "body": "x", "variants": {"fax": "y"}}),
                "invalid_channel",
            ),
            (json!({"name": "a", "body": 5}), "invalid_type"),
            (
                json!({"name": "a", "body": "x", "extra": 1}),
                "unknown_field",
            ),
        ] {
            assert_eq!(read(&body).unwrap_err().code, code, "{body}");
        }
    }
}
