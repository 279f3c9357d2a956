//! The one error map of the HTTP shell: every error a request can meet (its body, its key,
//! the pipeline's) to an HTTP status, headers and an OpenAI-shaped body
//! `{"error": {"message", "type", "param", "code"}}`. Each is classified where it
//! happens; here it is only rendered.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    auth::AuthError,
    pipeline::{Error, Upstream},
};

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
    /// No usable API key (401), or a key over its requests per minute (429).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The pipeline produced no answer.
    #[error(transparent)]
    Pipeline(#[from] Error),
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

/// How an error reads to the client: its status, OpenAI's `type` and `code`, and the
/// bounded metrics label.
struct Kind {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    outcome: &'static str,
}

const fn kind(
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    outcome: &'static str,
) -> Kind {
    Kind {
        status,
        kind,
        code,
        outcome,
    }
}

const INVALID: &str = "invalid_request_error";

fn auth_kind(e: &AuthError) -> Kind {
    match e {
        AuthError::Missing | AuthError::Malformed | AuthError::Unknown => kind(
            StatusCode::UNAUTHORIZED,
            INVALID,
            Some("invalid_api_key"),
            "unauthorized",
        ),
        AuthError::Forbidden { .. } => kind(
            StatusCode::FORBIDDEN,
            INVALID,
            Some("model_not_allowed"),
            "forbidden",
        ),
        AuthError::RateLimited { .. } => kind(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            Some("rate_limit_exceeded"),
            "rate_limited",
        ),
    }
}

fn upstream_status(u: Upstream) -> StatusCode {
    match u {
        Upstream::Rejected => StatusCode::BAD_REQUEST,
        Upstream::NotFound => StatusCode::NOT_FOUND,
        Upstream::Busy => StatusCode::TOO_MANY_REQUESTS,
        Upstream::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Upstream::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        Upstream::Failed => StatusCode::BAD_GATEWAY,
    }
}

fn pipeline_kind(e: &Error) -> Kind {
    match e {
        Error::Auth(e) => auth_kind(e),
        Error::Invalid { .. } => kind(
            StatusCode::BAD_REQUEST,
            INVALID,
            Some("invalid_value"),
            "invalid",
        ),
        Error::UnknownModel(_) => kind(
            StatusCode::NOT_FOUND,
            INVALID,
            Some("model_not_found"),
            "unknown_model",
        ),
        Error::NoCapacity { .. } | Error::NotReady => kind(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            Some("no_capacity"),
            "unavailable",
        ),
        Error::Saturated { .. } => kind(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            Some("tier_saturated"),
            "saturated",
        ),
        Error::Upstream { kind: u, .. } if u.client_error() => {
            kind(upstream_status(*u), INVALID, None, "upstream_error")
        }
        Error::Upstream { kind: u, .. } => kind(
            upstream_status(*u),
            "server_error",
            Some("upstream_error"),
            "upstream_error",
        ),
        Error::Timeout(_) => kind(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            Some("timeout"),
            "timeout",
        ),
    }
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            param: param.into(),
            message: message.into(),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Self::MalformedJson(_) => kind(
                StatusCode::BAD_REQUEST,
                INVALID,
                Some("invalid_json"),
                "invalid",
            ),
            Self::InvalidField { .. } => kind(
                StatusCode::BAD_REQUEST,
                INVALID,
                Some("invalid_value"),
                "invalid",
            ),
            Self::LimitExceeded { .. } => kind(
                StatusCode::BAD_REQUEST,
                INVALID,
                Some("limit_exceeded"),
                "invalid",
            ),
            Self::BodyTooLarge { .. } => kind(
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID,
                Some("request_too_large"),
                "invalid",
            ),
            Self::BodyTimeout { .. } => kind(
                StatusCode::REQUEST_TIMEOUT,
                INVALID,
                Some("request_timeout"),
                "invalid",
            ),
            Self::Auth(e) => auth_kind(e),
            Self::Pipeline(e) => pipeline_kind(e),
            Self::NoRoute => kind(
                StatusCode::NOT_FOUND,
                INVALID,
                Some("not_found"),
                "not_found",
            ),
            Self::MethodNotAllowed => kind(
                StatusCode::METHOD_NOT_ALLOWED,
                INVALID,
                Some("method_not_allowed"),
                "method_not_allowed",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind().status
    }

    /// OpenAI's `param` field: the request field the error is about.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidField { param, .. }
            | Self::LimitExceeded { param, .. }
            | Self::Pipeline(Error::Invalid { param, .. }) => Some(param),
            Self::Pipeline(Error::UnknownModel(_))
            | Self::Auth(AuthError::Forbidden { .. })
            | Self::Pipeline(Error::Auth(AuthError::Forbidden { .. })) => Some("model"),
            _ => None,
        }
    }

    /// The error body, also used as an SSE error event.
    pub fn body(&self) -> serde_json::Value {
        let Kind { kind, code, .. } = self.kind();
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
        self.kind().outcome
    }

    /// The auth error behind this one, if any.
    fn auth(&self) -> Option<&AuthError> {
        match self {
            Self::Auth(e) | Self::Pipeline(Error::Auth(e)) => Some(e),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self.auth() {
            // Computed from the key's bucket; none when waiting cannot help.
            Some(AuthError::RateLimited {
                retry_after: Some(secs),
                ..
            }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Some(AuthError::RateLimited {
                retry_after: None, ..
            }) => {}
            Some(AuthError::Missing | AuthError::Malformed | AuthError::Unknown) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Some(AuthError::Forbidden { .. }) | None
                if matches!(
                    status,
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
                ) =>
            {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Some(AuthError::Forbidden { .. }) | None => {}
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
        let e = ApiError::from(Error::UnknownModel("gpt-9".into()));
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
        let r = ApiError::from(Error::NoCapacity {
            tier: "small".into(),
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn worker_errors_have_their_status_and_only_client_errors_say_why() {
        let e = ApiError::from(Error::from(tonic::Status::internal(
            "panic at /home/secret.rs:12",
        )));
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert!(!e.to_string().contains("secret"));
        assert_eq!(e.body()["error"]["type"], "server_error");
        assert_eq!(e.body()["error"]["code"], "upstream_error");
        let e = ApiError::from(Error::from(tonic::Status::invalid_argument("too long")));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        assert_eq!(e.body()["error"]["code"], serde_json::Value::Null);
        let r = ApiError::from(Error::from(tonic::Status::resource_exhausted("queue full")))
            .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        for (u, status) in [
            (Upstream::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (Upstream::TimedOut, StatusCode::GATEWAY_TIMEOUT),
            (Upstream::NotFound, StatusCode::NOT_FOUND),
        ] {
            assert_eq!(ApiError::from(Error::upstream(u, "x")).status(), status);
        }
        let r = ApiError::from(Error::Saturated {
            tier: "small".into(),
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            ApiError::from(Error::Timeout(30)).body()["error"]["code"],
            "timeout"
        );
    }

    #[test]
    fn a_key_refused_in_the_pipeline_reads_as_one_refused_at_the_door() {
        let limited = || AuthError::RateLimited {
            limit: Limit::Tokens,
            retry_after: Some(3),
            message: "wait".into(),
        };
        let door = ApiError::from(limited()).into_response();
        let pipeline = ApiError::from(Error::Auth(limited())).into_response();
        assert_eq!(door.status(), pipeline.status());
        assert_eq!(pipeline.headers()[header::RETRY_AFTER], "3");
        let forbidden = ApiError::from(Error::Auth(AuthError::Forbidden {
            model: "large".into(),
            why: String::new(),
        }));
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(forbidden.param(), Some("model"));
        assert_eq!(forbidden.outcome(), "forbidden");
    }
}
