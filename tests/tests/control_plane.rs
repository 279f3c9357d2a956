//! Bounds on what the control plane takes from a caller: a failure report cannot grow the
//! cluster snapshot every router receives, nor forge the controller's log lines.

use std::time::Duration;

use switchback_proto::pb;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec};

#[tokio::test(flavor = "multi_thread")]
async fn failure_reports_are_bounded_and_escaped_and_new_routers_still_start() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let mut spec = WorkerSpec::sim("w-a", "small", "sim", 1.0);
    spec.lease_ttl_s = 60;
    let _worker = Worker::start(&etcd, spec).await;
    controller.wait_ready("w-a", Duration::from_secs(20)).await;
    let mut client =
        pb::controller_client::ControllerClient::connect(format!("http://{}", controller.address))
            .await
            .expect("connect to the controller");

    // Megabytes are refused before they are decoded.
    let huge = client
        .report_worker_failure(pb::WorkerFailure {
            worker_id: "w-a".into(),
            reporter: "router@x".into(),
            reason: "r".repeat(3 << 20),
        })
        .await
        .expect_err("a 3 MiB report");
    assert!(
        matches!(
            huge.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{huge:?}"
    );
    // A long reason with a forged log line is taken, escaped and cut.
    client
        .report_worker_failure(pb::WorkerFailure {
            worker_id: "w-a".into(),
            reporter: "router@x".into(),
            reason: format!("refused\nERROR forged line\u{1b}[31m{}", "z".repeat(10_000)),
        })
        .await
        .expect("a 10 kB report");
    let w = controller.worker("w-a").await.expect("w-a in the view");
    assert_eq!(w.health, pb::WorkerHealth::Unreachable as i32);
    assert!(w.health_reason.len() < 512, "{}", w.health_reason.len());
    assert!(
        !w.health_reason.contains('\n') && !w.health_reason.contains('\u{1b}'),
        "{:?}",
        w.health_reason
    );
    assert!(w.health_reason.contains("refused"), "{}", w.health_reason);
    // An overlong worker id or reporter is refused, naming the field.
    let err = client
        .report_worker_failure(pb::WorkerFailure {
            worker_id: "w".repeat(200),
            reporter: "router@x".into(),
            reason: "r".into(),
        })
        .await
        .expect_err("a 200-byte worker id");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("worker_id"), "{}", err.message());

    // The cluster snapshot stays small, so a router started now gets it and is ready.
    let _router = Router::start(&etcd, "").await;
}
