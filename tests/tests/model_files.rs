//! Model files the worker cannot serve: refused before mistral.rs reads them, as bad
//! configuration (exit 64) with a message that names the file and what is wrong, instead
//! of mistral.rs's panic on an architecture it has no loader for.

use std::time::Duration;

use switchback_tests::{bin, free_port};

/// A GGUF v3 header of a `gemma3` model with one F32 tensor: what a Gemma 3 file starts with.
fn gemma3_header() -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(1u64.to_le_bytes()); // tensors
    out.extend(1u64.to_le_bytes()); // metadata entries
    string(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes()); // string
    string(&mut out, "gemma3");
    string(&mut out, "token_embd.weight");
    out.extend(1u32.to_le_bytes());
    out.extend(8u64.to_le_bytes());
    out.extend(0u32.to_le_bytes()); // F32
    out.extend(0u64.to_le_bytes());
    out.extend([0u8; 64]);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gguf_of_an_unknown_architecture_exits_64_naming_file_and_architecture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("gemma-3-270m-it.gguf");
    std::fs::write(&model, gemma3_header()).expect("write the model file");
    let config = dir.path().join("worker.yaml");
    std::fs::write(
        &config,
        format!(
            "id: w\ntier: small\nmodel: gemma\nlisten: 127.0.0.1:{port}\n\
             engine: {{kind: mistralrs, model_path: {model:?}}}\n\
             etcd: {{endpoints: [http://127.0.0.1:{etcd}]}}\n",
            port = free_port(),
            etcd = free_port(),
            model = model.display().to_string(),
        ),
    )
    .expect("write the config");
    let run = tokio::process::Command::new(bin("switchback-worker"))
        .arg("--config")
        .arg(&config)
        .env_remove(switchback_common::env::MODEL_PATH)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the worker exits on its own")
        .expect("run the worker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("gemma-3-270m-it.gguf") && stderr.contains("`gemma3`"),
        "names the file and its architecture: {stderr}"
    );
    assert!(stderr.contains("qwen2"), "says what it loads: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
