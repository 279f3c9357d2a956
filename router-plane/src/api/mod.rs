//! The OpenAI-compatible HTTP API: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/models` (and `/v1/models/{id}`), plus `/healthz`, `/readyz` and `/metrics`.

pub mod attempt;
pub mod error;
pub mod models;
pub mod openai;
pub mod request_id;
pub mod response;
pub mod route;
#[cfg(test)]
mod tests;
pub mod tools;

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::{Instant, SystemTime},
};

use axum::{
    Extension, Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use switchback_common::trace_context;
use tracing::{Instrument, field::Empty};

use switchback_proto::pb;

use self::{
    attempt::Failure,
    error::ApiError,
    openai::{ChatRequest, CompletionRequest, Generation, RequestLimits},
    request_id::RequestId,
    response::{Collected, Decision},
};
use crate::{
    auth::{Caller, Charge, Gate},
    cascade,
    config::RouterConfig,
    dispatch::{self, Clients},
    metrics::{Metrics, Retry},
    policy::Policy,
    view::{self, View},
};

/// Which OpenAI endpoint a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    pub const ALL: [Endpoint; 2] = [Endpoint::Chat, Endpoint::Completion];

    /// The route it is served on.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completion => "/v1/completions",
        }
    }

    /// The endpoint served on `path`, if any.
    pub fn of_path(path: &str) -> Option<Endpoint> {
        Self::ALL.into_iter().find(|e| e.path() == path)
    }

    /// The prefix of its answers' ids (which are also their requests' ids).
    pub fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        }
    }
}

#[derive(Debug)]
pub struct AppState {
    pub config: RouterConfig,
    pub view: Arc<View>,
    pub clients: Clients,
    pub metrics: Metrics,
    pub rotation: AtomicU64,
    pub limits: RequestLimits,
    /// Bounds the requests waiting for capacity in a saturated tier.
    pub pending: tokio::sync::Semaphore,
    /// How this router names itself to the controller, e.g. `router@10.0.0.7:8080`.
    pub name: String,
    /// Difficulty routing for `model: "auto"`, when configured; swapped when the artifact
    /// changes on disk.
    pub difficulty: std::sync::RwLock<Option<Arc<crate::difficulty::predictor::Predictor>>>,
    /// The routing policy: from etcd when the cluster has one, else the config file's.
    pub policy: std::sync::RwLock<Arc<Policy>>,
    /// API keys, or none when `auth.disabled`.
    pub auth: Gate,
}

impl AppState {
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Every route; unknown paths answer 404 and known paths with the wrong method 405 (with
/// `Allow`), both OpenAI-shaped; every response carries `x-request-id`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(Endpoint::Chat.path(), post(chat))
        .route(Endpoint::Completion.path(), post(completions))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::retrieve))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // After the routes: it applies to those added before it.
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(|| async { ApiError::NoRoute })
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.view.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the cluster view",
        )
            .into_response()
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    app.metrics
        .controller_connected
        .set(i64::from(app.view.is_connected()));
    app.metrics
        .controller_sessions
        .set(app.view.sessions() as i64);
    app.metrics.process.update();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

/// The caller of a `/v1` request, or the 401 to answer (counted).
pub(crate) fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    app.auth.authenticate(headers).map_err(|failure| {
        app.metrics
            .auth_failures
            .get_or_create(&crate::metrics::Reason {
                reason: failure.reason(),
            })
            .inc();
        let err = ApiError::from(failure);
        app.metrics.request("none", err.outcome());
        tracing::debug!(reason = failure.reason(), "request without a valid API key");
        err
    })
}

/// Whether the caller's key may use `model` (a tier name, a model id; `auto` is capped
/// in placement instead). Unknown models pass: placement answers 404 for them.
fn authorize(app: &AppState, caller: &Caller, model: &str) -> Result<(), ApiError> {
    if caller.entry.is_none() || model == "auto" {
        return Ok(());
    }
    let tiers = &app.config.tiers;
    let tier = match tiers.iter().position(|t| t == model) {
        Some(i) => Some(i),
        None => {
            if !caller.allows_model(model) {
                return Err(ApiError::Forbidden {
                    model: model.to_owned(),
                    why: " (it is not in the key's `models`)".to_owned(),
                });
            }
            app.view
                .models()
                .iter()
                .find(|(_, m)| m == model)
                .and_then(|(t, _)| tiers.iter().position(|x| x == t))
        }
    };
    match tier {
        Some(i) if !caller.allows_tier(i) => Err(ApiError::Forbidden {
            model: model.to_owned(),
            why: format!(
                " (tier `{}` is outside the key's `tiers` and `max_tier`)",
                tiers[i]
            ),
        }),
        _ => Ok(()),
    }
}

