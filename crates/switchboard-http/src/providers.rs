//! Admin routes for provider instances (`/v1/providers`) and workspace
//! senders (`/v1/workspaces/{id}/senders`).
//!
//! Credentials go in and never come out: answers show each secret as a hint
//! (`…` and its last four characters). Every change is applied to this
//! node's connectors at once (`reload`); other nodes pick it up on their
//! next refresh.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};
use switchboard_core::{Channel, PhoneNumber, ProviderId, Timestamp, WorkspaceId};
use switchboard_providers::registry::{KINDS, validate};
use switchboard_providers::sim::SIM_PROVIDER_ID;
use switchboard_providers::{ProviderSpec, Providers};
use switchboard_store::{
    NewSender, ProviderDeletion, ProviderRecord, Sender, SenderCreation, Store, StoreError,
};
use utoipa::ToSchema;

use crate::admin::existing_workspace;
use crate::body::{JsonBody, object};
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;

/// Builds this node's connectors from the stored providers.
pub async fn reload(store: &dyn Store, providers: &Providers) -> Result<(), StoreError> {
    let specs = store
        .list_providers()
        .await?
        .into_iter()
        .map(|p| ProviderSpec {
            id: p.id,
            kind: p.kind,
            config: p.config,
            credentials: p.credentials,
            version: p.updated_at.as_millis(),
        })
        .collect();
    providers.sync(specs);
    Ok(())
}

/// A provider instance. Secrets are shown as hints only.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderResponse {
    /// Id (`pr_…`).
    pub id: String,
    /// `sim`, `twilio`, `whatsapp_cloud` or `smpp`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Non-secret settings.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Each secret's name with a hint of its value (`…9f3c`).
    #[schema(value_type = Object)]
    pub credentials: Value,
    /// Transport or throttle failures before a message fails over to the
    /// next sender of its channel (null: the default, 2).
    pub attempt_budget: Option<u32>,
    /// Sends per second across every node (null: unlimited).
    pub rate_per_second: Option<f64>,
    /// Burst of the throughput limit.
    pub burst: Option<f64>,
    /// Where the provider must post status callbacks and inbound messages.
    pub callback_url: Option<String>,
    /// `ready`, or `error` when this node cannot build it (see `problem`).
    pub status: &'static str,
    /// For a provider with a connection of its own (SMPP), its state on
    /// this node: `bound`, `connecting`, or why it is down.
    pub link: Option<String>,
    /// Why it cannot be built.
    pub problem: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// Providers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    /// Every provider, the built-in simulator first.
    pub data: Vec<ProviderResponse>,
    /// Always null: the list is not paginated.
    pub next_cursor: Option<String>,
}

/// `…` and the last four characters of a secret long enough to spare them.
fn hint(secret: &str) -> String {
    let n = secret.chars().count();
    if n >= 12 {
        let tail: String = secret.chars().skip(n - 4).collect();
        format!("…{tail}")
    } else {
        "…".to_owned()
    }
}

fn respond(p: ProviderRecord, providers: &Providers) -> ProviderResponse {
    let credentials = match &p.credentials {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), Value::String(hint(v.as_str().unwrap_or("")))))
                .collect(),
        ),
        _ => Value::Object(Map::new()),
    };
    let problem = providers.problem(&p.id).map(|e| e.to_string());
    ProviderResponse {
        callback_url: providers.callback_url(p.id.as_str()),
        id: p.id.to_string(),
        status: if problem.is_some() { "error" } else { "ready" },
        link: providers.link_state(&p.id),
        problem,
        kind: p.kind,
        name: p.name,
        config: p.config,
        credentials,
        attempt_budget: p.attempt_budget,
        rate_per_second: p.rate.map(|r| r.0),
        burst: p.rate.map(|r| r.1),
        created_at: p.created_at.to_rfc3339(),
        updated_at: p.updated_at.to_rfc3339(),
    }
}

fn unprocessable(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
}

