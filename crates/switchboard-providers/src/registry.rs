//! The providers of this node, by id: the built-in simulator plus every
//! configured provider instance, rebuilt from their stored settings when
//! those change (`sync`), so that a provider added through the admin API on
//! any node is used by every node without a restart.
//!
//! A connector is built from a `ProviderSpec` (kind, configuration,
//! credentials). Each kind reads its own settings strictly: an unknown
//! field is an error, so that a typo is caught when the provider is added,
//! not when the first message fails.

use foldhash::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use switchboard_core::ProviderId;

use crate::Provider;
use crate::callback::CallbackHandler;

/// Connector kinds that can be configured (`sim` is built in, once).
pub const KINDS: &[&str] = &["twilio", "whatsapp_cloud", "smpp"];

/// Kinds whose connector carries Switchboard's callback URL.
const KINDS_WITH_CALLBACK_URL: &[&str] = &["twilio"];

/// A provider instance as stored.
#[derive(Clone, PartialEq)]
pub struct ProviderSpec {
    /// Id.
    pub id: ProviderId,
    /// Kind (`twilio`, …).
    pub kind: String,
    /// Non-secret settings.
    pub config: Value,
    /// Secrets.
    pub credentials: Value,
    /// Changes whenever the stored settings change.
    pub version: i64,
}

impl std::fmt::Debug for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("config", &self.config)
            .field("credentials", &"[redacted]")
            .field("version", &self.version)
            .finish()
    }
}

/// A setting a provider cannot be built with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// Where: `config.account_sid`, `credentials.auth_token`, `kind`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Reads one section (`config` or `credentials`) of a spec into `T`,
/// refusing unknown fields (serde's `deny_unknown_fields`) with the field's
/// path in the error.
pub fn section<T: serde::de::DeserializeOwned>(name: &str, value: &Value) -> Result<T, SpecError> {
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value.clone()
    };
    if !value.is_object() {
        return Err(SpecError::new(name, "must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        // serde names the field in backticks: point at it.
        let field = text
            .split('`')
            .nth(1)
            .map_or_else(|| name.to_owned(), |f| format!("{name}.{f}"));
        SpecError::new(field, text)
    })
}

/// Checks an `http(s)` base URL setting.
pub fn base_url(field: &str, url: &str) -> Result<String, SpecError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        _ => Err(SpecError::new(
            field,
            format!("{url:?} is not an http(s) URL"),
        )),
    }
}

/// A built connector: how to send, and how to read its callbacks.
#[derive(Debug, Clone)]
pub struct Connector {
    /// Sends.
    pub provider: Arc<dyn Provider>,
    /// Reads `POST /callbacks/{id}`; `None` if the kind has no callbacks.
    pub callbacks: Option<Arc<dyn CallbackHandler>>,
}

/// What building a connector gets besides its spec.
#[derive(Debug, Clone)]
pub struct BuildContext<'a> {
    /// `{base}/callbacks/{id}`: where the provider posts back, if known.
    pub callback_url: Option<String>,
    /// The shared HTTP client (rustls).
    pub http: &'a reqwest::Client,
    /// Where socket-connected providers (SMPP) hand what they receive.
    pub sink: Option<crate::callback::Sink>,
}

/// Checks a spec's settings without building anything.
pub fn validate(kind: &str, config: &Value, credentials: &Value) -> Result<(), SpecError> {
    match kind {
        "twilio" => crate::twilio::TwilioConfig::from_spec(config, credentials, None).map(drop),
        "whatsapp_cloud" => {
            crate::whatsapp::WhatsAppConfig::from_spec(config, credentials).map(drop)
        }
        "smpp" => crate::smpp::SmppConfig::from_spec(config, credentials).map(drop),
        other => Err(SpecError::new(
            "kind",
            format!(
                "unknown provider kind {other:?}; one of: {}",
                KINDS.join(", ")
            ),
        )),
    }
}

