//! Twilio Programmable Messaging: sending through the Messages REST API,
//! and reading status callbacks and inbound messages, verified with
//! `X-Twilio-Signature` exactly as Twilio computes it.
//!
//! Send: `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`,
//! form-encoded (`To`, `From` or `MessagingServiceSid`, `Body`, one
//! `MediaUrl` per media URL, `StatusCallback`), HTTP Basic auth with the
//! account SID and auth token. 201 answers the message `sid`; errors answer
//! `{"code", "message", "more_info", "status"}` and the code says what kind
//! of failure it is (`classify`).
//!
//! Callbacks (status and inbound) are form posts. The signature is
//! base64(HMAC-SHA1(auth token, URL + every POST parameter's name and value,
//! sorted by name)). Twilio signs the URL as configured, so a URL with its
//! default port (`https://host:443/…`) and the same URL without it are both
//! tried. A JSON body is signed over the URL alone, which then carries
//! `bodySHA256`, the hex SHA-256 of the raw body.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use switchboard_core::{ErrorClass, ReceiptKind};

use crate::callback::{CallbackError, CallbackHandler, CallbackItem, CallbackRequest, InboundItem};
use crate::registry::{SpecError, base_url, section};
use crate::{Provider, ProviderError, SendAccepted, SendRequest, constant_time_eq};

/// Twilio's API host; tests point `base_url` at a server on 127.0.0.1.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// How to reach one Twilio account.
#[derive(Clone)]
pub struct TwilioConfig {
    /// `AC…`.
    pub account_sid: String,
    /// The account's auth token: signs callbacks and authenticates sends.
    pub auth_token: String,
    /// API base URL (default `DEFAULT_BASE_URL`).
    pub base_url: String,
    /// Send from this Messaging Service instead of the message's `from`.
    pub messaging_service_sid: Option<String>,
    /// Where Twilio posts status callbacks (Switchboard's
    /// `/callbacks/{provider_id}`).
    pub status_callback: Option<String>,
    /// Timeout of one send request.
    pub timeout: Duration,
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"[redacted]")
            .field("base_url", &self.base_url)
            .field("messaging_service_sid", &self.messaging_service_sid)
            .field("status_callback", &self.status_callback)
            .finish()
    }
}

