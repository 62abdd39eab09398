//! Provider callback receivers: `POST /callbacks/{provider_id}`.
//!
//! *Boundary*: thin on purpose. The provider's `CallbackHandler`
//! authenticates and reads the callback; this stores each receipt raw in the
//! receipt inbox (deduplicated on provider, provider id and kind) and each
//! inbound message through the one inbound path, and answers 200 only once
//! everything is durable, so a provider that gets no 2xx sends it again.
//! Applying receipts to messages happens later, in the worker's inbox pass.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use serde::Serialize;
use switchboard_core::keywords::Keyword;
use switchboard_core::{Channel, PhoneNumber};
use switchboard_providers::callback::{
    CallbackError, CallbackHandler, CallbackItem, CallbackRequest, InboundItem,
};
use switchboard_store::{IncomingReceipt, NewInbound};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;

/// Largest callback body, bytes.
pub const MAX_CALLBACK_BYTES: usize = 1024 * 1024;

/// What a callback delivered.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackAck {
    /// Receipts stored for the first time.
    pub receipts: usize,
    /// Receipts seen before (repeated callbacks).
    pub duplicate_receipts: usize,
    /// Inbound messages stored (or recognised as repeats).
    pub inbound: usize,
    /// Inbound messages to an address no workspace owns; logged and dropped.
    pub unrouted: usize,
}

/// The URL the provider called, for signature schemes that sign it.
fn called_url(state: &AppState, headers: &HeaderMap, uri: &Uri) -> String {
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    match &state.public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}{path}")
        }
    }
}

fn handler(state: &AppState, provider_id: &str) -> Result<Arc<dyn CallbackHandler>, ApiError> {
    state.providers.callbacks(provider_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            format!("no provider {provider_id:?} receives callbacks here"),
        )
    })
}

/// Answer a provider's subscription check (WhatsApp's `hub.mode`,
/// `hub.verify_token`, `hub.challenge`): 200 with the challenge as plain
/// text when the verify token matches, 403 when it does not.
#[utoipa::path(get, path = "/callbacks/{provider_id}", tag = "callbacks",
    params(("provider_id" = String, Path, description = "The provider the callback URL is for")),
    responses((status = 200, body = String, content_type = "text/plain"), (status = 400, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 405, body = ErrorResponse)))]
pub async fn handshake(
    State(state): State<AppState>,
    Path(provider_id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<String, ApiError> {
    let handler = handler(&state, &provider_id)?;
    match handler.handshake(&query) {
        Some(Ok(challenge)) => Ok(challenge),
        Some(Err(CallbackError::Forbidden(m))) => {
            tracing::warn!(provider = %provider_id, reason = %m, "subscription check refused");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_verify_token",
                m,
            ))
        }
        Some(Err(CallbackError::Malformed(m))) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_callback",
            m,
        )),
        None => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this provider's callbacks are POSTed",
        )),
    }
}

/// Receive a provider's callback (receipts, inbound messages), authenticated
/// by the provider's own signature scheme.
#[utoipa::path(post, path = "/callbacks/{provider_id}", tag = "callbacks",
    params(("provider_id" = String, Path, description = "The provider the callback is for, e.g. `pr_sim`")),
    request_body(content = String, description = "The provider's own callback format (JSON or form), signed by the provider"),
    responses((status = 200, body = CallbackAck), (status = 400, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse)))]
pub async fn receive(
    State(state): State<AppState>,
    Path(provider_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<CallbackAck>), ApiError> {
    let handler = handler(&state, &provider_id)?;
    let url = called_url(&state, &headers, &uri);
    let header_list: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let now = state.clock.now();
    let items = handler
        .open(&CallbackRequest {
            url: &url,
            headers: &header_list,
            body: &body,
            now,
        })
        .map_err(|e| match e {
            CallbackError::Forbidden(m) => {
                tracing::warn!(provider = %provider_id, reason = %m, "callback refused");
                ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", m)
            }
            CallbackError::Malformed(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_callback", m)
            }
        })?;
    let ack = ingest(&state, &provider_id, items, now).await?;
    Ok((StatusCode::OK, Json(ack)))
}

/// Stores what a provider reported: its receipts in the receipt inbox (one
/// write, all or none) and each inbound message through the one inbound
/// path. Returns only once everything is durable; on an error some inbound
/// messages may be stored, and the provider's repeat is deduplicated.
pub async fn ingest(
    state: &AppState,
    provider_id: &str,
    items: Vec<CallbackItem>,
    now: switchboard_core::Timestamp,
) -> Result<CallbackAck, ApiError> {
    let mut ack = CallbackAck {
        receipts: 0,
        duplicate_receipts: 0,
        inbound: 0,
        unrouted: 0,
    };
    let mut receipts = Vec::new();
    let mut inbound = Vec::new();
    for item in items {
        match item {
            CallbackItem::Receipt {
                provider_message_id,
                kind,
                error_code,
                raw,
            } => receipts.push(IncomingReceipt {
                provider_message_id,
                kind,
                error_code,
                raw: Some(raw),
            }),
            CallbackItem::Inbound(m) => inbound.push(m),
        }
    }
    if !receipts.is_empty() {
        // One write for the whole callback: all stored, or none and no 2xx,
        // so the provider sends it again.
        for new in state
            .store
            .receive_receipts(provider_id, receipts, now)
            .await?
        {
            if new {
                ack.receipts += 1;
            } else {
                ack.duplicate_receipts += 1;
            }
        }
    }
    for m in inbound {
        if route_inbound(state, provider_id, m).await? {
            ack.inbound += 1;
        } else {
            ack.unrouted += 1;
        }
    }
    if ack.receipts > 0 {
        state.wake.notify_one();
    }
    Ok(ack)
}

/// Stores an inbound message for the workspace that owns the address it
/// was sent to; `false` when no single workspace does.
async fn route_inbound(
    state: &AppState,
    provider_id: &str,
    m: InboundItem,
) -> Result<bool, ApiError> {
    let channel = Channel::parse(&m.channel).unwrap_or(Channel::Sms);
    let owners = state
        .store
        .sender_owners(provider_id, channel, &m.to)
        .await?;
    let [workspace] = &owners[..] else {
        tracing::warn!(
            provider = provider_id,
            to = %m.to,
            owners = owners.len(),
            "inbound message to an address that is not exactly one workspace's sender; dropped"
        );
        return Ok(false);
    };
    let from = match PhoneNumber::parse(&m.from) {
        Ok(p) => p.as_str().to_owned(),
        // Alphanumeric or short-code senders are kept as given.
        Err(_) => m.from.clone(),
    };
    let ctx =
        crate::auth::workspace_ctx(state, workspace.clone(), format!("callback:{provider_id}"))
            .await?;
    let n = NewInbound {
        workspace_id: workspace.clone(),
        from,
        to: Some(m.to),
        channel: channel.as_str().to_owned(),
        keyword: Keyword::classify(&m.text).map(|k| k.as_str().to_owned()),
        text: m.text,
        media_urls: m.media_urls,
        provider_id: provider_id.to_owned(),
        provider_message_id: m.provider_message_id,
        now: state.clock.now(),
    };
    crate::inbound::receive(state, &ctx, n).await?;
    Ok(true)
}
