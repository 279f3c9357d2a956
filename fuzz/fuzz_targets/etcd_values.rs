//! Everything the binaries decode from etcd, where any client that can write the cluster
//! prefix can put any bytes: worker records (`workers/<id>`, JSON), drain marks
//! (`drain/<id>`, JSON with a reason) and the key parsing that tells them apart. The
//! policy key has its own target (policy.rs).
//!
//! Invariants: a record that decodes has its required fields, re-encodes to JSON that
//! decodes to the same record, and survives the wire type (prost) unchanged; a key that
//! parses as a worker or drain key is rebuilt exactly from the id it yields.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use switchback_controller::membership::drain_reason;
use switchback_proto::{Keys, WorkerRecord, pb};

fuzz_target!(|data: &[u8]| {
    record(data);

    let reason = drain_reason(data);
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(data) {
        let expected = map
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or_default();
        assert_eq!(reason, expected);
    }

    if let Ok(text) = std::str::from_utf8(data) {
        keys(text);
    }
});

fn record(data: &[u8]) {
    let Ok(r) = WorkerRecord::from_json(data) else {
        return;
    };
    for field in [&r.id, &r.address, &r.tier, &r.model] {
        assert!(!field.is_empty(), "a required field is empty");
    }
    let json = r.to_json();
    let again = WorkerRecord::from_json(&json).unwrap_or_else(|e| {
        panic!(
            "re-encoded record does not decode: {e}: {}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(again, r, "JSON round trip changed the record");
    let wire = pb::WorkerInfo::from(r.clone()).encode_to_vec();
    let info = pb::WorkerInfo::decode(wire.as_slice()).expect("own encoding decodes");
    assert_eq!(
        WorkerRecord::from(info),
        r,
        "wire round trip changed the record"
    );
}

fn keys(text: &str) {
    for keys in [Keys::default(), Keys::new("/p")] {
        if let Some(id) = keys.worker_id_of(text) {
            assert_eq!(keys.worker(id), text);
            assert_eq!(keys.drained_id_of(text), None);
        }
        if let Some(id) = keys.drained_id_of(text) {
            assert_eq!(keys.drain(id), text);
        }
        // Any id without a `/` is read back from the keys built for it.
        if !text.is_empty() && !text.contains('/') {
            assert_eq!(keys.worker_id_of(&keys.worker(text)), Some(text));
            assert_eq!(keys.drained_id_of(&keys.drain(text)), Some(text));
        }
    }
}
