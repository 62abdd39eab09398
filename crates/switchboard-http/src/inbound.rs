//! Inbound messages: the simulator's injection API, the inbound list, and
//! keyword handling (STOP/START/HELP) with the workspace's replies.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_core::keywords::{Keyword, default_reply};
use switchboard_core::{Channel, NewMessage, PhoneNumber, SubmitInput};
use switchboard_store::{AcceptOutcome, AcceptRequest, InboundOutcome, InboundRecord, NewInbound};
use utoipa::{IntoParams, ToSchema};

use crate::body::JsonBody;
use crate::error::{ApiError, ErrorResponse};
use crate::state::{AppState, WorkspaceCtx};

/// An inbound message.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundResponse {
    /// Id (`in_…`).
    pub id: String,
    /// Sender.
    pub from: String,
    /// The workspace address it was sent to.
    pub to: Option<String>,
    /// Channel.
    pub channel: String,
    /// Text.
    pub text: String,
    /// Media.
    pub media_urls: Vec<String>,
    /// The last outbound message to this number.
    pub conversation_message_id: Option<String>,
    /// `stop`, `start` or `help` when the text was a keyword.
    pub keyword: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<InboundRecord> for InboundResponse {
    fn from(i: InboundRecord) -> Self {
        InboundResponse {
            id: i.id,
            from: i.from,
            to: i.to,
            channel: i.channel,
            text: i.text,
            media_urls: i.media_urls,
            conversation_message_id: i.conversation_message_id,
            keyword: i.keyword,
            created_at: i.created_at.to_rfc3339(),
        }
    }
}

/// The answer to an injected reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct InjectedResponse {
    /// The stored inbound message.
    pub inbound: InboundResponse,
    /// The automatic keyword reply queued, if any.
    pub reply_message_id: Option<String>,
    /// True when the simulator had delivered this message before.
    pub duplicate: bool,
}

