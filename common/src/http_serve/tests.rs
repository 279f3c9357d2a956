//! Unit tests of `http_serve`.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest any test here waits for the server to act; the limits under test are ~1 s.
const PATIENCE: Duration = Duration::from_secs(20);

async fn server(limits: HttpLimits) -> (SocketAddr, ConnMetrics, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let metrics = ConnMetrics::default();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, app, limits, metrics.clone(), stop.clone()));
    (addr, metrics, stop)
}

fn quick() -> HttpLimits {
    HttpLimits {
        max_connections: 64,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(1),
        max_streams_per_connection: 8,
    }
}

/// One keep-alive GET on `tcp`; the response's head and body.
async fn get(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"ok") {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Whether the server closes `tcp` (reads end) within [`PATIENCE`].
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let (addr, metrics, _stop) = server(HttpLimits {
        header_timeout: Duration::from_secs(600),
        ..quick()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    assert!(get(&mut tcp).await.starts_with("HTTP/1.1 200"));
    assert!(
        closed_by_server(&mut tcp).await,
        "the idle connection stays open"
    );
    assert_eq!(metrics.idle_closed.get(), 1);
}

#[tokio::test]
async fn a_request_head_that_trickles_in_is_cut_off() {
    let (addr, _metrics, _stop) = server(HttpLimits {
        idle_timeout: Duration::from_secs(600),
        ..quick()
    })
    .await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
    // A header byte every 100 ms keeps the socket busy but never ends the head.
    let trickle = async {
        loop {
            if tcp.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut probe = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut probe)).await
            {
                return;
            }
        }
    };
    assert!(
        tokio::time::timeout(PATIENCE, trickle).await.is_ok(),
        "a slowloris head was read for {PATIENCE:?}"
    );
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_accept_and_slots_come_back() {
    let (addr, metrics, _stop) = server(HttpLimits {
        max_connections: 2,
        header_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        ..quick()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        assert!(get(&mut tcp).await.starts_with("HTTP/1.1 200"));
        held.push(tcp);
    }
    let mut third = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_by_server(&mut third).await,
        "a third connection was kept"
    );
    assert_eq!(metrics.refused.get(), 1);
    assert_eq!(metrics.open.get(), 2);
    drop(held.pop());
    // The server frees the slot once it sees the close: retry until it has.
    let served = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            if tcp
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .is_ok()
            {
                let mut buf = [0u8; 256];
                if let Ok(n) = tcp.read(&mut buf).await
                    && buf[..n].starts_with(b"HTTP/1.1 200")
                {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "a freed slot was never given to a new connection"
    );
}

#[tokio::test]
async fn a_write_the_reader_never_takes_times_out() {
    let (ours, mut theirs) = tokio::io::duplex(64);
    let timeouts = Counter::default();
    let mut io = WriteDeadline::new(ours, Duration::from_secs(2), timeouts.clone());
    // Progress resets the clock: the reader takes 64 bytes at a time, a tenth of the
    // timeout apart, four times, then stops reading.
    let slow_reader = async {
        let mut buf = [0u8; 64];
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            theirs.read_exact(&mut buf).await.expect("read");
        }
        theirs
    };
    let (written, theirs) = tokio::join!(io.write_all(&[7u8; 6 * 64]), slow_reader);
    // 5 × 64 bytes went (the buffer's and the four reads'); the last 64 never could.
    let err = written.expect_err("a write nobody reads");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(timeouts.get(), 1);
    drop(theirs);
}

#[test]
fn limits_are_validated_with_the_key_named() {
    let (limits, body) = RawHttp::default().validate().expect("defaults");
    assert_eq!(limits, HttpLimits::default());
    assert_eq!(body, Duration::from_secs(30));
    let err = RawHttp {
        idle_timeout_s: Some(0),
        ..RawHttp::default()
    }
    .validate()
    .expect_err("zero");
    assert!(err.to_string().contains("http.idle_timeout_s"), "{err}");
    assert!(
        RawHttp {
            max_connections: Some(0),
            ..RawHttp::default()
        }
        .validate()
        .is_err()
    );
}

#[test]
fn the_cap_fits_under_the_open_file_limit() {
    let cap = connection_cap(usize::MAX);
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    if let Some(limit) = limit {
        assert!((cap as u64) < limit, "cap {cap} ≥ limit {limit}");
    }
    assert_eq!(connection_cap(10), 10);
}
