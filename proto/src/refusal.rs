//! A worker's own refusals. A worker that says no itself (draining, queue full, shutting
//! down, its engine failed) marks the `tonic::Status` with [`REFUSAL_KEY`], so that a
//! caller can tell "the worker said no" from "the worker could not be reached" (which
//! makes the worker suspect). The kinds are a closed set; each has one wire string.

/// Metadata key a worker sets on the requests it refuses itself.
pub const REFUSAL_KEY: &str = "x-switchback-refusal";

/// Why a worker refused a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Every slot is busy and the queue is full.
    QueueFull,
    /// The worker is draining: it finishes what it has and takes nothing new.
    Draining,
    /// The worker shut down before the request finished.
    Shutdown,
    /// The engine failed the request (not the caller's fault).
    EngineError,
    /// A marker with a kind this build does not know (a newer worker's): still the
    /// worker's own refusal, never a sign that it is unreachable. Workers do not send it.
    Other,
}

impl Refusal {
    /// The kinds workers send.
    pub const SENT: [Refusal; 4] = [
        Refusal::QueueFull,
        Refusal::Draining,
        Refusal::Shutdown,
        Refusal::EngineError,
    ];

    /// The wire string under [`REFUSAL_KEY`].
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::QueueFull => "queue-full",
            Refusal::Draining => "draining",
            Refusal::Shutdown => "shutdown",
            Refusal::EngineError => "engine-error",
            Refusal::Other => "other",
        }
    }

    /// The kind a wire string names; [`Refusal::Other`] for one this build does not know.
    pub fn parse(s: &str) -> Refusal {
        Self::SENT
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or(Refusal::Other)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker's own refusal: `status` marked with [`REFUSAL_KEY`] set to `kind`.
pub fn refusal(mut status: tonic::Status, kind: Refusal) -> tonic::Status {
    status.metadata_mut().insert(
        REFUSAL_KEY,
        tonic::metadata::MetadataValue::from_static(kind.as_str()),
    );
    status
}

/// The refusal a worker put on `status`, if it refused the request itself.
pub fn refusal_of(status: &tonic::Status) -> Option<Refusal> {
    let value = status.metadata().get(REFUSAL_KEY)?;
    Some(value.to_str().map_or(Refusal::Other, Refusal::parse))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn every_kind_round_trips_through_the_status_with_its_wire_string() {
        for kind in Refusal::SENT {
            let status = refusal(Status::unavailable("no"), kind);
            assert_eq!(refusal_of(&status), Some(kind));
            assert_eq!(
                status.metadata().get(REFUSAL_KEY).map(|v| v.to_str().ok()),
                Some(Some(kind.as_str()))
            );
        }
        // The strings workers have always sent.
        let wire: Vec<&str> = Refusal::SENT.iter().map(|r| r.as_str()).collect();
        assert_eq!(wire, ["queue-full", "draining", "shutdown", "engine-error"]);
    }

    #[test]
    fn an_unmarked_status_is_no_refusal_and_an_unknown_kind_is_still_one() {
        assert_eq!(refusal_of(&Status::unavailable("tcp connect error")), None);
        let mut status = Status::unavailable("no");
        status.metadata_mut().insert(
            REFUSAL_KEY,
            tonic::metadata::MetadataValue::from_static("warming-up"),
        );
        assert_eq!(refusal_of(&status), Some(Refusal::Other));
    }
}
