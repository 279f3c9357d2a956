//! Steady traffic against a router while a test breaks things: a few clients in loops,
//! every request counted (successes per worker, failures with their bodies). Every request
//! is bounded by a client timeout, so a hang is a counted failure, not a stuck test.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::wait_for;

/// What the clients saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: usize,
    /// Status (0: no response) and body of each failed request.
    pub failed: Vec<(u16, String)>,
    /// Successful requests per worker (`x-switchback-worker`).
    pub by_worker: HashMap<String, usize>,
}

impl Tally {
    pub fn sent(&self) -> usize {
        self.ok + self.failed.len()
    }
}

#[derive(Debug)]
pub struct Traffic {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    tally: Arc<Mutex<Tally>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `clients` loops posting `body` to `url` (a whole, non-streamed request).
    pub fn start(url: String, body: serde_json::Value, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let clients = (0..clients)
            .map(|_| {
                let (stop, done, tally, http, url, body) = (
                    Arc::clone(&stop),
                    Arc::clone(&done),
                    Arc::clone(&tally),
                    http.clone(),
                    url.clone(),
                    body.to_string(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let result = http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        let outcome = match result {
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                let worker = resp
                                    .headers()
                                    .get("x-switchback-worker")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned);
                                match resp.text().await {
                                    Ok(_) if status == 200 => Ok(worker.unwrap_or_default()),
                                    Ok(text) => Err((status, text)),
                                    Err(e) => Err((status, format!("reading body: {e}"))),
                                }
                            }
                            Err(e) => Err((0, e.to_string())),
                        };
                        let mut t = tally.lock().expect("tally");
                        match outcome {
                            Ok(worker) => {
                                t.ok += 1;
                                *t.by_worker.entry(worker).or_default() += 1;
                            }
                            Err(failure) => t.failed.push(failure),
                        }
                        drop(t);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self {
            stop,
            done,
            tally,
            clients,
        }
    }

    /// Requests finished so far.
    pub fn finished(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// The tally so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().expect("tally").clone()
    }

    /// Waits (bounded) until `n` more requests have finished.
    pub async fn wait_more(&self, n: usize, timeout: Duration) {
        let target = self.finished() + n;
        wait_for(&format!("{n} more requests to finish"), timeout, || async {
            (self.finished() >= target).then_some(())
        })
        .await;
    }

    /// Stops the clients (each finishes its request in flight) and returns the tally.
    pub async fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for c in std::mem::take(&mut self.clients) {
            tokio::time::timeout(Duration::from_secs(40), c)
                .await
                .expect("a traffic client did not stop")
                .expect("traffic client panicked");
        }
        self.tally()
    }
}
