//! Process metrics as plain atomics, rendered in the Prometheus text format
//! by the HTTP edge. One `Metrics` per running app (no global registry), so
//! tests that run several apps in one process do not mix their counts.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error_class::ErrorClass;

const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A cumulative histogram of durations with fixed buckets (seconds).
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Appends the histogram in Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The counters Switchboard exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages newly accepted (202, not replays).
    pub accepted: AtomicU64,
    /// Idempotent replays answered.
    pub replayed: AtomicU64,
    /// Submissions refused (4xx).
    pub rejected: AtomicU64,
    /// Send attempts that the provider accepted.
    pub attempts_accepted: AtomicU64,
    /// Failed attempts by class: transport, throttled, permanent, consent.
    pub attempts_failed: [AtomicU64; 4],
    /// Duration of provider calls.
    pub send_duration: Histogram,
    /// Time from acceptance to the provider accepting the message.
    pub dispatch_latency: Histogram,
}

impl Metrics {
    /// Counts one failed attempt.
    pub fn attempt_failed(&self, class: ErrorClass) {
        let i = match class {
            ErrorClass::Transport => 0,
            ErrorClass::Throttled => 1,
            ErrorClass::Permanent => 2,
            ErrorClass::Consent => 3,
        };
        self.attempts_failed[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the counters and histograms in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP switchboard_messages_accepted_total Messages accepted (202), excluding idempotent replays.\n# TYPE switchboard_messages_accepted_total counter\nswitchboard_messages_accepted_total {}",
            get(&self.accepted)
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_messages_replayed_total Idempotent replays answered without a new message.\n# TYPE switchboard_messages_replayed_total counter\nswitchboard_messages_replayed_total {}",
            get(&self.replayed)
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_messages_rejected_total Submissions refused with a 4xx.\n# TYPE switchboard_messages_rejected_total counter\nswitchboard_messages_rejected_total {}",
            get(&self.rejected)
        );
        let _ = writeln!(
            out,
            "# HELP switchboard_send_attempts_total Provider send attempts by outcome.\n# TYPE switchboard_send_attempts_total counter"
        );
        let _ = writeln!(
            out,
            "switchboard_send_attempts_total{{outcome=\"accepted\"}} {}",
            get(&self.attempts_accepted)
        );
        for (i, class) in ["transport", "throttled", "permanent", "consent"]
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                out,
                "switchboard_send_attempts_total{{outcome=\"{class}\"}} {}",
                get(&self.attempts_failed[i])
            );
        }
        self.send_duration.render(
            out,
            "switchboard_send_duration_seconds",
            "Duration of provider send calls.",
        );
        self.dispatch_latency.render(
            out,
            "switchboard_dispatch_latency_seconds",
            "Time from acceptance to the provider accepting the message.",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(300));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_count 2\n"), "{out}");
    }
}
