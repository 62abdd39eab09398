//! When to try again: exponential backoff with full jitter, bounded by a
//! number of attempts and the message's TTL.

use std::time::Duration;

use crate::error_class::ErrorClass;
use crate::time::Timestamp;

/// Retry limits for sending a message (SPEC §2 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff ceiling.
    pub base: Duration,
    /// The largest backoff ceiling.
    pub cap: Duration,
    /// Attempts in all, including the first.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
            max_attempts: 8,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again at this time.
    RetryAt(Timestamp),
    /// Stop: the message fails with this reason.
    GiveUp(GiveUpReason),
}

/// Why no further attempt is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The error cannot be cured by retrying.
    NotRetryable,
    /// `max_attempts` attempts were made.
    AttemptsExhausted,
    /// The next attempt would fall after the message's expiry.
    TtlExhausted,
}

impl GiveUpReason {
    /// The machine-readable code recorded on the message.
    pub fn code(self) -> &'static str {
        match self {
            GiveUpReason::NotRetryable => "permanent_error",
            GiveUpReason::AttemptsExhausted => "attempts_exhausted",
            GiveUpReason::TtlExhausted => "ttl_exhausted",
        }
    }
}

impl RetryPolicy {
    /// The backoff ceiling before attempt `attempt + 1`, given `attempt`
    /// attempts so far (1-based): `min(cap, base * 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Full jitter: a delay uniformly drawn from `[0, ceiling]`, using the
    /// caller's random `unit` in `[0, 1)`. A provider's `Retry-After` is a floor.
    pub fn delay(&self, attempt: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let jittered = self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0));
        match retry_after {
            Some(floor) => jittered.max(floor),
            None => jittered,
        }
    }

    /// Decides what follows attempt number `attempt` (1-based) failing with `class`.
    pub fn decide(
        &self,
        attempt: u32,
        class: ErrorClass,
        now: Timestamp,
        expires_at: Timestamp,
        unit: f64,
        retry_after: Option<Duration>,
    ) -> RetryDecision {
        if !class.is_retryable() {
            return RetryDecision::GiveUp(GiveUpReason::NotRetryable);
        }
        if attempt >= self.max_attempts {
            return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted);
        }
        let at = now.plus(self.delay(attempt, unit, retry_after));
        if at >= expires_at {
            return RetryDecision::GiveUp(GiveUpReason::TtlExhausted);
        }
        RetryDecision::RetryAt(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: Timestamp = Timestamp::from_millis(1_000_000);

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=10).map(|a| p.ceiling(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(1, 0.0, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(p.delay(1, 0.5, None), Duration::from_millis(500));
    }

    #[test]
    fn permanent_and_consent_errors_are_not_retried() {
        let p = RetryPolicy::default();
        let far = T0.plus(Duration::from_secs(86_400));
        for class in [ErrorClass::Permanent, ErrorClass::Consent] {
            assert_eq!(
                p.decide(1, class, T0, far, 0.5, None),
                RetryDecision::GiveUp(GiveUpReason::NotRetryable)
            );
        }
    }

    #[test]
    fn attempts_run_out_at_the_maximum() {
        let p = RetryPolicy::default();
        let far = T0.plus(Duration::from_secs(86_400));
        assert!(matches!(
            p.decide(7, ErrorClass::Transport, T0, far, 0.5, None),
            RetryDecision::RetryAt(_)
        ));
        assert_eq!(
            p.decide(8, ErrorClass::Transport, T0, far, 0.5, None),
            RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted)
        );
    }

    #[test]
    fn a_retry_past_the_ttl_gives_up() {
        let p = RetryPolicy::default();
        let soon = T0.plus(Duration::from_millis(100));
        assert_eq!(
            p.decide(3, ErrorClass::Throttled, T0, soon, 0.9, None),
            RetryDecision::GiveUp(GiveUpReason::TtlExhausted)
        );
    }

    proptest! {
        #[test]
        fn delays_stay_within_zero_and_the_ceiling(attempt in 1u32..100, unit in 0.0f64..1.0) {
            let p = RetryPolicy::default();
            let d = p.delay(attempt, unit, None);
            prop_assert!(d <= p.ceiling(attempt));
            prop_assert!(d <= p.cap);
        }
    }
}
