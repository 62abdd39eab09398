//! A webhook endpoint's settings, read from JSON and checked once
//! (`EndpointSettings::from_json`), for both creation and partial updates.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::message::ValidationError;

/// Every event type an endpoint can subscribe to.
pub const EVENT_TYPES: [&str; 17] = [
    "message.scheduled",
    "message.queued",
    "message.sending",
    "message.retrying",
    "message.sent",
    "message.delivered",
    "message.read",
    "message.undelivered",
    "message.failed",
    "message.suppressed",
    "message.expired",
    "message.canceled",
    "message.received",
    "contact.opted_out",
    "contact.opted_in",
    "webhook.test",
    "endpoint.disabled",
];

/// The default retry schedule after a failed attempt, in seconds:
/// 1 m, 5 m, 30 m, 2 h, 24 h.
pub const DEFAULT_RETRY_SCHEDULE: [u32; 5] = [60, 300, 1800, 7200, 86_400];
/// Default per-attempt timeout.
pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
/// Default consecutive failures before the endpoint is disabled.
pub const DEFAULT_DISABLE_AFTER: u32 = 50;

/// Headers a customer may not set: they belong to the signature or to HTTP.
const RESERVED_HEADERS: [&str; 7] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
];

/// Settings of an endpoint; on update, `None` means "leave as is".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointSettings {
    /// Destination URL (http or https).
    pub url: Option<String>,
    /// `POST`, `PUT` or `PATCH`.
    pub method: Option<String>,
    /// `json` or `form`.
    pub content_type: Option<String>,
    /// Subscribed event types; `Some(None)` means every event.
    pub event_types: Option<Option<Vec<String>>>,
    /// Extra headers sent with every delivery.
    pub headers: Option<BTreeMap<String, String>>,
    /// Free text.
    pub description: Option<Option<String>>,
    /// Whether deliveries are made.
    pub enabled: Option<bool>,
    /// `standard` or `template`.
    pub format: Option<String>,
    /// The payload template (for `format: template`).
    pub template: Option<Option<String>>,
    /// Seconds to wait before each retry, 0 to 10 entries.
    pub retry_schedule: Option<Vec<u32>>,
    /// Per-attempt timeout, 5 000 to 60 000 ms.
    pub timeout_ms: Option<u32>,
    /// Consecutive failures before disabling, 1 to 10 000.
    pub disable_after: Option<u32>,
}

fn err(
    status: u16,
    code: &'static str,
    field: &str,
    message: impl Into<String>,
) -> ValidationError {
    ValidationError {
        status,
        code,
        message: message.into(),
        field: Some(field.to_owned()),
    }
}

/// A string field. None holds a NUL character, which PostgreSQL's text
/// cannot store (SQLite's can).
fn string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, ValidationError> {
    match obj.get(field) {
        None => Ok(None),
        Some(Value::String(s)) if s.contains('\0') => Err(err(
            422,
            "invalid_value",
            field,
            format!("`{field}` must not contain NUL characters"),
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(err(
            400,
            "invalid_type",
            field,
            format!("`{field}` must be a string"),
        )),
    }
}

fn nullable_string(
    obj: &Map<String, Value>,
    field: &str,
) -> Result<Option<Option<String>>, ValidationError> {
    match obj.get(field) {
        Some(Value::Null) => Ok(Some(None)),
        _ => Ok(string(obj, field)?.map(Some)),
    }
}

fn uint(obj: &Map<String, Value>, field: &str) -> Result<Option<u32>, ValidationError> {
    match obj.get(field) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| {
                err(
                    422,
                    "invalid_value",
                    field,
                    format!("`{field}` must be a non-negative integer"),
                )
            }),
        Some(_) => Err(err(
            400,
            "invalid_type",
            field,
            format!("`{field}` must be an integer"),
        )),
    }
}

