//! Roles under mutual TLS, with real processes (etcd, a controller, a `sim` worker, a
//! router): a holder of a cluster certificate can make only the calls of the role its
//! certificate names. Every forged control-plane call that a plaintext cluster believes —
//! a load report saying another worker is draining, a failure report taking a worker out,
//! a drain of someone else's worker, a prompt sent straight to a worker — is refused with
//! PERMISSION_DENIED and changes nothing, while the router's own calls keep working.

use std::time::Duration;

use serde_json::json;
use switchback_common::tls::Role;
use switchback_proto::pb::{
    self, controller_client::ControllerClient, inference_client::InferenceClient,
};
use switchback_tests::{
    Controller, Etcd, Router, Worker, WorkerSpec, http,
    tls::{ClusterPki, grpc_channel},
};
use tonic::Code;

async fn controller_as(
    controller: &Controller,
    pki: &ClusterPki,
    role: Role,
    id: &str,
) -> ControllerClient<tonic::transport::Channel> {
    ControllerClient::new(
        grpc_channel(&controller.address, pki.client_as(role, id))
            .await
            .expect("mTLS channel to the controller"),
    )
}

async fn chat_ok(router: &Router) {
    let reply = http::post_json(
        &router.url("/v1/chat/completions"),
        &json!({"model": "small", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn denied<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>) {
    match result {
        Err(status) if status.code() == Code::PermissionDenied => {}
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_certificate_makes_only_the_calls_of_its_role() {
    let etcd = Etcd::start().await;
    let pki = ClusterPki::new();
    let controller = Controller::start_tls(&etcd, &pki).await;
    controller.wait_leader(Duration::from_secs(30)).await;
    let mut spec = WorkerSpec::sim("w1", "small", "sim-small", 1.0);
    spec.tls = Some(pki.clone());
    // A long lease: a forged report, if believed, would be what takes w1 out.
    spec.lease_ttl_s = 60;
    let worker = Worker::start(&etcd, spec).await;
    controller.wait_ready("w1", Duration::from_secs(60)).await;
    let router = Router::start(&etcd, &pki.yaml(Role::Router, "r1")).await;
    chat_ok(&router).await;

    // Load reports: only from a worker, and only for itself. A forged "w1 is draining"
    // from a router, an operator or another worker is refused and not applied.
    for (who, role, id) in [
        ("a router", Role::Router, "r1"),
        ("an operator", Role::Operator, "op"),
        ("worker w2", Role::Worker, "w2"),
    ] {
        let mut c = controller_as(&controller, &pki, role, id).await;
        let forged = pb::LoadReport {
            worker_id: "w1".into(),
            capacity: 4,
            draining: true,
            ..Default::default()
        };
        denied(
            &format!("a load report for w1 from {who}"),
            c.report_load(tokio_stream::iter(vec![forged])).await,
        );
    }
    assert_eq!(
        controller.health_of("w1").await,
        Some(pb::WorkerHealth::Ready),
        "a refused load report changed w1"
    );

    // Failure reports: only from routers.
    for (who, role, id) in [
        ("a worker", Role::Worker, "w2"),
        ("an operator", Role::Operator, "op"),
        ("a controller", Role::Controller, "c2"),
    ] {
        let mut c = controller_as(&controller, &pki, role, id).await;
        denied(
            &format!("a failure report from {who}"),
            c.report_worker_failure(pb::WorkerFailure {
                worker_id: "w1".into(),
                reporter: "forged".into(),
                reason: "forged".into(),
            })
            .await,
        );
    }
    assert_eq!(
        controller.health_of("w1").await,
        Some(pb::WorkerHealth::Ready),
        "a refused failure report changed w1"
    );

    // Drains: an operator drains any worker; a worker only itself; a router none.
    for (who, role, id) in [
        ("a router", Role::Router, "r1"),
        ("worker w2", Role::Worker, "w2"),
    ] {
        let mut c = controller_as(&controller, &pki, role, id).await;
        denied(
            &format!("a drain of w1 from {who}"),
            c.drain(pb::DrainRequest {
                worker_id: "w1".into(),
                undrain: false,
                reason: "forged".into(),
            })
            .await,
        );
    }
    assert!(
        !etcd
            .has_key(&switchback_proto::Keys::default().drain("w1"))
            .await,
        "a refused drain left a drain mark"
    );

    // Generate: only from routers. Refused before the request is even looked at.
    for (who, role, id) in [
        ("an operator", Role::Operator, "op"),
        ("a worker", Role::Worker, "w2"),
        ("a controller", Role::Controller, "c1"),
    ] {
        let mut c = InferenceClient::new(
            grpc_channel(&worker.address, pki.client_as(role, id))
                .await
                .expect("mTLS channel to the worker"),
        );
        denied(
            &format!("a generation from {who}"),
            c.generate(pb::GenerateRequest::default()).await,
        );
    }

    // The router's own calls went on working through all of it.
    chat_ok(&router).await;

    // A worker drains itself (its preStop hook), and an operator undrains it.
    let mut own = controller_as(&controller, &pki, Role::Worker, "w1").await;
    let drained = own
        .drain(pb::DrainRequest {
            worker_id: "w1".into(),
            undrain: false,
            reason: "preStop".into(),
        })
        .await
        .expect("a worker drains itself");
    assert!(drained.into_inner().known);
    let mut operator = controller_as(&controller, &pki, Role::Operator, "op").await;
    operator
        .drain(pb::DrainRequest {
            worker_id: "w1".into(),
            undrain: true,
            reason: String::new(),
        })
        .await
        .expect("an operator undrains");
    controller.wait_ready("w1", Duration::from_secs(60)).await;
    chat_ok(&router).await;
}