/// A provider's editable settings, read from a create or update body on
/// top of `base`.
fn apply(base: &mut ProviderRecord, obj: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(v) = obj.get("name") {
        let name = v
            .as_str()
            .map(str::trim)
            .filter(|n| {
                !n.is_empty() && n.chars().count() <= 200 && !n.chars().any(char::is_control)
            })
            .ok_or_else(|| {
                unprocessable(
                    "invalid_name",
                    "name",
                    "`name` must be 1 to 200 printable characters",
                )
            })?;
        base.name = name.to_owned();
    }
    // Settings merge: a key given replaces, a key given as null is removed,
    // others stay (so one secret can be rotated alone).
    for (section, target) in [
        ("config", &mut base.config),
        ("credentials", &mut base.credentials),
    ] {
        let Some(v) = obj.get(section) else { continue };
        let Value::Object(changes) = v else {
            return Err(unprocessable(
                "invalid_provider_config",
                section,
                format!("`{section}` must be an object"),
            ));
        };
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        let map = target.as_object_mut().expect("just made an object");
        for (k, v) in changes {
            if v.is_null() {
                map.remove(k);
            } else if section == "credentials" && !v.is_string() {
                return Err(unprocessable(
                    "invalid_provider_config",
                    &format!("credentials.{k}"),
                    "every credential is a string",
                ));
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(v) = obj.get("attempt_budget") {
        base.attempt_budget = match v {
            Value::Null => None,
            v => Some(
                v.as_u64()
                    .filter(|n| (1..=20).contains(n))
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        unprocessable(
                            "invalid_attempt_budget",
                            "attempt_budget",
                            "`attempt_budget` is a whole number from 1 to 20",
                        )
                    })?,
            ),
        };
    }
    if obj.contains_key("rate_per_second") || obj.contains_key("burst") {
        let rate = match obj.get("rate_per_second") {
            None => base.rate.map(|r| r.0),
            Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|r| *r > 0.0 && *r <= 100_000.0)
                    .ok_or_else(|| {
                        unprocessable(
                            "invalid_rate",
                            "rate_per_second",
                            "`rate_per_second` is a number above 0 and at most 100000",
                        )
                    })?,
            ),
        };
        let burst = match obj.get("burst") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|b| *b >= 1.0 && *b <= 1_000_000.0)
                    .ok_or_else(|| {
                        unprocessable(
                            "invalid_burst",
                            "burst",
                            "`burst` is a number from 1 to 1000000",
                        )
                    })?,
            ),
        };
        base.rate = rate.map(|r| (r, burst.unwrap_or(r.max(1.0))));
    }
    validate(&base.kind, &base.config, &base.credentials).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_provider_config",
            e.message.clone(),
        )
        .with_field(&e.field)
    })
}

const PROVIDER_FIELDS: &[&str] = &[
    "kind",
    "name",
    "config",
    "credentials",
    "attempt_budget",
    "rate_per_second",
    "burst",
];

/// Add a provider instance: `kind` (`twilio`, `whatsapp_cloud` or `smpp`),
/// `config`, `credentials`, and optionally `name`, `attempt_budget`,
/// `rate_per_second`, `burst`. The answer shows the `callback_url` to give
/// the provider; credentials are never shown again.
#[utoipa::path(post, path = "/v1/providers", tag = "admin", request_body = Object,
    responses((status = 201, body = ProviderResponse), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<ProviderResponse>), ApiError> {
    let obj = object(&body, PROVIDER_FIELDS)?;
    let kind = match obj.get("kind") {
        Some(Value::String(k)) if KINDS.contains(&k.as_str()) => k.clone(),
        Some(Value::String(k)) => {
            return Err(unprocessable(
                "invalid_kind",
                "kind",
                format!("unknown kind {k:?}; one of: {}", KINDS.join(", ")),
            ));
        }
        _ => {
            return Err(unprocessable(
                "missing_field",
                "kind",
                format!("`kind` is required: one of {}", KINDS.join(", ")),
            ));
        }
    };
    for section in ["config", "credentials"] {
        if !obj.contains_key(section) {
            return Err(unprocessable(
                "missing_field",
                section,
                format!("`{section}` is required"),
            ));
        }
    }
    let now = state.clock.now();
    let mut record = ProviderRecord {
        id: ProviderId::new_at(now),
        name: kind.clone(),
        kind,
        config: Value::Object(Map::new()),
        credentials: Value::Object(Map::new()),
        attempt_budget: None,
        rate: None,
        created_at: now,
        updated_at: now,
    };
    apply(&mut record, obj)?;
    state.store.create_provider(record.clone()).await?;
    reload(state.store.as_ref(), &state.providers).await?;
    Ok((StatusCode::CREATED, Json(respond(record, &state.providers))))
}

