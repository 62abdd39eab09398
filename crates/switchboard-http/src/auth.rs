//! Authentication and rate limiting, as middleware in front of the `/v1`
//! routes: API-key routes get a `WorkspaceCtx` in their request extensions
//! and `X-RateLimit-*` headers on their response; admin routes check the
//! instance admin token.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use switchboard_core::WorkspaceId;
use switchboard_core::message::ALL_CHANNELS;

use crate::console;
use crate::error::ApiError;
use crate::rate_limit::RateLimitStatus;
use crate::state::{AppState, WorkspaceCtx};

/// SHA-256 of a secret, hex. API keys and the admin token carry 256 bits of
/// entropy, so a fast hash is the right tool (no password stretching needed).
pub fn hash_secret(secret: &str) -> String {
    switchboard_core::secret::hex_lower(&Sha256::digest(secret.as_bytes()))
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <key>` header"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <key>`"))?
        .trim();
    if token.is_empty() || token.len() > 200 {
        return Err(ApiError::unauthorized("malformed bearer token"));
    }
    Ok(token)
}

/// Whether `claimed` is the HMAC-SHA256 of `body` under `secret` (compared
/// in constant time).
pub fn hmac_sha256_matches(secret: &[u8], body: &[u8], claimed: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.verify_slice(claimed).is_ok()
}

/// Constant-time comparison of two equal-length strings.
/// Compares secrets (or their hashes) without leaking where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn workspace_for(state: &AppState, token: &str) -> Result<Arc<WorkspaceCtx>, ApiError> {
    let hash = hash_secret(token);
    if let Some(ctx) = state.keys.get(&hash) {
        return Ok(ctx);
    }
    if !token.starts_with("sk_") {
        return Err(ApiError::unauthorized("invalid API key"));
    }
    let key = state
        .store
        .find_api_key(&hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
    let ctx = Arc::new(workspace_ctx(state, key.workspace_id, key.id).await?);
    state.keys.insert(hash, ctx.clone());
    Ok(ctx)
}

/// What a request for `workspace` may act as: its senders, read now.
pub async fn workspace_ctx(
    state: &AppState,
    workspace_id: WorkspaceId,
    key_id: String,
) -> Result<WorkspaceCtx, ApiError> {
    let mut senders = HashMap::new();
    for channel in ALL_CHANNELS {
        senders.insert(
            channel.as_str(),
            state.store.senders(&workspace_id, channel).await?,
        );
    }
    Ok(WorkspaceCtx {
        workspace_id,
        key_id,
        senders,
    })
}

fn rate_headers(headers: &mut HeaderMap, s: &RateLimitStatus) {
    // Made once: a name given as a string is parsed again on every insert.
    const LIMIT: header::HeaderName = header::HeaderName::from_static("x-ratelimit-limit");
    const REMAINING: header::HeaderName = header::HeaderName::from_static("x-ratelimit-remaining");
    const RESET: header::HeaderName = header::HeaderName::from_static("x-ratelimit-reset");
    headers.insert(LIMIT, HeaderValue::from(s.limit));
    headers.insert(REMAINING, HeaderValue::from(s.remaining));
    headers.insert(RESET, HeaderValue::from(s.reset_secs));
}

/// Whether a request is authenticated by the console's session cookie: it
/// carries the cookie and no `Authorization` header.
fn by_session(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::AUTHORIZATION)
        && console::cookie(headers, console::SESSION_COOKIE).is_some()
}

/// The workspace a console session acts on: its API key's, or for the
/// admin the one named in `X-Switchboard-Workspace`. Checks the CSRF token.
async fn session_workspace(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Arc<WorkspaceCtx>, ApiError> {
    let session = console::session(state, headers)
        .await?
        .ok_or_else(|| ApiError::unauthorized("missing console session"))?;
    console::check_csrf(method, headers, &session)?;
    let (workspace, key_id, is_admin) = match (session.workspace_id, session.key_id) {
        (Some(ws), Some(key)) => (ws, key, false),
        _ => {
            let ws = console::admin_workspace(headers)?;
            let key = format!("console-admin:{ws}");
            (ws, key, true)
        }
    };
    let cache_key = format!("console:{key_id}");
    if let Some(ctx) = state.keys.get(&cache_key)
        && ctx.workspace_id == workspace
    {
        return Ok(ctx);
    }
    // The workspace an admin names is read only when it is not cached.
    if is_admin && state.store.get_workspace(&workspace).await?.is_none() {
        return Err(ApiError::not_found("workspace"));
    }
    let ctx = Arc::new(workspace_ctx(state, workspace, key_id).await?);
    state.keys.insert(cache_key, ctx.clone());
    Ok(ctx)
}

/// Middleware: authenticates an API key (or a console session) and applies
/// its rate limit.
pub async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let ctx = if by_session(req.headers()) {
        let (method, headers) = (req.method().clone(), req.headers().clone());
        session_workspace(&state, &method, &headers).await
    } else {
        match bearer(req.headers()) {
            Ok(token) => workspace_for(&state, token).await,
            Err(e) => Err(e),
        }
    };
    let ctx = match ctx {
        Ok(ctx) => ctx,
        Err(e) => return e.into_response(),
    };
    let limit = state.limiter.check(&ctx.key_id, Instant::now());
    if !limit.allowed {
        let mut resp = ApiError {
            retry_after: Some(limit.retry_after_secs),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests for this API key; retry after the number of seconds in Retry-After")
        }
        .into_response();
        rate_headers(resp.headers_mut(), &limit);
        return resp;
    }
    req.extensions_mut().insert(ctx);
    let mut resp = next.run(req).await;
    rate_headers(resp.headers_mut(), &limit);
    resp
}

/// Middleware: requires the instance admin token (or the admin's console
/// session).
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if by_session(req.headers()) {
        let headers = req.headers().clone();
        return match console::session(&state, &headers).await {
            Ok(Some(s)) if s.workspace_id.is_none() => {
                match console::check_csrf(req.method(), &headers, &s) {
                    Ok(()) => next.run(req).await,
                    Err(e) => e.into_response(),
                }
            }
            Ok(Some(_)) => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route needs the admin; the console is signed in with a workspace API key",
            )
            .into_response(),
            Ok(None) => ApiError::unauthorized("missing console session").into_response(),
            Err(e) => e.into_response(),
        };
    }
    match bearer(req.headers()) {
        Ok(token) if same(&hash_secret(token), &state.admin_token_hash) => next.run(req).await,
        Ok(token) if token.starts_with("sk_") => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route needs the instance admin token, not a workspace API key",
        )
        .into_response(),
        Ok(_) => ApiError::unauthorized("invalid admin token").into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_equality() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h).unwrap_err().code, "unauthorized");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(bearer(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk_abc"),
        );
        assert_eq!(bearer(&h).unwrap(), "sk_abc");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(bearer(&h).is_err());
    }
}
