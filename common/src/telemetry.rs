//! Logging, OpenTelemetry tracing and signal handling for every Switchback binary, so
//! that all telemetry setup lives in one place.
//!
//! Logs go to stderr (`RUST_LOG` filters them, `SWITCHBACK_LOG_FORMAT=json` makes them
//! JSON). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over OTLP/gRPC
//! (batched; `OTEL_BSP_SCHEDULE_DELAY` and the other standard variables apply) and the W3C
//! trace context propagator is installed, so traces continue across processes.

use std::{
    fmt,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    EnvFilter, Layer,
    field::RecordFields,
    fmt::{FormatFields, FormattedFields, format::Writer},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

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
            .fmt_fields(LogFields)
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

/// Fields on text log lines: `name=value` (strings quoted), without styling and without
/// the `otel.*` fields, which name and classify spans for the trace exporter only. The fmt
/// layer formats a span's fields when the span opens and whenever one is recorded, on every
/// request whether or not a line is ever logged in it: the router's request path pays for
/// each field here.
struct LogFields;

impl<'writer> FormatFields<'writer> for LogFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = LogVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> fmt::Result {
        let mut visitor = LogVisitor {
            first: current.fields.is_empty(),
            writer: current.as_writer(),
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct LogVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl LogVisitor<'_> {
    /// Writes the separator and `name=` (nothing for the message) and says whether the
    /// field is shown at all.
    fn begin(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("otel.") || name.starts_with("log.") {
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.result = self.writer.write_char(' ');
        }
        if name != "message" {
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for LogVisitor<'_> {
    /// Strings are quoted and escaped as `{:?}` would (the message is not), and copied as
    /// they are when there is nothing to escape: no formatting machinery per field.
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.begin(field) {
            return;
        }
        let plain = value
            .bytes()
            .all(|b| b.is_ascii() && !b.is_ascii_control() && b != b'"' && b != b'\\');
        self.result = if field.name() == "message" {
            self.writer.write_str(value)
        } else if plain {
            self.writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'))
        } else {
            write!(self.writer, "{value:?}")
        };
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.begin(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

    use super::LogFields;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn log_lines_carry_span_fields_recorded_later_but_not_the_exporters_own() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .fmt_fields(LogFields)
                .with_writer(lines.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                otel.name = "chat small",
                otel.kind = "server",
                switchback.request_id = %"chatcmpl-1",
                switchback.tier = tracing::field::Empty,
            );
            span.record("switchback.tier", "small");
            let _entered = span.enter();
            tracing::warn!(worker = "w-1", attempts = 2, "stream broke");
            tracing::warn!(reason = "said \"no\"\n", "refused");
        });
        let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
        assert_eq!(
            text.trim(),
            concat!(
                r#"WARN request{switchback.request_id=chatcmpl-1 switchback.tier="small"}: switchback_common::telemetry::tests: stream broke worker="w-1" attempts=2"#,
                "\n",
                r#" WARN request{switchback.request_id=chatcmpl-1 switchback.tier="small"}: switchback_common::telemetry::tests: refused reason="said \"no\"\n""#,
            ),
        );
    }
}
