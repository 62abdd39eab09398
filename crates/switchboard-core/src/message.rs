//! A message submission: read from JSON (`SubmitInput::from_json`), then
//! checked into a `NewMessage` that can only exist if it is valid.
//!
//! Two kinds of refusal, as SPEC §3 splits them: a body whose *shape* is wrong
//! (not an object, wrong JSON types, unknown fields) is `400`; a well-shaped
//! body with invalid *content* (bad number, unknown channel, empty text) is
//! `422`. `ValidationError::status` carries that split to the HTTP edge.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::phone::{PhoneError, PhoneNumber};
use crate::segments::{self, SegmentInfo};
use crate::time::Timestamp;

/// Longest body accepted, in characters (10 concatenated GSM-7 parts).
pub const MAX_BODY_CHARS: usize = 1600;
/// Longest `client_ref` and `idempotency_key`, in bytes.
pub const MAX_REF_LEN: usize = 255;
/// Largest `metadata`, serialized.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Most `media_urls`.
pub const MAX_MEDIA_URLS: usize = 10;
/// TTL bounds.
pub const MIN_TTL_SECONDS: u64 = 10;
/// Longest TTL: 7 days.
pub const MAX_TTL_SECONDS: u64 = 7 * 86_400;
/// How far ahead `send_at` may be: 30 days.
pub const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(30 * 86_400);
/// The default TTL (SPEC §2): 24 hours.
pub const DEFAULT_TTL: Duration = Duration::from_secs(86_400);

/// A refusal with a machine-readable code and, where one applies, the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ValidationError {
    /// HTTP status: 400 (shape) or 422 (content).
    pub status: u16,
    /// Stable code, e.g. `invalid_phone`.
    pub code: &'static str,
    /// Human explanation.
    pub message: String,
    /// The offending field, if any.
    pub field: Option<String>,
}

impl ValidationError {
    fn shape(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ValidationError {
            status: 400,
            code,
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    fn content(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ValidationError {
            status: 422,
            code,
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }
}

/// The channel a message goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// SMS/MMS.
    Sms,
    /// WhatsApp.
    Whatsapp,
    /// iMessage.
    Imessage,
    /// RCS.
    Rcs,
}

/// Every channel.
pub const ALL_CHANNELS: [Channel; 4] = [
    Channel::Sms,
    Channel::Whatsapp,
    Channel::Imessage,
    Channel::Rcs,
];

impl Channel {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Imessage => "imessage",
            Channel::Rcs => "rcs",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        ALL_CHANNELS.into_iter().find(|c| c.as_str() == s)
    }
}

/// Why the message is sent; marketing is subject to consent rules and quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Receipts, reminders, codes.
    Transactional,
    /// Promotions.
    Marketing,
}

impl Category {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transactional => "transactional",
            Category::Marketing => "marketing",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "transactional" => Some(Category::Transactional),
            "marketing" => Some(Category::Marketing),
            _ => None,
        }
    }
}

/// Dispatch priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// The default.
    Normal,
    /// Claimed before normal messages.
    High,
}

impl Priority {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        }
    }

    /// Number stored for ordering (higher goes first).
    pub fn rank(self) -> i64 {
        match self {
            Priority::Normal => 0,
            Priority::High => 1,
        }
    }
}

/// A template reference in a submission.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateRef {
    /// Template name.
    pub name: String,
    /// Variables to render with.
    pub variables: Map<String, Value>,
}

/// A template approved at the provider (a WhatsApp message template): what
/// starts a conversation outside WhatsApp's 24-hour customer-service window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelTemplate {
    /// The template's name at the provider.
    pub name: String,
    /// Its language code, e.g. `en_US`.
    pub language: String,
    /// The body's parameters, in order.
    #[serde(default)]
    pub parameters: Vec<String>,
}

impl ChannelTemplate {
    /// How a message sent as this template reads in the timeline.
    pub fn describe(&self) -> String {
        let mut s = format!("[WhatsApp template {} ({})]", self.name, self.language);
        for p in &self.parameters {
            s.push(' ');
            s.push_str(p);
        }
        s
    }
}

