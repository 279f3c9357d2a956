//! The worker record stored (as JSON) under `workers/<id>`, bound to the worker's lease,
//! and its conversion to and from the wire type.

use serde::{Deserialize, Serialize};

use crate::pb;

/// What a worker says about itself in etcd. Everything a router needs to place a
/// request on it, except live load (which travels through the controller).
/// Unknown fields are ignored, so a controller can read records of newer workers during
/// a rolling upgrade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    /// host:port of the worker's Inference gRPC service.
    pub address: String,
    /// The machine (or Kubernetes node) the worker runs on.
    pub node: String,
    pub tier: String,
    /// The model id clients may name to pin this model.
    pub model: String,
    /// `mistralrs` or `sim`.
    pub engine: String,
    /// `cpu`, `cuda:0`, … or `none` for `sim`.
    pub accelerator: String,
    pub max_concurrency: u32,
    /// Requests the worker queues beyond `max_concurrency` before refusing; 0 when the
    /// record comes from a worker that does not say (routers then do not pre-check).
    #[serde(default)]
    pub max_queue: u32,
    /// The model calls tools (`tools` in a request); false in records of older workers.
    #[serde(default)]
    pub tool_calls: bool,
    /// The worker constrains answers to a JSON Schema (`response_format`).
    #[serde(default)]
    pub structured_output: bool,
    pub cost_per_mtok_input: f64,
    pub cost_per_mtok_output: f64,
    /// The worker binary's version.
    pub version: String,
    pub started_at_unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("worker record is not valid JSON for this version: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("worker record field `{0}` is empty")]
    Empty(&'static str),
}

impl WorkerRecord {
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and checks a record read from etcd.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecordError> {
        let record: Self = serde_json::from_slice(bytes)?;
        for (name, value) in [
            ("id", &record.id),
            ("address", &record.address),
            ("tier", &record.tier),
            ("model", &record.model),
        ] {
            if value.is_empty() {
                return Err(RecordError::Empty(name));
            }
        }
        Ok(record)
    }
}

impl From<WorkerRecord> for pb::WorkerInfo {
    fn from(r: WorkerRecord) -> Self {
        Self {
            id: r.id,
            address: r.address,
            node: r.node,
            tier: r.tier,
            model: r.model,
            engine: r.engine,
            accelerator: r.accelerator,
            max_concurrency: r.max_concurrency,
            max_queue: r.max_queue,
            tool_calls: r.tool_calls,
            structured_output: r.structured_output,
            cost_per_mtok_input: r.cost_per_mtok_input,
            cost_per_mtok_output: r.cost_per_mtok_output,
            version: r.version,
            started_at_unix_ms: r.started_at_unix_ms,
        }
    }
}

impl From<pb::WorkerInfo> for WorkerRecord {
    fn from(i: pb::WorkerInfo) -> Self {
        Self {
            id: i.id,
            address: i.address,
            node: i.node,
            tier: i.tier,
            model: i.model,
            engine: i.engine,
            accelerator: i.accelerator,
            max_concurrency: i.max_concurrency,
            max_queue: i.max_queue,
            tool_calls: i.tool_calls,
            structured_output: i.structured_output,
            cost_per_mtok_input: i.cost_per_mtok_input,
            cost_per_mtok_output: i.cost_per_mtok_output,
            version: i.version,
            started_at_unix_ms: i.started_at_unix_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WorkerRecord {
        WorkerRecord {
            id: "w1".into(),
            address: "10.0.0.1:50051".into(),
            node: "gpu-a".into(),
            tier: "small".into(),
            model: "smollm2-135m".into(),
            engine: "mistralrs".into(),
            accelerator: "cpu".into(),
            max_concurrency: 4,
            max_queue: 8,
            tool_calls: true,
            structured_output: false,
            cost_per_mtok_input: 0.1,
            cost_per_mtok_output: 0.2,
            version: "0.1.0".into(),
            started_at_unix_ms: 1,
        }
    }

    #[test]
    fn json_round_trip() {
        let r = sample();
        assert_eq!(WorkerRecord::from_json(&r.to_json()).expect("decodes"), r);
    }

    #[test]
    fn wire_round_trip() {
        let r = sample();
        assert_eq!(WorkerRecord::from(pb::WorkerInfo::from(r.clone())), r);
    }

    #[test]
    fn ignores_unknown_fields_but_rejects_empty_ids() {
        let mut v = serde_json::to_value(sample()).expect("serialises");
        v["added_in_a_later_version"] = 1.into();
        assert_eq!(
            WorkerRecord::from_json(v.to_string().as_bytes()).expect("decodes"),
            sample()
        );
        let mut r = sample();
        r.address.clear();
        assert!(matches!(
            WorkerRecord::from_json(&r.to_json()),
            Err(RecordError::Empty("address"))
        ));
        assert!(WorkerRecord::from_json(b"not json").is_err());
    }
}
