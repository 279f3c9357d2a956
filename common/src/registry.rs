//! The cluster registry behind a small trait: one consistent read of a key (or of every
//! key under a prefix), then every change after it, and [`follow`], the loop that keeps
//! a process following a key for its whole life. etcd ([`EtcdRegistry`]) everywhere real;
//! [`MemoryRegistry`] in unit tests, where a test writes keys and breaks watches by hand.

use std::{collections::BTreeMap, future::Future, sync::Mutex, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::etcd::Change;
use crate::{
    backoff::Backoff,
    etcd::{EtcdAccess, connect, read_then_watch},
};

/// Why a read-then-watch session ended (it ends only so).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// etcd unreachable, the watch cancelled by etcd (a compaction, lost authorisation),
    /// or its stream ended.
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    /// The in-memory registry's watch was broken (by a test) or the registry is gone.
    #[error("watch broken: {0}")]
    Broken(String),
}

/// Where the cluster's records live.
pub trait Registry: Send + Sync {
    /// One consistent read of `key` (every key under it when `prefix`), handed to `read`
    /// with its revision as (key, value) pairs, then a watch from the next revision, each
    /// change handed to `changed`, so nothing falls between the read and the watch. Keys
    /// that are not UTF-8 are skipped. Resolves only when the session breaks.
    fn read_then_watch(
        &self,
        key: &str,
        prefix: bool,
        read: impl FnMut(i64, Vec<(&str, &[u8])>) + Send,
        changed: impl FnMut(Change<'_>) + Send,
    ) -> impl Future<Output = RegistryError> + Send;
}

impl<R: Registry> Registry for std::sync::Arc<R> {
    fn read_then_watch(
        &self,
        key: &str,
        prefix: bool,
        read: impl FnMut(i64, Vec<(&str, &[u8])>) + Send,
        changed: impl FnMut(Change<'_>) + Send,
    ) -> impl Future<Output = RegistryError> + Send {
        (**self).read_then_watch(key, prefix, read, changed)
    }
}

/// Follows `key` (every key under it when `prefix`) until `cancel` fires: a read, then its
/// changes; after every break, `broke` is told why and how long until the next read, and
/// the same again after that backoff. A follower therefore converges after any outage,
/// and the last state it saw stands in between.
pub async fn follow<R: Registry>(
    registry: &R,
    key: &str,
    prefix: bool,
    cancel: &CancellationToken,
    mut read: impl FnMut(i64, Vec<(&str, &[u8])>) + Send,
    mut changed: impl FnMut(Change<'_>) + Send,
    mut broke: impl FnMut(&RegistryError, Duration) + Send,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    loop {
        backoff.start();
        let err = tokio::select! {
            () = cancel.cancelled() => return,
            err = registry.read_then_watch(key, prefix, &mut read, &mut changed) => err,
        };
        broke(&err, backoff.delay());
        if !backoff.wait(cancel).await {
            return;
        }
    }
}

/// The cluster's etcd: each session connects anew (reading the TLS material and the
/// password again, so rotated ones apply).
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    access: EtcdAccess,
}

impl EtcdRegistry {
    pub fn new(access: EtcdAccess) -> Self {
        Self { access }
    }
}

impl Registry for EtcdRegistry {
    async fn read_then_watch(
        &self,
        key: &str,
        prefix: bool,
        read: impl FnMut(i64, Vec<(&str, &[u8])>) + Send,
        changed: impl FnMut(Change<'_>) + Send,
    ) -> RegistryError {
        let session = async {
            let mut client = connect(&self.access).await?;
            read_then_watch(&mut client, key, prefix, read, changed).await
        };
        match session.await {
            Err(err) => RegistryError::Etcd(err),
            Ok(never) => match never {},
        }
    }
}

/// What a watch of the in-memory registry receives.
#[derive(Debug)]
enum Event {
    Change(String, Option<Vec<u8>>),
    Break(String),
}

#[derive(Debug, Default)]
struct Memory {
    revision: i64,
    kvs: BTreeMap<String, Vec<u8>>,
    // Unbounded: a unit test writes a handful of keys.
    watches: Vec<mpsc::UnboundedSender<Event>>,
}

/// A registry in memory, for unit tests: [`MemoryRegistry::put`] and
/// [`MemoryRegistry::delete`] reach every open watch, [`MemoryRegistry::break_watches`]
/// ends them as an etcd outage would.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    state: Mutex<Memory>,
}

impl MemoryRegistry {
    fn change(&self, key: &str, value: Option<Vec<u8>>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.revision += 1;
        match &value {
            Some(v) => state.kvs.insert(key.to_owned(), v.clone()),
            None => state.kvs.remove(key),
        };
        state
            .watches
            .retain(|w| w.send(Event::Change(key.to_owned(), value.clone())).is_ok());
    }

