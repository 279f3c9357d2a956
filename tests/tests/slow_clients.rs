//! Clients that do not read, do not finish their requests, or only hold sockets open cannot
//! take the router from anyone else: real router, controller, etcd and `sim` workers over
//! real sockets (the test is about the wire, not the model).

use std::time::Duration;

use serde_json::json;
use switchback_tests::{Controller, Etcd, Router, Worker, WorkerSpec, http, wait_for};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Longest any step waits for the router to act; the limits under test are 2–20 s.
/// Streams whose client never reads.
const UNREAD: usize = 24;

const PATIENCE: Duration = Duration::from_secs(60);

fn raw_post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads `tcp` until the router closes it; what arrived, or `None` if it stayed open.
async fn read_to_close(tcp: &mut TcpStream) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(String::from_utf8_lossy(&seen).into_owned())
}

async fn ok_answer(http: &reqwest::Client, router: &Router) -> bool {
    let reply = http
        .post(router.url("/v1/chat/completions"))
        .json(&json!({"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    matches!(reply, Ok(r) if r.status() == 200)
}

#[tokio::test(flavor = "multi_thread")]
async fn unread_streams_do_not_stall_a_worker_for_other_clients() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let spec = WorkerSpec {
        max_concurrency: 64,
        ..WorkerSpec::sim("w-slow", "small", "sim", 0.02)
    };
    let _w = Worker::start(&etcd, spec).await;
    controller
        .wait_ready("w-slow", Duration::from_secs(20))
        .await;
    let router = Router::start(
        &etcd,
        "tiers: [small]\nfirst_token_timeout_s: 5\nrequest_timeout_s: 60\nhttp: {write_timeout_s: 20}\n",
    )
    .await;
    router.wait_model("sim").await;

    // Streamed answers of 4,096 tokens with 20 alternatives each (about 1.4 MB each on
    // the gRPC stream), whose client never reads: more than the router's one HTTP/2
    // connection to the worker would hold if each stream could fill its window.
    let body = json!({
        "model": "small", "stream": true, "max_tokens": 4096, "logprobs": true, "top_logprobs": 20,
        "messages": [{"role": "user", "content": "Write at length."}],
    })
    .to_string();
    let addr = router.base.trim_start_matches("http://").to_owned();
    let mut unread = Vec::new();
    for _ in 0..UNREAD {
        // A small receive buffer, as a client that reads nothing soon has: the router's
        // writes stall after a few kilobytes instead of after the kernel's megabytes.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut tcp = socket
            .connect(addr.parse().expect("router address"))
            .await
            .expect("connect");
        tcp.write_all(raw_post("/v1/chat/completions", &body).as_bytes())
            .await
            .expect("send");
        unread.push(tcp);
    }
    // Everyone else is answered, in full, while those streams sit unread (they stall within
    // a fraction of a second: 4,096 tokens take the sim 80 ms).
    let http = reqwest::Client::new();
    for i in 0..40 {
        assert!(
            ok_answer(&http, &router).await,
            "request {i} failed while {UNREAD} streams were unread"
        );
    }

    // The router gives up on the readers after the write timeout: each stream is cut
    // (no `[DONE]`), its connection closed.
    wait_for(
        "the router to cut the unread streams (write timeout)",
        PATIENCE,
        || async {
            let n = router
                .metric("switchback_router_connections_write_timeouts_total")
                .await?;
            (n >= UNREAD as f64).then_some(())
        },
    )
    .await;
    for tcp in &mut unread {
        let got = read_to_close(tcp)
            .await
            .expect("the unread stream was closed");
        assert!(
            got.starts_with("HTTP/1.1 200"),
            "{}",
            &got[..got.len().min(200)]
        );
        assert!(
            !got.contains("data: [DONE]"),
            "an unread stream ran to its end"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sockets_slow_heads_and_slow_bodies_are_cut_off_and_capped() {
    let etcd = Etcd::start().await;
    let controller = Controller::start(&etcd).await;
    let _w = Worker::start(&etcd, WorkerSpec::sim("w-idle", "small", "sim", 0.5)).await;
    controller
        .wait_ready("w-idle", Duration::from_secs(20))
        .await;
    let router = Router::start(
        &etcd,
        "tiers: [small]\nhttp: {max_connections: 24, header_timeout_s: 5, idle_timeout_s: 5, body_timeout_s: 2}\n",
    )
    .await;
    router.wait_model("sim").await;
    let addr = router.base.trim_start_matches("http://").to_owned();

    // A body that never finishes arriving: 408, OpenAI-shaped, and the socket is closed.
    let mut trickle = TcpStream::connect(&addr).await.expect("connect");
    trickle
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\":")
        .await
        .expect("send");
    let got = read_to_close(&mut trickle)
        .await
        .expect("a body that never ends held its connection");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("\"code\":\"request_timeout\""), "{got}");

    // A request head that trickles in, one byte at a time, is cut off by the header timeout.
    let mut slow_head = TcpStream::connect(&addr).await.expect("connect");
    slow_head
        .write_all(b"GET /v1/models HTTP/1.1\r\n")
        .await
        .expect("send");
    let cut = tokio::time::timeout(PATIENCE, async {
        let mut probe = [0u8; 64];
        loop {
            if slow_head.write_all(b"x").await.is_err() {
                return;
            }
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(200), slow_head.read(&mut probe)).await
            {
                return;
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "a slowloris head was read for {PATIENCE:?}");

    // Sockets that send nothing fill the cap; one past it is closed at once; all of them
    // are closed by the header or idle timeout, and then the router serves again. Both are
    // 5 s, far longer than opening 25 sockets takes, so the cap is full when the last one
    // arrives.
    let mut idle = Vec::new();
    for _ in 0..24 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let mut over = TcpStream::connect(&addr).await.expect("connect");
    read_to_close(&mut over)
        .await
        .expect("a connection past the cap was kept");
    for tcp in &mut idle {
        read_to_close(tcp)
            .await
            .expect("an idle socket was kept open");
    }
    let http = reqwest::Client::new();
    wait_for(
        "the router to serve again once the idle sockets are gone",
        PATIENCE,
        || async { ok_answer(&http, &router).await.then_some(()) },
    )
    .await;
    let refused = router
        .metric("switchback_router_connections_refused_total")
        .await
        .expect("the refusals are counted");
    assert!(refused >= 1.0, "{refused}");
    let reply = http::get_with(&router.url("/v1/models"), &[]).await;
    assert_eq!(reply.status, 200);
}
