//! Waiting between the sessions of a long-lived loop (an etcd watch, a gRPC stream):
//! exponential up to a cap, starting over after a session that ran for a while, and cut
//! short by cancellation.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A session that ran at least this long was healthy: the next wait starts over.
const HEALTHY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    started: Instant,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
            started: Instant::now(),
        }
    }

    /// Marks the start of a session.
    pub fn start(&mut self) {
        self.started = Instant::now();
    }

    /// The wait before the next session (for logs).
    pub fn delay(&mut self) -> Duration {
        if self.started.elapsed() > HEALTHY {
            self.next = self.initial;
        }
        self.next
    }

    /// Waits [`Backoff::delay`], then doubles it. False when `cancel` fired first.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.delay();
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        self.next = (self.next * 2).min(self.max);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn doubles_to_the_cap_and_stops_on_cancel() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(3));
        let cancel = CancellationToken::new();
        assert_eq!(b.delay(), Duration::from_millis(1));
        assert!(b.wait(&cancel).await);
        assert_eq!(b.delay(), Duration::from_millis(2));
        assert!(b.wait(&cancel).await);
        assert!(b.wait(&cancel).await);
        assert_eq!(b.delay(), Duration::from_millis(3));
        cancel.cancel();
        assert!(!b.wait(&cancel).await);
    }
}
