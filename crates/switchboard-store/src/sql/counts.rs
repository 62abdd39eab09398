//! Messages by status for `/metrics`, at a bounded cost per scrape.
//!
//! Nothing deletes a message, so the table only grows, and counting every
//! message by its status reads every entry of an index: about 0.5 s of a
//! reader per 2,000,000 messages on SQLite (bench/HISTORY.md, "Forty-sixth
//! session"), at every scrape, for ever longer. So the counts come in two
//! parts:
//!
//! - The statuses a message holds until a provider has it (`scheduled`,
//!   `queued`, `sending`) are counted at every scrape, each from the
//!   partial index that holds exactly its messages
//!   (`messages::live_counts`): a read of the queue, however many messages
//!   have settled. So `switchboard_queue_depth`, what an alert watches, is
//!   always current.
//! - Every status's count (`messages::status_counts`) is made again only
//!   when the last one is old enough for its cost: at once while a count
//!   takes under `RecountPolicy::fresh_below` (every test database, and a
//!   node's first 400,000 or so messages), otherwise once it is
//!   `RecountPolicy::times` its own duration old, so that counting takes
//!   at most about a twentieth of one reader. Meanwhile the statuses past
//!   the queue (`sent`, `delivered`, the failures) are the last count's,
//!   and `/metrics` says how old (`switchboard_messages_counted_age_seconds`).
//!   One caller counts at a time; the others use the last count.
//!
//! The two parts are read in different snapshots, so their sum may differ
//! from the number of messages by the moves between the two reads, as any
//! two gauges scraped together may.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use switchboard_core::Status;

use super::messages::LIVE;
use crate::model::StatusCounts;

/// When every status is counted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecountPolicy {
    /// A count that took less than this is made again at every call.
    pub fresh_below: Duration,
    /// Otherwise, a count is made again once it is this many times as old
    /// as it took to make.
    pub times: u32,
}

impl Default for RecountPolicy {
    /// Counts under 100 ms made at every call; longer ones at most once per
    /// twenty times their duration (a count that takes 4 s, at about
    /// 16,000,000 messages, once every 80 s).
    fn default() -> Self {
        RecountPolicy {
            fresh_below: Duration::from_millis(100),
            times: 20,
        }
    }
}

impl RecountPolicy {
    /// Whether a count that took `took` and is `age` old is made again.
    pub fn due(&self, took: Duration, age: Duration) -> bool {
        took < self.fresh_below || age >= took.saturating_mul(self.times)
    }
}

/// The last count of every status.
#[derive(Debug, Clone)]
struct Counted {
    by_status: Vec<(Status, u64)>,
    at: Instant,
    took: Duration,
}

/// The counts kept between calls (`SqlStore::status_counts`).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    policy: RecountPolicy,
    last: Mutex<Option<Counted>>,
    counting: AtomicBool,
}

/// What a call does.
pub(crate) enum Plan<'a> {
    /// Counts every status, and keeps the count through the guard.
    Recount(Recounting<'a>),
    /// Counts the live statuses only and takes the rest from `last`.
    Reuse {
        /// The last count of every status.
        by_status: Vec<(Status, u64)>,
        /// How old it is.
        age: Duration,
    },
}

/// A count of every status in progress: the other callers reuse the last
/// one meanwhile. Dropped without `keep` (an error, a cancelled scrape), it
/// lets the next caller count.
pub(crate) struct Recounting<'a> {
    counts: &'a Counts,
}

impl Recounting<'_> {
    /// Keeps `by_status` as the last count, made by a statement that began
    /// `at` and took `took` (its own time, not its wait for a reader: the
    /// policy bounds what counting costs a reader).
    pub(crate) fn keep(self, by_status: &[(Status, u64)], at: Instant, took: Duration) {
        let counted = Counted {
            by_status: by_status.to_vec(),
            at,
            took,
        };
        *self.counts.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(counted);
    }
}

impl Drop for Recounting<'_> {
    fn drop(&mut self) {
        self.counts.counting.store(false, Ordering::Release);
    }
}

impl Counts {
    pub(crate) fn new(policy: RecountPolicy) -> Counts {
        Counts {
            policy,
            ..Counts::default()
        }
    }

