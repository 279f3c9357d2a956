//! Failure reports, limited per calling address. A router reports a worker it could not
//! reach once per failed attempt, a few times a second at most even in an outage; a caller
//! sending far more (a misbehaving or hostile one) must not flood the log or churn the
//! view that every router receives. Fixed one-second windows per IP address, in a map
//! that forgets past windows before it grows past [`MAX_ADDRESSES`].

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Addresses remembered at once; past that, only those in the current window are kept.
pub const MAX_ADDRESSES: usize = 4096;

#[derive(Debug)]
pub struct ReportLimit {
    per_second: u32,
    /// Per address: when its window started and the reports in it.
    windows: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl ReportLimit {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Whether a report from `from` (no address: a caller over a socket without one) at
    /// `now` is taken.
    pub fn allow(&self, from: Option<IpAddr>, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let current =
            |start: Instant| now.saturating_duration_since(start) < Duration::from_secs(1);
        if windows.len() >= MAX_ADDRESSES && !windows.contains_key(&from) {
            windows.retain(|_, (start, _)| current(*start));
        }
        let window = windows.entry(from).or_insert((now, 0));
        if !current(window.0) {
            *window = (now, 0);
        }
        if window.1 >= self.per_second {
            return false;
        }
        window.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn each_address_gets_its_own_reports_per_second() {
        let limit = ReportLimit::new(3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limit.allow(ip(1), t0)));
        assert!(!limit.allow(ip(1), t0 + Duration::from_millis(999)));
        // Another router is not held back by the first.
        assert!(limit.allow(ip(2), t0));
        // The next second, the first may report again.
        assert!(limit.allow(ip(1), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn the_map_of_addresses_stays_bounded() {
        let limit = ReportLimit::new(1);
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            let from = Some(IpAddr::from(i.to_be_bytes()));
            assert!(limit.allow(from, t0 + Duration::from_secs(u64::from(i))));
        }
        let held = limit.windows.lock().map(|w| w.len()).unwrap_or(usize::MAX);
        assert!(held <= MAX_ADDRESSES, "{held} addresses held");
    }
}
