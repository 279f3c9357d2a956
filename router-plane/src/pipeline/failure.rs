//! What a failed attempt on one worker means for the request, classified once: whether
//! another worker may take it, whether the worker itself looks unreachable (and so leaves
//! the routing set), and whether it is the tier being full.

use switchback_proto::{Refusal, refusal_of};
use tonic::Code;

/// Why one attempt on one worker failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The worker says the request itself is bad: no other worker would take it.
    Invalid,
    /// The worker's slots and queue are full.
    QueueFull,
    /// The worker is draining or shutting down.
    Draining,
    /// The worker refused for a reason of its own (its engine failed).
    WorkerError,
    /// The worker could not be reached (connection refused or reset, no refusal of its
    /// own): this router stops sending to it and tells the controller.
    Unreachable,
    /// No answer at all in time, not even the stream's headers: the worker is hung or cut
    /// off.
    NoFirstToken,
    /// The worker took the request (its stream opened) but produced no token in time: it
    /// is busy (a queue, long prefills), not dead. Another worker may take the request;
    /// nobody takes this one out of the routing set.
    SlowFirstToken,
    /// The worker closed the stream without a word.
    EmptyStream,
    /// A whole answer did not finish by the request's deadline: too late to try another
    /// worker. Its first token came, so the worker is slow for this answer (a long one, a
    /// full batch), not dead: it stays in the routing set. A worker that hangs mid-answer
    /// is found by the connection's keep-alive and its stale load reports instead.
    Deadline,
}

impl Failure {
    /// Classifies a worker's gRPC status. Refusals a worker makes itself carry a marker;
    /// everything else that is not the caller's fault means the worker, or the path to
    /// it, failed.
    pub fn of(status: &tonic::Status) -> Self {
        match (refusal_of(status), status.code()) {
            (
                _,
                Code::InvalidArgument
                | Code::OutOfRange
                | Code::FailedPrecondition
                | Code::NotFound,
            ) => Self::Invalid,
            (Some(Refusal::QueueFull), _) | (None, Code::ResourceExhausted) => Self::QueueFull,
            (Some(Refusal::Draining | Refusal::Shutdown), _) => Self::Draining,
            (Some(Refusal::EngineError | Refusal::Other), _) => Self::WorkerError,
            (None, _) => Self::Unreachable,
        }
    }

    /// Another worker may serve the request.
    pub fn retryable(self) -> bool {
        match self {
            Self::Invalid | Self::Deadline => false,
            Self::QueueFull
            | Self::Draining
            | Self::WorkerError
            | Self::Unreachable
            | Self::NoFirstToken
            | Self::SlowFirstToken
            | Self::EmptyStream => true,
        }
    }

    /// The worker looks unreachable: out of this router's routing set, reported to the
    /// controller.
    pub fn unreachable(self) -> bool {
        match self {
            Self::Unreachable | Self::NoFirstToken => true,
            Self::Invalid
            | Self::Deadline
            | Self::QueueFull
            | Self::Draining
            | Self::WorkerError
            | Self::SlowFirstToken
            | Self::EmptyStream => false,
        }
    }

    /// The tier is saturated (429 with `Retry-After`), whatever the worker said: a full
    /// queue, or a worker too busy to start in time.
    pub fn saturates(self) -> bool {
        matches!(self, Self::QueueFull | Self::SlowFirstToken)
    }

    /// A bounded label for metrics, spans and the decision's retries.
    pub fn label(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::QueueFull => "queue_full",
            Self::Draining => "draining",
            Self::WorkerError => "worker_error",
            Self::Unreachable => "unreachable",
            Self::NoFirstToken => "no_first_token",
            Self::Deadline => "deadline",
            Self::SlowFirstToken => "slow_first_token",
            Self::EmptyStream => "empty_stream",
        }
    }
}

/// As its bounded label (`queue_full`, `unreachable`, ...).
impl serde::Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchback_proto::refusal;
    use tonic::Status;

    #[test]
    fn refusals_are_retried_without_blaming_the_worker() {
        let f = Failure::of(&refusal(
            Status::resource_exhausted("full"),
            Refusal::QueueFull,
        ));
        assert_eq!(f, Failure::QueueFull);
        assert!(f.retryable() && !f.unreachable() && f.saturates());
        for kind in [Refusal::Draining, Refusal::Shutdown] {
            let f = Failure::of(&refusal(Status::unavailable("draining"), kind));
            assert_eq!(f, Failure::Draining);
            assert!(f.retryable() && !f.unreachable() && !f.saturates());
            assert_eq!(f.label(), "draining");
        }
        // An engine failure, or a refusal this build does not know, is the worker's own.
        for kind in [Refusal::EngineError, Refusal::Other] {
            let f = Failure::of(&refusal(Status::internal("boom"), kind));
            assert_eq!(f, Failure::WorkerError);
            assert!(f.retryable() && !f.unreachable());
        }
        // A full queue without the marker (an older worker, a proxy) is still full.
        assert_eq!(
            Failure::of(&Status::resource_exhausted("full")),
            Failure::QueueFull
        );
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
            assert_eq!(f, Failure::Unreachable, "{s:?}");
            assert!(f.retryable() && f.unreachable(), "{s:?}");
        }
    }

    #[test]
    fn bad_requests_are_not_retried_even_when_marked() {
        for s in [
            Status::invalid_argument("prompt too long"),
            Status::not_found("no such model"),
            refusal(Status::failed_precondition("x"), Refusal::EngineError),
        ] {
            let f = Failure::of(&s);
            assert_eq!(f, Failure::Invalid, "{s:?}");
            assert!(!f.retryable() && !f.unreachable());
        }
    }

    #[test]
    fn timeouts_tell_a_busy_worker_from_a_dead_one() {
        assert!(Failure::SlowFirstToken.retryable() && !Failure::SlowFirstToken.unreachable());
        assert!(Failure::SlowFirstToken.saturates());
        assert!(Failure::NoFirstToken.retryable() && Failure::NoFirstToken.unreachable());
        // Past the deadline nothing is retried, and a worker that answered but too slowly
        // for this request keeps serving others.
        assert!(!Failure::Deadline.retryable() && !Failure::Deadline.unreachable());
        assert_eq!(Failure::Deadline.label(), "deadline");
        assert!(Failure::EmptyStream.retryable() && !Failure::EmptyStream.unreachable());
    }
}
