//! The HTTP edge: the axum router, its extractors and middleware, `ApiError`,
//! and the OpenAPI document.
//!
//! *Boundary*: handlers never write SQL; they parse with the core, act
//! through `Store`, and map outcomes to answers. Every route under `/v1`
//! is behind `auth::require_api_key` (workspace routes) or
//! `auth::require_admin` (admin routes), so a handler cannot forget it.

pub mod admin;
pub mod auth;
pub mod automatenexus;
mod body;
pub mod callbacks;
pub mod console;
pub mod contacts;
pub mod error;
pub mod hooks;
pub mod inbound;
pub mod messages;
pub mod mycrmsim;
pub mod openapi;
pub mod ops;
pub mod overview;
pub mod providers;
pub mod rate_limit;
pub mod state;
pub mod templates;
pub mod twox;
pub mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Router, middleware};

pub use error::ApiError;
pub use state::{AppParts, AppState, KeyCache};

/// Settings of the HTTP edge.
#[derive(Debug, Clone, Copy)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Serve the `/v1` API (a `worker` node serves only provider callbacks
    /// and the operations routes).
    pub serve_api: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 64 * 1024,
            serve_api: true,
        }
    }
}

/// The whole API.
pub fn router(state: AppState, config: HttpConfig) -> Router {
    let workspace = Router::new()
        .route("/v1/inbound", get(inbound::list))
        .route("/v1/sim/inbound", post(inbound::inject))
        .route(
            "/v1/settings",
            get(inbound::get_settings).patch(inbound::patch_settings),
        )
        .route("/v1/contacts", get(contacts::list))
        // A bulk import carries up to 5000 records: it gets a larger body limit.
        .route(
            "/v1/contacts/import",
            post(contacts::import).layer(DefaultBodyLimit::max(contacts::MAX_IMPORT_BYTES)),
        )
        .route("/v1/contacts/{phone}", get(contacts::get))
        .route("/v1/contacts/{phone}/opt-out", post(contacts::opt_out))
        .route("/v1/contacts/{phone}/opt-in", post(contacts::opt_in))
        .route("/v1/messages", post(messages::submit).get(messages::list))
        .route("/v1/messages/preview", post(overview::preview))
        .route("/v1/stats", get(overview::stats))
        .route("/v1/conversations", get(overview::conversations))
        .route("/v1/messages/{id}", get(messages::get))
        .route("/v1/messages/{id}/cancel", post(messages::cancel))
        .route(
            "/v1/templates",
            post(templates::create).get(templates::list),
        )
        .route(
            "/v1/templates/{id}",
            get(templates::get)
                .patch(templates::update)
                .delete(templates::delete),
        )
        .route(
            "/v1/compat/mycrmsim",
            axum::routing::put(mycrmsim::configure),
        )
        .route("/compat/mycrmsim/webhook", post(mycrmsim::send))
        .route("/v1/compat/2x", axum::routing::put(twox::configure))
        .route(
            "/v1/compat/automatenexus",
            axum::routing::put(automatenexus::configure),
        )
        .route(
            "/v1/compat/automatenexus/rules",
            post(automatenexus::add_rule).get(automatenexus::list_rules),
        )
        .route(
            "/v1/compat/automatenexus/rules/{id}",
            axum::routing::delete(automatenexus::delete_rule),
        )
        .route("/v1/hooks", post(hooks::create).get(hooks::list))
        .route("/v1/hooks/{id}", axum::routing::delete(hooks::delete))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route("/v1/webhooks/{id}/rotate-secret", post(webhooks::rotate))
        .route("/v1/webhooks/{id}/attempts", get(webhooks::attempts))
        .route("/v1/webhooks/{id}/test", post(webhooks::test))
        .route("/v1/webhooks/{id}/redeliver", post(webhooks::redeliver))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let admin = Router::new()
        .route(
            "/v1/workspaces",
            post(admin::create_workspace).get(admin::list_workspaces),
        )
        .route(
            "/v1/workspaces/{id}/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/v1/workspaces/{id}/keys/{key_id}",
            axum::routing::delete(admin::revoke_key),
        )
        .route(
            "/v1/workspaces/{id}/senders",
            post(providers::create_sender).get(providers::list_senders),
        )
        .route(
            "/v1/workspaces/{id}/senders/{sender_id}",
            axum::routing::delete(providers::delete_sender),
        )
        .route(
            "/v1/providers",
            post(providers::create).get(providers::list),
        )
        .route(
            "/v1/providers/{id}",
            get(providers::get)
                .patch(providers::update)
                .delete(providers::delete),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    let api = if config.serve_api {
        Router::new()
            .merge(workspace)
            .merge(admin)
            // Authenticated by the 2X connection's own header and token.
            .route("/compat/2x/send-text/", post(twox::send_text))
            // Authenticated by the AutomateNexus signature.
            .route(
                "/compat/automatenexus/{integration_id}",
                post(automatenexus::receive),
            )
            // Authenticated by each hook's token or HMAC.
            .route("/hooks/{hook_id}", post(hooks::receive))
            // The operator console: its own sign-in, then the API above.
            .route(
                "/console",
                get(|| async { axum::response::Redirect::permanent("/console/") }),
            )
            .route("/console/", get(console::shell))
            .route(
                "/console/login",
                get(console::login_form).post(console::login),
            )
            .route("/console/logout", post(console::logout))
            .route("/console/assets/{file}", get(console::asset))
    } else {
        Router::new()
    };
    Router::new()
        .merge(api)
        // Authenticated by each provider's signature, not by API key.
        .route(
            "/callbacks/{provider_id}",
            post(callbacks::receive)
                .layer(DefaultBodyLimit::max(callbacks::MAX_CALLBACK_BYTES))
                .get(callbacks::handshake),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "route_not_found",
                "no such route; see /openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}
