//! Message providers behind one trait.
//!
//! A provider takes one message and answers with its own id for it or a
//! classified error; everything about retries and state lives in the
//! dispatcher and the core. `sim` is the built-in deterministic simulator;
//! `twilio` speaks Twilio's Messages API and reads its callbacks.

pub mod callback;
pub mod sim;
pub mod twilio;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_core::{ErrorClass, ProviderId};

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
}

/// The providers of this instance, by id.
#[derive(Debug, Default, Clone)]
pub struct Providers {
    by_id: HashMap<ProviderId, Arc<dyn Provider>>,
}

impl Providers {
    /// Registers a provider.
    pub fn insert(&mut self, id: ProviderId, provider: Arc<dyn Provider>) {
        self.by_id.insert(id, provider);
    }

    /// The provider with this id.
    pub fn get(&self, id: &ProviderId) -> Option<&Arc<dyn Provider>> {
        self.by_id.get(id)
    }
}