    pub fn put(&self, key: &str, value: impl Into<Vec<u8>>) {
        self.change(key, Some(value.into()));
    }

    pub fn delete(&self, key: &str) {
        self.change(key, None);
    }

    /// Ends every open watch with [`RegistryError::Broken`].
    pub fn break_watches(&self, why: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for w in state.watches.drain(..) {
            // A watch that already ended needs no breaking.
            let _ = w.send(Event::Break(why.to_owned()));
        }
    }

    /// Watches open now.
    pub fn watches(&self) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.watches.retain(|w| !w.is_closed());
        state.watches.len()
    }
}

fn matches(key: &str, prefix: bool, candidate: &str) -> bool {
    if prefix {
        candidate.starts_with(key)
    } else {
        candidate == key
    }
}

impl Registry for MemoryRegistry {
    async fn read_then_watch(
        &self,
        key: &str,
        prefix: bool,
        mut read: impl FnMut(i64, Vec<(&str, &[u8])>) + Send,
        mut changed: impl FnMut(Change<'_>) + Send,
    ) -> RegistryError {
        // The read and the watch's start under one lock: nothing falls between them.
        let (revision, kvs, mut events) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (tx, rx) = mpsc::unbounded_channel();
            state.watches.push(tx);
            let kvs: Vec<(String, Vec<u8>)> = state
                .kvs
                .iter()
                .filter(|(k, _)| matches(key, prefix, k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (state.revision, kvs, rx)
        };
        read(
            revision,
            kvs.iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect(),
        );
        loop {
            match events.recv().await {
                Some(Event::Change(k, value)) if matches(key, prefix, &k) => changed(Change {
                    key: &k,
                    value: value.as_deref(),
                }),
                Some(Event::Change(..)) => {}
                Some(Event::Break(why)) => return RegistryError::Broken(why),
                None => return RegistryError::Broken("the registry is gone".to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_follower_reads_then_sees_changes_and_reads_again_after_a_break() {
        let registry = Arc::new(MemoryRegistry::default());
        registry.put("/c/workers/a", "1");
        registry.put("/c/other", "x");
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let cancel = CancellationToken::new();
        let follower = tokio::spawn({
            let (registry, cancel) = (Arc::clone(&registry), cancel.clone());
            async move {
                let (read_tx, changed_tx, broke_tx) = (tx.clone(), tx.clone(), tx);
                follow(
                    &*registry,
                    "/c/workers/",
                    true,
                    &cancel,
                    move |_, kvs| {
                        let keys: Vec<&str> = kvs.iter().map(|(k, _)| *k).collect();
                        let _ = read_tx.send(format!("read {}", keys.join(",")));
                    },
                    move |c| {
                        let _ = changed_tx.send(format!("{} {:?}", c.key, c.value));
                    },
                    move |err, _| {
                        let _ = broke_tx.send(format!("broke {err}"));
                    },
                )
                .await;
            }
        });
        let mut next = async || rx.recv().await.expect("the follower reports");
        assert_eq!(next().await, "read /c/workers/a");
        registry.put("/c/other", "y");
        registry.put("/c/workers/b", "2");
        assert_eq!(next().await, "/c/workers/b Some([50])");
        registry.delete("/c/workers/a");
        assert_eq!(next().await, "/c/workers/a None");
        registry.break_watches("test");
        assert_eq!(next().await, "broke watch broken: test");
        // After the backoff, a fresh read with what is there now.
        assert_eq!(next().await, "read /c/workers/b");
        cancel.cancel();
        follower.await.expect("the follower stops on cancel");
        assert_eq!(registry.watches(), 0);
    }
}
