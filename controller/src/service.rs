//! The `Controller` gRPC service: load streams in, cluster views out, failure reports and
//! drains from routers and operators. Only the leader takes load streams and serves
//! watches; a standby answers UNAVAILABLE so callers look the leader up again.
//!
//! Under mutual TLS each call checks the caller's role ([`switchback_common::tls::role`]):
//! load reports only from workers, each for its own id; failure reports only from routers;
//! drains from operators, or from a worker for itself.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use switchback_proto::{
    Keys,
    pb::{self, controller_server::Controller},
};
use tokio::sync::{broadcast::error::RecvError, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::view::ClusterView;
use switchback_common::{
    text::bounded,
    tls::{Role, role::authorize},
};

#[derive(Debug)]
pub struct ControllerService {
    pub view: Arc<ClusterView>,
    /// True while this replica is the elected leader.
    pub leader: watch::Receiver<bool>,
    pub etcd: switchback_common::etcd::EtcdAccess,
    pub keys: Keys,
    /// Ends every open stream at shutdown, so the server's graceful stop can complete.
    pub stop: CancellationToken,
    /// Failure reports per calling address and second.
    pub reports: crate::report_limit::ReportLimit,
    /// Mutual TLS on: every call is checked against its caller's role.
    pub tls: bool,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ClusterEvent, Status>> + Send>>;

/// The longest worker id or reporter name a request may carry, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Failure and drain reasons are cut to this many bytes: every router receives them in
/// each cluster snapshot, so one caller must not be able to grow the snapshot.
pub const MAX_REASON_BYTES: usize = 256;

/// A worker id or reporter name within bounds, or the INVALID_ARGUMENT to answer.
fn checked_id<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.len() > MAX_ID_BYTES || value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{field} must be at most {MAX_ID_BYTES} bytes without control characters"
        )));
    }
    Ok(value)
}

fn not_leader() -> Status {
    Status::unavailable("this controller is a standby; look the leader up in etcd")
}

