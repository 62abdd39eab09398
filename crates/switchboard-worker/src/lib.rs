//! Background work: the dispatcher and the simulator's receipt pump.
//!
//! The dispatcher's cycle, in order: `Store::claim_due` (release scheduled,
//! expire stale, lease due messages) → `Provider::send` with the message id as
//! idempotency key, under a timeout → classify → `RetryPolicy::decide` →
//! `Store::complete_attempts` (results of concurrent sends are written
//! together, see `batch.rs`). A claim is a lease: if this process dies, the
//! message is claimed again after the lease (at once on SQLite, which
//! reclaims at start).
//!
//! Tests drive the same steps without timers through `run_until_idle`, with
//! a `ManualClock`.

mod batch;
mod dispatcher;
mod http1;
pub mod webhooks;

pub use dispatcher::{Worker, WorkerConfig};
pub use webhooks::{WebhookConfig, WebhookDeliverer};
