//! The contract every Switchback part shares: the gRPC services (generated from
//! `proto/switchback/v1/*.proto`), the etcd key layout and the records stored under it,
//! and the contract enums (a worker's [`Refusal`] kinds).
//!
//! Other crates work with the domain types here ([`WorkerRecord`], [`Keys`]) and only
//! touch the generated `pb` structs at the wire.

pub mod keys;
pub mod record;
pub mod refusal;

pub use keys::Keys;
pub use record::{RecordError, WorkerRecord};
pub use refusal::{REFUSAL_KEY, Refusal, refusal, refusal_of};

/// Generated protobuf and tonic code for `switchback.v1`.
#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod pb {
    tonic::include_proto!("switchback.v1");
}
