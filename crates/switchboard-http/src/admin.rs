//! Admin routes (instance admin token): workspaces and their API keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use switchboard_core::secret::new_token;
use switchboard_core::{Timestamp, WorkspaceId};
use switchboard_store::{ApiKey, Store, StoreError, Workspace};
use utoipa::ToSchema;

use crate::auth::hash_secret;
use crate::body::JsonBody;
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;

/// A workspace.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceResponse {
    /// Id (`ws_…`).
    pub id: String,
    /// Name.
    pub name: String,
    /// myCRMSIM `location_id` alias.
    pub location_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<Workspace> for WorkspaceResponse {
    fn from(w: Workspace) -> Self {
        WorkspaceResponse {
            id: w.id.to_string(),
            name: w.name,
            location_id: w.location_id,
            created_at: w.created_at.to_rfc3339(),
        }
    }
}

/// Create a workspace.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateWorkspaceRequest {
    /// Display name, 1 to 200 characters.
    pub name: String,
}

/// Workspaces.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceList {
    /// All workspaces, oldest first.
    pub data: Vec<WorkspaceResponse>,
    /// Always null: the list is not paginated.
    pub next_cursor: Option<String>,
}

/// A new API key. `key` is shown only in this response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    /// Key id.
    pub id: String,
    /// Workspace.
    pub workspace_id: String,
    /// The secret, `sk_…`. Store it now: it is kept only as a hash.
    pub key: String,
    /// Its first characters, to recognise it later.
    pub hint: String,
    /// RFC 3339.
    pub created_at: String,
}

/// Creates an API key for a workspace and returns it with its one-time secret.
pub async fn issue_key(
    store: &dyn Store,
    workspace: &WorkspaceId,
    now: Timestamp,
) -> Result<(ApiKey, String), StoreError> {
    let secret = new_token("sk_");
    let hint = format!("{}…", &secret[..10]);
    let key = store
        .create_api_key(workspace, &hash_secret(&secret), &hint, now)
        .await?;
    Ok((key, secret))
}

/// Validates a workspace name.
pub fn workspace_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "`name` must be 1 to 200 printable characters",
        )
        .with_field("name"));
    }
    Ok(name)
}

/// Create a workspace; it can send at once through the built-in `sim` provider.
#[utoipa::path(post, path = "/v1/workspaces", tag = "admin", request_body = CreateWorkspaceRequest,
    responses((status = 201, body = WorkspaceResponse), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn create_workspace(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<WorkspaceResponse>), ApiError> {
    let name = match body.get("name") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                "`name` must be a string",
            )
            .with_field("name"));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_field",
                "`name` is required",
            )
            .with_field("name"));
        }
    };
    let ws = state
        .store
        .create_workspace(workspace_name(name)?, state.clock.now())
        .await?;
    Ok((StatusCode::CREATED, Json(ws.into())))
}

/// List workspaces.
#[utoipa::path(get, path = "/v1/workspaces", tag = "admin",
    responses((status = 200, body = WorkspaceList), (status = 401, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn list_workspaces(
    State(state): State<AppState>,
) -> Result<Json<WorkspaceList>, ApiError> {
    let data = state
        .store
        .list_workspaces()
        .await?
        .into_iter()
        .map(WorkspaceResponse::from)
        .collect();
    Ok(Json(WorkspaceList {
        data,
        next_cursor: None,
    }))
}

/// Create an API key for a workspace.
#[utoipa::path(post, path = "/v1/workspaces/{id}/keys", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    responses((status = 201, body = ApiKeyResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<ApiKeyResponse>), ApiError> {
    let ws = existing_workspace(&state, &id).await?;
    let (key, secret) = issue_key(state.store.as_ref(), &ws, state.clock.now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyResponse {
            id: key.id,
            workspace_id: ws.to_string(),
            key: secret,
            hint: key.hint,
            created_at: key.created_at.to_rfc3339(),
        }),
    ))
}

/// An API key as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    /// Key id.
    pub id: String,
    /// Workspace.
    pub workspace_id: String,
    /// The secret's first characters.
    pub hint: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when revoked; a revoked key is refused with 401.
    pub revoked_at: Option<String>,
}

impl From<ApiKey> for ApiKeyInfo {
    fn from(k: ApiKey) -> Self {
        ApiKeyInfo {
            id: k.id,
            workspace_id: k.workspace_id.to_string(),
            hint: k.hint,
            created_at: k.created_at.to_rfc3339(),
            revoked_at: k.revoked_at.map(Timestamp::to_rfc3339),
        }
    }
}

/// A workspace's keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    /// Every key, revoked ones included, oldest first.
    pub data: Vec<ApiKeyInfo>,
    /// Always null: the list is not paginated.
    pub next_cursor: Option<String>,
}

/// The id of an existing workspace, or 404.
pub(crate) async fn existing_workspace(
    state: &AppState,
    id: &str,
) -> Result<WorkspaceId, ApiError> {
    let ws = WorkspaceId::parse(id).map_err(|_| ApiError::not_found("workspace"))?;
    state
        .store
        .get_workspace(&ws)
        .await?
        .ok_or_else(|| ApiError::not_found("workspace"))?;
    Ok(ws)
}

/// List a workspace's API keys (without their secrets).
#[utoipa::path(get, path = "/v1/workspaces/{id}/keys", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    responses((status = 200, body = ApiKeyList), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let ws = existing_workspace(&state, &id).await?;
    let data = state
        .store
        .list_api_keys(&ws)
        .await?
        .into_iter()
        .map(ApiKeyInfo::from)
        .collect();
    Ok(Json(ApiKeyList {
        data,
        next_cursor: None,
    }))
}

/// Revoke an API key. It is refused from then on (on other nodes within the
/// key cache's time, `auth_cache_seconds`). Revoking twice is harmless.
#[utoipa::path(delete, path = "/v1/workspaces/{id}/keys/{key_id}", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"), ("key_id" = String, Path, description = "Key id")),
    responses((status = 200, body = ApiKeyInfo), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Json<ApiKeyInfo>, ApiError> {
    let ws = existing_workspace(&state, &id).await?;
    let key = state
        .store
        .revoke_api_key(&ws, &key_id, state.clock.now())
        .await?
        .ok_or_else(|| ApiError::not_found("key"))?;
    state.keys.evict_key(&key.id);
    Ok(Json(key.into()))
}
