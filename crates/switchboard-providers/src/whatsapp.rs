//! WhatsApp Business Cloud API: sending through the Graph API and reading
//! its webhooks.
//!
//! Send: `POST {base}/{version}/{phone-number-id}/messages` with a bearer
//! token and a JSON body: `type` `text`, a media type (`image`, `video`,
//! `audio`, `document`, chosen by the URL's extension) with a `link`, or
//! `template` (`name`, `language.code`, body parameters). 200 answers
//! `{"messages":[{"id":"wamid…"}]}`; errors answer `{"error":{"code",
//! "message","error_data":{"details"}}}` and the code says what kind of
//! failure it is (`classify`), 131047 being the 24-hour customer-service
//! window.
//!
//! Webhooks: a `GET` with `hub.mode=subscribe`, `hub.verify_token` and
//! `hub.challenge` is answered with the challenge when the token matches.
//! A `POST` carries `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app
//! secret, raw body)>` and `entry[].changes[].value` with `statuses`
//! (sent, delivered, read, failed with `errors`) and `messages` (text,
//! media, button and interactive replies).

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_core::{ErrorClass, ReceiptKind};

use crate::callback::{CallbackError, CallbackHandler, CallbackItem, CallbackRequest, InboundItem};
use crate::registry::{SpecError, base_url, section};
use crate::{Provider, ProviderError, SendAccepted, SendRequest, constant_time_eq};

/// The Graph API host; tests point `base_url` at a server on 127.0.0.1.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
/// The Graph API version used unless configured.
pub const DEFAULT_API_VERSION: &str = "v21.0";

