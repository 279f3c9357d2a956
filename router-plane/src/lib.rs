//! Switchback router plane: the stateless, OpenAI-compatible front door. It keeps a copy
//! of the cluster view (streamed from the controller), places each request on a (tier,
//! worker) pair with the pure placement core, and relays the worker's stream.

pub mod auth;
pub mod cli;
pub mod clients;
pub mod config;
pub mod difficulty;
pub mod generation;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod state;
pub mod view;

pub use switchback_routing::{cascade, placement, policy};

use std::sync::{Arc, atomic::AtomicU64};

use switchback_proto::Keys;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::Gate,
    config::RouterConfig,
    state::AppState,
    view::{ControllerTarget, View},
};

/// Loads the difficulty predictor the config names (and the encoder files it needs), and
/// checks that its tiers are the router's.
pub fn load_difficulty(
    config: &RouterConfig,
) -> Result<Option<difficulty::predictor::Predictor>, config::ConfigError> {
    use difficulty::predictor::{self, Encoder};
    let Some(d) = &config.difficulty else {
        return Ok(None);
    };
    let bad = |reason: String| switchback_common::config::invalid("difficulty.predictor", reason);
    let version = predictor::feature_version_of(&d.predictor).map_err(|e| bad(e.to_string()))?;
    let encoder = if version == difficulty::features::VERSION {
        Encoder::Lexical
    } else {
        let dir = d.minilm_dir.clone().ok_or_else(|| {
            switchback_common::config::invalid(
                "difficulty.minilm_dir",
                format!("the predictor uses MiniLM features ({version}); set the model directory"),
            )
        })?;
        let table = d
            .table
            .clone()
            .unwrap_or_else(|| dir.join("static-table.bin"));
        let table = difficulty::minilm::load_table(&table, &dir)
            .map_err(|e| switchback_common::config::invalid("difficulty.table", e.to_string()))?;
        Encoder::Embedded(Arc::new(table))
    };
    let mut p = predictor::load(&d.predictor, encoder).map_err(|e| bad(e.to_string()))?;
    for tier in p.tiers() {
        if !config.tiers.iter().any(|t| t == tier) {
            return Err(bad(format!(
                "its tier {tier:?} is not one of the router's `tiers` {:?}",
                config.tiers
            )));
        }
    }
    if let Some(q) = d.default_quality {
        p.default_quality = q as f32;
    }
    tracing::info!(predictor = %d.predictor.display(), features = %version, trained_on = %p.trained_on, "difficulty routing on");
    Ok(Some(p))
}