    /// Whether this call counts every status or reuses the last count.
    pub(crate) fn plan(&self) -> Plan<'_> {
        let now = Instant::now();
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let due = last
            .as_ref()
            .is_none_or(|c| self.policy.due(c.took, now.saturating_duration_since(c.at)));
        match last {
            Some(c) if !due || self.counting.swap(true, Ordering::AcqRel) => Plan::Reuse {
                by_status: c.by_status,
                age: now.saturating_duration_since(c.at),
            },
            // None yet: whoever comes counts, as no count is there to reuse.
            None | Some(_) => {
                self.counting.store(true, Ordering::Release);
                Plan::Recount(Recounting { counts: self })
            }
        }
    }
}

impl StatusCounts {
    /// The messages not yet handed to a provider: the live statuses'
    /// counts (`messages::LIVE`), always current.
    pub fn queue_depth(&self) -> u64 {
        LIVE.iter().map(|(status, _)| self.of(*status)).sum()
    }
}

/// `last`'s counts with the live statuses' taken from `live`.
pub(crate) fn merge(
    last: Vec<(Status, u64)>,
    live: &[(Status, u64)],
    age: Duration,
) -> StatusCounts {
    let mut by_status: Vec<(Status, u64)> = last
        .into_iter()
        .filter(|(s, _)| !live.iter().any(|(l, _)| l == s))
        .collect();
    by_status.extend(live.iter().copied());
    StatusCounts { by_status, age }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_count_is_always_due_and_a_slow_one_after_its_multiple() {
        let p = RecountPolicy::default();
        assert!(p.due(Duration::from_millis(99), Duration::ZERO));
        assert!(!p.due(Duration::from_millis(100), Duration::from_millis(1_999)));
        assert!(p.due(Duration::from_millis(100), Duration::from_secs(2)));
        assert!(!p.due(Duration::from_secs(4), Duration::from_secs(79)));
        assert!(p.due(Duration::from_secs(4), Duration::from_secs(80)));
    }

    fn slow() -> Counts {
        Counts::new(RecountPolicy {
            fresh_below: Duration::ZERO,
            times: 1_000_000,
        })
    }

    #[test]
    fn the_first_call_counts_and_later_ones_reuse_a_count_not_yet_due() {
        let counts = slow();
        let Plan::Recount(r) = counts.plan() else {
            panic!("nothing to reuse yet")
        };
        r.keep(
            &[(Status::Delivered, 7), (Status::Queued, 1)],
            Instant::now(),
            Duration::from_millis(2),
        );
        let Plan::Reuse { by_status, age } = counts.plan() else {
            panic!("a count a million times its duration from due")
        };
        assert_eq!(by_status, vec![(Status::Delivered, 7), (Status::Queued, 1)]);
        assert!(age < Duration::from_secs(60), "{age:?}");
    }

    #[test]
    fn one_caller_counts_at_a_time_and_a_dropped_count_lets_the_next_one_count() {
        // Every count due: the policy alone would count at every call.
        let counts = Counts::new(RecountPolicy {
            fresh_below: Duration::from_secs(3600),
            times: 1,
        });
        let Plan::Recount(first) = counts.plan() else {
            panic!()
        };
        first.keep(&[(Status::Sent, 3)], Instant::now(), Duration::ZERO);
        let Plan::Recount(second) = counts.plan() else {
            panic!("due again")
        };
        // While `second` counts, the others reuse the last count.
        let Plan::Reuse { by_status, .. } = counts.plan() else {
            panic!("one count at a time")
        };
        assert_eq!(by_status, vec![(Status::Sent, 3)]);
        // A count that failed (dropped, not kept) frees the next caller.
        drop(second);
        assert!(matches!(counts.plan(), Plan::Recount(_)));
    }

    #[test]
    fn the_live_statuses_come_from_the_live_count() {
        let merged = merge(
            vec![
                (Status::Delivered, 10),
                (Status::Queued, 5),
                (Status::Sending, 2),
            ],
            &[
                (Status::Scheduled, 0),
                (Status::Queued, 1),
                (Status::Sending, 0),
            ],
            Duration::from_secs(3),
        );
        let mut got = merged.by_status.clone();
        got.sort_by_key(|(s, _)| s.as_str());
        assert_eq!(
            got,
            vec![
                (Status::Delivered, 10),
                (Status::Queued, 1),
                (Status::Scheduled, 0),
                (Status::Sending, 0)
            ]
        );
        assert_eq!(merged.age, Duration::from_secs(3));
        assert_eq!(merged.queue_depth(), 1);
    }
}