/// How to reach one WhatsApp Business phone number.
#[derive(Clone)]
pub struct WhatsAppConfig {
    /// The phone number's id at Meta (not the number itself).
    pub phone_number_id: String,
    /// System-user or app access token.
    pub access_token: String,
    /// The app secret: signs webhooks (`X-Hub-Signature-256`).
    pub app_secret: String,
    /// The token the webhook subscription check must present.
    pub verify_token: String,
    /// API base URL (default `DEFAULT_BASE_URL`).
    pub base_url: String,
    /// Graph API version, e.g. `v21.0`.
    pub api_version: String,
    /// Timeout of one send request.
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for WhatsAppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsAppConfig")
            .field("phone_number_id", &self.phone_number_id)
            .field("access_token", &"[redacted]")
            .field("app_secret", &"[redacted]")
            .field("verify_token", &"[redacted]")
            .field("base_url", &self.base_url)
            .field("api_version", &self.api_version)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecConfig {
    phone_number_id: String,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecCredentials {
    access_token: String,
    app_secret: String,
    verify_token: String,
}

impl WhatsAppConfig {
    /// Reads a stored provider's settings: `config` `{phone_number_id,
    /// base_url?, api_version?, timeout_ms?}` and `credentials`
    /// `{access_token, app_secret, verify_token}`.
    pub fn from_spec(config: &Value, credentials: &Value) -> Result<Self, SpecError> {
        let c: SpecConfig = section("config", config)?;
        let k: SpecCredentials = section("credentials", credentials)?;
        if c.phone_number_id.is_empty()
            || c.phone_number_id.len() > 32
            || !c.phone_number_id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(SpecError::new(
                "config.phone_number_id",
                "the phone number id is the numeric id Meta shows for the number (not the number)",
            ));
        }
        let version = c
            .api_version
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        if !version
            .strip_prefix('v')
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        {
            return Err(SpecError::new(
                "config.api_version",
                "a Graph API version looks like v21.0",
            ));
        }
        for (field, value) in [
            ("credentials.access_token", &k.access_token),
            ("credentials.app_secret", &k.app_secret),
            ("credentials.verify_token", &k.verify_token),
        ] {
            if value.trim().is_empty() || value.len() > 1024 {
                return Err(SpecError::new(field, "must be 1 to 1024 characters"));
            }
        }
        let timeout = match c.timeout_ms {
            None => std::time::Duration::from_secs(15),
            Some(ms @ 100..=120_000) => std::time::Duration::from_millis(ms),
            Some(_) => {
                return Err(SpecError::new(
                    "config.timeout_ms",
                    "between 100 and 120000 milliseconds",
                ));
            }
        };
        Ok(WhatsAppConfig {
            phone_number_id: c.phone_number_id,
            access_token: k.access_token,
            app_secret: k.app_secret,
            verify_token: k.verify_token,
            base_url: match &c.base_url {
                Some(u) => base_url("config.base_url", u)?,
                None => DEFAULT_BASE_URL.to_owned(),
            },
            api_version: version,
            timeout,
        })
    }
}

/// The WhatsApp Cloud API connector: a `Provider` for sending and a
/// `CallbackHandler` for its webhooks.
#[derive(Debug, Clone)]
pub struct WhatsApp {
    cfg: WhatsAppConfig,
    http: reqwest::Client,
}

/// What a Cloud API error code means for the message: its class and our
/// code. Codes from Meta's error reference; anything unknown is permanent.
pub fn classify(code: u64) -> (ErrorClass, &'static str) {
    match code {
        131047 => (ErrorClass::Permanent, "outside_customer_service_window"),
        131050 => (ErrorClass::Consent, "recipient_opted_out"),
        130429 | 131048 | 131056 | 80007 | 4 => (ErrorClass::Throttled, "rate_limited"),
        131026 => (ErrorClass::Permanent, "undeliverable"),
        131021 | 131030 | 133010 => (ErrorClass::Permanent, "invalid_number"),
        132000 | 132001 | 132005 | 132007 | 132012 | 132015 | 132016 => {
            (ErrorClass::Permanent, "template_error")
        }
        131052 | 131053 => (ErrorClass::Permanent, "media_error"),
        190 | 0 | 3 | 10 | 200..=299 => (ErrorClass::Permanent, "provider_auth_failed"),
        131000 | 131016 | 1 | 2 => (ErrorClass::Transport, "upstream_unavailable"),
        _ => (ErrorClass::Permanent, "provider_rejected"),
    }
}

/// The message type a media URL is sent as, by its extension.
fn media_type(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" | "png" | "webp" => "image",
        "mp4" | "3gp" => "video",
        "mp3" | "ogg" | "amr" | "aac" | "m4a" | "opus" => "audio",
        _ => "document",
    }
}

/// A number as the Cloud API writes it: digits only.
fn wa_number(e164: &str) -> String {
    e164.chars().filter(char::is_ascii_digit).collect()
}

impl WhatsApp {
    /// A connector for the phone number, sending with `http` (rustls).
    pub fn new(cfg: WhatsAppConfig, http: reqwest::Client) -> Self {
        WhatsApp { cfg, http }
    }

    fn messages_url(&self) -> String {
        format!(
            "{}/{}/{}/messages",
            self.cfg.base_url, self.cfg.api_version, self.cfg.phone_number_id
        )
    }

    /// The JSON body the Graph API takes for `req`: a template if it has
    /// one, else the first media URL with the text as caption, else text.
    /// (The Cloud API sends one media per message; further media URLs go
    /// as links in the text.)
    pub fn payload(&self, req: &SendRequest) -> Value {
        let mut v = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": wa_number(&req.to),
        });
        if let Some(t) = &req.template {
            v["type"] = json!("template");
            let mut template = json!({"name": t.name, "language": {"code": t.language}});
            if !t.parameters.is_empty() {
                let params: Vec<Value> = t
                    .parameters
                    .iter()
                    .map(|p| json!({"type": "text", "text": p}))
                    .collect();
                template["components"] = json!([{"type": "body", "parameters": params}]);
            }
            v["template"] = template;
        } else if let Some((first, rest)) = req.media_urls.split_first() {
            let kind = media_type(first);
            let mut caption = req.body.clone();
            for url in rest {
                if !caption.is_empty() {
                    caption.push('\n');
                }
                caption.push_str(url);
            }
            let mut media = json!({ "link": first });
            // Audio takes no caption.
            if !caption.is_empty() && kind != "audio" {
                media["caption"] = json!(caption);
            }
            v["type"] = json!(kind);
            v[kind] = media;
        } else {
            v["type"] = json!("text");
            v["text"] = json!({"preview_url": false, "body": req.body});
        }
        v
    }
}

