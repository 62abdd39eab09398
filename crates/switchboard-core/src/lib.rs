//! Switchboard's domain: the values a message is made of and the pure decisions
//! taken about it.
//!
//! *Invariant*: this crate does no IO (no tokio, no database, no HTTP). Every
//! decision that matters for correctness — which transition is allowed, when
//! to retry, how many segments a body costs — lives here, where it can be unit
//! and property tested without a runtime. The `no_io_dependencies` test
//! enforces this boundary.

pub mod clock;
pub mod error_class;
pub mod ids;
pub mod json_text;
pub mod keywords;
pub mod message;
pub mod netpolicy;
pub mod phone;
pub mod quiet_hours;
pub mod retry;
pub mod secret;
pub mod segments;
pub mod state;
pub mod telemetry;
pub mod template;
pub mod time;
pub mod webhook_endpoint;
pub mod webhook_signature;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error_class::ErrorClass;
pub use ids::{ApiKeyId, AttemptId, EventId, MessageId, ProviderId, SenderId, WorkspaceId};
pub use message::{Category, Channel, NewMessage, Priority, SubmitInput, ValidationError};
pub use phone::PhoneNumber;
pub use retry::{RetryDecision, RetryPolicy};
pub use segments::{Encoding, SegmentInfo};
pub use state::{EventType, ReceiptKind, Status, Transition, TransitionError, Trigger};
pub use time::Timestamp;

#[cfg(test)]
mod boundary {
    /// *Boundary*: the core depends on no IO crate. Checked against the
    /// manifest so that adding one fails here, not in review.
    #[test]
    fn no_io_dependencies() {
        let manifest = include_str!("../Cargo.toml");
        let deps = manifest.split("[dependencies]").nth(1).unwrap_or("");
        let deps = deps.split("\n[").next().unwrap_or("");
        for forbidden in [
            "tokio", "sqlx", "rusqlite", "axum", "reqwest", "hyper", "postgres",
        ] {
            assert!(
                !deps.lines().any(|l| l.trim_start().starts_with(forbidden)),
                "switchboard-core must not depend on {forbidden}"
            );
        }
    }
}
