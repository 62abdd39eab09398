//! Message providers behind one trait.
//!
//! A provider takes one message and answers with its own id for it or a
//! classified error; everything about retries and state lives in the
//! dispatcher and the core. `sim` is the built-in deterministic simulator;
//! `twilio` speaks Twilio's Messages API and reads its callbacks.

pub mod callback;
pub mod registry;
pub mod sim;
pub mod smpp;
pub mod twilio;
pub mod whatsapp;

pub use registry::{Connector, ProviderSpec, Providers};
pub use switchboard_core::message::ChannelTemplate;

use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::ErrorClass;

/// One message to hand to a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    /// Stable across retries of the same message: providers that support
    /// idempotency use it so that a retry after a crash is not a second send.
    pub idempotency_key: String,
    /// Recipient, E.164.
    pub to: String,
    /// Sender address.
    pub from: String,
    /// Channel name.
    pub channel: String,
    /// Text.
    pub body: String,
    /// Media URLs.
    pub media_urls: Vec<String>,
    /// Send this provider template instead of free text.
    pub template: Option<ChannelTemplate>,
}

/// The provider accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAccepted {
    /// The provider's id for the message; receipts refer to it.
    pub provider_message_id: String,
}

/// A failed send, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class:?} {code}: {message}")]
pub struct ProviderError {
    /// What kind of failure.
    pub class: ErrorClass,
    /// The provider's code (or ours), e.g. `invalid_number`.
    pub code: String,
    /// Explanation.
    pub message: String,
    /// The provider's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    /// An error of `class` with a code and message.
    pub fn new(class: ErrorClass, code: &str, message: impl Into<String>) -> Self {
        ProviderError {
            class,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A connection to something that delivers messages.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Sends one message.
    async fn send(&self, req: &SendRequest) -> Result<SendAccepted, ProviderError>;

    /// The state of the provider's connection, for providers that keep one
    /// (SMPP: `bound`, `connecting`, or why the link is down).
    fn link_state(&self) -> Option<String> {
        None
    }
}

/// A provider API's answer, read whole.
pub(crate) struct Answer {
    pub status: reqwest::StatusCode,
    pub retry_after: Option<Duration>,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The error a failed answer means: 429 is a throttle and 5xx a
    /// transport failure whatever the body says; otherwise the provider's
    /// own error code (`coded`, already classified) decides; otherwise
    /// 401/403 are refused credentials and the rest a refusal. A
    /// `Retry-After` is kept for retryable errors.
    pub(crate) fn error(
        &self,
        who: &str,
        coded: Option<ProviderError>,
        detail: &str,
    ) -> ProviderError {
        let status = self.status;
        let mut err = match (status.as_u16(), coded) {
            (429, _) => ProviderError::new(
                ErrorClass::Throttled,
                "rate_limited",
                format!("{who} answered {status}: {detail}"),
            ),
            (s, _) if s >= 500 => ProviderError::new(
                ErrorClass::Transport,
                "upstream_unavailable",
                format!("{who} answered {status}"),
            ),
            (_, Some(coded)) => coded,
            (401 | 403, None) => ProviderError::new(
                ErrorClass::Permanent,
                "provider_auth_failed",
                format!("{who} refused the credentials ({status})"),
            ),
            (_, None) => ProviderError::new(
                ErrorClass::Permanent,
                "provider_rejected",
                format!("{who} answered {status}: {detail}"),
            ),
        };
        err.retry_after = self.retry_after.filter(|_| err.class.is_retryable());
        err
    }
}

/// Sends `request` and reads the answer; a connection failure or a body
/// that cannot be read is a transport error naming `who`.
pub(crate) async fn call(
    request: reqwest::RequestBuilder,
    who: &str,
) -> Result<Answer, ProviderError> {
    let unavailable =
        |what: String| ProviderError::new(ErrorClass::Transport, "upstream_unavailable", what);
    let response = request
        .send()
        .await
        .map_err(|e| unavailable(format!("{who} could not be reached: {e}")))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response
        .bytes()
        .await
        .map_err(|e| unavailable(format!("reading {who}'s answer failed: {e}")))?;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// Compares secrets without leaking where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