/// The fields of a submission, with JSON types checked but content not yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitInput {
    /// Recipient.
    pub to: Option<String>,
    /// Sender address.
    pub from: Option<String>,
    /// Channel name.
    pub channel: Option<String>,
    /// Text.
    pub body: Option<String>,
    /// Template instead of body.
    pub template: Option<TemplateRef>,
    /// Media attachments.
    pub media_urls: Vec<String>,
    /// Caller's reference.
    pub client_ref: Option<String>,
    /// Caller's metadata.
    pub metadata: Option<Map<String, Value>>,
    /// When to send.
    pub send_at: Option<String>,
    /// Lifetime in seconds.
    pub ttl_seconds: Option<u64>,
    /// Category name.
    pub category: Option<String>,
    /// Priority name.
    pub priority: Option<String>,
    /// Recipient time zone.
    pub timezone: Option<String>,
    /// Idempotency key given in the body.
    pub idempotency_key: Option<String>,
    /// A provider-approved WhatsApp template to send instead of free text.
    pub whatsapp_template: Option<ChannelTemplate>,
}

const KNOWN_FIELDS: [&str; 15] = [
    "whatsapp_template",
    "to",
    "from",
    "channel",
    "body",
    "template",
    "media_urls",
    "client_ref",
    "metadata",
    "send_at",
    "ttl_seconds",
    "category",
    "priority",
    "timezone",
    "idempotency_key",
];

fn opt_string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, ValidationError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ValidationError::shape(
            "invalid_type",
            field,
            format!("`{field}` must be a string"),
        )),
    }
}

impl SubmitInput {
    /// Reads the fields of a submission from parsed JSON, checking types.
    pub fn from_json(value: &Value) -> Result<Self, ValidationError> {
        let Value::Object(obj) = value else {
            return Err(ValidationError {
                status: 400,
                code: "invalid_type",
                message: "the request body must be a JSON object".into(),
                field: None,
            });
        };
        if let Some(unknown) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(ValidationError::shape(
                "unknown_field",
                unknown,
                format!("unknown field `{unknown}`"),
            ));
        }
        let template = match obj.get("template") {
            None | Some(Value::Null) => None,
            Some(Value::Object(t)) => {
                let name = opt_string(t, "name").map_err(|mut e| {
                    e.field = Some("template.name".into());
                    e
                })?;
                let name = name.ok_or_else(|| {
                    ValidationError::shape(
                        "missing_field",
                        "template.name",
                        "`template.name` is required",
                    )
                })?;
                let variables = match t.get("variables") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(v)) => v.clone(),
                    Some(_) => {
                        return Err(ValidationError::shape(
                            "invalid_type",
                            "template.variables",
                            "`template.variables` must be an object",
                        ));
                    }
                };
                Some(TemplateRef { name, variables })
            }
            Some(_) => {
                return Err(ValidationError::shape(
                    "invalid_type",
                    "template",
                    "`template` must be an object",
                ));
            }
        };
        let whatsapp_template = match obj.get("whatsapp_template") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => {
                Some(serde_json::from_value::<ChannelTemplate>(v.clone()).map_err(|e| {
                    ValidationError::shape(
                        "invalid_type",
                        "whatsapp_template",
                        format!("`whatsapp_template` is {{name, language, parameters?}} with string values: {e}"),
                    )
                })?)
            }
            Some(_) => {
                return Err(ValidationError::shape(
                    "invalid_type",
                    "whatsapp_template",
                    "`whatsapp_template` must be an object",
                ));
            }
        };
        let media_urls = match obj.get("media_urls") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ValidationError::shape(
                        "invalid_type",
                        "media_urls",
                        "`media_urls` must be an array of strings",
                    )
                })?,
            Some(_) => {
                return Err(ValidationError::shape(
                    "invalid_type",
                    "media_urls",
                    "`media_urls` must be an array of strings",
                ));
            }
        };
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(_) => {
                return Err(ValidationError::shape(
                    "invalid_type",
                    "metadata",
                    "`metadata` must be an object",
                ));
            }
        };
        let ttl_seconds = match obj.get("ttl_seconds") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
                ValidationError::content("invalid_ttl", "ttl_seconds", format!("`ttl_seconds` must be a whole number from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}"))
            })?),
            Some(_) => return Err(ValidationError::shape("invalid_type", "ttl_seconds", "`ttl_seconds` must be an integer")),
        };
        Ok(SubmitInput {
            to: opt_string(obj, "to")?,
            from: opt_string(obj, "from")?,
            channel: opt_string(obj, "channel")?,
            body: opt_string(obj, "body")?,
            template,
            media_urls,
            client_ref: opt_string(obj, "client_ref")?,
            metadata,
            send_at: opt_string(obj, "send_at")?,
            ttl_seconds,
            category: opt_string(obj, "category")?,
            priority: opt_string(obj, "priority")?,
            timezone: opt_string(obj, "timezone")?,
            idempotency_key: opt_string(obj, "idempotency_key")?,
            whatsapp_template,
        })
    }
}

