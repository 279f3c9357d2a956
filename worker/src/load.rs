//! Live load of this worker (running, waiting, speed, time to first token) and the task
//! that streams it to the controller leader a few times a second.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use switchback_common::etcd::{ControllerError, ControllerTarget};
use switchback_proto::pb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Counters updated by the request path and read by the reporter. Lock-free except the
/// smoothed time-to-first-token, which is touched once per request.
#[derive(Debug)]
pub struct Load {
    pub capacity: u32,
    running: AtomicU32,
    waiting: AtomicU32,
    tokens: AtomicU64,
    draining: AtomicBool,
    /// The worker's record is in etcd under a live lease.
    registered: AtomicBool,
    /// A load stream to the controller leader is open.
    controller_connected: AtomicBool,
    ttft_ms: Mutex<Option<f64>>,
    /// Wakes the reporter early (e.g. when draining starts) so routers learn at once.
    changed: Notify,
}

impl Load {
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            running: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            tokens: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            controller_connected: AtomicBool::new(false),
            ttft_ms: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    pub fn running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub fn stop_draining(&self) {
        self.draining.store(false, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Relaxed);
    }

    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    pub fn is_controller_connected(&self) -> bool {
        self.controller_connected.load(Ordering::Relaxed)
    }

    pub fn add_tokens(&self, n: u64) {
        self.tokens.fetch_add(n, Ordering::Relaxed);
    }

    pub fn record_ttft(&self, ttft: Duration) {
        let ms = ttft.as_secs_f64() * 1000.0;
        if let Ok(mut avg) = self.ttft_ms.lock() {
            // Exponential moving average over roughly the last ten requests.
            *avg = Some(avg.map_or(ms, |a| 0.9 * a + 0.1 * ms));
        }
    }

    /// Tokens generated since start.
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }

    /// Smoothed time to first token of recent requests, in ms (0 before the first).
    pub fn ttft(&self) -> f64 {
        self.ttft_ms.lock().ok().and_then(|a| *a).unwrap_or(0.0)
    }

    /// Marks one request as queued; the guard un-marks it when dropped.
    pub fn enter_queue(self: &Arc<Self>) -> QueueGuard {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        QueueGuard(Arc::clone(self))
    }

    /// Marks one request as generating; the guard un-marks it when dropped.
    pub fn enter_running(self: &Arc<Self>) -> RunningGuard {
        self.running.fetch_add(1, Ordering::Relaxed);
        RunningGuard(Arc::clone(self))
    }
}