/// Serves the HTTP API on `listener` until `shutdown` fires; in-flight requests finish
/// before it returns. `auth` is [`Gate::load`] of the same config.
pub async fn run(
    config: RouterConfig,
    difficulty: Option<difficulty::predictor::Predictor>,
    auth: Gate,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let view = Arc::new(View::default());
    let tasks = TaskTracker::new();
    let watch_stop = shutdown.child_token();
    let local = listener.local_addr()?;
    let tls = config
        .tls
        .as_ref()
        .map(switchback_common::tls::ClusterTls::load)
        .transpose()
        .map_err(std::io::Error::other)?;
    let http_tls = config
        .http_tls
        .as_ref()
        .map(switchback_common::tls::ServerTls::load)
        .transpose()
        .map_err(std::io::Error::other)?;
    switchback_common::tls::log_hop("HTTP API (clients → router)", http_tls.is_some());
    switchback_common::tls::log_hop("gRPC client (router → controller, workers)", tls.is_some());
    switchback_common::tls::log_hop("etcd client", config.etcd.is_tls());
    let dialer = switchback_common::tls::Dialer::new(tls.clone());
    if let Some(tls) = &tls {
        tasks.spawn(tls.clone().watch(watch_stop.clone()));
    }
    tasks.spawn(view::follow(
        Arc::clone(&view),
        ControllerTarget {
            address: config.controller.clone(),
            etcd: config.etcd.clone(),
            dialer: dialer.clone(),
            keys: Keys::new(&config.etcd_prefix),
        },
        format!("router@{local}"),
        watch_stop.clone(),
    ));
    let limits = config.limits();
    let name = format!("router@{local}");
    let pending = tokio::sync::Semaphore::new(config.max_pending);
    let watch_predictor = config.difficulty.is_some();
    let policy = std::sync::RwLock::new(Arc::new(config.policy.clone()));
    let state = Arc::new(AppState {
        policy,
        difficulty: std::sync::RwLock::new(difficulty.map(Arc::new)),
        pending,
        name,
        config,
        view,
        clients: clients::Clients::new(dialer),
        metrics: Default::default(),
        rotation: AtomicU64::new(0),
        limits,
        auth,
    });
    state
        .metrics
        .auth_enabled
        .set(i64::from(state.auth.enabled()));
    state.metrics.keys_loaded.set(state.auth.len() as i64);
    match state.auth.path() {
        Some(path) => {
            tracing::info!(keys_file = %path.display(), keys = state.auth.len(), "API keys required on /v1");
            tasks.spawn(reload_keys(Arc::clone(&state), watch_stop.clone()));
        }
        None => tracing::warn!(
            "AUTH IS DISABLED (auth.disabled: true): anyone who can reach this router can use every model; set auth.keys_file to require API keys"
        ),
    }
    if watch_predictor {
        tasks.spawn(reload_predictor(Arc::clone(&state), watch_stop.clone()));
    }
    tasks.spawn(follow_policy(Arc::clone(&state), watch_stop.clone()));
    tracing::info!(%local, "router serving");
    let app = http::router(Arc::clone(&state));
    let mut limits = state.config.http;
    limits.max_connections = switchback_common::http_serve::connection_cap(limits.max_connections);
    let conns = state.metrics.connections.clone();
    match http_tls {
        None => {
            switchback_common::http_serve::serve(listener, app, limits, conns, shutdown).await;
        }
        Some(http_tls) => {
            tasks.spawn(http_tls.clone().watch(watch_stop.clone()));
            // Handshakes run in their own tasks (see `incoming`), never in accept().
            let listener = switchback_common::tls::incoming(
                listener,
                move || http_tls.server_config(),
                watch_stop.clone(),
                &tasks,
            )?;
            switchback_common::http_serve::serve(listener, app, limits, conns, shutdown).await;
        }
    }
    watch_stop.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!("router stopped");
    Ok(())
}

/// How often the predictor's files are looked at for a change (their modification times).
const PREDICTOR_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Reloads the difficulty predictor when its artifact (or table) changes on disk, e.g. a
/// new one rolled out through a ConfigMap. A bad new artifact is logged and the old one
/// kept.
async fn reload_predictor(state: Arc<AppState>, stop: CancellationToken) {
    let Some(d) = state.config.difficulty.clone() else {
        return;
    };
    let stamp = move || {
        [Some(d.predictor.clone()), d.table.clone()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(&p).and_then(|m| m.modified()).ok())
            .collect::<Vec<_>>()
    };
    let mut last = stamp();
    let step = move || {
        let now = stamp();
        if now == last {
            return;
        }
        last = now;
        match load_difficulty(&state.config) {
            Ok(Some(p)) => {
                *state.difficulty.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(p));
                state
                    .metrics
                    .reloads
                    .get_or_create(&metrics::Reload { outcome: "ok" })
                    .inc();
                if let Some(d) = &state.config.difficulty {
                    tracing::info!(predictor = %d.predictor.display(), "difficulty predictor reloaded");
                }
            }
            Ok(None) => {}
            Err(err) => {
                state
                    .metrics
                    .reloads
                    .get_or_create(&metrics::Reload { outcome: "failed" })
                    .inc();
                tracing::error!(%err, "the changed predictor does not load; keeping the previous one");
            }
        }
    };
    switchback_common::reload::poll("predictor", PREDICTOR_POLL, stop, step).await;
}