/// A valid message submission, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Recipient.
    pub to: PhoneNumber,
    /// Requested sender address, if any.
    pub from: Option<String>,
    /// Channel.
    pub channel: Channel,
    /// Text to send.
    pub body: String,
    /// Template used, if any (rendered into `body` by the caller).
    pub template: Option<TemplateRef>,
    /// Encoding and segments of `body`.
    pub segments: SegmentInfo,
    /// Media attachments.
    pub media_urls: Vec<String>,
    /// Caller's reference, echoed in events.
    pub client_ref: Option<String>,
    /// Caller's metadata, echoed in events.
    pub metadata: Option<Map<String, Value>>,
    /// When to send; `None` for now.
    pub send_at: Option<Timestamp>,
    /// Lifetime from acceptance.
    pub ttl: Duration,
    /// Category.
    pub category: Category,
    /// Priority.
    pub priority: Priority,
    /// Recipient's zone as given.
    pub timezone: Option<String>,
    /// Idempotency key (header or body).
    pub idempotency_key: Option<String>,
    /// Send this WhatsApp template instead of free text.
    pub whatsapp_template: Option<ChannelTemplate>,
}

/// Checks a WhatsApp template reference: Meta's name rules, a language
/// code, at most 100 parameters of at most 1024 characters.
fn check_channel_template(t: &ChannelTemplate) -> Result<(), ValidationError> {
    let name_ok = !t.name.is_empty()
        && t.name.len() <= 512
        && t.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !name_ok {
        return Err(content_err(
            "invalid_whatsapp_template",
            "whatsapp_template.name",
            "a WhatsApp template name is 1 to 512 lower-case letters, digits and underscores",
        ));
    }
    let lang_ok = (2..=15).contains(&t.language.len())
        && t.language
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_');
    if !lang_ok {
        return Err(content_err(
            "invalid_whatsapp_template",
            "whatsapp_template.language",
            "a language code such as en or en_US",
        ));
    }
    if t.parameters.len() > 100
        || t.parameters
            .iter()
            .any(|p| p.trim().is_empty() || p.chars().count() > 1024)
    {
        return Err(content_err(
            "invalid_whatsapp_template",
            "whatsapp_template.parameters",
            "at most 100 parameters, each 1 to 1024 characters",
        ));
    }
    Ok(())
}

fn content_err(code: &'static str, field: &str, message: impl Into<String>) -> ValidationError {
    ValidationError::content(code, field, message)
}

fn check_timezone(tz: &str) -> bool {
    if let Some(rest) = tz.strip_prefix("UTC").or_else(|| tz.strip_prefix("GMT")) {
        if rest.is_empty() {
            return true;
        }
        let (sign, hm) = rest.split_at(1);
        if sign != "+" && sign != "-" {
            return false;
        }
        let mut parts = hm.splitn(2, ':');
        let h = parts.next().and_then(|h| h.parse::<u8>().ok());
        let m = match parts.next() {
            Some(m) => m.parse::<u8>().ok(),
            None => Some(0),
        };
        return matches!((h, m), (Some(h), Some(m)) if h <= 14 && m < 60 && !hm.is_empty());
    }
    jiff::tz::TimeZone::get(tz).is_ok()
}

