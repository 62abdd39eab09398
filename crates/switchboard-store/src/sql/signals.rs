//! Wake-ups for the workers when the writer commits work for them.
//!
//! The webhook deliverer and the receipt pump claim their work with write
//! jobs. Polling the writer for it made an idle node run about thirty
//! empty transactions a second; instead, code on the writer thread notes
//! what a batch created (`note_deliveries`, `note_receipts`), and after
//! the batch the writer wakes whoever waits for it (`wake`). The workers
//! still look again after their idle poll (a second by default): work
//! created by another node (PostgreSQL), retries falling due, an endpoint
//! enabled again.

use std::cell::Cell;

use tokio::sync::Notify;

/// What a node's workers wait on while idle (`Store::signals`).
#[derive(Debug, Default)]
pub struct WorkSignals {
    /// Webhook deliveries were committed (a fan-out or a redelivery).
    pub deliveries: Notify,
    /// Provider receipts were stored in the receipt inbox.
    pub receipts: Notify,
}

const DELIVERIES: u8 = 1;
const RECEIPTS: u8 = 2;

thread_local! {
    // What the writer thread's current batch created.
    static NOTED: Cell<u8> = const { Cell::new(0) };
}

/// Notes that the current batch created webhook deliveries.
pub(crate) fn note_deliveries() {
    NOTED.set(NOTED.get() | DELIVERIES);
}

/// Notes that the current batch stored provider receipts.
pub(crate) fn note_receipts() {
    NOTED.set(NOTED.get() | RECEIPTS);
}

/// After a batch: wakes the waiters of what it noted, and forgets it. (A
/// batch that rolled back may wake a worker for nothing, which then finds
/// nothing and waits again.)
pub(crate) fn wake(signals: &WorkSignals) {
    let noted = NOTED.replace(0);
    if noted & DELIVERIES != 0 {
        signals.deliveries.notify_one();
    }
    if noted & RECEIPTS != 0 {
        signals.receipts.notify_one();
    }
}
