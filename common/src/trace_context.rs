//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata, so that one query is
//! one trace across the router and the workers. Both ends do nothing when this process
//! does not export spans.

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry;

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes `span`'s trace context into outgoing gRPC metadata.
pub fn inject(span: &tracing::Span, metadata: &mut MetadataMap) {
    if !telemetry::exporting() {
        return;
    }
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}

/// Makes `span` a child of the trace context in incoming gRPC metadata, if there is one.
/// Call it before `span` is entered.
pub fn continue_from(span: &tracing::Span, metadata: &MetadataMap) {
    if !telemetry::exporting() || metadata.get("traceparent").is_none() {
        return;
    }
    let cx =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(metadata)));
    if let Err(err) = span.set_parent(cx) {
        tracing::debug!(%err, "cannot continue the caller's trace");
    }
}

/// Sets an attribute whose key is only known at run time (e.g. one per tier) on `span`.
pub fn set_attribute(span: &tracing::Span, key: String, value: impl Into<opentelemetry::Value>) {
    if telemetry::exporting() {
        span.set_attribute(key, value);
    }
}

/// Adds an event with attributes to `span`, whatever the log filter says.
pub fn add_event(
    span: &tracing::Span,
    name: &'static str,
    attributes: Vec<(&'static str, String)>,
) {
    if telemetry::exporting() {
        span.add_event(
            name,
            attributes
                .into_iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(k, v))
                .collect(),
        );
    }
}

/// Whether spans leave this process (cheap: one atomic load). Callers skip building
/// attributes nobody will read.
pub fn exporting() -> bool {
    telemetry::exporting()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_a_traceparent() {
        let mut map = MetadataMap::new();
        MetadataInjector(&mut map).set(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        );
        let ex = MetadataExtractor(&map);
        assert_eq!(
            ex.get("traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(ex.keys(), vec!["traceparent"]);
    }

    #[test]
    fn nothing_is_injected_when_not_exporting() {
        let mut map = MetadataMap::new();
        inject(&tracing::Span::none(), &mut map);
        assert!(map.is_empty());
    }
}
