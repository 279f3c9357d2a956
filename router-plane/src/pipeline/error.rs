//! Why the pipeline produced no answer, classified where it happened. The HTTP shell maps
//! each to its status and OpenAI-shaped body in its one error map; nothing here knows HTTP.

use crate::auth::AuthError;

/// How a worker's failure reads to the client: the HTTP shell gives each its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// The worker says the request is bad (400).
    Rejected,
    /// The worker does not have what the request names (404).
    NotFound,
    /// The worker, or its tier, is too busy (429).
    Busy,
    /// The worker is unavailable (503).
    Unavailable,
    /// The worker did not answer in time (504).
    TimedOut,
    /// The worker, or the path to it, failed (502).
    Failed,
}

impl Upstream {
    /// The client's own fault: the worker's explanation may be shown.
    pub fn client_error(self) -> bool {
        match self {
            Self::Rejected | Self::NotFound | Self::Busy => true,
            Self::Unavailable | Self::TimedOut | Self::Failed => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's key may not use the model, or is over its tokens per minute.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request asks for what no worker it may use can do (`param` names the field).
    #[error("{message}")]
    Invalid { param: String, message: String },
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
    Upstream { kind: Upstream, message: String },
    /// The request took longer than its deadline.
    #[error("the request did not finish within {0} seconds")]
    Timeout(u64),
}

impl Error {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn upstream(kind: Upstream, message: impl Into<String>) -> Self {
        Self::Upstream {
            kind,
            message: message.into(),
        }
    }

    /// A bounded label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Auth(e) => match e {
                AuthError::Missing | AuthError::Malformed | AuthError::Unknown => "unauthorized",
                AuthError::Forbidden { .. } => "forbidden",
                AuthError::RateLimited { .. } => "rate_limited",
            },
            Self::Invalid { .. } => "invalid",
            Self::UnknownModel(_) => "unknown_model",
            Self::NoCapacity { .. } | Self::NotReady => "unavailable",
            Self::Saturated { .. } => "saturated",
            Self::Upstream { .. } => "upstream_error",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// A request that produced no answer, with the tier it was last placed on: the `tier`
/// label its outcome is counted under.
#[derive(Debug)]
pub struct Failed {
    pub tier: String,
    pub error: Error,
}

impl Failed {
    /// A failure before any placement (counted under tier `none`).
    pub fn unplaced(error: Error) -> Self {
        Self {
            tier: "none".to_owned(),
            error,
        }
    }
}

impl From<tonic::Status> for Error {
    /// A worker's failure as the client sees it.
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let kind = match status.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                Upstream::Rejected
            }
            Code::ResourceExhausted => Upstream::Busy,
            Code::Unavailable | Code::Aborted | Code::Cancelled => Upstream::Unavailable,
            Code::DeadlineExceeded => Upstream::TimedOut,
            Code::NotFound => Upstream::NotFound,
            Code::Ok
            | Code::Unknown
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss
            | Code::Unauthenticated => Upstream::Failed,
        };
        // Client-side problems carry the worker's explanation; anything else is an
        // internal diagnostic and stays in the logs.
        let message = if kind.client_error() {
            format!("the worker rejected the request: {}", status.message())
        } else {
            tracing::warn!(code = ?status.code(), message = status.message(), "worker call failed");
            "the worker failed to serve the request".to_owned()
        };
        Self::upstream(kind, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_worker_errors_do_not_leak() {
        let e = Error::from(tonic::Status::internal("panic at /home/secret.rs:12"));
        assert!(matches!(
            e,
            Error::Upstream {
                kind: Upstream::Failed,
                ..
            }
        ));
        assert!(!e.to_string().contains("secret"));
        let e = Error::from(tonic::Status::resource_exhausted("queue full"));
        assert!(matches!(
            e,
            Error::Upstream {
                kind: Upstream::Busy,
                ..
            }
        ));
        let e = Error::from(tonic::Status::invalid_argument("prompt too long"));
        assert!(e.to_string().contains("prompt too long"), "{e}");
        assert_eq!(e.outcome(), "upstream_error");
    }
}
