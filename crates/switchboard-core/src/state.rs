//! The message lifecycle (SPEC §2) as one pure function.
//!
//! `transition(status, trigger)` is the only place that decides whether a
//! message may change state. Stores call it inside the transaction that
//! writes the new state, and write exactly the one event it returns.
//!
//! *Invariant*: progress never decreases. `sending → queued` (a retry after a
//! transient failure) is the one edge between two states of equal progress;
//! terminal states accept nothing.

use serde::{Deserialize, Serialize};

/// Where a message is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for `send_at` (or, later, quiet hours).
    Scheduled,
    /// Due to be sent (or waiting for its next retry).
    Queued,
    /// Claimed by a dispatcher; a provider request is in flight.
    Sending,
    /// Accepted by the provider; has a provider message id.
    Sent,
    /// The provider reports the handset received it.
    Delivered,
    /// The recipient read it (channels with read receipts).
    Read,
    /// The provider or carrier says it did not arrive.
    Undelivered,
    /// Switchboard gave up: permanent error, or attempts/TTL exhausted.
    Failed,
    /// Never sent because of consent.
    Suppressed,
    /// Its TTL passed before it could be sent.
    Expired,
    /// Canceled by the API before it was sent.
    Canceled,
}

/// All statuses, for tests and listings.
pub const ALL_STATUSES: [Status; 11] = [
    Status::Scheduled,
    Status::Queued,
    Status::Sending,
    Status::Sent,
    Status::Delivered,
    Status::Read,
    Status::Undelivered,
    Status::Failed,
    Status::Suppressed,
    Status::Expired,
    Status::Canceled,
];

impl Status {
    /// The wire name (`queued`, `sent`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Undelivered => "undelivered",
            Status::Failed => "failed",
            Status::Suppressed => "suppressed",
            Status::Expired => "expired",
            Status::Canceled => "canceled",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        ALL_STATUSES.into_iter().find(|st| st.as_str() == s)
    }

    /// Terminal states accept no further transition.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Read
                | Status::Undelivered
                | Status::Failed
                | Status::Suppressed
                | Status::Expired
                | Status::Canceled
        )
    }

    /// How far along the lifecycle a state is; it never decreases.
    /// `scheduled`, `queued` and `sending` are one stage (waiting to reach a
    /// provider): a queued marketing message that comes up inside quiet
    /// hours goes back to `scheduled`.
    pub fn progress(self) -> u8 {
        match self {
            Status::Scheduled | Status::Queued | Status::Sending => 1,
            Status::Sent => 2,
            Status::Delivered => 3,
            Status::Read => 4,
            Status::Undelivered
            | Status::Failed
            | Status::Suppressed
            | Status::Expired
            | Status::Canceled => 5,
        }
    }
}

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// `send_at` (or the end of quiet hours) arrived.
    Release,
    /// A dispatcher claimed it for sending.
    Claim,
    /// It came up inside the recipient's quiet hours: held until they end.
    Hold,
    /// The provider accepted it.
    ProviderAccepted,
    /// A transient failure; another attempt is scheduled.
    RetryScheduled,
    /// A receipt said it was delivered.
    ReceiptDelivered,
    /// A receipt said it was read.
    ReceiptRead,
    /// A receipt said it did not arrive.
    ReceiptUndelivered,
    /// Switchboard gave up on it.
    Fail,
    /// Consent forbids sending it.
    Suppress,
    /// Its TTL passed before it was sent.
    Expire,
    /// The API canceled it.
    Cancel,
}

