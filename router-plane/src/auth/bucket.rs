//! Token buckets for per-key limits: a pure core over a caller-supplied clock, so tests
//! drive time instead of sleeping. A bucket of `per_minute` holds at most `per_minute`
//! units (a full minute's burst) and refills at `per_minute / 60` units a second.

use std::time::{Duration, Instant};

/// Units are kept as ticks (a unit is 60 000 ticks, and a bucket of `per_minute` refills
/// `per_minute` ticks a millisecond), so the arithmetic is exact integer arithmetic.
const TICKS: i128 = 60_000;

#[derive(Debug, Clone)]
pub struct Bucket {
    per_minute: i128,
    /// Ticks available at `at`; negative after a settlement charged more than was taken.
    level: i128,
    at: Instant,
}

/// Why a take was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// Enough units will have refilled after this long.
    RetryAfter(Duration),
    /// More than the bucket can ever hold: waiting does not help.
    TooLarge,
}

impl Bucket {
    /// A full bucket.
    pub fn new(per_minute: u64, now: Instant) -> Self {
        let per_minute = i128::from(per_minute.max(1));
        Self {
            per_minute,
            level: per_minute * TICKS,
            at: now,
        }
    }

    fn capacity_ticks(&self) -> i128 {
        self.per_minute * TICKS
    }

    fn refill(&mut self, now: Instant) {
        // Capped (at ~31 years) so the product below cannot overflow.
        let ms = now
            .saturating_duration_since(self.at)
            .as_millis()
            .min(1_000_000_000_000);
        let ms = i128::try_from(ms).unwrap_or(0);
        self.level = (self.level + ms * self.per_minute).min(self.capacity_ticks());
        self.at += Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
    }

    fn wait_for(&self, ticks: i128) -> Duration {
        let ms = (ticks - self.level).max(0);
        let ms = (ms + self.per_minute - 1) / self.per_minute;
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// Takes `n` units, or says when they will be there.
    pub fn take(&mut self, n: u64, now: Instant) -> Result<(), Refusal> {
        let need = i128::from(n) * TICKS;
        if need > self.capacity_ticks() {
            return Err(Refusal::TooLarge);
        }
        self.refill(now);
        if self.level >= need {
            self.level -= need;
            return Ok(());
        }
        Err(Refusal::RetryAfter(self.wait_for(need)))
    }

    /// Corrects an earlier take of `taken` units to `used`: gives back what was not used,
    /// or charges the excess (the level may go below zero; later takes wait for it).
    pub fn settle(&mut self, taken: u64, used: u64, now: Instant) {
        self.refill(now);
        let delta = (i128::from(taken) - i128::from(used)) * TICKS;
        self.level = (self.level + delta).min(self.capacity_ticks());
    }

    /// Whole units available now.
    pub fn remaining(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.level.max(0) / TICKS).unwrap_or(u64::MAX)
    }

    /// How long until the bucket is full again.
    pub fn until_full(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.wait_for(self.capacity_ticks())
    }

    pub fn capacity(&self) -> u64 {
        u64::try_from(self.per_minute).unwrap_or(u64::MAX)
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

/// A duration as OpenAI writes its `x-ratelimit-reset-*` headers: `1s`, `6m0s`, `250ms`.
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs() + u64::from(d.subsec_millis() > 0);
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_a_minute_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3, t0);
        for _ in 0..3 {
            assert_eq!(b.take(1, t0), Ok(()));
        }
        // 3 a minute: one unit every 20 s.
        assert_eq!(
            b.take(1, t0),
            Err(Refusal::RetryAfter(Duration::from_secs(20)))
        );
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(
            b.take(1, t5),
            Err(Refusal::RetryAfter(Duration::from_secs(15)))
        );
        assert_eq!(b.take(1, t0 + Duration::from_secs(20)), Ok(()));
        // Refill never goes past the capacity.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.remaining(later), 3);
        assert_eq!(b.until_full(later), Duration::ZERO);
    }

    #[test]
    fn a_take_larger_than_the_bucket_is_refused_for_good() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, t0);
        assert_eq!(b.take(101, t0), Err(Refusal::TooLarge));
        assert_eq!(b.remaining(t0), 100, "a refused take costs nothing");
    }

    #[test]
    fn settling_refunds_the_unused_part_or_charges_the_excess() {
        let t0 = Instant::now();
        let mut b = Bucket::new(600, t0); // 10 a second
        assert_eq!(b.take(500, t0), Ok(()));
        b.settle(500, 120, t0);
        assert_eq!(b.remaining(t0), 480);
        assert_eq!(b.take(480, t0), Ok(()));
        // Used more than taken: the bucket goes into debt and waits it off.
        b.settle(0, 50, t0);
        assert_eq!(b.remaining(t0), 0);
        assert_eq!(
            b.take(10, t0),
            Err(Refusal::RetryAfter(Duration::from_secs(6)))
        );
        // Never above capacity, whatever is refunded.
        b.settle(10_000, 0, t0);
        assert_eq!(b.remaining(t0), 600);
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::new(60, t0);
        assert_eq!(b.take(60, t0), Ok(()));
        assert!(b.take(1, t0 - Duration::from_secs(5)).is_err());
    }

    #[test]
    fn retry_after_rounds_up_and_headers_read_like_openai() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(20_001)), 21);
        assert_eq!(retry_after_secs(Duration::from_secs(20)), 20);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(reset_text(Duration::from_millis(250)), "250ms");
        assert_eq!(reset_text(Duration::from_millis(1500)), "2s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
    }
}