/// Inbound messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundList {
    /// Newest first.
    pub data: Vec<InboundResponse>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/inbound`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboundParams {
    /// Only from this number (E.164).
    pub phone: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 100 (default 20).
    pub limit: Option<usize>,
}

/// A reply to inject.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
pub struct InjectRequest {
    /// The replying number (E.164).
    pub from: String,
    /// Its text.
    pub text: String,
    /// The workspace address it replies to (default: the channel's default sender).
    pub to: Option<String>,
    /// `sms` (default), `whatsapp`, `imessage` or `rcs`.
    pub channel: Option<String>,
    /// A provider id, to test deduplication of repeated callbacks.
    pub provider_message_id: Option<String>,
}

fn unprocessable(code: &'static str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
}

/// The workspace's reply for a keyword: its setting (`null` = no reply), else the default.
async fn reply_text(
    state: &AppState,
    ctx: &WorkspaceCtx,
    k: Keyword,
) -> Result<Option<String>, ApiError> {
    let settings = state
        .store
        .workspace_settings(&ctx.workspace_id)
        .await?
        .unwrap_or(Value::Null);
    Ok(
        match settings
            .get("keyword_replies")
            .and_then(|r| r.get(k.as_str()))
        {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) => None,
            _ => Some(default_reply(k).to_owned()),
        },
    )
}

/// Replaces each NUL character of `s` with U+FFFD, the replacement
/// character.
fn without_nul(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

/// Stores an inbound message and answers a keyword. Shared by every
/// provider's inbound path. A NUL character in what the provider sent
/// becomes U+FFFD (`without_nul`): PostgreSQL's text cannot hold one, and
/// a reply is never lost for it.
pub async fn receive(
    state: &AppState,
    ctx: &WorkspaceCtx,
    mut n: NewInbound,
) -> Result<(InboundRecord, Option<String>, bool), ApiError> {
    for field in [&mut n.text, &mut n.from] {
        without_nul(field);
    }
    for field in [&mut n.to, &mut n.provider_message_id]
        .into_iter()
        .flatten()
    {
        without_nul(field);
    }
    n.media_urls.iter_mut().for_each(without_nul);
    let channel = Channel::parse(&n.channel).unwrap_or(Channel::Sms);
    let to = n.to.clone();
    let keyword = n.keyword.as_deref().and_then(Keyword::classify);
    let (inbound, changed) = match state.store.record_inbound(n).await? {
        InboundOutcome::Duplicate(i) => return Ok((i, None, true)),
        InboundOutcome::Stored {
            inbound,
            consent_changed,
        } => (inbound, consent_changed),
    };
    state.wake.notify_one();
    // Confirm an opt-out or opt-in once (when it changed the state); answer HELP every time.
    let wants_reply = match keyword {
        Some(Keyword::Help) => true,
        Some(_) => changed,
        None => false,
    };
    let Some(k) = keyword.filter(|_| wants_reply) else {
        return Ok((inbound, None, false));
    };
    let Some(text) = reply_text(state, ctx, k).await? else {
        return Ok((inbound, None, false));
    };
    let now = state.clock.now();
    let input = SubmitInput {
        to: Some(inbound.from.clone()),
        body: Some(text),
        channel: Some(channel.as_str().into()),
        ..SubmitInput::default()
    };
    let key = format!("keyword-reply-{}", inbound.id);
    let message = NewMessage::parse(input, Some(&key), now)?;
    let sender = ctx
        .sender(channel, to.as_deref())
        .or_else(|| ctx.sender(channel, None))
        .ok_or_else(|| {
            unprocessable(
                "channel_not_enabled",
                "channel",
                "this workspace has no sender on the channel",
            )
        })?;
    let req = AcceptRequest {
        workspace_id: ctx.workspace_id.clone(),
        provider_id: sender.provider_id.clone(),
        from: sender.address.clone(),
        request_hash: key.clone(),
        message,
        now,
        // The STOP confirmation goes to a number that has just opted out.
        consent_exempt: true,
        hold_until: None,
        require_opt_in: false,
    };
    let reply = match state.store.accept_message(req).await? {
        AcceptOutcome::Created(a) | AcceptOutcome::Replayed(a) => Some(a.id.to_string()),
        other => {
            tracing::warn!(?other, "keyword reply not queued");
            None
        }
    };
    state.wake.notify_one();
    Ok((inbound, reply, false))
}

/// Inject a reply from a recipient, as if the simulator's network delivered it.
#[utoipa::path(post, path = "/v1/sim/inbound", tag = "simulator", request_body = InjectRequest,
    responses((status = 201, body = InjectedResponse), (status = 200, description = "A repeated provider_message_id: nothing new", body = InjectedResponse), (status = 422, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn inject(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<InjectedResponse>), ApiError> {
    let Value::Object(obj) = &body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            "the request body must be a JSON object",
        ));
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["from", "text", "to", "channel", "provider_message_id"].contains(&k.as_str()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_field",
            format!("unknown field `{k}`"),
        )
        .with_field(k));
    }
    let text = |f: &str| crate::body::optional_text(&body, f);
    let from = text("from")?
        .ok_or_else(|| unprocessable("missing_field", "from", "`from` is required"))?;
    let from = PhoneNumber::parse(&from)
        .map_err(|e| unprocessable("invalid_phone", "from", format!("`from` {e}")))?;
    let body_text = text("text")?
        .ok_or_else(|| unprocessable("missing_field", "text", "`text` is required"))?;
    if body_text.chars().count() > 1600 {
        return Err(unprocessable(
            "body_too_long",
            "text",
            "`text` is limited to 1600 characters",
        ));
    }
    let channel = match text("channel")? {
        None => Channel::Sms,
        Some(c) => Channel::parse(&c).ok_or_else(|| {
            unprocessable(
                "invalid_channel",
                "channel",
                format!("unknown channel `{c}`"),
            )
        })?,
    };
    let keyword = Keyword::classify(&body_text).map(|k| k.as_str().to_owned());
    let n = NewInbound {
        workspace_id: ctx.workspace_id.clone(),
        from: from.as_str().to_owned(),
        to: text("to")?,
        channel: channel.as_str().to_owned(),
        text: body_text,
        media_urls: Vec::new(),
        provider_id: switchboard_providers::sim::SIM_PROVIDER_ID.into(),
        provider_message_id: text("provider_message_id")?,
        keyword,
        now: state.clock.now(),
    };
    let (inbound, reply, duplicate) = receive(&state, &ctx, n).await?;
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(InjectedResponse {
            inbound: inbound.into(),
            reply_message_id: reply,
            duplicate,
        }),
    ))
}

/// Inbound messages of the workspace, newest first.
#[utoipa::path(get, path = "/v1/inbound", tag = "inbound", params(InboundParams),
    responses((status = 200, body = InboundList), (status = 422, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    Query(p): Query<InboundParams>,
) -> Result<Json<InboundList>, ApiError> {
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(unprocessable(
            "invalid_limit",
            "limit",
            "`limit` must be from 1 to 100",
        ));
    }
    let phone = p
        .phone
        .as_deref()
        .map(|raw| {
            PhoneNumber::parse(raw)
                .map_err(|e| unprocessable("invalid_phone", "phone", format!("`phone` {e}")))
        })
        .transpose()?;
    let mut data = state
        .store
        .list_inbound(
            &ctx.workspace_id,
            phone.as_ref().map(PhoneNumber::as_str),
            p.cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let next_cursor = if data.len() > limit {
        data.truncate(limit);
        data.last().map(|i| i.id.clone())
    } else {
        None
    };
    Ok(Json(InboundList {
        data: data.into_iter().map(InboundResponse::from).collect(),
        next_cursor,
    }))
}

/// The workspace's settings.
#[utoipa::path(get, path = "/v1/settings", tag = "settings", responses((status = 200, description = "The settings document")), security(("api_key" = [])))]
pub async fn get_settings(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
) -> Result<Json<Value>, ApiError> {
    let s = state
        .store
        .workspace_settings(&ctx.workspace_id)
        .await?
        .unwrap_or_else(|| json!({}));
    Ok(Json(effective(&s)))
}

/// The workspace's rules for a `marketing` submission: when quiet hours
/// hold it (not at `high` priority), and whether a recorded opt-in is required.
pub async fn marketing_policy(
    state: &AppState,
    ctx: &WorkspaceCtx,
    m: &NewMessage,
    now: switchboard_core::Timestamp,
) -> Result<(Option<switchboard_core::Timestamp>, bool), ApiError> {
    use switchboard_core::quiet_hours::QuietHours;
    use switchboard_core::{Category, Priority};
    if m.category != Category::Marketing {
        return Ok((None, false));
    }
    let settings = state
        .store
        .workspace_settings(&ctx.workspace_id)
        .await?
        .unwrap_or(Value::Null);
    let require_opt_in = settings
        .get("require_marketing_opt_in")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if m.priority == Priority::High {
        return Ok((None, require_opt_in));
    }
    let hold = QuietHours::from_settings(&settings).and_then(|q| {
        q.hold(
            m.send_at.unwrap_or(now),
            m.timezone.as_deref(),
            m.to.region(),
        )
    });
    Ok((hold, require_opt_in))
}

fn effective(s: &Value) -> Value {
    let mut replies = serde_json::Map::new();
    for k in [Keyword::Stop, Keyword::Start, Keyword::Help] {
        let v = match s.get("keyword_replies").and_then(|r| r.get(k.as_str())) {
            Some(v) => v.clone(),
            None => Value::String(default_reply(k).into()),
        };
        replies.insert(k.as_str().into(), v);
    }
    json!({
        "keyword_replies": replies,
        "quiet_hours": s.get("quiet_hours").cloned().unwrap_or(Value::Null),
        "default_timezone": s.get("default_timezone").cloned().unwrap_or(Value::String("UTC".into())),
        "require_marketing_opt_in": s.get("require_marketing_opt_in").cloned().unwrap_or(Value::Bool(false)),
    })
}

/// Change settings: `{"keyword_replies": {"stop": "…", "start": null, "help": "…"}}`
/// (a string replaces the default reply, null sends none).
#[utoipa::path(patch, path = "/v1/settings", tag = "settings", responses((status = 200, description = "The settings after the change"), (status = 422, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn patch_settings(
    State(state): State<AppState>,
    Extension(ctx): Extension<Arc<WorkspaceCtx>>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let Value::Object(obj) = &body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            "the request body must be a JSON object",
        ));
    };
    if let Some(k) = obj.keys().find(|k| {
        ![
            "keyword_replies",
            "quiet_hours",
            "default_timezone",
            "require_marketing_opt_in",
        ]
        .contains(&k.as_str())
    }) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_field",
            format!("unknown setting `{k}`"),
        )
        .with_field(k));
    }
    let mut current = state
        .store
        .workspace_settings(&ctx.workspace_id)
        .await?
        .unwrap_or_else(|| json!({}));
    if let Some(r) = obj.get("keyword_replies") {
        let Value::Object(r) = r else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                "`keyword_replies` must be an object",
            )
            .with_field("keyword_replies"));
        };
        for (k, v) in r {
            let field = format!("keyword_replies.{k}");
            if !["stop", "start", "help"].contains(&k.as_str()) {
                return Err(unprocessable(
                    "unknown_keyword",
                    &field,
                    "keywords are stop, start and help",
                ));
            }
            match v {
                Value::Null => {}
                Value::String(s)
                    if !s.trim().is_empty() && s.chars().count() <= 320 && !s.contains('\0') => {}
                Value::String(_) => {
                    return Err(unprocessable(
                        "invalid_value",
                        &field,
                        "a reply is 1 to 320 characters, without NUL characters, or null for none",
                    ));
                }
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_type",
                        "a reply is a string or null",
                    )
                    .with_field(&field));
                }
            }
            current["keyword_replies"][k] = v.clone();
        }
    }
    match obj.get("quiet_hours") {
        None => {}
        Some(Value::Null) => current["quiet_hours"] = Value::Null,
        Some(q) => {
            let start = q.get("start").and_then(Value::as_str).unwrap_or("");
            let end = q.get("end").and_then(Value::as_str).unwrap_or("");
            if switchboard_core::quiet_hours::Window::parse(start, end).is_none() {
                return Err(unprocessable(
                    "invalid_quiet_hours",
                    "quiet_hours",
                    "`quiet_hours` is {\"start\": \"HH:MM\", \"end\": \"HH:MM\"} with different times, or null",
                ));
            }
            current["quiet_hours"] = json!({"start": start, "end": end});
        }
    }
    match obj.get("require_marketing_opt_in") {
        None => {}
        Some(Value::Bool(b)) => current["require_marketing_opt_in"] = Value::Bool(*b),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                "`require_marketing_opt_in` must be true or false",
            )
            .with_field("require_marketing_opt_in"));
        }
    }
    match obj.get("default_timezone") {
        None => {}
        Some(Value::String(z)) if switchboard_core::quiet_hours::zone(z).is_some() => {
            current["default_timezone"] = Value::String(z.clone())
        }
        Some(_) => {
            return Err(unprocessable(
                "invalid_timezone",
                "default_timezone",
                "`default_timezone` is an IANA zone or an offset such as UTC-8",
            ));
        }
    }
    state
        .store
        .set_workspace_settings(&ctx.workspace_id, &current)
        .await?;
    Ok(Json(effective(&current)))
}
