//! Logging, OpenTelemetry tracing and signal handling for every Switchback binary, so
//! that all telemetry setup lives in one place.
//!
//! Logs go to stderr (`RUST_LOG` filters them, `SWITCHBACK_LOG_FORMAT=json` makes them
//! JSON). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over OTLP/gRPC
//! (batched; `OTEL_BSP_SCHEDULE_DELAY` and the other standard variables apply) and the W3C
//! trace context propagator is installed, so traces continue across processes.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::env;

/// Set once spans are exported; the trace-context propagation does nothing until then.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans over OTLP.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Keeps the span exporter alive; dropping it flushes pending spans.
#[must_use = "dropping the guard stops span export"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("otlp", &self.provider.is_some())
            .finish()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("flushing OpenTelemetry spans failed: {err}");
        }
    }
}

/// Installs the global subscriber for `service` (e.g. `switchback-router`).
pub fn init(service: &'static str) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var(env::LOG_FORMAT).is_ok_and(|v| v == "json");
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        // Colour only for a person at a terminal: escape codes in a log file or a
        // collector are noise, and styling every span field costs the router CPU on each
        // request.
        use std::io::IsTerminal;
        let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    };

    let provider = match std::env::var(env::OTLP_ENDPOINT) {
        Ok(endpoint) if !endpoint.is_empty() => match otlp_provider(service) {
            Ok(provider) => Some(provider),
            Err(err) => {
                eprintln!("OpenTelemetry export to {endpoint} disabled: {err}");
                None
            }
        },
        _ => None,
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .boxed()
    });

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    if provider.is_some() {
        // W3C trace context across processes (gRPC metadata, see `trace_context`).
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Guard { provider }
}

fn otlp_provider(service: &'static str) -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and the other OTEL_* variables) itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
}

/// Exit code for a configuration error (EX_CONFIG from sysexits.h is 78; we follow
/// EX_USAGE, 64, as the style guide asks: "bad config exits with 64").
pub const EXIT_BAD_CONFIG: i32 = 64;

/// Unwraps a loaded config, or exits 64 saying which field is wrong and why.
// Bootstrap, before anything runs that a shutdown would have to stop.
#[allow(clippy::disallowed_methods)]
pub fn config_or_exit<C, E: std::fmt::Display>(binary: &str, config: Result<C, E>) -> C {
    config.unwrap_or_else(|err| {
        eprintln!("{binary}: bad configuration: {err}");
        std::process::exit(EXIT_BAD_CONFIG)
    })
}

/// Binds `addr`, or exits 1 saying why.
// Bootstrap, before anything runs that a shutdown would have to stop.
#[allow(clippy::disallowed_methods)]
pub async fn bind_or_exit(binary: &str, addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("{binary}: cannot listen on {addr}: {err}");
            std::process::exit(1)
        }
    }
}

/// The process's root cancellation token, cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        cancel.cancel();
    });
    token
}

/// Exits 1 after logging, when a binary's `run` failed.
// `run` has returned: its shutdown is over, and only the exit status is left to give.
#[allow(clippy::disallowed_methods)]
pub fn exit_on_error<E: std::fmt::Display>(binary: &str, result: Result<(), E>) {
    if let Err(err) = result {
        tracing::error!(%err, "{binary} failed");
        eprintln!("{binary}: {err}");
        std::process::exit(1);
    }
}
