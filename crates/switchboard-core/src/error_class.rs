//! How a failed send attempt is classified, which decides what happens next.

use serde::{Deserialize, Serialize};

/// The class of a failed provider call (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Connection refused, timeout, 5xx: the same request may succeed later.
    Transport,
    /// The provider asked us to slow down (429, `ESME_RTHROTTLED`).
    Throttled,
    /// Retrying cannot help: invalid number, unknown sender, most 4xx.
    Permanent,
    /// The recipient has opted out: the message is suppressed, never sent.
    Consent,
}

impl ErrorClass {
    /// Whether an attempt failing with this class may be retried.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transport | ErrorClass::Throttled)
    }

    /// The stable wire name of the class.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transport => "transport",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Consent => "consent",
        }
    }

    /// Parses the wire name back; `None` for an unknown name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "transport" => ErrorClass::Transport,
            "throttled" => ErrorClass::Throttled,
            "permanent" => ErrorClass::Permanent,
            "consent" => ErrorClass::Consent,
            _ => return None,
        })
    }
}
