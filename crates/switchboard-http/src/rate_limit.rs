//! Per-key API rate limits: a token bucket per API key, in memory.
//!
//! The headers follow the common convention: `X-RateLimit-Limit` is the
//! bucket's capacity (the burst), `X-RateLimit-Remaining` the whole tokens
//! left, `X-RateLimit-Reset` the seconds until the bucket is full again.
//! A refused request also gets `Retry-After`, the seconds until one token.

use foldhash::{HashMap, HashMapExt};
use std::sync::Mutex;
use std::time::Instant;

/// Limits for each API key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Bucket capacity (burst).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 200.0,
            burst: 400,
        }
    }
}

/// The state to report in headers after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Capacity.
    pub limit: u32,
    /// Tokens left.
    pub remaining: u32,
    /// Seconds until full.
    pub reset_secs: u64,
    /// Seconds until the next token, when refused.
    pub retry_after_secs: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets by key id.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    // A std Mutex: held for a few arithmetic operations, never across await.
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter with these limits.
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`.
    pub fn check(&self, key: &str, now: Instant) -> RateLimitStatus {
        let cap = f64::from(self.config.burst);
        let rate = self.config.per_second.max(f64::MIN_POSITIVE);
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        // Looked up before it is inserted: the key's copy is made only for a
        // key's first request, not for every request.
        if !buckets.contains_key(key) {
            buckets.insert(
                key.to_owned(),
                Bucket {
                    tokens: cap,
                    last: now,
                },
            );
        }
        let bucket = buckets.get_mut(key).expect("inserted above");
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(cap);
        bucket.last = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        RateLimitStatus {
            allowed,
            limit: self.config.burst,
            remaining: bucket.tokens.floor() as u32,
            reset_secs: ((cap - bucket.tokens) / rate).ceil() as u64,
            retry_after_secs: if allowed {
                0
            } else {
                ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let rl = RateLimiter::new(RateLimitConfig {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        let got: Vec<bool> = (0..4).map(|_| rl.check("k", t0).allowed).collect();
        assert_eq!(got, [true, true, true, false]);
        let refused = rl.check("k", t0);
        assert_eq!((refused.remaining, refused.retry_after_secs), (0, 1));
        assert!(rl.check("k", t0 + Duration::from_millis(600)).allowed);
        assert!(rl.check("other", t0).allowed, "keys have separate buckets");
    }

    #[test]
    fn headers_count_down() {
        let rl = RateLimiter::new(RateLimitConfig {
            per_second: 10.0,
            burst: 10,
        });
        let t0 = Instant::now();
        let s = rl.check("k", t0);
        assert_eq!((s.limit, s.remaining, s.reset_secs), (10, 9, 1));
    }
}
