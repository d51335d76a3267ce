//! Rate limits for what anonymous clients can trigger (sign-in attempts, reset requests):
//! a token bucket per key (a client address, an account). Pure: the caller passes the time
//! in, so tests move a clock instead of sleeping; the directory keeps the buckets.
//!
//! Written here rather than taken from a rate-limiting crate because the limits must run on
//! the directory's injected clock, and a sign-in consumes only when it fails (`peek` before
//! the attempt, `take` after a failure): a busy office behind one address is not throttled
//! by its successful sign-ins.

use std::collections::HashMap;
use std::hash::Hash;

use chrono::{DateTime, Utc};

/// `burst` attempts at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per_minute: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

/// Buckets by key, at most `max_keys` of them (memory stays bounded whatever the number of
/// addresses a flood comes from: past it, full buckets are forgotten first, then all).
#[derive(Debug)]
pub struct Throttle<K> {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    pub fn new(rate: Rate, max_keys: usize) -> Throttle<K> {
        Throttle { rate, max_keys: max_keys.max(1), buckets: HashMap::new() }
    }

    fn level(&self, b: &Bucket, now: DateTime<Utc>) -> f64 {
        let secs = (now - b.at).num_milliseconds().max(0) as f64 / 1000.0;
        (b.tokens + secs * f64::from(self.rate.per_minute) / 60.0).min(f64::from(self.rate.burst))
    }

    /// True when `key` may make one more attempt now (nothing is consumed).
    pub fn allows(&self, key: &K, now: DateTime<Utc>) -> bool {
        self.buckets.get(key).is_none_or(|b| self.level(b, now) >= 1.0)
    }

    /// Consumes one attempt; false when none was left (then nothing changes).
    pub fn take(&mut self, key: &K, now: DateTime<Utc>) -> bool {
        let level = self.buckets.get(key).map_or(f64::from(self.rate.burst), |b| self.level(b, now));
        if level < 1.0 {
            return false;
        }
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.forget_full(now);
        }
        self.buckets.insert(key.clone(), Bucket { tokens: level - 1.0, at: now });
        true
    }

    /// Drops buckets that have refilled (they say nothing a new bucket would not), and all of
    /// them when that is not enough.
    fn forget_full(&mut self, now: DateTime<Utc>) {
        let burst = f64::from(self.rate.burst);
        let rate = self.rate;
        self.buckets.retain(|_, b| {
            let secs = (now - b.at).num_milliseconds().max(0) as f64 / 1000.0;
            (b.tokens + secs * f64::from(rate.per_minute) / 60.0) < burst
        });
        if self.buckets.len() >= self.max_keys {
            self.buckets.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_burst_is_allowed_then_refused_until_it_refills() {
        let mut th = Throttle::new(Rate { burst: 3, per_minute: 60 }, 10);
        for _ in 0..3 {
            assert!(th.allows(&"a", t(0)));
            assert!(th.take(&"a", t(0)));
        }
        assert!(!th.allows(&"a", t(0)));
        assert!(!th.take(&"a", t(500)));
        // One per second comes back.
        assert!(th.take(&"a", t(1000)));
        assert!(!th.take(&"a", t(1000)));
        // Other keys are unaffected.
        assert!(th.take(&"b", t(1000)));
    }

    #[test]
    fn refills_stop_at_the_burst() {
        let mut th = Throttle::new(Rate { burst: 2, per_minute: 60 }, 10);
        assert!(th.take(&"a", t(0)));
        // An hour later there are still only two.
        assert!(th.take(&"a", t(3_600_000)));
        assert!(th.take(&"a", t(3_600_000)));
        assert!(!th.take(&"a", t(3_600_000)));
    }

    #[test]
    fn the_number_of_keys_stays_bounded() {
        let mut th = Throttle::new(Rate { burst: 2, per_minute: 1 }, 100);
        for i in 0..10_000 {
            th.take(&i, t(i64::from(i)));
            assert!(th.len() <= 100);
        }
    }

    #[test]
    fn a_flooded_key_stays_throttled_while_refilled_ones_are_forgotten() {
        let mut th = Throttle::new(Rate { burst: 1, per_minute: 1 }, 3);
        assert!(th.take(&0, t(0)));
        assert!(th.take(&1, t(0)));
        // Two minutes on, 1 has refilled; 2 is new and 0 is taken again.
        assert!(th.take(&0, t(120_000)));
        assert!(th.take(&2, t(120_000)));
        assert!(th.take(&3, t(120_000)));
        assert!(!th.allows(&0, t(120_000)));
    }
}