#[async_trait]
impl Provider for WhatsApp {
    async fn send(&self, req: &SendRequest) -> Result<SendAccepted, ProviderError> {
        let answer = crate::call(
            self.http
                .post(self.messages_url())
                .bearer_auth(&self.cfg.access_token)
                .header("accept", "application/json")
                .timeout(self.cfg.timeout)
                .json(&self.payload(req)),
            "the WhatsApp Cloud API",
        )
        .await?;
        let status = answer.status;
        let v: Option<Value> = serde_json::from_slice(&answer.body).ok();
        if status.is_success() {
            let id = v
                .as_ref()
                .and_then(|v| v["messages"][0]["id"].as_str())
                .ok_or_else(|| {
                    ProviderError::new(
                        ErrorClass::Transport,
                        "upstream_bad_response",
                        format!("the Cloud API answered {status} without a message id"),
                    )
                })?;
            return Ok(SendAccepted {
                provider_message_id: id.to_owned(),
            });
        }
        let error = v.as_ref().map(|v| &v["error"]);
        let code = error.and_then(|e| e["code"].as_u64());
        let message = error
            .and_then(|e| {
                e["error_data"]["details"]
                    .as_str()
                    .or_else(|| e["message"].as_str())
            })
            .unwrap_or("no message")
            .to_owned();
        let coded = code.map(|code| {
            let (class, ours) = classify(code);
            ProviderError::new(class, ours, format!("Cloud API error {code}: {message}"))
        });
        let err = answer.error("the Cloud API", coded, &message);
        Err(err)
    }
}

