//! `/metrics` (Prometheus, `switchback_worker_*`) and `/healthz` on the worker's optional
//! HTTP listener. Rendered at scrape time from the live load counters, so what is scraped
//! is exactly what the worker reports to the controller, plus the process's live tasks,
//! open fds and sockets.

use std::sync::Arc;

use axum::{extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::load::Load;

/// What a scrape reads.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub load: Arc<Load>,
    pub tier: String,
    pub model: String,
    pub max_queue: u32,
}

/// OpenMetrics text for the worker's current state.
pub fn render(s: &Scrape) -> String {
    let mut r = Registry::with_prefix_and_labels(
        "switchback_worker",
        [
            ("tier".into(), s.tier.clone().into()),
            ("model".into(), s.model.clone().into()),
        ]
        .into_iter(),
    );
    switchback_common::tls::register_metrics(&mut r);
    let gauge = |r: &mut Registry, name: &str, help: &str, v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        r.register(name, help, g);
    };
    gauge(
        &mut r,
        "running_requests",
        "Requests generating now",
        i64::from(s.load.running()),
    );
    gauge(
        &mut r,
        "queued_requests",
        "Requests accepted and waiting for a slot",
        i64::from(s.load.waiting()),
    );
    gauge(
        &mut r,
        "capacity_requests",
        "Requests the worker generates at once (slots)",
        i64::from(s.load.capacity),
    );
    gauge(
        &mut r,
        "max_queue_requests",
        "Requests the worker queues beyond its slots before refusing",
        i64::from(s.max_queue),
    );
    gauge(
        &mut r,
        "draining",
        "1 while the worker refuses new work (drain or shutdown)",
        i64::from(s.load.is_draining()),
    );
    let tokens = Counter::<u64>::default();
    tokens.inc_by(s.load.tokens());
    r.register("generated_tokens", "Tokens generated since start", tokens);
    let ttft = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    ttft.set(s.load.ttft() / 1000.0);
    r.register(
        "time_to_first_token_seconds_avg",
        "Smoothed time to first token of recent requests",
        ttft,
    );
    switchback_common::process::ProcessGauges::register(&mut r).update();
    let mut out = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &r) {
        tracing::error!(%err, "cannot encode metrics");
    }
    out
}

async fn scrape(State(s): State<Scrape>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(&s),
    )
}

/// Serves `/metrics` and `/healthz` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    s: Scrape,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(s);
    switchback_common::http_serve::serve(
        listener,
        app,
        switchback_common::http_serve::HttpLimits::for_metrics(),
        Default::default(),
        stop,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_live_load_with_tier_and_model_labels() {
        let load = Arc::new(Load::new(4));
        let _running = load.enter_running();
        load.add_tokens(7);
        let text = render(&Scrape {
            load,
            tier: "small".into(),
            model: "m".into(),
            max_queue: 16,
        });
        assert!(
            text.contains(r#"switchback_worker_running_requests{tier="small",model="m"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"switchback_worker_capacity_requests{tier="small",model="m"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"switchback_worker_generated_tokens_total{tier="small",model="m"} 7"#),
            "{text}"
        );
        for process in ["tokio_alive_tasks", "open_fds", "open_sockets"] {
            assert!(
                text.contains(&format!(
                    r#"switchback_worker_{process}{{tier="small",model="m"}} "#
                )),
                "{text}"
            );
        }
    }
}