impl TwilioConfig {
    /// A configuration with the default base URL and a 15 s timeout.
    pub fn new(account_sid: &str, auth_token: &str) -> Self {
        TwilioConfig {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            messaging_service_sid: None,
            status_callback: None,
            timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecConfig {
    account_sid: String,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    messaging_service_sid: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecCredentials {
    auth_token: String,
}

/// `prefix` followed by 32 hex digits: how Twilio's SIDs look.
fn is_sid(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl TwilioConfig {
    /// Reads a stored provider's settings: `config` `{account_sid,
    /// base_url?, messaging_service_sid?, timeout_ms?}` and `credentials`
    /// `{auth_token}`; status callbacks go to `status_callback`.
    pub fn from_spec(
        config: &serde_json::Value,
        credentials: &serde_json::Value,
        status_callback: Option<String>,
    ) -> Result<Self, SpecError> {
        let c: SpecConfig = section("config", config)?;
        let k: SpecCredentials = section("credentials", credentials)?;
        if !is_sid(&c.account_sid, "AC") {
            return Err(SpecError::new(
                "config.account_sid",
                "an account SID is AC followed by 32 hex digits",
            ));
        }
        if let Some(ms) = &c.messaging_service_sid
            && !is_sid(ms, "MG")
        {
            return Err(SpecError::new(
                "config.messaging_service_sid",
                "a Messaging Service SID is MG followed by 32 hex digits",
            ));
        }
        if k.auth_token.trim().is_empty() || k.auth_token.len() > 256 {
            return Err(SpecError::new(
                "credentials.auth_token",
                "the auth token must be 1 to 256 characters",
            ));
        }
        let timeout = match c.timeout_ms {
            None => Duration::from_secs(15),
            Some(ms @ 100..=120_000) => Duration::from_millis(ms),
            Some(_) => {
                return Err(SpecError::new(
                    "config.timeout_ms",
                    "between 100 and 120000 milliseconds",
                ));
            }
        };
        Ok(TwilioConfig {
            account_sid: c.account_sid,
            auth_token: k.auth_token,
            base_url: match &c.base_url {
                Some(u) => base_url("config.base_url", u)?,
                None => DEFAULT_BASE_URL.to_owned(),
            },
            messaging_service_sid: c.messaging_service_sid,
            status_callback,
            timeout,
        })
    }
}

/// The Twilio connector: a `Provider` for sending and a `CallbackHandler`
/// for what Twilio posts back.
#[derive(Debug, Clone)]
pub struct Twilio {
    cfg: TwilioConfig,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Created {
    sid: String,
    status: Option<String>,
    error_code: Option<u32>,
    error_message: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    code: Option<u32>,
    message: Option<String>,
}

impl Twilio {
    /// A connector for the account, sending with `http` (shared, rustls).
    pub fn new(cfg: TwilioConfig, http: reqwest::Client) -> Self {
        Twilio { cfg, http }
    }

    fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.account_sid
        )
    }

    /// The form Twilio's Messages API takes for `req`.
    pub fn form(&self, req: &SendRequest) -> String {
        let address = |a: &str| {
            if req.channel == "whatsapp" && !a.starts_with("whatsapp:") {
                format!("whatsapp:{a}")
            } else {
                a.to_owned()
            }
        };
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("To", &address(&req.to));
        match &self.cfg.messaging_service_sid {
            Some(sid) => form.append_pair("MessagingServiceSid", sid),
            None => form.append_pair("From", &address(&req.from)),
        };
        if !req.body.is_empty() {
            form.append_pair("Body", &req.body);
        }
        for media in &req.media_urls {
            form.append_pair("MediaUrl", media);
        }
        if let Some(cb) = &self.cfg.status_callback {
            form.append_pair("StatusCallback", cb);
        }
        form.finish()
    }
}

/// What a Twilio error code means for the message: its class and our code.
/// Codes from Twilio's error dictionary; anything unknown is permanent, as
/// most 4xx are.
pub fn classify(code: u32) -> (ErrorClass, &'static str) {
    match code {
        21211 | 21614 | 21217 => (ErrorClass::Permanent, "invalid_number"),
        21610 => (ErrorClass::Consent, "recipient_opted_out"),
        21408 | 21612 => (ErrorClass::Permanent, "destination_not_permitted"),
        21212 | 21606 | 21659 => (ErrorClass::Permanent, "invalid_sender"),
        21602 | 21617 | 21619 => (ErrorClass::Permanent, "invalid_body"),
        20003 | 20404 => (ErrorClass::Permanent, "provider_auth_failed"),
        20429 | 14107 | 30001 | 30022 => (ErrorClass::Throttled, "rate_limited"),
        30002 => (ErrorClass::Permanent, "provider_account_suspended"),
        30003 => (ErrorClass::Permanent, "unreachable_destination"),
        30004 => (ErrorClass::Permanent, "message_blocked"),
        30005 => (ErrorClass::Permanent, "unknown_destination"),
        30006 => (ErrorClass::Permanent, "landline_or_unreachable_carrier"),
        30007 => (ErrorClass::Permanent, "carrier_filtered"),
        30008 => (ErrorClass::Transport, "carrier_unknown_error"),
        _ => (ErrorClass::Permanent, "provider_rejected"),
    }
}

fn coded(code: u32, message: Option<String>) -> ProviderError {
    let (class, ours) = classify(code);
    ProviderError::new(
        class,
        ours,
        format!(
            "Twilio error {code}: {}",
            message.unwrap_or_else(|| "no message".into())
        ),
    )
}

#[async_trait]
impl Provider for Twilio {
    async fn send(&self, req: &SendRequest) -> Result<SendAccepted, ProviderError> {
        let answer = crate::call(
            self.http
                .post(self.messages_url())
                .basic_auth(&self.cfg.account_sid, Some(&self.cfg.auth_token))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .timeout(self.cfg.timeout)
                .body(self.form(req)),
            "Twilio",
        )
        .await?;
        let status = answer.status;
        if status.is_success() {
            let created: Created = serde_json::from_slice(&answer.body).map_err(|e| {
                ProviderError::new(
                    ErrorClass::Transport,
                    "upstream_bad_response",
                    format!("Twilio answered {status} with an unreadable body: {e}"),
                )
            })?;
            if created.status.as_deref() == Some("failed")
                && let Some(code) = created.error_code
            {
                return Err(coded(code, created.error_message));
            }
            return Ok(SendAccepted {
                provider_message_id: created.sid,
            });
        }
        let api: Option<ApiError> = serde_json::from_slice(&answer.body).ok();
        let detail = api
            .as_ref()
            .and_then(|a| a.message.clone())
            .unwrap_or_else(|| "no message".into());
        let coded = api.and_then(|a| a.code.map(|code| coded(code, a.message)));
        let err = answer.error("Twilio", coded, &detail);
        Err(err)
    }
}

/// `X-Twilio-Signature` for `url` and form `params`: base64 of
/// HMAC-SHA1(auth token, url + each name and value, sorted by name).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    // Twilio sorts by name, then (for repeated names) by value.
    sorted.sort();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The URL as it arrived, and the same URL with its port removed (if it
/// has one) or the scheme's default port added (if it has none): Twilio
/// signs the URL in whichever form it was configured, as its own helper
/// libraries check.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some(scheme_end) = url.find("://") else {
        return out;
    };
    let default = match &url[..scheme_end] {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let after = scheme_end + 3;
    let authority_end = url[after..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after + i);
    let host_start = url[after..authority_end]
        .rfind('@')
        .map_or(after, |i| after + i + 1);
    let host_port = &url[host_start..authority_end];
    let (head, tail) = (&url[..host_start], &url[authority_end..]);
    match host_port.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            out.push(format!("{head}{host}{tail}"));
        }
        _ => out.push(format!("{head}{host_port}:{default}{tail}")),
    }
    out
}

/// The statuses a status callback reports and what each means here.
fn receipt_kind(status: &str) -> Option<Option<ReceiptKind>> {
    match status {
        "delivered" => Some(Some(ReceiptKind::Delivered)),
        "read" => Some(Some(ReceiptKind::Read)),
        "undelivered" | "failed" => Some(Some(ReceiptKind::Undelivered)),
        // Progress Switchboard already knows from the send's answer.
        "accepted"
        | "queued"
        | "sending"
        | "sent"
        | "scheduled"
        | "canceled"
        | "partially_delivered" => Some(None),
        _ => None,
    }
}

fn strip_channel(address: &str) -> (&str, &'static str) {
    match address.strip_prefix("whatsapp:") {
        Some(a) => (a, "whatsapp"),
        None => (address, "sms"),
    }
}

impl Twilio {
    /// Checks `X-Twilio-Signature` over the request as Twilio signed it.
    /// `params` are the form's; a JSON body (`is_json`) is signed without them.
    fn verify(
        &self,
        req: &CallbackRequest<'_>,
        is_json: bool,
        params: &[(String, String)],
    ) -> Result<(), CallbackError> {
        let given = req
            .header("x-twilio-signature")
            .ok_or_else(|| CallbackError::Forbidden("X-Twilio-Signature is missing".into()))?;
        if is_json {
            // Signed over the URL alone; the URL's bodySHA256 covers the body.
            let url = url::Url::parse(req.url)
                .map_err(|_| CallbackError::Forbidden("the callback URL is not a URL".into()))?;
            let claimed = url
                .query_pairs()
                .find(|(k, _)| k == "bodySHA256")
                .map(|(_, v)| v.into_owned())
                .ok_or_else(|| {
                    CallbackError::Forbidden("a JSON callback needs bodySHA256 in its URL".into())
                })?;
            let actual = hex::encode(Sha256::digest(req.body));
            if !constant_time_eq(claimed.as_bytes(), actual.as_bytes()) {
                return Err(CallbackError::Forbidden(
                    "bodySHA256 does not match the body".into(),
                ));
            }
        }
        let signed_params: &[(String, String)] = if is_json { &[] } else { params };
        let ok = url_variants(req.url).iter().any(|u| {
            constant_time_eq(
                signature(&self.cfg.auth_token, u, signed_params).as_bytes(),
                given.as_bytes(),
            )
        });
        if ok {
            Ok(())
        } else {
            Err(CallbackError::Forbidden(
                "X-Twilio-Signature does not match".into(),
            ))
        }
    }
}

impl CallbackHandler for Twilio {
    fn open(&self, req: &CallbackRequest<'_>) -> Result<Vec<CallbackItem>, CallbackError> {
        let is_json = req
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"));
        let params: Vec<(String, String)> = if is_json {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(req.body)
                .map_err(|e| {
                    CallbackError::Malformed(format!("the JSON body is unreadable: {e}"))
                })?;
            v.into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect()
        } else {
            url::form_urlencoded::parse(req.body).into_owned().collect()
        };
        self.verify(req, is_json, &params)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if let Some(account) = get("AccountSid")
            && account != self.cfg.account_sid
        {
            return Err(CallbackError::Forbidden(format!(
                "the callback is for account {account}, not this one"
            )));
        }
        let sid = get("MessageSid")
            .or_else(|| get("SmsSid"))
            .ok_or_else(|| CallbackError::Malformed("MessageSid is missing".into()))?;
        let status = get("MessageStatus")
            .or_else(|| get("SmsStatus"))
            .unwrap_or("");
        if status == "received" || (status.is_empty() && get("Body").is_some()) {
            let from =
                get("From").ok_or_else(|| CallbackError::Malformed("From is missing".into()))?;
            let to = get("To").ok_or_else(|| CallbackError::Malformed("To is missing".into()))?;
            let (from, channel) = strip_channel(from);
            let (to, _) = strip_channel(to);
            let media = get("NumMedia")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            let media_urls = (0..media.min(10))
                .filter_map(|i| get(&format!("MediaUrl{i}")).map(str::to_owned))
                .collect();
            return Ok(vec![CallbackItem::Inbound(InboundItem {
                from: from.to_owned(),
                to: to.to_owned(),
                channel: channel.to_owned(),
                text: get("Body").unwrap_or("").to_owned(),
                media_urls,
                provider_message_id: Some(sid.to_owned()),
            })]);
        }
        match receipt_kind(status) {
            Some(Some(kind)) => Ok(vec![CallbackItem::Receipt {
                provider_message_id: sid.to_owned(),
                kind,
                // `failed`/`undelivered` say why in ErrorCode (30003 …).
                error_code: (kind == ReceiptKind::Undelivered)
                    .then(|| get("ErrorCode").and_then(|c| c.parse().ok()))
                    .flatten()
                    .map(|code| classify(code).1.to_owned()),
                // The fields as Twilio sent them, kept for the record.
                raw: serde_json::Value::Object(
                    params
                        .iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect(),
                )
                .to_string(),
            }]),
            Some(None) => Ok(Vec::new()),
            None => Err(CallbackError::Malformed(format!(
                "unknown MessageStatus {status:?}"
            ))),
        }
    }
}