async fn read_body(app: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limit = app.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let limited = http_body_util::Limited::new(body, limit);
    let within = app.config.body_timeout;
    let collected = tokio::time::timeout(within, http_body_util::BodyExt::collect(limited))
        .await
        .map_err(|_| ApiError::BodyTimeout {
            seconds: within.as_secs(),
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(err) => Err(ApiError::MalformedJson(format!(
            "could not read the body: {err}"
        ))),
    }
}

/// The quality target from `x-switchback-quality` when the body sets none. Public for the
/// fuzz targets (fuzz/), which drive it as the handlers do.
pub fn quality_header(headers: &HeaderMap, g: &mut Generation) -> Result<(), ApiError> {
    if g.quality.is_some() {
        return Ok(());
    }
    let Some(v) = headers.get("x-switchback-quality") else {
        return Ok(());
    };
    let q = v
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|q| (0.0..=1.0).contains(q))
        .ok_or_else(|| {
            ApiError::invalid(
                "x-switchback-quality",
                "the `x-switchback-quality` header must be a number in [0, 1]",
            )
        })?;
    g.quality = Some(q);
    Ok(())
}

async fn chat(
    State(app): State<Arc<AppState>>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(app, Endpoint::Chat, id, headers, body).await
}

async fn completions(
    State(app): State<Arc<AppState>>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(app, Endpoint::Completion, id, headers, body).await
}

/// One generation request, in order: the key (401), its requests/min (429), the body
/// (413, 400), what the key may use (403), its tokens/min (429), then placement.
async fn handle(
    app: Arc<AppState>,
    endpoint: Endpoint,
    id: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match authenticate(&app, &headers) {
        Ok(c) => c,
        Err(err) => return err.into_response(),
    };
    let mut response = match admit(&app, endpoint, &headers, body, &caller).await {
        Ok((generation, charge)) => {
            let ignored = openai::ignored_header(&generation.ignored);
            if !generation.ignored.is_empty() {
                tracing::debug!(request_id = %id, key = caller.id(), fields = ?generation.ignored, "ignoring unknown request fields");
            }
            let mut response =
                respond(Arc::clone(&app), endpoint, &id, generation, &caller, charge).await;
            if let Some(v) = ignored.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response
                    .headers_mut()
                    .insert("x-switchback-ignored-fields", v);
            }
            response
        }
        Err(err) => {
            if let ApiError::RateLimited { limit, .. } = &err {
                app.metrics
                    .rate_limited
                    .get_or_create(&crate::metrics::KeyLimit {
                        key: caller.id().to_owned(),
                        limit,
                    })
                    .inc();
            }
            tracing::debug!(request_id = %id, key = caller.id(), %err, "request refused");
            app.metrics.request("none", err.outcome());
            err.into_response()
        }
    };
    let headers = response.headers_mut();
    for (name, value) in caller.rate_headers(Instant::now()) {
        headers.insert(name, value);
    }
    app.metrics
        .key_request(caller.id(), response.status().as_u16());
    response
}

/// Everything before placement: the request's limits, its body, and what its key allows.
async fn admit(
    app: &AppState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
    caller: &Caller,
) -> Result<(Generation, Option<Charge>), ApiError> {
    caller.take_request(Instant::now())?;
    let bytes = read_body(app, headers, body).await?;
    let mut g = match endpoint {
        Endpoint::Chat => ChatRequest::parse(&bytes)?.validate(&app.limits)?,
        Endpoint::Completion => CompletionRequest::parse(&bytes)?.validate(&app.limits)?,
    };
    quality_header(headers, &mut g)?;
    if g.model == "auto" && g.quality.is_none() {
        g.quality = caller.key().and_then(|k| k.default_quality);
    }
    authorize(app, caller, &g.model)?;
    // Charged up front: the prompt estimate and the most the answer may use (the router's
    // limit when the request sets none); settled against the worker's usage at the end.
    let output = g.max_tokens.unwrap_or(app.limits.max_tokens_limit);
    let charge = caller.charge_tokens(
        g.estimated_prompt_tokens() + u64::from(output),
        Instant::now(),
    )?;
    Ok((g, charge))
}