/// Resolves when leadership is lost (or the sender is gone).
async fn lost(mut leader: watch::Receiver<bool>) {
    let _ = leader.wait_for(|l| !*l).await;
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn report_load(
        &self,
        req: Request<Streaming<pb::LoadReport>>,
    ) -> Result<Response<pb::ReportLoadAck>, Status> {
        let caller = authorize(&req, self.tls, &[Role::Worker])?;
        if !*self.leader.borrow() {
            return Err(not_leader());
        }
        let mut stream = req.into_inner();
        let mut worker = None;
        let lost = lost(self.leader.clone());
        tokio::pin!(lost);
        loop {
            let report = tokio::select! {
                () = self.stop.cancelled() => return Err(Status::unavailable("controller shutting down")),
                () = &mut lost => return Err(Status::unavailable("this controller lost the leadership")),
                report = stream.message() => report?,
            };
            let Some(report) = report else { break };
            if report.worker_id.is_empty() {
                return Err(Status::invalid_argument("load report without worker_id"));
            }
            if let Some(caller) = &caller
                && caller.id != report.worker_id
            {
                tracing::warn!(caller = %caller, worker = %bounded(&report.worker_id, MAX_ID_BYTES), "refused a load report for another worker");
                return Err(Status::permission_denied(format!(
                    "a worker reports its own load only: the certificate names {:?}",
                    caller.id
                )));
            }
            if worker.as_deref() != Some(report.worker_id.as_str()) {
                tracing::info!(worker = %report.worker_id, "load stream opened");
                worker = Some(report.worker_id.clone());
            }
            self.view.report(report);
        }
        Ok(Response::new(pb::ReportLoadAck {}))
    }

    type WatchClusterStream = EventStream;

    async fn watch_cluster(
        &self,
        req: Request<pb::WatchClusterRequest>,
    ) -> Result<Response<Self::WatchClusterStream>, Status> {
        authorize(
            &req,
            self.tls,
            &[Role::Router, Role::Controller, Role::Operator],
        )?;
        if !*self.leader.borrow() {
            return Err(not_leader());
        }
        let watcher = req.into_inner().watcher;
        tracing::info!(%watcher, "watching the cluster");
        let view = Arc::clone(&self.view);
        let stop = self.stop.clone();
        let leader = self.leader.clone();
        // Subscribe before the snapshot so no change falls between them; a change seen in
        // both is applied twice, which is harmless (events are idempotent).
        let mut rx = view.subscribe();
        let snapshot = view.snapshot();
        let stream = async_stream::stream! {
            let lost = lost(leader);
            tokio::pin!(lost);
            yield Ok(pb::ClusterEvent { event: Some(pb::cluster_event::Event::Snapshot(snapshot)) });
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => break,
                    () = &mut lost => {
                        yield Err(Status::unavailable("this controller lost the leadership"));
                        break;
                    }
                    next = rx.recv() => next,
                };
                match next {
                    Ok(event) => yield Ok(event),
                    Err(RecvError::Lagged(missed)) => {
                        // The watcher fell behind: a fresh snapshot replaces what it missed.
                        tracing::warn!(%watcher, missed, "watcher lagged; resending snapshot");
                        yield Ok(pb::ClusterEvent { event: Some(pb::cluster_event::Event::Snapshot(view.snapshot())) });
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(stream.boxed()))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterView>, Status> {
        authorize(
            &req,
            self.tls,
            &[Role::Router, Role::Controller, Role::Operator],
        )?;
        Ok(Response::new(self.view.status()))
    }

    async fn report_worker_failure(
        &self,
        req: Request<pb::WorkerFailure>,
    ) -> Result<Response<pb::WorkerFailureAck>, Status> {
        authorize(&req, self.tls, &[Role::Router])?;
        let from = req.remote_addr().map(|a| a.ip());
        if !self.reports.allow(from, std::time::Instant::now()) {
            return Err(Status::resource_exhausted(format!(
                "more than {} failure reports a second from this address",
                self.reports.per_second()
            )));
        }
        let f = req.into_inner();
        if f.worker_id.is_empty() {
            return Err(Status::invalid_argument("worker_id is empty"));
        }
        let worker = checked_id("worker_id", &f.worker_id)?;
        let reporter = checked_id("reporter", &f.reporter)?;
        let known = self
            .view
            .suspect(worker, reporter, &bounded(&f.reason, MAX_REASON_BYTES));
        Ok(Response::new(pb::WorkerFailureAck { known }))
    }

    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let caller = authorize(&req, self.tls, &[Role::Operator, Role::Worker])?;
        let d = req.into_inner();
        if let Some(caller) = &caller
            && caller.role == Role::Worker
            && caller.id != d.worker_id
        {
            return Err(Status::permission_denied(format!(
                "a worker may drain only itself ({:?}); draining others takes an operator",
                caller.id
            )));
        }
        if d.worker_id.is_empty() || d.worker_id.contains('/') {
            return Err(Status::invalid_argument(
                "worker_id must be a worker id (non-empty, without '/')",
            ));
        }
        checked_id("worker_id", &d.worker_id)?;
        let d = pb::DrainRequest {
            reason: bounded(&d.reason, MAX_REASON_BYTES),
            ..d
        };
        let key = self.keys.drain(&d.worker_id);
        let etcd = |e: etcd_client::Error| Status::unavailable(format!("etcd: {e}"));
        let mut client = switchback_common::etcd::connect(&self.etcd)
            .await
            .map_err(etcd)?;
        if d.undrain {
            client.delete(key.as_str(), None).await.map_err(etcd)?;
            self.view.set_drained(&d.worker_id, None);
            tracing::info!(worker = %d.worker_id, "undrained by an operator");
        } else {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as u64);
            let value = serde_json::json!({"reason": d.reason, "at_unix_ms": at}).to_string();
            client.put(key.as_str(), value, None).await.map_err(etcd)?;
            // The membership watch brings the same mark; setting it now makes the answer
            // consistent with the next Status.
            self.view.set_drained(&d.worker_id, Some(d.reason.clone()));
            tracing::info!(worker = %d.worker_id, reason = %d.reason, "drained by an operator");
        }
        let known = self
            .view
            .snapshot()
            .workers
            .iter()
            .any(|w| w.info.as_ref().is_some_and(|i| i.id == d.worker_id));
        Ok(Response::new(pb::DrainResponse { known }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_and_printable() {
        assert!(checked_id("worker_id", &"w".repeat(129)).is_err());
        assert!(checked_id("reporter", "router@a\nb").is_err());
        assert!(checked_id("reporter", "router@host-1").is_ok());
    }
}
