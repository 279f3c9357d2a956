//! The router's errors, classified once near the cause and mapped once to an
//! OpenAI-shaped HTTP response: `{"error": {"message", "type", "param", "code"}}`.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// A field is missing, of the wrong type or out of range.
    #[error("{message}")]
    InvalidField { param: String, message: String },
    /// The body is over the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// No tier, model or `auto` by that name.
    #[error("the model `{0}` does not exist; GET /v1/models lists what this cluster serves")]
    UnknownModel(String),
    /// The tier exists but no worker of it can take the request now.
    #[error("no worker of tier `{tier}` is available right now; retry shortly")]
    NoCapacity { tier: String },
    /// Every ready worker of the tier is full (slots and queues) and none freed up within
    /// the admission wait.
    #[error("tier `{tier}` is at capacity: every worker's slots and queue are full; retry shortly")]
    Saturated { tier: String },
    /// The router has no cluster view yet.
    #[error("the router has not received a cluster view yet; retry shortly")]
    NotReady,
    /// The worker refused or failed the request.
    #[error("{message}")]
    Upstream { status: StatusCode, message: String },
    /// The request took longer than its deadline.
    #[error("the request did not finish within {0} seconds")]
    Timeout(u64),
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::InvalidField { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownModel(_) => StatusCode::NOT_FOUND,
            Self::NoCapacity { .. } | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Saturated { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream { status, .. } => *status,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// OpenAI's `type` and `code` fields.
    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::MalformedJson(_) => ("invalid_request_error", Some("invalid_json")),
            Self::InvalidField { .. } => ("invalid_request_error", Some("invalid_value")),
            Self::BodyTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            Self::UnknownModel(_) => ("invalid_request_error", Some("model_not_found")),
            Self::NoCapacity { .. } | Self::NotReady => {
                ("service_unavailable", Some("no_capacity"))
            }
            Self::Saturated { .. } => ("rate_limit_exceeded", Some("tier_saturated")),
            Self::Upstream { status, .. } if status.is_client_error() => {
                ("invalid_request_error", None)
            }
            Self::Upstream { .. } => ("server_error", Some("upstream_error")),
            Self::Timeout(_) => ("server_error", Some("timeout")),
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidField { param, .. } => Some(param),
            Self::UnknownModel(_) => Some("model"),
            _ => None,
        }
    }

    /// The error body, also used as an SSE error event.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        json!({
            "error": {
                "message": self.to_string(),
                "type": kind,
                "param": self.param(),
                "code": code,
            }
        })
    }

    /// A bounded label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) | Self::InvalidField { .. } | Self::BodyTooLarge { .. } => {
                "invalid"
            }
            Self::UnknownModel(_) => "unknown_model",
            Self::NoCapacity { .. } | Self::NotReady => "unavailable",
            Self::Saturated { .. } => "saturated",
            Self::Upstream { .. } => "upstream_error",
            Self::Timeout(_) => "timeout",
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable | Code::Aborted | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Ok
            | Code::Unknown
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss
            | Code::Unauthenticated => StatusCode::BAD_GATEWAY,
        };
        // Client-side problems carry the worker's explanation; anything else is an
        // internal diagnostic and stays in the logs.
        let message = if http.is_client_error() {
            format!("the worker rejected the request: {}", status.message())
        } else {
            tracing::warn!(code = ?status.code(), message = status.message(), "worker call failed");
            "the worker failed to serve the request".to_owned()
        };
        Self::Upstream {
            status: http,
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_openai_shaped() {
        let e = ApiError::invalid("temperature", "temperature must be between 0 and 2");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let body = e.body();
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("temperature"))
        );
        let e = ApiError::UnknownModel("gpt-9".into());
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.body()["error"]["code"], "model_not_found");
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let r = ApiError::NoCapacity {
            tier: "small".into(),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn internal_worker_errors_do_not_leak() {
        let e = ApiError::from(tonic::Status::internal("panic at /home/secret.rs:12"));
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert!(!e.to_string().contains("secret"));
        let e = ApiError::from(tonic::Status::resource_exhausted("queue full"));
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        let r = ApiError::Saturated {
            tier: "small".into(),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
