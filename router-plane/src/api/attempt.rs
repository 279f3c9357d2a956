//! What a failed attempt on one worker means for the request: whether another worker may
//! take it, and whether the worker itself looks unreachable (and so leaves the routing set).

use switchback_proto::refusal_of;
use tonic::Code;

/// One attempt's failure, classified once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Another worker may serve the request.
    pub retryable: bool,
    /// The worker could not be reached (connection refused or reset, no answer): this
    /// router stops sending to it and tells the controller.
    pub unreachable: bool,
    /// A bounded label for metrics and the decision.
    pub reason: &'static str,
}

impl Failure {
    /// No answer at all in time, not even the stream's headers: the worker is hung or cut
    /// off.
    pub const NO_FIRST_TOKEN: Self = Self {
        retryable: true,
        unreachable: true,
        reason: "no_first_token",
    };

    /// The worker took the request (its stream opened) but produced no token in time: it
    /// is busy (a queue, long prefills), not dead. Another worker may take the request;
    /// nobody takes this one out of the routing set.
    pub const SLOW_FIRST_TOKEN: Self = Self {
        retryable: true,
        unreachable: false,
        reason: "slow_first_token",
    };

    /// The worker closed the stream without a word.
    pub const EMPTY_STREAM: Self = Self {
        retryable: true,
        unreachable: false,
        reason: "empty_stream",
    };

    pub fn of(status: &tonic::Status) -> Self {
        // Refusals a worker makes itself carry a marker; everything else that is not the
        // caller's fault means the worker, or the path to it, failed.
        match (refusal_of(status), status.code()) {
            (
                _,
                Code::InvalidArgument
                | Code::OutOfRange
                | Code::FailedPrecondition
                | Code::NotFound,
            ) => Self {
                retryable: false,
                unreachable: false,
                reason: "invalid",
            },
            (Some("queue-full"), _) | (None, Code::ResourceExhausted) => Self {
                retryable: true,
                unreachable: false,
                reason: "queue_full",
            },
            (Some("draining" | "shutdown"), _) => Self {
                retryable: true,
                unreachable: false,
                reason: "draining",
            },
            (Some(_), _) => Self {
                retryable: true,
                unreachable: false,
                reason: "worker_error",
            },
            (None, _) => Self {
                retryable: true,
                unreachable: true,
                reason: "unreachable",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchback_proto::refusal;
    use tonic::Status;

    #[test]
    fn refusals_are_retried_without_blaming_the_worker() {
        let f = Failure::of(&refusal(Status::resource_exhausted("full"), "queue-full"));
        assert!(f.retryable && !f.unreachable);
        let f = Failure::of(&refusal(Status::unavailable("draining"), "draining"));
        assert!(f.retryable && !f.unreachable);
        assert_eq!(f.reason, "draining");
    }

    #[test]
    fn transport_failures_make_the_worker_suspect() {
        // What tonic reports for a refused or reset connection: no refusal marker.
        for s in [
            Status::unavailable("tcp connect error"),
            Status::unknown("h2 protocol error"),
            Status::internal("stream reset"),
        ] {
            let f = Failure::of(&s);
            assert!(f.retryable && f.unreachable, "{s:?}");
        }
    }

    #[test]
    fn bad_requests_are_not_retried() {
        let f = Failure::of(&Status::invalid_argument("prompt too long"));
        assert!(!f.retryable && !f.unreachable);
    }
}