/// Builds the connector a spec describes.
pub fn build(spec: &ProviderSpec, ctx: &BuildContext<'_>) -> Result<Connector, SpecError> {
    match spec.kind.as_str() {
        "twilio" => {
            let cfg = crate::twilio::TwilioConfig::from_spec(
                &spec.config,
                &spec.credentials,
                ctx.callback_url.clone(),
            )?;
            let t = Arc::new(crate::twilio::Twilio::new(cfg, ctx.http.clone()));
            Ok(Connector {
                provider: t.clone(),
                callbacks: Some(t),
            })
        }
        "whatsapp_cloud" => {
            let cfg = crate::whatsapp::WhatsAppConfig::from_spec(&spec.config, &spec.credentials)?;
            let w = Arc::new(crate::whatsapp::WhatsApp::new(cfg, ctx.http.clone()));
            Ok(Connector {
                provider: w.clone(),
                callbacks: Some(w),
            })
        }
        "smpp" => {
            let cfg = crate::smpp::SmppConfig::from_spec(&spec.config, &spec.credentials)?;
            Ok(Connector {
                provider: Arc::new(crate::smpp::Smpp::start(
                    cfg,
                    spec.id.as_str(),
                    ctx.sink.clone(),
                )),
                // Receipts and replies come on its own connection.
                callbacks: None,
            })
        }
        other => Err(SpecError::new(
            "kind",
            format!("unknown provider kind {other:?}"),
        )),
    }
}

#[derive(Debug, Default)]
struct Registry {
    /// Built in (the simulator): never replaced by `sync`.
    fixed: HashMap<ProviderId, Connector>,
    /// Configured instances, with the spec each was built from.
    built: HashMap<ProviderId, (ProviderSpec, Connector)>,
    /// Specs that could not be built, and why (logged once per version).
    broken: HashMap<ProviderId, (ProviderSpec, SpecError)>,
    callback_base: Option<String>,
    http: Option<reqwest::Client>,
    sink: Option<crate::callback::Sink>,
    /// Keep the specs but build nothing (the CLI's own admin API: it must
    /// not open provider connections).
    offline: bool,
}

/// The providers of this node, by id; cheap to clone and shared by the
/// dispatcher (sending) and the HTTP edge (callbacks).
#[derive(Debug, Default, Clone)]
pub struct Providers {
    inner: Arc<RwLock<Registry>>,
}

impl Providers {
    /// A registry that checks and lists providers but connects none.
    pub fn offline() -> Providers {
        let p = Providers::default();
        p.write().offline = true;
        p
    }

    /// Sets where socket-connected providers hand over what they receive;
    /// call before the first `sync`.
    pub fn set_sink(&self, sink: crate::callback::Sink) {
        self.write().sink = Some(sink);
    }

    /// The link state of the provider with this id, if it keeps a connection.
    pub fn link_state(&self, id: &ProviderId) -> Option<String> {
        let r = self.read();
        r.built.get(id).and_then(|(_, c)| c.provider.link_state())
    }

    /// Registers a built-in connector (the simulator).
    pub fn insert(&self, id: ProviderId, connector: Connector) {
        self.write().fixed.insert(id, connector);
    }

    /// The provider with this id.
    pub fn get(&self, id: &ProviderId) -> Option<Arc<dyn Provider>> {
        let r = self.read();
        r.fixed
            .get(id)
            .or_else(|| r.built.get(id).map(|(_, c)| c))
            .map(|c| c.provider.clone())
    }

    /// The kind of the provider with this id (`sim`, `twilio`, …).
    pub fn kind(&self, id: &ProviderId) -> Option<String> {
        let r = self.read();
        if r.fixed.contains_key(id) {
            return Some("sim".to_owned());
        }
        r.built
            .get(id)
            .map(|(s, _)| s.kind.clone())
            .or_else(|| r.broken.get(id).map(|(s, _)| s.kind.clone()))
    }

    /// The callback reader of the provider with this id.
    pub fn callbacks(&self, id: &str) -> Option<Arc<dyn CallbackHandler>> {
        let id = ProviderId::parse(id).ok()?;
        let r = self.read();
        r.fixed
            .get(&id)
            .or_else(|| r.built.get(&id).map(|(_, c)| c))
            .and_then(|c| c.callbacks.clone())
    }

    /// Where provider `id` posts back, once the base is known.
    pub fn callback_url(&self, id: &str) -> Option<String> {
        self.read()
            .callback_base
            .as_ref()
            .map(|b| format!("{b}/callbacks/{id}"))
    }

    /// Why a configured provider could not be built, if it could not.
    pub fn problem(&self, id: &ProviderId) -> Option<SpecError> {
        self.read().broken.get(id).map(|(_, e)| e.clone())
    }

