//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{
    admin, automatenexus, callbacks, contacts, error, hooks, inbound, messages, mycrmsim, ops,
    overview, providers, templates, twox, webhooks,
};

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |desc: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(desc))
                    .build(),
            )
        };
        components.add_security_scheme("api_key", bearer("A workspace API key, `sk_…`"));
        components.add_security_scheme("admin_token", bearer("The instance admin token"));
    }
}

/// The API description served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard", description = "Messaging gateway between CRMs and SMS/WhatsApp providers."),
    paths(
        messages::submit, messages::get, messages::list, messages::cancel,
        admin::create_workspace, admin::list_workspaces, admin::create_key, admin::list_keys, admin::revoke_key,
        providers::create, providers::list, providers::get, providers::update, providers::delete,
        providers::create_sender, providers::list_senders, providers::delete_sender,
        contacts::get, contacts::opt_out, contacts::opt_in, contacts::list, contacts::import,
        inbound::inject, inbound::list, inbound::get_settings, inbound::patch_settings,
        templates::create, templates::list, templates::get, templates::update, templates::delete,
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete,
        webhooks::rotate, webhooks::attempts, webhooks::test, webhooks::redeliver,
        callbacks::receive, callbacks::handshake,
        mycrmsim::configure, mycrmsim::send, twox::configure, twox::send_text,
        automatenexus::configure, automatenexus::add_rule, automatenexus::list_rules, automatenexus::delete_rule, automatenexus::receive,
        hooks::create, hooks::list, hooks::delete, hooks::receive,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        overview::stats, overview::conversations, overview::preview,
    ),
    components(schemas(
        messages::SubmitMessageRequest, messages::TemplateRefDoc, messages::WhatsAppTemplateDoc, messages::AcceptedResponse, messages::MessageResponse,
        messages::EventResponse, messages::AttemptResponse, messages::MessageList,
        admin::WorkspaceResponse, admin::CreateWorkspaceRequest, admin::WorkspaceList, admin::ApiKeyResponse, admin::ApiKeyInfo, admin::ApiKeyList,
        providers::ProviderResponse, providers::ProviderList, providers::SenderResponse, providers::SenderList,
        error::ErrorResponse, error::ErrorBody,
        inbound::InboundResponse, inbound::InjectedResponse, inbound::InboundList, inbound::InjectRequest,
        contacts::ContactResponse, contacts::ContactEntry, contacts::ContactList, contacts::ImportRequest, contacts::ConsentState, contacts::ConsentHistoryEntry, contacts::ConsentRequest,
        templates::TemplateResponse, templates::TemplateList, templates::TemplateRequest,
        webhooks::EndpointResponse, webhooks::EndpointList, webhooks::EndpointRequest, webhooks::AttemptLogEntry,
        webhooks::AttemptLog, webhooks::RotateRequest, webhooks::RedeliverRequest,
        callbacks::CallbackAck,
        mycrmsim::MycrmsimSettings, mycrmsim::MycrmsimAccepted, twox::TwoXSettings, twox::TwoXAccepted,
        automatenexus::ReceiverSettings, automatenexus::ReceivedEvent,
        overview::StatsResponse, overview::StatsBucket, overview::ProviderStats, overview::EndpointHealth,
        overview::ConversationList, overview::ConversationResponse, overview::PreviewRequest, overview::PreviewResponse,
    )),
    modifiers(&Security),
)]
pub struct ApiDoc;