/// The type of the event a transition produces (`message.sent`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// Accepted and scheduled for later.
    #[serde(rename = "message.scheduled")]
    Scheduled,
    /// Accepted and queued (or released from schedule).
    #[serde(rename = "message.queued")]
    Queued,
    /// Claimed; a provider request is in flight.
    #[serde(rename = "message.sending")]
    Sending,
    /// A transient failure; the message waits for its next attempt.
    #[serde(rename = "message.retrying")]
    Retrying,
    /// Accepted by the provider.
    #[serde(rename = "message.sent")]
    Sent,
    /// Delivered to the handset.
    #[serde(rename = "message.delivered")]
    Delivered,
    /// Read by the recipient.
    #[serde(rename = "message.read")]
    Read,
    /// Did not arrive.
    #[serde(rename = "message.undelivered")]
    Undelivered,
    /// Gave up.
    #[serde(rename = "message.failed")]
    Failed,
    /// Never sent because of consent.
    #[serde(rename = "message.suppressed")]
    Suppressed,
    /// TTL passed before sending.
    #[serde(rename = "message.expired")]
    Expired,
    /// Canceled by the API.
    #[serde(rename = "message.canceled")]
    Canceled,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Scheduled => "message.scheduled",
            EventType::Queued => "message.queued",
            EventType::Sending => "message.sending",
            EventType::Retrying => "message.retrying",
            EventType::Sent => "message.sent",
            EventType::Delivered => "message.delivered",
            EventType::Read => "message.read",
            EventType::Undelivered => "message.undelivered",
            EventType::Failed => "message.failed",
            EventType::Suppressed => "message.suppressed",
            EventType::Expired => "message.expired",
            EventType::Canceled => "message.canceled",
        }
    }

    /// The event recorded when a message is first stored in `status`.
    pub fn on_accept(status: Status) -> Self {
        if status == Status::Scheduled {
            EventType::Scheduled
        } else {
            EventType::Queued
        }
    }
}

/// An allowed change of state and the one event it yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: Status,
    /// The state after.
    pub to: Status,
    /// The event to record.
    pub event: EventType,
}

/// Why a trigger did not change the state. Callers record it and move on: a
/// late or duplicate receipt is normal, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{trigger:?} does not apply to a message that is {from:?}")]
pub struct TransitionError {
    /// The state the message is in.
    pub from: Status,
    /// The trigger that was refused.
    pub trigger: Trigger,
}

/// Decides the transition for `trigger` in state `from`.
pub fn transition(from: Status, trigger: Trigger) -> Result<Transition, TransitionError> {
    use Status as S;
    use Trigger as T;
    let (to, event) = match (from, trigger) {
        (S::Scheduled, T::Release) => (S::Queued, EventType::Queued),
        (S::Queued, T::Claim) => (S::Sending, EventType::Sending),
        (S::Queued, T::Hold) => (S::Scheduled, EventType::Scheduled),
        (S::Sending, T::ProviderAccepted) => (S::Sent, EventType::Sent),
        (S::Sending, T::RetryScheduled) => (S::Queued, EventType::Retrying),
        // A receipt may overtake the `sent` bookkeeping; it still only moves forward.
        (S::Sending | S::Sent, T::ReceiptDelivered) => (S::Delivered, EventType::Delivered),
        (S::Sending | S::Sent | S::Delivered, T::ReceiptRead) => (S::Read, EventType::Read),
        (S::Sending | S::Sent, T::ReceiptUndelivered) => (S::Undelivered, EventType::Undelivered),
        (S::Scheduled | S::Queued | S::Sending, T::Fail) => (S::Failed, EventType::Failed),
        (S::Scheduled | S::Queued | S::Sending, T::Suppress) => {
            (S::Suppressed, EventType::Suppressed)
        }
        (S::Scheduled | S::Queued | S::Sending, T::Expire) => (S::Expired, EventType::Expired),
        (S::Scheduled | S::Queued, T::Cancel) => (S::Canceled, EventType::Canceled),
        _ => return Err(TransitionError { from, trigger }),
    };
    Ok(Transition { from, to, event })
}

/// What a provider receipt says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    /// Delivered to the handset.
    Delivered,
    /// Read.
    Read,
    /// Not delivered.
    Undelivered,
}

