//! The loop under every hot reload: TLS material ([`crate::tls::Reloadable`]), and the
//! router's API keys and difficulty predictor. Each reloader keeps its own rule for what
//! counts as a change and what to do with it (compare the bytes, wait for two equal reads,
//! compare modification times) in a step; this runs the step off the async threads, once
//! a period, until told to stop.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// Runs `step` on a blocking thread now and then every `period` (a slow step delays the
/// next one rather than bunching them) until `stop` fires. `step` keeps its state between
/// runs; a step that panics is logged with `reloader`, and the next one runs as usual.
pub async fn poll<F>(reloader: &'static str, period: Duration, stop: CancellationToken, step: F)
where
    F: FnMut() + Send + 'static,
{
    let step = Arc::new(Mutex::new(step));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let step = Arc::clone(&step);
        let run = tokio::task::spawn_blocking(move || {
            (step.lock().unwrap_or_else(|e| e.into_inner()))();
        });
        if let Err(err) = run.await {
            tracing::error!(%err, reloader, "reload task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn steps_run_each_period_keep_their_state_and_stop() {
        let runs = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let counter = Arc::clone(&runs);
        let mut seen = 0;
        let task = tokio::spawn(poll(
            "test",
            Duration::from_millis(20),
            stop.clone(),
            move || {
                seen += 1;
                counter.store(seen, Ordering::SeqCst);
                assert!(seen != 2, "a step that panics");
            },
        ));
        tokio::time::timeout(Duration::from_secs(60), async {
            while runs.load(Ordering::SeqCst) < 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the steps after a panicking one did not run");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("poll did not end when stopped")
            .expect("poll ended");
    }
}