/// List providers (credentials as hints).
#[utoipa::path(get, path = "/v1/providers", tag = "admin",
    responses((status = 200, body = ProviderList), (status = 401, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<ProviderList>, ApiError> {
    let data = state
        .store
        .list_providers()
        .await?
        .into_iter()
        .map(|p| respond(p, &state.providers))
        .collect();
    Ok(Json(ProviderList {
        data,
        next_cursor: None,
    }))
}

async fn existing(state: &AppState, id: &str) -> Result<ProviderRecord, ApiError> {
    state
        .store
        .get_provider(id)
        .await?
        .ok_or_else(|| ApiError::not_found("provider"))
}

/// A provider (credentials as hints).
#[utoipa::path(get, path = "/v1/providers/{id}", tag = "admin",
    params(("id" = String, Path, description = "Provider id")),
    responses((status = 200, body = ProviderResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ProviderResponse>, ApiError> {
    let p = existing(&state, &id).await?;
    Ok(Json(respond(p, &state.providers)))
}

/// Change a provider: `name`, `attempt_budget`, `rate_per_second`, `burst`,
/// and keys of `config` and `credentials` (a key given replaces, a key
/// given as null is removed, the others stay: rotate one secret alone).
#[utoipa::path(patch, path = "/v1/providers/{id}", tag = "admin", request_body = Object,
    params(("id" = String, Path, description = "Provider id")),
    responses((status = 200, body = ProviderResponse), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<ProviderResponse>, ApiError> {
    let obj = object(&body, &PROVIDER_FIELDS[1..])?;
    let mut record = existing(&state, &id).await?;
    if record.kind == "sim" {
        // The simulator's settings come from the configuration file.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "builtin_provider",
            "the built-in simulator is configured in the configuration file ([sim])",
        ));
    }
    apply(&mut record, obj)?;
    record.updated_at = state.clock.now();
    if !state.store.update_provider(record.clone()).await? {
        return Err(ApiError::not_found("provider"));
    }
    reload(state.store.as_ref(), &state.providers).await?;
    Ok(Json(respond(record, &state.providers)))
}

/// Remove a provider. Refused (409 `provider_in_use`) while senders route
/// through it: remove or move them first.
#[utoipa::path(delete, path = "/v1/providers/{id}", tag = "admin",
    params(("id" = String, Path, description = "Provider id")),
    responses((status = 204), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if id == SIM_PROVIDER_ID {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "builtin_provider",
            "the built-in simulator cannot be removed",
        ));
    }
    match state.store.delete_provider(&id).await? {
        ProviderDeletion::Deleted => {
            reload(state.store.as_ref(), &state.providers).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        ProviderDeletion::NotFound => Err(ApiError::not_found("provider")),
        ProviderDeletion::InUse { senders } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "provider_in_use",
            format!("{senders} sender(s) route through this provider; remove them first"),
        )),
    }
}

/// A sender: an address of a workspace on a channel, through a provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct SenderResponse {
    /// Id (`snd_…`).
    pub id: String,
    /// Channel.
    pub channel: String,
    /// Provider.
    pub provider_id: String,
    /// Address (E.164 number, alphanumeric id, …).
    pub address: String,
    /// Used when a submission names no `from`; first in the failover route.
    pub default: bool,
    /// Place in the channel's failover route after the default (lower first).
    pub priority: i64,
}

impl From<Sender> for SenderResponse {
    fn from(s: Sender) -> Self {
        SenderResponse {
            id: s.id,
            channel: s.channel.as_str().to_owned(),
            provider_id: s.provider_id.to_string(),
            address: s.address,
            default: s.is_default,
            priority: s.priority,
        }
    }
}

/// A workspace's senders.
#[derive(Debug, Serialize, ToSchema)]
pub struct SenderList {
    /// By channel, each channel in failover order.
    pub data: Vec<SenderResponse>,
    /// Always null: the list is not paginated.
    pub next_cursor: Option<String>,
}

