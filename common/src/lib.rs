//! What every Switchback binary shares beyond the wire contract: telemetry setup, signal
//! handling, TLS (certificates that reload, mTLS for gRPC), etcd access (connecting, keys
//! kept alive under a lease, finding the controller leader), and the process gauges every
//! `/metrics` carries.

pub mod backoff;
pub mod config;
pub mod env;
pub mod etcd;
pub mod etcd_config;
pub mod etcd_roles;
pub mod fs;
pub mod http_serve;
pub mod net;
pub mod process;
pub mod registry;
pub mod reload;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod trace_context;

pub use telemetry::{
    EXIT_BAD_CONFIG, Guard, bind_or_exit, config_or_exit, exit_on_error, init, shutdown_on_signal,
    shutdown_signal,
};
