//! The `Controller` gRPC service: load streams in, cluster views out.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use switchback_proto::pb::{self, controller_server::Controller};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::view::ClusterView;

#[derive(Debug)]
pub struct ControllerService {
    pub view: Arc<ClusterView>,
    /// Ends every open stream at shutdown, so the server's graceful stop can complete.
    pub stop: CancellationToken,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ClusterEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn report_load(
        &self,
        req: Request<Streaming<pb::LoadReport>>,
    ) -> Result<Response<pb::ReportLoadAck>, Status> {
        let mut stream = req.into_inner();
        let mut worker = None;
        loop {
            let report = tokio::select! {
                () = self.stop.cancelled() => return Err(Status::unavailable("controller shutting down")),
                report = stream.message() => report?,
            };
            let Some(report) = report else { break };
            if report.worker_id.is_empty() {
                return Err(Status::invalid_argument("load report without worker_id"));
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
        let watcher = req.into_inner().watcher;
        tracing::info!(%watcher, "router watching the cluster");
        let view = Arc::clone(&self.view);
        let stop = self.stop.clone();
        // Subscribe before the snapshot so no change falls between them; a change seen in
        // both is applied twice, which is harmless (events are idempotent).
        let mut rx = view.subscribe();
        let snapshot = view.snapshot();
        let stream = async_stream::stream! {
            yield Ok(pb::ClusterEvent { event: Some(pb::cluster_event::Event::Snapshot(snapshot)) });
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => break,
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
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterView>, Status> {
        Ok(Response::new(self.view.snapshot()))
    }
}
