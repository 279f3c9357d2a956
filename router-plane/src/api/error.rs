//! The router's errors, classified once near the cause and mapped once to an
//! OpenAI-shaped HTTP response: `{"error": {"message", "type", "param", "code"}}`.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// A field is missing, of the wrong type or out of range.
    #[error("{message}")]
    InvalidField { param: String, message: String },
    /// A field is over a configured limit; `limit` is the router config key.
    #[error("{message}")]
    LimitExceeded {
        param: String,
        limit: &'static str,
        message: String,
    },
    /// The body is over the configured limit.
    #[error(
        "request body is larger than the limit of {limit} bytes (router config `max_body_bytes`)"
    )]
    BodyTooLarge { limit: usize },
    /// The body did not arrive within the configured time.
    #[error(
        "the request body did not arrive within {seconds} s (router config `http.body_timeout_s`)"
    )]
    BodyTimeout { seconds: u64 },
    /// No usable API key (401), a key that may not use what the request names (403), or
    /// one over a per-minute limit (429).
    #[error(transparent)]
    Auth(#[from] AuthError),
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
    /// No route has the request's path.
    #[error("no such route")]
    NoRoute,
    /// The route exists but does not take the request's method; the response's `Allow`
    /// header (set by the router) lists the ones it does.
    #[error(
        "this route does not take the request's method; the `Allow` header lists the methods it takes"
    )]
    MethodNotAllowed,
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
            Self::MalformedJson(_) | Self::InvalidField { .. } | Self::LimitExceeded { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Auth(e) => match e {
                AuthError::Missing | AuthError::Malformed | AuthError::Unknown => {
                    StatusCode::UNAUTHORIZED
                }
                AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
                AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            },
            Self::UnknownModel(_) => StatusCode::NOT_FOUND,
            Self::NoCapacity { .. } | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Saturated { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream { status, .. } => *status,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// OpenAI's `type` and `code` fields.
    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::MalformedJson(_) => ("invalid_request_error", Some("invalid_json")),
            Self::InvalidField { .. } => ("invalid_request_error", Some("invalid_value")),
            Self::LimitExceeded { .. } => ("invalid_request_error", Some("limit_exceeded")),
            Self::BodyTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            Self::BodyTimeout { .. } => ("invalid_request_error", Some("request_timeout")),
            Self::Auth(e) => match e {
                AuthError::Missing | AuthError::Malformed | AuthError::Unknown => {
                    ("invalid_request_error", Some("invalid_api_key"))
                }
                AuthError::Forbidden { .. } => ("invalid_request_error", Some("model_not_allowed")),
                AuthError::RateLimited { .. } => {
                    ("rate_limit_exceeded", Some("rate_limit_exceeded"))
                }
            },
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
            Self::NoRoute => ("invalid_request_error", Some("not_found")),
            Self::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed")),
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidField { param, .. } | Self::LimitExceeded { param, .. } => Some(param),
            Self::UnknownModel(_) | Self::Auth(AuthError::Forbidden { .. }) => Some("model"),
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
            Self::MalformedJson(_)
            | Self::InvalidField { .. }
            | Self::LimitExceeded { .. }
            | Self::BodyTooLarge { .. }
            | Self::BodyTimeout { .. } => "invalid",
            Self::Auth(e) => match e {
                AuthError::Missing | AuthError::Malformed | AuthError::Unknown => "unauthorized",
                AuthError::Forbidden { .. } => "forbidden",
                AuthError::RateLimited { .. } => "rate_limited",
            },
            Self::UnknownModel(_) => "unknown_model",
            Self::NoCapacity { .. } | Self::NotReady => "unavailable",
            Self::Saturated { .. } => "saturated",
            Self::Upstream { .. } => "upstream_error",
            Self::Timeout(_) => "timeout",
            Self::NoRoute => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
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
        let headers = response.headers_mut();
        match &self {
            // Computed from the key's bucket; none when waiting cannot help.
            Self::Auth(AuthError::RateLimited {
                retry_after: Some(secs),
                ..
            }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Self::Auth(AuthError::RateLimited {
                retry_after: None, ..
            }) => {}
            Self::Auth(e) if e.unauthenticated() => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ if matches!(
                status,
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
            ) =>
            {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Limit;

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
    fn auth_errors_have_their_status_code_and_headers() {
        for e in [AuthError::Missing, AuthError::Malformed, AuthError::Unknown] {
            let r = ApiError::from(e.clone()).into_response();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
            let body = ApiError::from(e.clone()).body();
            assert_eq!(body["error"]["code"], "invalid_api_key");
            assert_eq!(body["error"]["type"], "invalid_request_error");
            assert_eq!(body["error"]["message"], e.to_string());
            assert!(body["error"]["param"].is_null());
            assert_eq!(ApiError::from(e).outcome(), "unauthorized");
        }
        let e = ApiError::from(AuthError::Forbidden {
            model: "large".into(),
            why: String::new(),
        });
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(e.to_string().contains("`large`"));
        assert_eq!(e.body()["error"]["param"], "model");
        let r = ApiError::from(AuthError::RateLimited {
            limit: Limit::Requests,
            retry_after: Some(17),
            message: "slow down".into(),
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "17");
        let r = ApiError::from(AuthError::RateLimited {
            limit: Limit::Tokens,
            retry_after: None,
            message: "too large".into(),
        })
        .into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn limit_errors_name_their_field_and_config_key() {
        let e = ApiError::LimitExceeded {
            param: "stop".into(),
            limit: "max_stop_sequences",
            message: "`stop` has 5 sequences; the limit is 4 (router config `max_stop_sequences`)"
                .into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let body = e.body();
        assert_eq!(body["error"]["param"], "stop");
        assert_eq!(body["error"]["code"], "limit_exceeded");
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