impl ReceiptKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Delivered => "delivered",
            ReceiptKind::Read => "read",
            ReceiptKind::Undelivered => "undelivered",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "delivered" => Some(ReceiptKind::Delivered),
            "read" => Some(ReceiptKind::Read),
            "undelivered" => Some(ReceiptKind::Undelivered),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_TRIGGERS: [Trigger; 12] = [
        Trigger::Release,
        Trigger::Claim,
        Trigger::Hold,
        Trigger::ProviderAccepted,
        Trigger::RetryScheduled,
        Trigger::ReceiptDelivered,
        Trigger::ReceiptRead,
        Trigger::ReceiptUndelivered,
        Trigger::Fail,
        Trigger::Suppress,
        Trigger::Expire,
        Trigger::Cancel,
    ];

    fn any_trigger() -> impl Strategy<Value = Trigger> {
        proptest::sample::select(ALL_TRIGGERS.to_vec())
    }

    fn any_status() -> impl Strategy<Value = Status> {
        proptest::sample::select(ALL_STATUSES.to_vec())
    }

    proptest! {
        #[test]
        fn progress_never_decreases(start in any_status(), triggers in proptest::collection::vec(any_trigger(), 0..40)) {
            let mut state = start;
            for t in triggers {
                if let Ok(tr) = transition(state, t) {
                    prop_assert!(tr.to.progress() >= tr.from.progress(), "{:?}", tr);
                    prop_assert_eq!(tr.from, state);
                    state = tr.to;
                }
            }
        }

        #[test]
        fn terminal_states_accept_nothing(start in any_status(), t in any_trigger()) {
            if start.is_terminal() {
                prop_assert!(transition(start, t).is_err());
            }
        }

        #[test]
        fn each_applied_trigger_yields_exactly_one_event_and_a_change(start in any_status(), triggers in proptest::collection::vec(any_trigger(), 0..40)) {
            // Replaying a random history: the number of events recorded equals
            // the number of accepted transitions, and each changes the state.
            let mut state = start;
            let mut events = Vec::new();
            let mut applied = 0;
            for t in triggers {
                if let Ok(tr) = transition(state, t) {
                    prop_assert_ne!(tr.from, tr.to);
                    events.push(tr.event);
                    applied += 1;
                    state = tr.to;
                }
            }
            prop_assert_eq!(events.len(), applied);
        }

        #[test]
        fn duplicate_receipts_are_refused_after_the_first(t in proptest::sample::select(vec![Trigger::ReceiptDelivered, Trigger::ReceiptRead, Trigger::ReceiptUndelivered])) {
            let after = transition(Status::Sent, t).unwrap().to;
            prop_assert!(transition(after, t).is_err());
        }
    }

    #[test]
    fn the_happy_path_is_queued_sending_sent_delivered_read() {
        let mut s = Status::Queued;
        let mut events = vec![];
        for t in [
            Trigger::Claim,
            Trigger::ProviderAccepted,
            Trigger::ReceiptDelivered,
            Trigger::ReceiptRead,
        ] {
            let tr = transition(s, t).unwrap();
            events.push(tr.event.as_str());
            s = tr.to;
        }
        assert_eq!(
            events,
            [
                "message.sending",
                "message.sent",
                "message.delivered",
                "message.read"
            ]
        );
    }

    #[test]
    fn a_late_sent_after_delivered_is_ignored() {
        assert!(transition(Status::Delivered, Trigger::ProviderAccepted).is_err());
        assert!(transition(Status::Delivered, Trigger::ReceiptUndelivered).is_err());
    }

    #[test]
    fn cancel_only_before_sending() {
        assert!(transition(Status::Queued, Trigger::Cancel).is_ok());
        assert!(transition(Status::Scheduled, Trigger::Cancel).is_ok());
        assert!(transition(Status::Sending, Trigger::Cancel).is_err());
        assert!(transition(Status::Sent, Trigger::Cancel).is_err());
    }

    #[test]
    fn every_status_name_round_trips() {
        for s in ALL_STATUSES {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
