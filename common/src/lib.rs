//! What every Switchback binary shares beyond the wire contract: telemetry setup, signal
//! handling, and etcd access (connecting, keys kept alive under a lease, finding the
//! controller leader).

pub mod etcd;
pub mod telemetry;

pub use telemetry::{EXIT_BAD_CONFIG, Guard, init, shutdown_signal};