/// Reads the API keys file again every [`auth::RELOAD_EVERY`] and swaps the keys in when
/// its content changed and read the same twice in a row ([`auth::Settle`]: a Kubernetes
/// Secret update, an edited file, not one caught half-written). A file that does not
/// parse or check is logged and counted, and the keys in force stay.
async fn reload_keys(state: Arc<AppState>, stop: CancellationToken) {
    let Some(path) = state.auth.path().map(std::path::Path::to_path_buf) else {
        return;
    };
    let digest = |bytes: &[u8]| auth::keys::digest(&String::from_utf8_lossy(bytes));
    let mut settle = auth::Settle::new(
        switchback_common::fs::read_file(&path)
            .ok()
            .map(|b| digest(&b)),
    );
    let step = move || {
        let bytes = match switchback_common::fs::read_file(&path) {
            Ok(bytes) => bytes,
            Err(err) => {
                if settle.unreadable() {
                    state
                        .metrics
                        .keys_reloads
                        .get_or_create(&metrics::Reload { outcome: "failed" })
                        .inc();
                    tracing::error!(%err, keys_file = %path.display(), "cannot read the API keys file; keeping the keys in force");
                }
                return;
            }
        };
        if !settle.observe(digest(&bytes)) {
            return;
        }
        let result = std::str::from_utf8(&bytes)
            .map_err(|e| auth::keys::KeysError::Parse(e.to_string()))
            .and_then(|text| state.auth.reload(text, std::time::Instant::now()));
        match result {
            Ok(n) => {
                state
                    .metrics
                    .keys_reloads
                    .get_or_create(&metrics::Reload { outcome: "ok" })
                    .inc();
                state.metrics.keys_loaded.set(n as i64);
                tracing::info!(keys = n, keys_file = %path.display(), "API keys reloaded");
            }
            Err(err) => {
                state
                    .metrics
                    .keys_reloads
                    .get_or_create(&metrics::Reload { outcome: "failed" })
                    .inc();
                tracing::error!(%err, keys_file = %path.display(), "the changed API keys file is invalid; keeping the keys in force");
            }
        }
    };
    switchback_common::reload::poll("api keys", auth::RELOAD_EVERY, stop, step).await;
}

/// Follows the cluster's routing policy under `<prefix>/policy`: read, then watch from the
/// next revision, again after any break. While the key is absent the config file's policy
/// applies; a document that does not validate is logged, counted and ignored, and the
/// router keeps the policy it has.
async fn follow_policy(state: Arc<AppState>, stop: CancellationToken) {
    let keys = Keys::new(&state.config.etcd_prefix);
    let key = keys.policy();
    let apply = |value: Option<&[u8]>| {
        let policy = match value {
            None => {
                tracing::info!("no routing policy in etcd; using the config file's");
                state.config.policy.clone()
            }
            Some(bytes) => match std::str::from_utf8(bytes)
                .map_err(|e| e.to_string())
                .and_then(|text| policy::Policy::from_yaml(text).map_err(|e| e.to_string()))
            {
                Ok(p) => p,
                Err(err) => {
                    state
                        .metrics
                        .policy_updates
                        .get_or_create(&metrics::Reload { outcome: "invalid" })
                        .inc();
                    tracing::error!(%err, %key, "the routing policy in etcd is invalid; keeping the current one");
                    return;
                }
            },
        };
        state
            .metrics
            .policy_updates
            .get_or_create(&metrics::Reload { outcome: "ok" })
            .inc();
        let predictor = state
            .difficulty
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(why) = predictor.and_then(|p| p.knob_mismatch(&policy.cascade)) {
            tracing::warn!(%key, "{why}");
        }
        *state.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
        tracing::info!(%key, "routing policy applied");
    };
    let registry = switchback_common::registry::EtcdRegistry::new(state.config.etcd.clone());
    switchback_common::registry::follow(
        &registry,
        key.as_str(),
        false,
        &stop,
        |_, kvs| {
            state.metrics.etcd_connected.set(1);
            apply(kvs.first().map(|(_, value)| *value));
        },
        |change| apply(change.value),
        |err, _| {
            state.metrics.etcd_connected.set(0);
            tracing::warn!(%err, "policy watch broke; watching again");
        },
    )
    .await;
}