/// Checks a destination URL's form (its addresses are checked separately).
pub fn check_url(raw: &str) -> Result<url::Url, ValidationError> {
    let bad = |m: &str| err(422, "invalid_url", "url", m.to_owned());
    if raw.len() > 2048 {
        return Err(bad("the URL is longer than 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the URL must be http or https"));
    }
    if url.host().is_none() {
        return Err(bad("the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("put credentials in `headers`, not in the URL"));
    }
    if url.fragment().is_some() {
        return Err(bad("the URL must not have a #fragment"));
    }
    Ok(url)
}

impl EndpointSettings {
    /// Reads settings from a JSON object. `creating` requires `url`.
    pub fn from_json(value: &Value, creating: bool) -> Result<Self, ValidationError> {
        let Value::Object(obj) = value else {
            return Err(ValidationError {
                status: 400,
                code: "invalid_type",
                message: "the request body must be a JSON object".into(),
                field: None,
            });
        };
        const KNOWN: [&str; 12] = [
            "url",
            "method",
            "content_type",
            "event_types",
            "headers",
            "description",
            "enabled",
            "format",
            "template",
            "retry_schedule",
            "timeout_ms",
            "disable_after",
        ];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(err(400, "unknown_field", k, format!("unknown field `{k}`")));
        }
        let mut s = EndpointSettings {
            url: string(obj, "url")?,
            ..Default::default()
        };
        match &s.url {
            Some(u) => {
                check_url(u)?;
            }
            None if creating => return Err(err(422, "missing_field", "url", "`url` is required")),
            None => {}
        }
        s.method = string(obj, "method")?.map(|m| m.to_ascii_uppercase());
        if let Some(m) = &s.method
            && !matches!(m.as_str(), "POST" | "PUT" | "PATCH")
        {
            return Err(err(
                422,
                "invalid_method",
                "method",
                "`method` must be POST, PUT or PATCH",
            ));
        }
        s.content_type = string(obj, "content_type")?;
        if let Some(c) = &s.content_type
            && !matches!(c.as_str(), "json" | "form")
        {
            return Err(err(
                422,
                "invalid_content_type",
                "content_type",
                "`content_type` must be `json` or `form`",
            ));
        }
        s.event_types = match obj.get("event_types") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::Array(items)) => {
                let mut types = Vec::new();
                for item in items {
                    let t = item.as_str().ok_or_else(|| {
                        err(
                            400,
                            "invalid_type",
                            "event_types",
                            "`event_types` must be an array of strings",
                        )
                    })?;
                    if !EVENT_TYPES.contains(&t) {
                        return Err(err(
                            422,
                            "unknown_event_type",
                            "event_types",
                            format!("unknown event type `{t}`"),
                        ));
                    }
                    if !types.iter().any(|x: &String| x == t) {
                        types.push(t.to_owned());
                    }
                }
                if types.is_empty() {
                    return Err(err(
                        422,
                        "invalid_value",
                        "event_types",
                        "`event_types` must name at least one type, or be null for every event",
                    ));
                }
                Some(Some(types))
            }
            Some(_) => {
                return Err(err(
                    400,
                    "invalid_type",
                    "event_types",
                    "`event_types` must be an array of strings",
                ));
            }
        };
        s.headers = match obj.get("headers") {
            None => None,
            Some(Value::Object(h)) => {
                if h.len() > 20 {
                    return Err(err(
                        422,
                        "too_many_headers",
                        "headers",
                        "at most 20 custom headers",
                    ));
                }
                let mut out = BTreeMap::new();
                for (name, v) in h {
                    let v = v.as_str().ok_or_else(|| {
                        err(
                            400,
                            "invalid_type",
                            "headers",
                            "header values must be strings",
                        )
                    })?;
                    let lower = name.to_ascii_lowercase();
                    let token = !name.is_empty()
                        && name.len() <= 64
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                    if !token || RESERVED_HEADERS.contains(&lower.as_str()) {
                        return Err(err(
                            422,
                            "invalid_header",
                            "headers",
                            format!("`{name}` cannot be set as a custom header"),
                        ));
                    }
                    if v.len() > 1024 || v.bytes().any(|b| b < 0x20 || b == 0x7f) {
                        return Err(err(
                            422,
                            "invalid_header",
                            "headers",
                            format!(
                                "the value of `{name}` must be printable and at most 1024 bytes"
                            ),
                        ));
                    }
                    out.insert(lower, v.to_owned());
                }
                Some(out)
            }
            Some(_) => {
                return Err(err(
                    400,
                    "invalid_type",
                    "headers",
                    "`headers` must be an object of strings",
                ));
            }
        };
        s.description = nullable_string(obj, "description")?;
        if let Some(Some(d)) = &s.description
            && d.chars().count() > 500
        {
            return Err(err(
                422,
                "invalid_value",
                "description",
                "`description` is limited to 500 characters",
            ));
        }
        s.enabled = match obj.get("enabled") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err(err(
                    400,
                    "invalid_type",
                    "enabled",
                    "`enabled` must be true or false",
                ));
            }
        };
        s.format = string(obj, "format")?;
        if let Some(f) = &s.format
            && !matches!(f.as_str(), "standard" | "template")
        {
            return Err(err(
                422,
                "invalid_format",
                "format",
                "`format` must be `standard` or `template`",
            ));
        }
        s.template = nullable_string(obj, "template")?;
        if let Some(Some(t)) = &s.template
            && t.len() > 16 * 1024
        {
            return Err(err(
                422,
                "invalid_template",
                "template",
                "`template` is limited to 16 KiB",
            ));
        }
        s.retry_schedule = match obj.get("retry_schedule") {
            None => None,
            Some(Value::Array(items)) => {
                if items.len() > 10 {
                    return Err(err(
                        422,
                        "invalid_retry_schedule",
                        "retry_schedule",
                        "at most 10 retries",
                    ));
                }
                let secs = items
                    .iter()
                    .map(|v| {
                        v.as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .filter(|n| (1..=172_800).contains(n))
                    })
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(|| {
                        err(
                            422,
                            "invalid_retry_schedule",
                            "retry_schedule",
                            "each retry delay is a whole number of seconds from 1 to 172800",
                        )
                    })?;
                Some(secs)
            }
            Some(_) => {
                return Err(err(
                    400,
                    "invalid_type",
                    "retry_schedule",
                    "`retry_schedule` must be an array of seconds",
                ));
            }
        };
        s.timeout_ms = uint(obj, "timeout_ms")?;
        if let Some(t) = s.timeout_ms
            && !(5_000..=60_000).contains(&t)
        {
            return Err(err(
                422,
                "invalid_timeout",
                "timeout_ms",
                "`timeout_ms` must be from 5000 to 60000",
            ));
        }
        s.disable_after = uint(obj, "disable_after")?;
        if let Some(n) = s.disable_after
            && !(1..=10_000).contains(&n)
        {
            return Err(err(
                422,
                "invalid_value",
                "disable_after",
                "`disable_after` must be from 1 to 10000",
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value, expect: Result<(), (u16, &str, &str)>) {
        let got = EndpointSettings::from_json(&v, true);
        match (got, expect) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err((status, code, field))) => assert_eq!(
                (e.status, e.code, e.field.as_deref()),
                (status, code, Some(field)),
                "{v}"
            ),
            (got, want) => panic!("{v}: {got:?} vs {want:?}"),
        }
    }

    #[test]
    fn a_full_endpoint_is_valid() {
        check(
            json!({"url": "https://crm.example.com/hooks", "method": "put", "content_type": "form", "event_types": ["message.delivered"],
                   "headers": {"X-Token": "abc"}, "description": "CRM", "enabled": true, "format": "standard",
                   "retry_schedule": [1, 2], "timeout_ms": 5000, "disable_after": 3}),
            Ok(()),
        );
    }

    #[test]
    fn bad_settings_are_refused_with_their_field() {
        check(json!({}), Err((422, "missing_field", "url")));
        check(json!({"url": "ftp://x"}), Err((422, "invalid_url", "url")));
        check(
            json!({"url": "not a url"}),
            Err((422, "invalid_url", "url")),
        );
        check(
            json!({"url": "https://user:pw@x.com"}),
            Err((422, "invalid_url", "url")),
        );
        check(json!({"url": 5}), Err((400, "invalid_type", "url")));
        check(
            json!({"url": "https://x.com", "method": "GET"}),
            Err((422, "invalid_method", "method")),
        );
        check(
            json!({"url": "https://x.com", "event_types": ["message.lost"]}),
            Err((422, "unknown_event_type", "event_types")),
        );
        check(
            json!({"url": "https://x.com", "event_types": []}),
            Err((422, "invalid_value", "event_types")),
        );
        check(
            json!({"url": "https://x.com", "headers": {"webhook-signature": "x"}}),
            Err((422, "invalid_header", "headers")),
        );
        check(
            json!({"url": "https://x.com", "headers": {"X-A": "a\r\nInjected: 1"}}),
            Err((422, "invalid_header", "headers")),
        );
        check(
            json!({"url": "https://x.com", "retry_schedule": [1,1,1,1,1,1,1,1,1,1,1]}),
            Err((422, "invalid_retry_schedule", "retry_schedule")),
        );
        check(
            json!({"url": "https://x.com", "retry_schedule": [0]}),
            Err((422, "invalid_retry_schedule", "retry_schedule")),
        );
        check(
            json!({"url": "https://x.com", "timeout_ms": 1000}),
            Err((422, "invalid_timeout", "timeout_ms")),
        );
        check(
            json!({"url": "https://x.com", "disable_after": 0}),
            Err((422, "invalid_value", "disable_after")),
        );
        check(
            json!({"url": "https://x.com", "format": "xml"}),
            Err((422, "invalid_format", "format")),
        );
        check(
            json!({"url": "https://x.com", "secret": "x"}),
            Err((400, "unknown_field", "secret")),
        );
        for field in ["description", "template"] {
            check(
                json!({"url": "https://x.com", field: "a\u{0}b"}),
                Err((422, "invalid_value", field)),
            );
        }
    }
}
