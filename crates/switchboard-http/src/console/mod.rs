//! The operator console: a page served by the gateway itself (assets
//! embedded, no build step), signed in with a workspace API key or the
//! admin token.
//!
//! *Sessions*: the cookie `sb_session` (HttpOnly, SameSite=Strict, `Secure`
//! when the public URL is https) holds 256 random bits; the store keeps
//! their SHA-256 and the session's CSRF token. The page calls the same `/v1`
//! API as any client: `auth` accepts the cookie where no `Authorization`
//! header is sent, and then every method but GET and HEAD must carry the
//! session's token in `X-CSRF-Token` (a forged cross-site form cannot).
//! The sign-in form itself is protected by a double-submit token.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use switchboard_core::WorkspaceId;
use switchboard_core::secret::random_bytes;
use switchboard_store::ConsoleSession;

use crate::auth::{hash_secret, same};
use crate::error::ApiError;
use crate::state::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sb_session";
const LOGIN_COOKIE: &str = "sb_login";
/// The header the page echoes its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The header an admin session names the workspace it acts on with.
pub const WORKSPACE_HEADER: &str = "x-switchboard-workspace";
/// A session's use is written back at most this often.
const TOUCH_EVERY_MS: i64 = 60_000;

const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");
const SHELL: &str = include_str!("shell.html");
const LOGIN: &str = include_str!("login.html");

/// Console settings.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleConfig {
    /// A session ends after this long unused.
    pub idle: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            idle: Duration::from_secs(8 * 3600),
        }
    }
}

/// A value of the request's `Cookie` header.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn token() -> String {
    hex::encode(random_bytes::<32>())
}

fn secure(state: &AppState) -> bool {
    state
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
}

fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure(state) {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie is ascii")
}

fn expired(state: &AppState, name: &str) -> HeaderValue {
    set_cookie(state, name, "", Some(0))
}

/// The session a request's cookie names: `Ok(None)` without a cookie, 401
/// `session_expired` when it names no live session. Extends the session.
pub async fn session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<ConsoleSession>, ApiError> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let now = state.clock.now();
    let hash = hash_secret(value);
    let Some(s) = state.store.find_session(&hash, now).await? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "the console session has ended; sign in again",
        ));
    };
    if now.as_millis() - s.last_seen_at.as_millis() >= TOUCH_EVERY_MS {
        state
            .store
            .touch_session(&hash, now, now.plus(state.console.idle))
            .await?;
    }
    Ok(Some(s))
}

/// A state-changing request on a session must echo its CSRF token.
pub fn check_csrf(
    method: &Method,
    headers: &HeaderMap,
    s: &ConsoleSession,
) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if same(sent, &s.csrf_token) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "this request did not carry the console's CSRF token; reload the console",
        ))
    }
}

/// The workspace an admin session acts on (its `X-Switchboard-Workspace`).
pub fn admin_workspace(headers: &HeaderMap) -> Result<WorkspaceId, ApiError> {
    let raw = headers
        .get(WORKSPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "workspace_required",
                "signed in as the admin: choose a workspace (X-Switchboard-Workspace)",
            )
        })?;
    WorkspaceId::parse(raw).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_workspace",
            "X-Switchboard-Workspace is not a workspace id",
        )
    })
}

fn page_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    page_headers(&mut resp);
    resp
}

/// Escapes text for HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn login_page(state: &AppState, status: StatusCode, notice: &str) -> Response {
    let csrf = token();
    let notice = if notice.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"notice\" role=\"alert\" id=\"login-error\">{}</p>",
            escape(notice)
        )
    };
    let body = LOGIN
        .replace("{{csrf}}", &csrf)
        .replace("{{notice}}", &notice);
    let mut resp = html(status, body);
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, LOGIN_COOKIE, &csrf, Some(3600)),
    );
    resp
}

/// `GET /console/`: the console, or the way to sign in.
pub async fn shell(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session(&state, &headers).await {
        Ok(Some(s)) => {
            let (role, workspace) = match &s.workspace_id {
                Some(ws) => ("workspace", ws.as_str().to_owned()),
                None => ("admin", String::new()),
            };
            html(
                StatusCode::OK,
                SHELL
                    .replace("{{csrf}}", &escape(&s.csrf_token))
                    .replace("{{role}}", role)
                    .replace("{{workspace}}", &escape(&workspace)),
            )
        }
        Ok(None) => Redirect::to("/console/login").into_response(),
        Err(e) if e.code == "session_expired" => {
            let mut resp = Redirect::to("/console/login?expired=1").into_response();
            resp.headers_mut()
                .append(header::SET_COOKIE, expired(&state, SESSION_COOKIE));
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /console/login`.
pub async fn login_form(
    State(state): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let notice = if query.is_some_and(|q| q.split('&').any(|p| p == "expired=1")) {
        "Your session has ended. Sign in again."
    } else {
        ""
    };
    login_page(&state, StatusCode::OK, notice)
}

fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `POST /console/login`: the form's `token` is the admin token or an API
/// key; `csrf` must match the sign-in cookie.
pub async fn login(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form_fields(&body);
    let sent = field(&fields, "csrf").unwrap_or("");
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same(sent, expected) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            "This sign-in form has expired or did not come from this console. Try again.",
        );
    }
    let secret = field(&fields, "token").unwrap_or("").trim();
    if secret.is_empty() || secret.len() > 200 {
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            "Enter a workspace API key (sk_…) or the admin token.",
        );
    }
    let hash = hash_secret(secret);
    let (workspace_id, key_id) = if same(&hash, &state.admin_token_hash) {
        (None, None)
    } else {
        match state.store.find_api_key(&hash).await {
            Ok(Some(key)) => (Some(key.workspace_id), Some(key.id)),
            Ok(None) => {
                tracing::info!("console sign-in refused");
                return login_page(
                    &state,
                    StatusCode::UNAUTHORIZED,
                    "That key or token is not valid.",
                );
            }
            Err(e) => return ApiError::from(e).into_response(),
        }
    };
    let now = state.clock.now();
    let cookie_value = token();
    let session = ConsoleSession {
        id_hash: hash_secret(&cookie_value),
        workspace_id,
        key_id,
        csrf_token: token(),
        created_at: now,
        last_seen_at: now,
        expires_at: now.plus(state.console.idle),
    };
    if let Err(e) = state.store.create_session(session).await {
        return ApiError::from(e).into_response();
    }
    let mut resp = Redirect::to("/console/").into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &cookie_value, None),
    );
    h.append(header::SET_COOKIE, expired(&state, LOGIN_COOKIE));
    resp
}

/// `POST /console/logout` (form field `csrf`, the session's token).
pub async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let fields = form_fields(&body);
    if let Ok(Some(s)) = session(&state, &headers).await {
        if !same(field(&fields, "csrf").unwrap_or(""), &s.csrf_token) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "this sign-out did not come from the console",
            )
            .into_response();
        }
        if let Err(e) = state.store.delete_session(&s.id_hash).await {
            return ApiError::from(e).into_response();
        }
    }
    let mut resp = Redirect::to("/console/login").into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, expired(&state, SESSION_COOKIE));
    resp
}

/// `GET /console/assets/{file}`: the embedded script and stylesheet.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return ApiError::not_found("console asset").into_response(),
    };
    let mut resp = ([(header::CONTENT_TYPE, kind)], body).into_response();
    page_headers(&mut resp);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sb_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h, "sb_session"), Some("abc"));
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "c"), None);
        h.insert(header::COOKIE, HeaderValue::from_static("sb_session="));
        assert_eq!(cookie(&h, "sb_session"), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