impl NewMessage {
    /// Checks the content of a submission. `now` bounds `send_at`;
    /// `header_key` is the `Idempotency-Key` header, which wins over the field.
    pub fn parse(
        input: SubmitInput,
        header_key: Option<&str>,
        now: Timestamp,
    ) -> Result<Self, ValidationError> {
        let to_raw = input
            .to
            .as_deref()
            .ok_or_else(|| content_err("missing_field", "to", "`to` is required"))?;
        let to = PhoneNumber::parse(to_raw).map_err(|e| {
            let detail = match e {
                PhoneError::NotE164 => "must be an E.164 number such as +14155550123",
                PhoneError::Invalid => "is not a valid phone number for its country",
            };
            content_err("invalid_phone", "to", format!("`to` {detail}"))
        })?;
        let channel = match input.channel.as_deref() {
            None => Channel::Sms,
            Some(c) => Channel::parse(c).ok_or_else(|| {
                content_err(
                    "invalid_channel",
                    "channel",
                    format!(
                        "unknown channel `{}`; expected one of sms, whatsapp, imessage, rcs",
                        truncate(c)
                    ),
                )
            })?,
        };
        if let Some(from) = &input.from
            && (from.trim().is_empty() || from.len() > 64)
        {
            return Err(content_err(
                "invalid_from",
                "from",
                "`from` must be a sender address of 1 to 64 characters",
            ));
        }
        if input.body.is_some() && input.template.is_some() {
            return Err(content_err(
                "body_and_template",
                "body",
                "give either `body` or `template`, not both",
            ));
        }
        if let Some(t) = &input.whatsapp_template {
            if channel != Channel::Whatsapp {
                return Err(content_err(
                    "invalid_whatsapp_template",
                    "whatsapp_template",
                    "`whatsapp_template` is for the whatsapp channel",
                ));
            }
            check_channel_template(t)?;
        }
        let body = match (&input.body, &input.template) {
            (Some(b), _) => {
                if b.trim().is_empty() {
                    return Err(content_err(
                        "empty_body",
                        "body",
                        "`body` must not be empty",
                    ));
                }
                b.clone()
            }
            (None, Some(_)) => String::new(),
            (None, None) if !input.media_urls.is_empty() => String::new(),
            (None, None) if input.whatsapp_template.is_some() => input
                .whatsapp_template
                .as_ref()
                .map(ChannelTemplate::describe)
                .unwrap_or_default(),
            (None, None) => {
                return Err(content_err(
                    "missing_body",
                    "body",
                    "`body` (or `template`) is required",
                ));
            }
        };
        let chars = body.chars().count();
        if chars > MAX_BODY_CHARS {
            return Err(content_err(
                "body_too_long",
                "body",
                format!("`body` has {chars} characters; the limit is {MAX_BODY_CHARS}"),
            ));
        }
        if body.contains('\0') {
            return Err(content_err(
                "invalid_body",
                "body",
                "`body` must not contain NUL characters",
            ));
        }
        if input.media_urls.len() > MAX_MEDIA_URLS {
            return Err(content_err(
                "too_many_media_urls",
                "media_urls",
                format!("at most {MAX_MEDIA_URLS} media URLs"),
            ));
        }
        for url in &input.media_urls {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.len() <= 2048
                && !url.contains(char::is_whitespace);
            if !ok {
                return Err(content_err(
                    "invalid_media_url",
                    "media_urls",
                    "each media URL must be an http(s) URL without spaces, at most 2048 characters",
                ));
            }
        }
        if let Some(r) = &input.client_ref
            && r.len() > MAX_REF_LEN
        {
            return Err(content_err(
                "client_ref_too_long",
                "client_ref",
                format!("`client_ref` is limited to {MAX_REF_LEN} bytes"),
            ));
        }
        // PostgreSQL's text cannot hold a NUL (SQLite's can): refused here,
        // the same on both engines, not by the store after the batch.
        if input.client_ref.as_ref().is_some_and(|r| r.contains('\0')) {
            return Err(content_err(
                "invalid_client_ref",
                "client_ref",
                "`client_ref` must not contain NUL characters",
            ));
        }
        let idempotency_key = header_key
            .map(str::to_owned)
            .or(input.idempotency_key.clone());
        if let Some(k) = &idempotency_key
            && (k.is_empty() || k.len() > MAX_REF_LEN || k.chars().any(char::is_control))
        {
            return Err(content_err(
                "invalid_idempotency_key",
                "idempotency_key",
                format!("the idempotency key must be 1 to {MAX_REF_LEN} printable characters"),
            ));
        }
        if let Some(m) = &input.metadata {
            let size = serde_json::to_string(m)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                return Err(content_err(
                    "metadata_too_large",
                    "metadata",
                    format!(
                        "`metadata` is {size} bytes serialized; the limit is {MAX_METADATA_BYTES}"
                    ),
                ));
            }
        }
        let send_at = match input.send_at.as_deref() {
            None => None,
            Some(s) => {
                let t = Timestamp::parse_rfc3339(s).ok_or_else(|| content_err("invalid_send_at", "send_at", "`send_at` must be an RFC 3339 time with an offset, e.g. 2026-11-21T17:00:00Z"))?;
                if t > now.plus(MAX_SCHEDULE_AHEAD) {
                    return Err(content_err(
                        "send_at_too_far",
                        "send_at",
                        "`send_at` may be at most 30 days ahead",
                    ));
                }
                // A time in the past means "now".
                (t > now).then_some(t)
            }
        };
        let ttl = match input.ttl_seconds {
            None => DEFAULT_TTL,
            Some(s) if (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&s) => Duration::from_secs(s),
            Some(_) => {
                return Err(content_err(
                    "invalid_ttl",
                    "ttl_seconds",
                    format!("`ttl_seconds` must be from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}"),
                ));
            }
        };
        let category = match input.category.as_deref() {
            None => Category::Transactional,
            Some(c) => Category::parse(c).ok_or_else(|| {
                content_err(
                    "invalid_category",
                    "category",
                    "`category` must be `transactional` or `marketing`",
                )
            })?,
        };
        let priority = match input.priority.as_deref() {
            None => Priority::Normal,
            Some(p) => Priority::parse(p).ok_or_else(|| {
                content_err(
                    "invalid_priority",
                    "priority",
                    "`priority` must be `normal` or `high`",
                )
            })?,
        };
        if let Some(tz) = &input.timezone
            && !check_timezone(tz)
        {
            return Err(content_err(
                "invalid_timezone",
                "timezone",
                "`timezone` must be an IANA zone (America/New_York) or an offset such as UTC-8 or UTC+5:30",
            ));
        }
        let segments = segments::analyze(&body);
        Ok(NewMessage {
            to,
            from: input.from,
            channel,
            body,
            template: input.template,
            segments,
            media_urls: input.media_urls,
            client_ref: input.client_ref,
            metadata: input.metadata,
            send_at,
            ttl,
            category,
            priority,
            timezone: input.timezone,
            idempotency_key,
            whatsapp_template: input.whatsapp_template,
        })
    }
}