/// Reads a sender from a create body.
pub fn new_sender(body: &Value) -> Result<NewSender, ApiError> {
    let obj = object(
        body,
        &["channel", "provider_id", "address", "default", "priority"],
    )?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    let channel = match text("channel") {
        None => Channel::Sms,
        Some(c) => Channel::parse(c).ok_or_else(|| {
            unprocessable(
                "invalid_channel",
                "channel",
                format!("unknown channel {c:?}"),
            )
        })?,
    };
    let provider_id = text("provider_id")
        .ok_or_else(|| unprocessable("missing_field", "provider_id", "`provider_id` is required"))
        .and_then(|p| {
            ProviderId::parse(p).map_err(|_| {
                unprocessable(
                    "unknown_provider",
                    "provider_id",
                    format!("no provider {p:?}"),
                )
            })
        })?;
    let address = text("address")
        .map(str::trim)
        .filter(|a| !a.is_empty() && a.chars().count() <= 64 && !a.chars().any(char::is_control))
        .ok_or_else(|| {
            unprocessable(
                "invalid_address",
                "address",
                "`address` is required: 1 to 64 printable characters",
            )
        })?;
    // A number is kept in E.164, so that inbound messages route to it.
    let address = if address.starts_with('+') {
        PhoneNumber::parse(address)
            .map_err(|e| unprocessable("invalid_address", "address", e.to_string()))?
            .as_str()
            .to_owned()
    } else {
        address.to_owned()
    };
    let is_default = match obj.get("default") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(unprocessable(
                "invalid_type",
                "default",
                "`default` must be true or false",
            ));
        }
    };
    let priority = match obj.get("priority") {
        None | Some(Value::Null) => 100,
        Some(v) => v
            .as_i64()
            .filter(|p| (0..=10_000).contains(p))
            .ok_or_else(|| {
                unprocessable(
                    "invalid_priority",
                    "priority",
                    "`priority` is a whole number from 0 to 10000",
                )
            })?,
    };
    Ok(NewSender {
        channel,
        provider_id,
        address,
        is_default,
        priority,
    })
}

/// Add a sender to a workspace: `provider_id`, `address`, `channel`
/// (default `sms`), `default` (make it the channel's default) and
/// `priority` (its place in the channel's failover route).
#[utoipa::path(post, path = "/v1/workspaces/{id}/senders", tag = "admin", request_body = Object,
    params(("id" = String, Path, description = "Workspace id")),
    responses((status = 201, body = SenderResponse), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 422, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn create_sender(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<SenderResponse>), ApiError> {
    let ws = existing_workspace(&state, &id).await?;
    let sender = new_sender(&body)?;
    let created = add_sender(state.store.as_ref(), &ws, sender, state.clock.now()).await?;
    state.keys.evict_workspace(&ws);
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Adds a sender, answering a duplicate or unknown provider as an error.
pub async fn add_sender(
    store: &dyn Store,
    ws: &WorkspaceId,
    sender: NewSender,
    now: Timestamp,
) -> Result<Sender, ApiError> {
    let (provider, address) = (sender.provider_id.clone(), sender.address.clone());
    match store.create_sender(ws, sender, now).await? {
        SenderCreation::Created(s) => Ok(s),
        SenderCreation::Duplicate => Err(ApiError::new(
            StatusCode::CONFLICT,
            "sender_exists",
            format!("the workspace already sends from {address} on this channel"),
        )
        .with_field("address")),
        SenderCreation::UnknownProvider => Err(unprocessable(
            "unknown_provider",
            "provider_id",
            format!("no provider {provider}"),
        )),
    }
}

/// List a workspace's senders, each channel in failover order.
#[utoipa::path(get, path = "/v1/workspaces/{id}/senders", tag = "admin",
    params(("id" = String, Path, description = "Workspace id")),
    responses((status = 200, body = SenderList), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn list_senders(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SenderList>, ApiError> {
    let ws = existing_workspace(&state, &id).await?;
    let data = state
        .store
        .all_senders(&ws)
        .await?
        .into_iter()
        .map(SenderResponse::from)
        .collect();
    Ok(Json(SenderList {
        data,
        next_cursor: None,
    }))
}

/// Remove a sender. If it was its channel's default, the next sender of
/// the channel becomes the default. Messages already queued keep it.
#[utoipa::path(delete, path = "/v1/workspaces/{id}/senders/{sender_id}", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"), ("sender_id" = String, Path, description = "Sender id")),
    responses((status = 200, body = SenderResponse), (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)),
    security(("admin_token" = [])))]
pub async fn delete_sender(
    State(state): State<AppState>,
    Path((id, sender_id)): Path<(String, String)>,
) -> Result<Json<SenderResponse>, ApiError> {
    let ws = existing_workspace(&state, &id).await?;
    let removed = state
        .store
        .delete_sender(&ws, &sender_id)
        .await?
        .ok_or_else(|| ApiError::not_found("sender"))?;
    state.keys.evict_workspace(&ws);
    Ok(Json(removed.into()))
}
