//! The router's id for each HTTP request: assigned as the request arrives, sent back in
//! the `x-request-id` header of every response (answers, streams, every error), recorded
//! on the request's span (`switchback.request_id`) and so on its log lines, and passed to
//! the worker as the generation's `request_id`. For a generation it is also the answer's
//! `id` (`chatcmpl-…`, `cmpl-…`); other requests get `req-…`.

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};

use super::Endpoint;

/// The response header that carries the id.
pub const HEADER: &str = "x-request-id";

/// One request's id: a prefix and 32 hex digits, so always a valid header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh id for a request to `path`.
    pub fn for_path(path: &str) -> Self {
        let prefix = Endpoint::of_path(path).map_or("req", Endpoint::id_prefix);
        Self(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Middleware around every route and the fallbacks: assigns the id, hands it to the
/// handler as a request extension, and sets `x-request-id` on whatever the response is.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = RequestId::for_path(request.uri().path());
    request.extensions_mut().insert(id.clone());
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let mut response = next.run(request).await;
    // The path is escaped and bounded only when the line is logged.
    tracing::debug!(request_id = %id, %method, path = %switchback_common::text::bounded(uri.path(), 160), status = response.status().as_u16(), "answered");
    // Always a header value: a prefix and hex digits.
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_by_endpoint_and_unique() {
        let chat = RequestId::for_path("/v1/chat/completions");
        let completion = RequestId::for_path("/v1/completions");
        let other = RequestId::for_path("/v1/models/a/b");
        for (id, prefix) in [
            (&chat, "chatcmpl-"),
            (&completion, "cmpl-"),
            (&other, "req-"),
        ] {
            let hex = id
                .as_str()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{id} lacks {prefix}"));
            assert_eq!(hex.len(), 32, "{id}");
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            HeaderValue::from_str(id.as_str()).expect("a header value");
        }
        assert_ne!(chat, RequestId::for_path("/v1/chat/completions"));
    }
}