impl NewMessage {
    /// Sets the body rendered from the message's template, with the same
    /// checks a literal body gets, and recomputes the segments.
    pub fn with_rendered_body(mut self, body: String) -> Result<Self, ValidationError> {
        if body.trim().is_empty() {
            return Err(content_err(
                "empty_body",
                "template",
                "the template rendered an empty body",
            ));
        }
        let chars = body.chars().count();
        if chars > MAX_BODY_CHARS {
            return Err(content_err(
                "body_too_long",
                "template",
                format!("the rendered body has {chars} characters; the limit is {MAX_BODY_CHARS}"),
            ));
        }
        if body.contains('\0') {
            return Err(content_err(
                "invalid_body",
                "template",
                "the rendered body must not contain NUL characters (from a variable)",
            ));
        }
        self.segments = segments::analyze(&body);
        self.body = body;
        Ok(self)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Timestamp = Timestamp::from_millis(1_790_000_000_000);

    fn check(body: Value, expect: Result<(), (u16, &str, Option<&str>)>) {
        let got = SubmitInput::from_json(&body).and_then(|i| NewMessage::parse(i, None, NOW));
        match (got, expect) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err((status, code, field))) => {
                assert_eq!(
                    (e.status, e.code, e.field.as_deref()),
                    (status, code, field),
                    "{body}: {e}"
                );
            }
            (got, expect) => panic!("{body}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn a_minimal_message_is_valid_with_defaults() {
        let m = NewMessage::parse(
            SubmitInput::from_json(&json!({"to":"+14155550123","body":"hi"})).unwrap(),
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(
            (m.channel, m.category, m.priority, m.ttl),
            (
                Channel::Sms,
                Category::Transactional,
                Priority::Normal,
                DEFAULT_TTL
            )
        );
        assert_eq!(m.segments.segments, 1);
    }

    #[test]
    fn shape_errors_are_400() {
        check(json!([1, 2]), Err((400, "invalid_type", None)));
        check(
            json!({"to": 14155550123u64, "body": "x"}),
            Err((400, "invalid_type", Some("to"))),
        );
        check(
            json!({"to": "+14155550123", "body": ["x"]}),
            Err((400, "invalid_type", Some("body"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "metadata": "no"}),
            Err((400, "invalid_type", Some("metadata"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "ttl_seconds": "60"}),
            Err((400, "invalid_type", Some("ttl_seconds"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "too": 1}),
            Err((400, "unknown_field", Some("too"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "media_urls": [1]}),
            Err((400, "invalid_type", Some("media_urls"))),
        );
    }

    #[test]
    fn content_errors_are_422_with_their_field() {
        check(
            json!({"body": "x"}),
            Err((422, "missing_field", Some("to"))),
        );
        check(
            json!({"to": "4155550123", "body": "x"}),
            Err((422, "invalid_phone", Some("to"))),
        );
        check(
            json!({"to": "+11234567890", "body": "x"}),
            Err((422, "invalid_phone", Some("to"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "channel": "fax"}),
            Err((422, "invalid_channel", Some("channel"))),
        );
        check(
            json!({"to": "+14155550123", "body": ""}),
            Err((422, "empty_body", Some("body"))),
        );
        check(
            json!({"to": "+14155550123", "body": "  \n"}),
            Err((422, "empty_body", Some("body"))),
        );
        check(
            json!({"to": "+14155550123"}),
            Err((422, "missing_body", Some("body"))),
        );
        check(
            json!({"to": "+14155550123", "body": "a".repeat(1601)}),
            Err((422, "body_too_long", Some("body"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "ttl_seconds": 1}),
            Err((422, "invalid_ttl", Some("ttl_seconds"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "ttl_seconds": -5}),
            Err((422, "invalid_ttl", Some("ttl_seconds"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "send_at": "soon"}),
            Err((422, "invalid_send_at", Some("send_at"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "send_at": "2099-01-01T00:00:00Z"}),
            Err((422, "send_at_too_far", Some("send_at"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "category": "spam"}),
            Err((422, "invalid_category", Some("category"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "priority": "urgent"}),
            Err((422, "invalid_priority", Some("priority"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "timezone": "Mars/Olympus"}),
            Err((422, "invalid_timezone", Some("timezone"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "client_ref": "r".repeat(256)}),
            Err((422, "client_ref_too_long", Some("client_ref"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "media_urls": ["file:///etc/passwd"]}),
            Err((422, "invalid_media_url", Some("media_urls"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "metadata": {"k": "v".repeat(9000)}}),
            Err((422, "metadata_too_large", Some("metadata"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x\u{0}y"}),
            Err((422, "invalid_body", Some("body"))),
        );
        check(
            json!({"to": "+14155550123", "body": "x", "client_ref": "crm-1\u{0}"}),
            Err((422, "invalid_client_ref", Some("client_ref"))),
        );
    }

    #[test]
    fn accepted_timezones() {
        for tz in [
            "America/New_York",
            "Europe/Berlin",
            "UTC",
            "UTC-8",
            "UTC+5:30",
            "GMT+1",
        ] {
            check(
                json!({"to": "+14155550123", "body": "x", "timezone": tz}),
                Ok(()),
            );
        }
        for tz in ["UTC+99", "UTC+", "UTC*3", "Nowhere"] {
            check(
                json!({"to": "+14155550123", "body": "x", "timezone": tz}),
                Err((422, "invalid_timezone", Some("timezone"))),
            );
        }
    }

    #[test]
    fn the_header_key_wins_over_the_field() {
        let input = SubmitInput::from_json(
            &json!({"to":"+14155550123","body":"x","idempotency_key":"field"}),
        )
        .unwrap();
        assert_eq!(
            NewMessage::parse(input.clone(), Some("header"), NOW)
                .unwrap()
                .idempotency_key
                .as_deref(),
            Some("header")
        );
        assert_eq!(
            NewMessage::parse(input, None, NOW)
                .unwrap()
                .idempotency_key
                .as_deref(),
            Some("field")
        );
    }

    #[test]
    fn a_past_send_at_means_now() {
        let input = SubmitInput::from_json(
            &json!({"to":"+14155550123","body":"x","send_at":"2000-01-01T00:00:00Z"}),
        )
        .unwrap();
        assert_eq!(NewMessage::parse(input, None, NOW).unwrap().send_at, None);
    }
}