#[derive(Debug)]
pub struct QueueGuard(Arc<Load>);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct RunningGuard(Arc<Load>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

/// Turns the counters into reports, tracking decode speed between two reports.
struct Sampler {
    load: Arc<Load>,
    worker_id: String,
    last_tokens: u64,
    last_at: Instant,
    tokens_per_second: f64,
}

impl Sampler {
    fn sample(&mut self) -> pb::LoadReport {
        let now = Instant::now();
        let tokens = self.load.tokens.load(Ordering::Relaxed);
        let elapsed = now.duration_since(self.last_at).as_secs_f64();
        if elapsed > 0.0 {
            let rate = (tokens - self.last_tokens) as f64 / elapsed;
            self.tokens_per_second = 0.7 * self.tokens_per_second + 0.3 * rate;
        }
        self.last_tokens = tokens;
        self.last_at = now;
        pb::LoadReport {
            worker_id: self.worker_id.clone(),
            running: self.load.running(),
            waiting: self.load.waiting(),
            capacity: self.load.capacity,
            tokens_per_second: self.tokens_per_second as f32,
            time_to_first_token_ms: self.load.ttft() as f32,
            kv_cache_usage: 0.0,
            draining: self.load.is_draining(),
        }
    }
}

/// The least time between two load reports: a worker whose load changes thousands of times
/// a second (every request start and end) reports the latest state at this pace, not once
/// per change.
pub const MIN_REPORT_GAP: Duration = Duration::from_millis(5);

/// When the next load report may go: at least [`MIN_REPORT_GAP`] after the last one.
#[derive(Debug, Default)]
struct Pace {
    last: Option<Instant>,
}

impl Pace {
    /// How long a report due at `now` waits; `None`: it goes now.
    fn wait(&self, now: Instant) -> Option<Duration> {
        let since = now.saturating_duration_since(self.last?);
        MIN_REPORT_GAP.checked_sub(since).filter(|w| !w.is_zero())
    }

    fn sent(&mut self, at: Instant) {
        self.last = Some(at);
    }
}

/// Streams load reports until `cancel` fires, reconnecting (and re-discovering the
/// leader) with backoff whenever the stream breaks.
pub async fn report_forever(
    load: Arc<Load>,
    worker_id: String,
    target: ControllerTarget,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut sampler = Sampler {
        load: Arc::clone(&load),
        worker_id,
        last_tokens: 0,
        last_at: Instant::now(),
        tokens_per_second: 0.0,
    };
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        let found = tokio::select! {
            () = cancel.cancelled() => return,
            found = target.dial() => found,
        };
        let (address, channel) = match found {
            Ok(found) => found,
            Err(err) => {
                match &err {
                    ControllerError::NoLeader => tracing::debug!("no controller leader yet"),
                    ControllerError::Dial { address, .. } => {
                        tracing::warn!(%address, %err, "load stream to the controller failed");
                    }
                    _ => tracing::warn!(%err, "cannot find the controller"),
                }
                if sleep_or_cancel(backoff, &cancel).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let session_started = Instant::now();
        let connect = async {
            load.controller_connected.store(true, Ordering::Relaxed);
            let mut client = pb::controller_client::ControllerClient::new(channel);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(client.report_load(stream).await?)
        };
        let feed = async {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut pace = Pace::default();
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = load.changed.notified() => {}
                    () = cancel.cancelled() => return,
                }
                // Changes soon after the last report go out together, MIN_REPORT_GAP after it.
                if let Some(wait) = pace.wait(Instant::now()) {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = cancel.cancelled() => return,
                    }
                }
                if tx.send(sampler.sample()).await.is_err() {
                    return;
                }
                pace.sent(Instant::now());
            }
        };
        tracing::info!(%address, "streaming load reports to the controller");
        tokio::select! {
            result = connect => match result {
                Ok(_) => tracing::warn!(%address, "controller closed the load stream"),
                Err(err) => tracing::warn!(%address, %err, "load stream to the controller failed"),
            },
            () = feed => {}
        }
        load.controller_connected.store(false, Ordering::Relaxed);
        // A session that worked for a while starts the backoff over.
        if session_started.elapsed() > Duration::from_secs(5) {
            backoff = Duration::from_millis(100);
        }
        if sleep_or_cancel(backoff, &cancel).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Returns true when cancelled.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = cancel.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_keep_the_minimum_gap_and_the_first_goes_at_once() {
        let mut pace = Pace::default();
        let t0 = Instant::now();
        assert_eq!(pace.wait(t0), None, "nothing sent yet: report now");
        pace.sent(t0);
        // Every request's start and end notifies; those right after a report wait for the
        // rest of the gap, so a burst of changes is one report, not one per change.
        let soon = t0 + Duration::from_millis(1);
        assert_eq!(
            pace.wait(soon),
            Some(MIN_REPORT_GAP - Duration::from_millis(1))
        );
        assert_eq!(pace.wait(t0 + MIN_REPORT_GAP), None);
        assert_eq!(pace.wait(t0 + 3 * MIN_REPORT_GAP), None);
        pace.sent(t0 + 3 * MIN_REPORT_GAP);
        assert_eq!(pace.wait(t0 + 3 * MIN_REPORT_GAP), Some(MIN_REPORT_GAP));
    }

    #[test]
    fn guards_count_and_uncount() {
        let load = Arc::new(Load::new(2));
        let q = load.enter_queue();
        let r = load.enter_running();
        assert_eq!((load.waiting(), load.running()), (1, 1));
        drop(q);
        drop(r);
        assert_eq!((load.waiting(), load.running()), (0, 0));
    }

    #[test]
    fn report_carries_counters_and_draining() {
        let load = Arc::new(Load::new(3));
        let _r = load.enter_running();
        load.record_ttft(Duration::from_millis(40));
        load.start_draining();
        let mut s = Sampler {
            load: Arc::clone(&load),
            worker_id: "w".into(),
            last_tokens: 0,
            last_at: Instant::now(),
            tokens_per_second: 0.0,
        };
        let report = s.sample();
        assert_eq!(report.running, 1);
        assert_eq!(report.capacity, 3);
        assert!(report.draining);
        assert!((report.time_to_first_token_ms - 40.0).abs() < 1e-3);
    }
}