/// `X-Hub-Signature-256` for `body` under `app_secret`: `sha256=` and the
/// hex HMAC-SHA256.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The text of an inbound message of any type, and its media (as Graph API
/// media URLs, fetched with the access token).
fn inbound_content(m: &Value, media_base: &str) -> (String, Vec<String>) {
    let kind = m["type"].as_str().unwrap_or("");
    let str_at = |path: &[&str]| {
        path.iter()
            .try_fold(m, |v, k| v.get(*k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match kind {
        "text" => (str_at(&["text", "body"]).unwrap_or_default(), Vec::new()),
        // A quick-reply button of a template: its text is what was pressed.
        "button" => (
            str_at(&["button", "text"])
                .or_else(|| str_at(&["button", "payload"]))
                .unwrap_or_default(),
            Vec::new(),
        ),
        "interactive" => (
            str_at(&["interactive", "button_reply", "title"])
                .or_else(|| str_at(&["interactive", "list_reply", "title"]))
                .unwrap_or_default(),
            Vec::new(),
        ),
        "image" | "video" | "audio" | "document" | "sticker" => (
            str_at(&[kind, "caption"]).unwrap_or_default(),
            str_at(&[kind, "id"])
                .map(|id| format!("{media_base}/{id}"))
                .into_iter()
                .collect(),
        ),
        "reaction" => (
            str_at(&["reaction", "emoji"]).unwrap_or_default(),
            Vec::new(),
        ),
        _ => (String::new(), Vec::new()),
    }
}

impl CallbackHandler for WhatsApp {
    fn open(&self, req: &CallbackRequest<'_>) -> Result<Vec<CallbackItem>, CallbackError> {
        let claimed = req
            .header("x-hub-signature-256")
            .ok_or_else(|| CallbackError::Forbidden("X-Hub-Signature-256 is missing".into()))?;
        let actual = signature(&self.cfg.app_secret, req.body);
        if !constant_time_eq(claimed.trim().as_bytes(), actual.as_bytes()) {
            return Err(CallbackError::Forbidden(
                "X-Hub-Signature-256 does not match the body".into(),
            ));
        }
        let v: Value = serde_json::from_slice(req.body)
            .map_err(|e| CallbackError::Malformed(format!("the body is not JSON: {e}")))?;
        if v["object"] != "whatsapp_business_account" {
            return Err(CallbackError::Malformed(
                "`object` is not whatsapp_business_account".into(),
            ));
        }
        let media_base = format!("{}/{}", self.cfg.base_url, self.cfg.api_version);
        let mut items = Vec::new();
        let entries = v["entry"].as_array().map_or(&[][..], Vec::as_slice);
        for change in entries
            .iter()
            .flat_map(|e| e["changes"].as_array().map_or(&[][..], Vec::as_slice))
        {
            let value = &change["value"];
            // One app may serve several numbers: only this one's are ours.
            if let Some(id) = value["metadata"]["phone_number_id"].as_str()
                && id != self.cfg.phone_number_id
            {
                return Err(CallbackError::Forbidden(format!(
                    "the webhook is for phone number id {id}, not this provider's"
                )));
            }
            let ours = value["metadata"]["display_phone_number"]
                .as_str()
                .map(|n| format!("+{}", wa_number(n)))
                .unwrap_or_default();
            for s in value["statuses"].as_array().map_or(&[][..], Vec::as_slice) {
                let id = s["id"]
                    .as_str()
                    .ok_or_else(|| CallbackError::Malformed("a status has no id".into()))?;
                let (kind, error_code) = match s["status"].as_str() {
                    Some("delivered") => (ReceiptKind::Delivered, None),
                    Some("read") => (ReceiptKind::Read, None),
                    Some("failed") => (
                        ReceiptKind::Undelivered,
                        s["errors"][0]["code"]
                            .as_u64()
                            .map(|c| classify(c).1.to_owned()),
                    ),
                    // `sent` repeats what the send's answer said; `deleted`
                    // and `warning` change nothing here.
                    Some("sent" | "deleted" | "warning") => continue,
                    other => {
                        return Err(CallbackError::Malformed(format!(
                            "unknown status {other:?}"
                        )));
                    }
                };
                items.push(CallbackItem::Receipt {
                    provider_message_id: id.to_owned(),
                    kind,
                    error_code,
                    raw: s.to_string(),
                });
            }
            for m in value["messages"].as_array().map_or(&[][..], Vec::as_slice) {
                let from = m["from"]
                    .as_str()
                    .ok_or_else(|| CallbackError::Malformed("a message has no `from`".into()))?;
                let (text, media_urls) = inbound_content(m, &media_base);
                items.push(CallbackItem::Inbound(InboundItem {
                    from: format!("+{}", wa_number(from)),
                    to: ours.clone(),
                    channel: "whatsapp".into(),
                    text,
                    media_urls,
                    provider_message_id: m["id"].as_str().map(str::to_owned),
                }));
            }
        }
        Ok(items)
    }

    fn handshake(&self, query: &[(String, String)]) -> Option<Result<String, CallbackError>> {
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        Some(match (get("hub.mode"), get("hub.verify_token"), get("hub.challenge")) {
            (Some("subscribe"), Some(token), Some(challenge))
                if constant_time_eq(token.as_bytes(), self.cfg.verify_token.as_bytes()) =>
            {
                Ok(challenge.to_owned())
            }
            (Some("subscribe"), Some(_), Some(_)) => Err(CallbackError::Forbidden(
                "hub.verify_token does not match this provider's verify token".into(),
            )),
            _ => Err(CallbackError::Malformed(
                "a subscription check needs hub.mode=subscribe, hub.verify_token and hub.challenge"
                    .into(),
            )),
        })
    }
}