async fn respond(
    app: Arc<AppState>,
    endpoint: Endpoint,
    id: &RequestId,
    generation: Generation,
    caller: &Caller,
    mut charge: Option<Charge>,
) -> Response {
    let timeout = app.config.request_timeout;
    let served = tokio::time::timeout(
        timeout,
        serve(
            Arc::clone(&app),
            endpoint,
            id,
            generation,
            caller,
            &mut charge,
        ),
    )
    .await;
    // A request that produced no answer costs its key no tokens.
    let refund = || {
        if let Some(c) = charge {
            c.settle(0);
        }
    };
    match served {
        Ok(Ok(response)) => response,
        Ok(Err((tier, err))) => {
            refund();
            app.metrics.request(&tier, err.outcome());
            err.into_response()
        }
        Err(_) => {
            refund();
            let err = ApiError::Timeout(timeout.as_secs());
            app.metrics.request("none", err.outcome());
            err.into_response()
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Tells the controller (best effort, in the background) that a worker is unreachable, so
/// every router stops sending to it, not only this one.
fn report_unreachable(app: &AppState, worker: &str, reason: &str) {
    if !app.view.suspect(worker, app.config.suspect_hold) {
        return;
    }
    app.metrics.unreachable.inc();
    tracing::warn!(
        worker,
        reason,
        "worker unreachable; out of this router's routing set"
    );
    let Some(channel) = app.view.controller() else {
        return;
    };
    let failure = pb::WorkerFailure {
        worker_id: worker.to_owned(),
        reporter: app.name.clone(),
        reason: reason.to_owned(),
    };
    // On the cluster watch's connection to the controller (made by the cluster dialer:
    // with `tls:` on, mutual TLS with the router's certificate): a report costs no new
    // connection or handshake.
    tokio::spawn(async move {
        let report = async {
            pb::controller_client::ControllerClient::new(channel)
                .report_worker_failure(failure)
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(3), report).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(%err, "could not report the worker to the controller"),
            Err(_) => tracing::warn!("the controller did not take the failure report in time"),
        }
    });
}

/// A worker's answer, opened: the stream and what was read of it so far (streamed
/// requests; at least the first chunk, more when a cascade judged the answer), or all of
/// it (whole requests, which may be retried until the very end since the client has seen
/// nothing yet).
enum Opened {
    Streaming {
        stream: Box<tonic::Streaming<pb::GenerateChunk>>,
        read: Vec<pb::GenerateChunk>,
        /// The worker closed the stream already.
        ended: bool,
    },
    /// The whole answer, and when its first chunk arrived.
    Whole(Collected, Instant),
}

impl Opened {
    /// How the answer finished, if what was read of it includes the end.
    fn finish(&self) -> Option<pb::FinishReason> {
        match self {
            Opened::Streaming { read, .. } => read
                .iter()
                .rev()
                .find_map(|c| response::finish_of(c.finish_reason)),
            Opened::Whole(c, _) => c.finish,
        }
    }

    /// Tokens generated so far.
    fn tokens(&self) -> u32 {
        let n = match self {
            Opened::Streaming { read, .. } => read.iter().map(|c| c.tokens.len()).sum(),
            Opened::Whole(c, _) => c.tokens.len(),
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

async fn attempt(
    app: &AppState,
    address: &str,
    request: pb::GenerateRequest,
    stream: bool,
    deadline: tokio::time::Instant,
    span: &tracing::Span,
) -> Result<Opened, (Failure, ApiError)> {
    let mut request = tonic::Request::new(request);
    // The worker continues this attempt's trace (W3C `traceparent` in gRPC metadata).
    trace_context::inject(span, request.metadata_mut());
    let first_token_by = deadline.min(tokio::time::Instant::now() + app.config.first_token_timeout);
    let upstream = |s: tonic::Status| (Failure::of(&s), ApiError::from(s));
    let mut client = app.clients.get(address).map_err(|e| {
        (
            Failure::of(&tonic::Status::unavailable("")),
            ApiError::Upstream {
                status: StatusCode::BAD_GATEWAY,
                message: format!("bad worker address: {e}"),
            },
        )
    })?;
    // Whether the worker opened the stream: it took the request, so a late first token
    // means it is busy, not dead.
    let took = std::sync::atomic::AtomicBool::new(false);
    let no_first_token = |took: bool| {
        if took {
            (
                Failure::SLOW_FIRST_TOKEN,
                ApiError::Upstream {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: "the worker took the request but is too busy to start it in time"
                        .to_owned(),
                },
            )
        } else {
            (
                Failure::NO_FIRST_TOKEN,
                ApiError::Upstream {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    message: "the worker produced no first token in time".to_owned(),
                },
            )
        }
    };
    let opened = tokio::time::timeout_at(first_token_by, async {
        let mut s = client
            .generate(request)
            .await
            .map_err(upstream)?
            .into_inner();
        took.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wait for the first chunk before answering, so that a worker that fails before
        // producing anything is retried, or yields a proper HTTP error.
        let first = s.message().await.map_err(upstream)?.ok_or_else(|| {
            (
                Failure::EMPTY_STREAM,
                ApiError::Upstream {
                    status: StatusCode::BAD_GATEWAY,
                    message: "the worker closed the stream without answering".to_owned(),
                },
            )
        })?;
        Ok((s, first))
    })
    .await
    .map_err(|_| no_first_token(took.load(std::sync::atomic::Ordering::Relaxed)))?;
    let (mut s, first) = opened?;
    let first_at = Instant::now();
    if stream {
        return Ok(Opened::Streaming {
            stream: Box::new(s),
            read: vec![first],
            ended: false,
        });
    }
    let mut collected = Collected::default();
    collected.push(first);
    loop {
        match tokio::time::timeout_at(deadline, s.message()).await {
            Ok(Ok(Some(chunk))) => collected.push(chunk),
            Ok(Ok(None)) => return Ok(Opened::Whole(collected, first_at)),
            Ok(Err(status)) => return Err(upstream(status)),
            Err(_) => {
                return Err((
                    Failure {
                        retryable: false,
                        ..Failure::NO_FIRST_TOKEN
                    },
                    ApiError::Timeout(app.config.request_timeout.as_secs()),
                ));
            }
        }
    }
}

fn decision_headers(response: &mut Response, d: &Decision) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-switchback-tier", &d.tier),
        ("x-switchback-worker", &d.worker),
        ("x-switchback-model", &d.model),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    headers.insert(
        "x-switchback-escalations",
        HeaderValue::from(d.escalations.len() as u64),
    );
    headers.insert(
        "x-switchback-attempts",
        HeaderValue::from(d.retries.len() as u64 + 1),
    );
}

/// Places the request and opens a worker's answer, moving to another worker of the same
/// choice after a failure before the first token (never the same worker twice), within
/// the attempt budget and the deadline.
async fn open_answer(
    app: &AppState,
    plan: &route::Plan,
    request: &pb::GenerateRequest,
    stream: bool,
    deadline: tokio::time::Instant,
    avoid_nodes: &[String],
    attempts_before: usize,
) -> Result<(Decision, view::InFlight, Opened, tracing::Span), (String, ApiError)> {
    let mut tried: Vec<String> = Vec::new();
    let mut retries: Vec<(String, &'static str)> = Vec::new();
    let mut last: Option<(String, ApiError)> = None;
    loop {
        let (mut decision, address) =
            match route::place(app, plan, &tried, avoid_nodes, deadline).await {
                Ok(placed) => placed,
                // Nobody else to try: the last worker's failure says more than "no worker".
                Err(err) => return Err(last.unwrap_or_else(|| ("none".to_owned(), err))),
            };
        let span = tracing::Span::current();
        span.record("switchback.tier", decision.tier.as_str());
        span.record("switchback.worker", decision.worker.as_str());
        tracing::debug!(
            reason = decision.reason,
            candidates = decision.candidates,
            queue_depth = decision.queue_depth,
            attempt = tried.len() + 1,
            "placed"
        );
        // One span per worker attempt, open until its answer is used up or dropped.
        let attempt_span = tracing::info_span!(
            "switchback.attempt",
            otel.kind = "client",
            switchback.attempt = attempts_before + tried.len() + 1,
            switchback.tier = %decision.tier,
            switchback.worker = %decision.worker,
            switchback.node = %decision.node,
            switchback.queue_depth = decision.queue_depth,
            switchback.outcome = Empty,
        );
        let in_flight = app.view.start(&decision.worker);
        let result = attempt(
            app,
            &address,
            request.clone(),
            stream,
            deadline,
            &attempt_span,
        )
        .instrument(attempt_span.clone())
        .await;
        match result {
            Ok(opened) => {
                decision.retries = retries;
                return Ok((decision, in_flight, opened, attempt_span));
            }
            Err((failure, err)) => {
                drop(in_flight);
                attempt_span.record("switchback.outcome", failure.reason);
                // A full queue, or a worker too busy to start in time, is the tier being
                // saturated (429 with Retry-After), whatever the worker said.
                let err = if matches!(failure.reason, "queue_full" | "slow_first_token") {
                    ApiError::Saturated {
                        tier: decision.tier.clone(),
                    }
                } else {
                    err
                };
                if failure.unreachable {
                    report_unreachable(app, &decision.worker, &err.to_string());
                }
                tried.push(decision.worker.clone());
                let out_of_time = deadline.saturating_duration_since(tokio::time::Instant::now())
                    < std::time::Duration::from_millis(50);
                if !failure.retryable
                    || tried.len() >= app.config.max_attempts as usize
                    || out_of_time
                {
                    return Err((decision.tier, err));
                }
                app.metrics
                    .retries
                    .get_or_create(&Retry {
                        tier: decision.tier.clone(),
                        reason: failure.reason,
                    })
                    .inc();
                tracing::warn!(worker = %decision.worker, reason = failure.reason, %err, "attempt failed before the first token; retrying on another worker");
                retries.push((decision.worker.clone(), failure.reason));
                last = Some((decision.tier, err));
            }
        }
    }
}

/// Reads as much of a lower tier's answer as the cascade judges (the first `k` tokens, or
/// all of it for `k` = 0) and measures its confidence. `Err` when the answer broke off
/// before that (then it is escalated too: the next tier may well answer).
async fn read_for_judgement(
    opened: Opened,
    k: u32,
    deadline: tokio::time::Instant,
) -> (Opened, Result<Option<cascade::Confidence>, ApiError>) {
    let limit = if k == 0 { usize::MAX } else { k as usize };
    let (opened, tokens): (Opened, Vec<pb::TokenLogprob>) = match opened {
        Opened::Whole(collected, at) => {
            let tokens = collected.tokens.iter().take(limit).cloned().collect();
            (Opened::Whole(collected, at), tokens)
        }
        Opened::Streaming {
            mut stream,
            mut read,
            mut ended,
        } => {
            let mut seen: usize = read.iter().map(|c| c.tokens.len()).sum();
            let finished = |read: &[pb::GenerateChunk]| {
                read.last()
                    .is_some_and(|c| response::finish_of(c.finish_reason).is_some())
            };
            while !ended && seen < limit && !finished(&read) {
                match tokio::time::timeout_at(deadline, stream.message()).await {
                    Ok(Ok(Some(chunk))) => {
                        seen += chunk.tokens.len();
                        read.push(chunk);
                    }
                    Ok(Ok(None)) => ended = true,
                    broken => {
                        let err = match broken {
                            Ok(Err(status)) => ApiError::from(status),
                            _ => ApiError::Timeout(0),
                        };
                        let opened = Opened::Streaming {
                            stream,
                            read,
                            ended: true,
                        };
                        return (opened, Err(err));
                    }
                }
            }
            let tokens = read
                .iter()
                .flat_map(|c| c.tokens.iter())
                .take(limit)
                .cloned()
                .collect();
            (
                Opened::Streaming {
                    stream,
                    read,
                    ended,
                },
                tokens,
            )
        }
    };
    let judged: Vec<cascade::Token<'_>> = tokens.iter().map(view::token).collect();
    let confidence = cascade::Confidence::of(&judged);
    (opened, Ok(confidence))
}

/// Keeps at most `n` alternatives per token: a cascade asks workers for more than the
/// client did, to judge the first token's margin.
fn trim_alternatives(tokens: &mut [pb::TokenLogprob], n: u32) {
    for t in tokens {
        t.top.truncate(n as usize);
    }
}

/// The GenAI semantic conventions' `gen_ai.operation.name` for an endpoint.
fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Chat => "chat",
        Endpoint::Completion => "text_completion",
    }
}

/// The request's span attributes from the final decision: what a trace shows of it.
fn record_decision(span: &tracing::Span, d: &Decision, quality: Option<f64>) {
    span.record("switchback.tier", d.tier.as_str());
    span.record("switchback.worker", d.worker.as_str());
    span.record("switchback.decision", d.reason);
    span.record("switchback.escalations", d.escalations.len());
    span.record(
        "switchback.attempts",
        d.retries.len() + d.escalations.len() + 1,
    );
    span.record("gen_ai.response.model", d.model.as_str());
    let quality = quality.or(d.difficulty.as_ref().map(|p| f64::from(p.quality)));
    if let Some(q) = quality {
        span.record("switchback.quality_target", q);
    }
    if !trace_context::exporting() {
        return;
    }
    if let Some(p) = &d.difficulty {
        for (tier, v) in &p.probabilities {
            trace_context::set_attribute(
                span,
                format!("switchback.difficulty.p.{tier}"),
                f64::from(*v),
            );
        }
    }
    if let Some(j) = &d.joint {
        span.record("switchback.joint.moved", j.moved);
        let considered: Vec<String> = j
            .considered
            .iter()
            .map(|c| {
                format!(
                    "{}/{} q={} e2e_ms={}",
                    c.tier, c.worker, c.queue_depth, c.expected_e2e_ms
                )
            })
            .collect();
        span.record("switchback.candidates", considered.join("; ").as_str());
    }
}

#[tracing::instrument(name = "request", skip_all, fields(
    otel.name = %format_args!("{} {}", operation(endpoint), generation.model),
    otel.kind = "server",
    gen_ai.operation.name = operation(endpoint),
    gen_ai.request.model = %generation.model,
    gen_ai.response.model = Empty,
    gen_ai.usage.input_tokens = Empty,
    gen_ai.usage.output_tokens = Empty,
    stream = generation.stream,
    switchback.quality_target = Empty,
    switchback.decision = Empty,
    switchback.tier = Empty,
    switchback.worker = Empty,
    switchback.joint.moved = Empty,
    switchback.candidates = Empty,
    switchback.escalations = Empty,
    switchback.attempts = Empty,
    switchback.key_id = %caller.id(),
    switchback.request_id = %request_id,
))]
async fn serve(
    app: Arc<AppState>,
    endpoint: Endpoint,
    request_id: &RequestId,
    generation: Generation,
    caller: &Caller,
    charge: &mut Option<Charge>,
) -> Result<Response, (String, ApiError)> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + app.config.request_timeout);
    // The request's id is its answer's id, and the worker's `request_id`.
    let id = request_id.as_str().to_owned();
    let policy = app.policy();
    let predictor = app
        .difficulty
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let top = app.config.tiers.len() - 1;
    let allowed = caller.floor().unwrap_or(0).min(top)..=caller.ceiling().unwrap_or(top).min(top);
    let needs = generation.asks.needs();
    let allowed = route::require(&app, &generation.model, needs, allowed)
        .map_err(|e| ("none".to_owned(), e))?;
    let mut plan = route::plan(&app, &generation, predictor.as_deref(), &policy, allowed);
    // Cascades apply to `auto` by the policy's default, and to a named tier only when the
    // client asks for one.
    let cascade_on = match plan.want {
        route::Want::Auto(_) => generation.cascade.unwrap_or(policy.cascade.enabled),
        route::Want::Named(_) => generation.cascade == Some(true),
    };
    let mut request = dispatch::request(&id, &generation);
    let client_alternatives = request.top_logprobs;
    if cascade_on {
        request.top_logprobs = request.top_logprobs.max(2);
    }

    // Escalations: a lower tier's answer that is not confident is dropped (cancelling its
    // generation) and the query goes to the next tier, preferably on another node.
    let mut escalations: Vec<response::Escalation> = Vec::new();
    let mut avoid_nodes: Vec<String> = Vec::new();
    let mut joint = None;
    // Worker attempts so far (retries and escalations), numbering the attempt spans.
    let mut attempts = 0;
    let (mut decision, in_flight, opened, attempt_span) = loop {
        let (decision, in_flight, opened, attempt_span) = open_answer(
            &app,
            &plan,
            &request,
            generation.stream,
            deadline,
            &avoid_nodes,
            attempts,
        )
        .await?;
        attempts += decision.retries.len() + 1;
        if joint.is_none() {
            joint = decision.joint.clone();
        }
        let level = app.config.tiers.iter().position(|t| *t == decision.tier);
        // Never past the tiers the caller's key may reach.
        let next = level.and_then(|l| route::next_tier(&app, &plan, l));
        let Some(next) =
            next.filter(|_| cascade::may_escalate(&policy.cascade, cascade_on, escalations.len()))
        else {
            break (decision, in_flight, opened, attempt_span);
        };
        let (opened, judged) =
            read_for_judgement(opened, policy.cascade.judge_tokens, deadline).await;
        let confidence = judged.as_ref().ok().copied().flatten();
        let answer = cascade::Answer {
            confidence,
            broke: judged.is_err(),
            unfinished_structured: needs.any() && opened.finish() == Some(pb::FinishReason::Length),
        };
        let idle = policy.cascade.idle_boost > 0.0 && app.view.has_idle_slot(&next);
        let verdict = cascade::next(&policy.cascade, &decision.tier, &answer, idle);
        let reason = match verdict {
            cascade::Verdict::Keep => break (decision, in_flight, opened, attempt_span),
            cascade::Verdict::Escalate(reason) => reason,
        };
        let wasted_tokens = opened.tokens();
        app.metrics
            .escalations
            .get_or_create(&crate::metrics::Escalation {
                from: decision.tier.clone(),
                to: next.clone(),
                reason: reason.as_str(),
            })
            .inc();
        app.metrics
            .wasted_tokens
            .get_or_create(&crate::metrics::Tier {
                tier: decision.tier.clone(),
            })
            .inc_by(u64::from(wasted_tokens));
        tracing::info!(from = %decision.tier, worker = %decision.worker, to = %next, reason = reason.as_str(), wasted_tokens, ?confidence, "escalating");
        attempt_span.record("switchback.outcome", "escalated");
        if trace_context::exporting() {
            let mut attributes = vec![
                ("switchback.escalation.from", decision.tier.clone()),
                ("switchback.escalation.from_worker", decision.worker.clone()),
                ("switchback.escalation.to", next.clone()),
                ("switchback.escalation.reason", reason.as_str().to_owned()),
                (
                    "switchback.escalation.wasted_tokens",
                    wasted_tokens.to_string(),
                ),
            ];
            if let Some(c) = confidence {
                attributes.push((
                    "switchback.escalation.mean_logprob",
                    c.mean_logprob.to_string(),
                ));
            }
            trace_context::add_event(
                &tracing::Span::current(),
                "switchback.escalation",
                attributes,
            );
        }
        escalations.push(response::Escalation {
            from_tier: decision.tier.clone(),
            from_worker: decision.worker.clone(),
            to_tier: next.clone(),
            reason,
            confidence,
            wasted_tokens,
        });
        avoid_nodes.push(decision.node.clone());
        // Dropping the answer cancels what is left of the lower tier's generation.
        drop((opened, in_flight, attempt_span));
        plan.want = route::Want::Named(next);
    };
    if !escalations.is_empty() {
        decision.reason = "cascade";
    }
    decision.escalations = escalations;
    decision.joint = joint;
    decision.difficulty = plan.prediction.clone();
    // Held until the answer is used up: streamed answers outlive this function.
    let request_span = tracing::Span::current();
    record_decision(&request_span, &decision, generation.quality);
    let tier = decision.tier.clone();
    let created = unix_now();
    let logprobs = generation.logprobs.is_some();

    let (mut stream, read, ended) = match opened {
        Opened::Whole(mut collected, first_at) => {
            drop(in_flight);
            trim_alternatives(&mut collected.tokens, client_alternatives);
            app.metrics
                .ttft
                .get_or_create(&crate::metrics::Tier { tier: tier.clone() })
                .observe(first_at.duration_since(started).as_secs_f64());
            let body = response::whole(endpoint, &id, created, &decision, &collected, logprobs);
            if let Some(c) = charge.take() {
                c.settle(collected.usage.as_ref().map_or(0, |u| {
                    u64::from(u.prompt_tokens) + u64::from(u.completion_tokens)
                }));
            }
            if let Some(u) = &collected.usage {
                app.metrics
                    .tokens(&tier, u.prompt_tokens, u.completion_tokens);
                request_span.record("gen_ai.usage.input_tokens", u.prompt_tokens);
                request_span.record("gen_ai.usage.output_tokens", u.completion_tokens);
            }
            attempt_span.record("switchback.outcome", "ok");
            app.metrics.request(&tier, "ok");
            app.metrics
                .duration
                .get_or_create(&crate::metrics::Tier { tier: tier.clone() })
                .observe(started.elapsed().as_secs_f64());
            let mut response = Json(body).into_response();
            decision_headers(&mut response, &decision);
            return Ok(response);
        }
        Opened::Streaming {
            stream,
            read,
            ended,
        } => (stream, read, ended),
    };
    app.metrics
        .ttft
        .get_or_create(&crate::metrics::Tier { tier: tier.clone() })
        .observe(started.elapsed().as_secs_f64());

    let include_usage = generation.include_usage;
    let head = response::StreamHead::new(endpoint, id, created, decision.model.clone(), logprobs);
    let d = decision.clone();
    let app2 = Arc::clone(&app);
    let charge = charge.take();
    // The request deadline bounds the whole stream, not only its start.
    let timeout_s = app.config.request_timeout.as_secs();
    let events = async_stream::stream! {
        // The in-flight guard lives as long as the stream: a client that disconnects drops
        // the body, this stream and the gRPC call, which cancels generation on the worker.
        let _in_flight = in_flight;
        let (request_span, attempt_span) = (request_span, attempt_span);
        let mut head = head;
        let sse = |v: serde_json::Value| Ok::<Bytes, std::convert::Infallible>(Bytes::from(format!("data: {v}\n\n")));
        if endpoint == Endpoint::Chat {
            yield sse(head.chunk(None, &[], &[], None));
        }
        let mut streamed_tokens = 0usize;
        let mut usage = None;
        let mut read = read.into_iter();
        let inter_token = app2.metrics.inter_token.get_or_create(&crate::metrics::Tier { tier: d.tier.clone() }).clone();
        let mut last_chunk = Instant::now();
        loop {
            // A worker error and the request deadline end the stream the same way: an
            // error event, then [DONE], never a hang.
            let item = match read.next() {
                Some(chunk) => Ok(Some(chunk)),
                None if ended => Ok(None),
                None => match tokio::time::timeout_at(deadline, stream.message()).await.inspect(|_| {
                    // Only chunks that arrive live count: buffered ones are replayed at once.
                    inter_token.observe(last_chunk.elapsed().as_secs_f64());
                    last_chunk = Instant::now();
                }) {
                    Ok(item) => item.map_err(|s| {
                        if Failure::of(&s).unreachable {
                            report_unreachable(&app2, &d.worker, s.message());
                        }
                        ApiError::from(s)
                    }),
                    Err(_) => Err(ApiError::Timeout(timeout_s)),
                },
            };
            match item {
                Ok(Some(mut chunk)) => {
                    trim_alternatives(&mut chunk.tokens, client_alternatives);
                    streamed_tokens += chunk.tokens.len();
                    let finish = response::finish_of(chunk.finish_reason);
                    if chunk.usage.is_some() {
                        usage = chunk.usage;
                    }
                    if !chunk.text.is_empty() || !chunk.tokens.is_empty() || !chunk.tool_calls.is_empty() || finish.is_some() {
                        yield sse(head.chunk(Some(&chunk.text), &chunk.tokens, &chunk.tool_calls, finish));
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(worker = %d.worker, %err, streamed_tokens, "stream broke after the first token");
                    attempt_span.record("switchback.outcome", err.outcome());
                    app2.metrics.request(&d.tier, err.outcome());
                    yield sse(err.body());
                    yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
                    return;
                }
            }
        }
        // Settled against what the worker reports; a stream that broke off (or that the
        // client dropped) keeps the full up-front charge.
        if let Some(c) = charge {
            c.settle(usage.as_ref().map_or(streamed_tokens as u64, |u| u64::from(u.prompt_tokens) + u64::from(u.completion_tokens)));
        }
        if let Some(u) = &usage {
            app2.metrics.tokens(&d.tier, u.prompt_tokens, u.completion_tokens);
            request_span.record("gen_ai.usage.input_tokens", u.prompt_tokens);
            request_span.record("gen_ai.usage.output_tokens", u.completion_tokens);
        }
        attempt_span.record("switchback.outcome", "ok");
        if include_usage {
            yield sse(head.usage(response::usage_json(usage.as_ref(), streamed_tokens), &d));
        }
        app2.metrics.request(&d.tier, "ok");
        app2.metrics.duration.get_or_create(&crate::metrics::Tier { tier: d.tier.clone() }).observe(started.elapsed().as_secs_f64());
        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
    };
    let mut response = Response::new(Body::from_stream(events));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    decision_headers(&mut response, &decision);
    Ok(response)
}
