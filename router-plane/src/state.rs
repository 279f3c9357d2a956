//! What every request of this router shares: the config, the cluster view, the worker
//! connections, the metrics, the routing policy and predictor in force, and the API keys.

use std::sync::{Arc, RwLock, atomic::AtomicU64};

use crate::{
    auth::Gate, clients::Clients, config::RouterConfig, difficulty::predictor::Predictor,
    generation::RequestLimits, metrics::Metrics, policy::Policy, view::View,
};

#[derive(Debug)]
pub struct AppState {
    pub config: RouterConfig,
    pub view: Arc<View>,
    pub clients: Clients,
    pub metrics: Metrics,
    /// Turns placement's round robin among equal workers.
    pub rotation: AtomicU64,
    pub limits: RequestLimits,
    /// Bounds the requests waiting for capacity in a saturated tier.
    pub pending: tokio::sync::Semaphore,
    /// How this router names itself to the controller, e.g. `router@10.0.0.7:8080`.
    pub name: String,
    /// Difficulty routing for `model: "auto"`, when configured; swapped when the artifact
    /// changes on disk.
    pub difficulty: RwLock<Option<Arc<Predictor>>>,
    /// The routing policy: from etcd when the cluster has one, else the config file's.
    pub policy: RwLock<Arc<Policy>>,
    /// API keys, or none when `auth.disabled`.
    pub auth: Gate,
}

impl AppState {
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }
}