    /// Sets where providers post back (`{base}/callbacks/{id}`) and rebuilds
    /// the connectors that tell their provider so.
    pub fn set_callback_base(&self, base: &str) {
        let specs: Vec<ProviderSpec> = {
            let mut r = self.write();
            r.callback_base = Some(base.trim_end_matches('/').to_owned());
            let r = &mut *r;
            let specs = r
                .broken
                .values()
                .map(|(spec, _)| spec.clone())
                .chain(r.built.values().map(|(spec, _)| spec.clone()))
                .collect();
            // Forget the connectors that tell their provider where to call
            // back (Twilio's StatusCallback) so that `sync` builds them anew;
            // the others (an SMPP link) keep running.
            r.built
                .retain(|_, (spec, _)| !KINDS_WITH_CALLBACK_URL.contains(&spec.kind.as_str()));
            r.broken.clear();
            specs
        };
        self.sync(specs);
    }

    /// Makes the configured providers exactly `specs`: builds new and
    /// changed ones, drops removed ones, keeps the others as they are. A
    /// spec that cannot be built is logged and left out (its messages fail
    /// over or retry).
    pub fn sync(&self, specs: Vec<ProviderSpec>) {
        let mut r = self.write();
        if r.offline {
            return;
        }
        let http = match &r.http {
            Some(h) => h.clone(),
            None => match reqwest::Client::builder().build() {
                Ok(h) => {
                    r.http = Some(h.clone());
                    h
                }
                Err(e) => {
                    tracing::error!(error = %e, "building the providers' HTTP client failed");
                    return;
                }
            },
        };
        let wanted: HashMap<ProviderId, ProviderSpec> = specs
            .into_iter()
            .filter(|s| s.kind != "sim")
            .map(|s| (s.id.clone(), s))
            .collect();
        r.built.retain(|id, _| wanted.contains_key(id));
        r.broken.retain(|id, _| wanted.contains_key(id));
        for (id, spec) in wanted {
            if r.built.get(&id).is_some_and(|(s, _)| *s == spec)
                || r.broken.get(&id).is_some_and(|(s, _)| *s == spec)
            {
                continue;
            }
            let ctx = BuildContext {
                callback_url: r
                    .callback_base
                    .as_ref()
                    .map(|b| format!("{b}/callbacks/{id}")),
                http: &http,
                sink: r.sink.clone(),
            };
            match build(&spec, &ctx) {
                Ok(c) => {
                    tracing::info!(provider = %id, kind = %spec.kind, "provider ready");
                    r.broken.remove(&id);
                    r.built.insert(id, (spec, c));
                }
                Err(e) => {
                    tracing::error!(provider = %id, kind = %spec.kind, error = %e, "provider cannot be built; its messages wait or fail over");
                    r.built.remove(&id);
                    r.broken.insert(id, (spec, e));
                }
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(id: &str, kind: &str, config: Value, credentials: Value) -> ProviderSpec {
        ProviderSpec {
            id: ProviderId::parse(id).unwrap(),
            kind: kind.into(),
            config,
            credentials,
            version: 1,
        }
    }

    #[tokio::test]
    async fn a_callback_base_rebuilds_only_the_connectors_that_carry_it() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let providers = Providers::default();
        let twilio = spec(
            "pr_tw",
            "twilio",
            json!({"account_sid": "AC0123456789abcdef0123456789abcdef"}),
            json!({"auth_token": "token"}),
        );
        // A closed port: the link keeps trying, which is fine here.
        let smpp = spec(
            "pr_sm",
            "smpp",
            json!({"host": "127.0.0.1", "port": 9, "system_id": "sb"}),
            json!({"password": "pw"}),
        );
        let broken = spec("pr_bad", "twilio", json!({}), json!({}));
        providers.sync(vec![twilio.clone(), smpp.clone(), broken.clone()]);
        let (tw, sm) = (
            providers.get(&twilio.id).unwrap(),
            providers.get(&smpp.id).unwrap(),
        );
        assert!(providers.problem(&broken.id).is_some());
        providers.set_callback_base("https://sb.example.com/");
        assert!(
            !Arc::ptr_eq(&tw, &providers.get(&twilio.id).unwrap()),
            "rebuilt with its StatusCallback"
        );
        assert!(
            Arc::ptr_eq(&sm, &providers.get(&smpp.id).unwrap()),
            "the SMPP link keeps running"
        );
        assert_eq!(
            providers.callback_url("pr_tw").as_deref(),
            Some("https://sb.example.com/callbacks/pr_tw")
        );
        // An unchanged sync keeps everything; a removed spec is dropped.
        providers.sync(vec![twilio.clone(), smpp.clone()]);
        assert!(Arc::ptr_eq(&sm, &providers.get(&smpp.id).unwrap()));
        assert!(providers.problem(&broken.id).is_none());
        providers.sync(vec![twilio]);
        assert!(providers.get(&smpp.id).is_none());
    }
}
