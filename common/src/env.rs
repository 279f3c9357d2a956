//! Every `SWITCHBACK_*` environment variable, in one place: what reads it and what it
//! sets. The binaries read theirs through clap (`#[arg(env = ...)]`), so the layering is
//! the same everywhere: defaults < YAML file < environment < command-line flags. Nothing
//! else in the workspace spells a variable's name.

/// What every variable here starts with: the end-to-end tests clear all of them from the
/// environment of the processes they start.
pub const PREFIX: &str = "SWITCHBACK_";

// The servers: worker, controller and router (each reads the ones its flags name).

/// The YAML config file (`--config`) of the worker, the controller and the router.
pub const CONFIG: &str = "SWITCHBACK_CONFIG";
/// The gRPC listen address (worker, controller) or the HTTP one (router): `--listen`.
pub const LISTEN: &str = "SWITCHBACK_LISTEN";
/// `host:port` other processes use to reach this worker or controller: `--advertise`.
pub const ADVERTISE: &str = "SWITCHBACK_ADVERTISE";
/// Comma-separated etcd endpoints (`--etcd-endpoints`; all binaries and `sbctl`).
pub const ETCD_ENDPOINTS: &str = "SWITCHBACK_ETCD_ENDPOINTS";
/// Key prefix of this cluster in etcd (`--etcd-prefix`; all binaries and `sbctl`).
pub const ETCD_PREFIX: &str = "SWITCHBACK_ETCD_PREFIX";
/// A fixed controller address instead of the leader elected in etcd (`--controller`;
/// worker, router and `sbctl`).
pub const CONTROLLER: &str = "SWITCHBACK_CONTROLLER";
/// HTTP listen address for `/metrics` and `/healthz` (worker, controller).
pub const METRICS_LISTEN: &str = "SWITCHBACK_METRICS_LISTEN";
/// `json` for one JSON object per log line; anything else is human-readable text (every
/// binary, read by the telemetry setup).
pub const LOG_FORMAT: &str = "SWITCHBACK_LOG_FORMAT";
/// Not ours but read beside ours: the standard OpenTelemetry variable saying where to
/// send spans (OTLP/gRPC); unset, no spans leave the process.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

// The worker.

/// The worker's unique id (`--id`; default `<node>-<random>`).
pub const WORKER_ID: &str = "SWITCHBACK_WORKER_ID";
/// The tier the worker serves (`--tier`).
pub const TIER: &str = "SWITCHBACK_TIER";
/// The model id clients may name (`--model`).
pub const MODEL: &str = "SWITCHBACK_MODEL";
/// The node (machine) name shown in the cluster view (`--node`).
pub const NODE: &str = "SWITCHBACK_NODE";
/// The GGUF file of the `mistralrs` engine (`--model-path`).
pub const MODEL_PATH: &str = "SWITCHBACK_MODEL_PATH";

// The controller.

/// The controller's unique id (`--id`; default `controller-<random>`).
pub const CONTROLLER_ID: &str = "SWITCHBACK_CONTROLLER_ID";

// The router and its offline commands.

/// The tier `model: "auto"` uses without difficulty routing (`--default-tier`).
pub const DEFAULT_TIER: &str = "SWITCHBACK_DEFAULT_TIER";
/// The all-MiniLM-L6-v2 directory: overrides the router's `difficulty.minilm_dir`, and is
/// `--minilm-dir` of the commands that encode prompts (and of the decision bench).
pub const MINILM_DIR: &str = "SWITCHBACK_MINILM_DIR";
/// The Python that runs model-written code when labelling code datasets (`label
/// --python`), and that the client tests run.
pub const PYTHON: &str = "SWITCHBACK_PYTHON";

// sbctl: how to reach etcd and the controller.

/// CA of etcd's server certificate (`sbctl --etcd-ca-file`).
pub const ETCD_CA_FILE: &str = "SWITCHBACK_ETCD_CA_FILE";
/// Client certificate for etcd's `--client-cert-auth` (`sbctl --etcd-cert-file`).
pub const ETCD_CERT_FILE: &str = "SWITCHBACK_ETCD_CERT_FILE";
/// Its key (`sbctl --etcd-key-file`).
pub const ETCD_KEY_FILE: &str = "SWITCHBACK_ETCD_KEY_FILE";
/// etcd user (`sbctl --etcd-username`).
pub const ETCD_USERNAME: &str = "SWITCHBACK_ETCD_USERNAME";
/// The file holding that user's password (`sbctl --etcd-password-file`).
pub const ETCD_PASSWORD_FILE: &str = "SWITCHBACK_ETCD_PASSWORD_FILE";
/// The cluster CA (`sbctl --tls-ca-file`).
pub const TLS_CA_FILE: &str = "SWITCHBACK_TLS_CA_FILE";
/// The operator's (or a worker's) certificate (`sbctl --tls-cert-file`).
pub const TLS_CERT_FILE: &str = "SWITCHBACK_TLS_CERT_FILE";
/// Its key (`sbctl --tls-key-file`).
pub const TLS_KEY_FILE: &str = "SWITCHBACK_TLS_KEY_FILE";
/// The name the controller's certificate is checked against (`sbctl --tls-server-name`).
pub const TLS_SERVER_NAME: &str = "SWITCHBACK_TLS_SERVER_NAME";

// The end-to-end tests and the bench binaries (switchback-tests).

/// Where the binaries under test are (default: next to the test executable).
pub const BIN_DIR: &str = "SWITCHBACK_BIN_DIR";
/// Where the test models are (default: `models/` in [`CACHE`]).
pub const MODELS_DIR: &str = "SWITCHBACK_MODELS_DIR";
/// The cache directory of models and routing artifacts (default `~/.cache/switchback`).
pub const CACHE: &str = "SWITCHBACK_CACHE";
/// `RUST_LOG` of the processes a test starts (default `info`).
pub const TEST_LOG: &str = "SWITCHBACK_TEST_LOG";
/// The Python with llama-cpp-python that `worker-bench` compares against.
pub const LLAMA_PYTHON: &str = "SWITCHBACK_LLAMA_PYTHON";

// The Docker Compose cluster (deploy/compose), set by the tests that start it.

/// Host port of the first router.
pub const ROUTER_A_PORT: &str = "SWITCHBACK_ROUTER_A_PORT";
/// Host port of the second router.
pub const ROUTER_B_PORT: &str = "SWITCHBACK_ROUTER_B_PORT";
/// Tag of the images to run.
pub const IMAGE_TAG: &str = "SWITCHBACK_IMAGE_TAG";
