//! What providers send back: receipts and inbound messages, arriving as
//! HTTP callbacks on `POST /callbacks/{provider_id}`.
//!
//! A provider's `CallbackHandler` authenticates a callback (its own
//! signature scheme) and reads it into `CallbackItem`s; it does no IO. The
//! HTTP edge stores each item as it arrived and answers 2xx; applying them
//! happens later, in the receipt inbox and the inbound path.

use switchboard_core::{ReceiptKind, Timestamp};

/// A callback as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct CallbackRequest<'a> {
    /// The URL the provider called, as it would have computed it (scheme,
    /// host, path and query), for schemes that sign it.
    pub url: &'a str,
    /// Headers, names in lower case.
    pub headers: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
    /// When it arrived.
    pub now: Timestamp,
}

impl CallbackRequest<'_> {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One fact a callback reports.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackItem {
    /// What happened to a message the provider accepted.
    Receipt {
        /// The provider's id for the message.
        provider_message_id: String,
        /// What it says.
        kind: ReceiptKind,
        /// For a failure, why, as one of our error codes (the provider's
        /// own code mapped), if the provider said.
        error_code: Option<String>,
        /// This item as the provider sent it, kept for the record.
        raw: String,
    },
    /// A message from a recipient.
    Inbound(InboundItem),
}

/// A message a recipient sent to one of our addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundItem {
    /// The sender's number, E.164.
    pub from: String,
    /// Our address it was sent to (routes it to a workspace's sender).
    pub to: String,
    /// Channel name.
    pub channel: String,
    /// Text.
    pub text: String,
    /// Media URLs.
    pub media_urls: Vec<String>,
    /// The provider's id for it (deduplicates repeated callbacks).
    pub provider_message_id: Option<String>,
}

/// Why a callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// Missing, wrong or stale signature: answered 403.
    #[error("{0}")]
    Forbidden(String),
    /// Authenticated but unreadable: answered 400.
    #[error("{0}")]
    Malformed(String),
}

/// A provider's callback reader.
pub trait CallbackHandler: Send + Sync + std::fmt::Debug {
    /// Authenticates `req` and reads what it reports.
    fn open(&self, req: &CallbackRequest<'_>) -> Result<Vec<CallbackItem>, CallbackError>;

    /// Answers a subscription check (`GET` on the callback URL, e.g.
    /// WhatsApp's `hub.challenge`) given its query parameters: the body to
    /// answer with 200. `None` if this provider makes no such check.
    fn handshake(&self, query: &[(String, String)]) -> Option<Result<String, CallbackError>> {
        let _ = query;
        None
    }
}

/// What a provider connected by a socket (SMPP) received: delivered to the
/// gateway through a `Sink` instead of an HTTP callback. `done` answers
/// whether everything was stored durably; until then the provider is not
/// acknowledged (so a failure makes it deliver again).
#[derive(Debug)]
pub struct Delivered {
    /// The provider it came from.
    pub provider_id: String,
    /// What it reported.
    pub items: Vec<CallbackItem>,
    /// `true` once stored.
    pub done: tokio::sync::oneshot::Sender<bool>,
}

/// Where socket-connected providers hand over what they receive.
pub type Sink = tokio::sync::mpsc::Sender<Delivered>;
