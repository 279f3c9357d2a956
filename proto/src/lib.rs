//! The contract every Switchback part shares: the gRPC services (generated from
//! `proto/switchback/v1/*.proto`), the etcd key layout and the records stored under it.
//!
//! Other crates work with the domain types here ([`WorkerRecord`], [`Keys`]) and only
//! touch the generated `pb` structs at the wire.

pub mod keys;
pub mod record;

pub use keys::Keys;
pub use record::{RecordError, WorkerRecord};

/// Generated protobuf and tonic code for `switchback.v1`.
#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod pb {
    tonic::include_proto!("switchback.v1");
}

/// Metadata key a worker sets on the requests it refuses itself (draining, queue full,
/// shutting down), so that a caller can tell "the worker said no" from "the worker could
/// not be reached" (which makes the worker suspect).
pub const REFUSAL_KEY: &str = "x-switchback-refusal";

/// A worker's own refusal: `status` with [`REFUSAL_KEY`] set to `kind`.
pub fn refusal(mut status: tonic::Status, kind: &'static str) -> tonic::Status {
    status.metadata_mut().insert(
        REFUSAL_KEY,
        tonic::metadata::MetadataValue::from_static(kind),
    );
    status
}

/// The refusal kind a worker put on `status`, if it refused the request itself.
pub fn refusal_of(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(REFUSAL_KEY)
        .and_then(|v| v.to_str().ok())
}
