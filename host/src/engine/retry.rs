//! Retries: exponential backoff with jitter, a maximum number of attempts
//! and a maximum event age, like Lambda's asynchronous invocation.

use std::time::Duration;

/// When to retry and when to give up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (Lambda async: 1 + 2 retries).
    pub max_attempts: u32,
    /// Older events are dead-lettered instead of run (Lambda async: 6 h).
    pub max_age: Duration,
    /// Delay before the first retry; doubles per attempt.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            max_age: Duration::from_secs(6 * 3600),
            // Lambda waits ~1 min then ~2 min; we start sooner because our
            // invocations are cheap, and back off to the same order.
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5 * 60),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`: `base * 2^(attempt-1)`,
    /// capped, with "full jitter" (uniform in [delay/2, delay]) so that
    /// events failing together do not retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + Duration::from_nanos(fastrand::u64(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_with_jitter_and_a_cap() {
        let p = RetryPolicy {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            ..Default::default()
        };
        for _ in 0..100 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1), "{d1:?}");
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4), "{d3:?}");
            assert!(p.delay(30) <= Duration::from_secs(10));
        }
    }
}
