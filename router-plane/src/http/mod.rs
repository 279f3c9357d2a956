//! The HTTP shell: `/v1/chat/completions`, `/v1/completions`, `/v1/models` (and
//! `/v1/models/{id}`), plus `/healthz`, `/readyz` and `/metrics`. A generation request is
//! authenticated, its body read and validated into a [`Generation`], run through the
//! [`pipeline`], and the answer (or the error, through the one error map in [`error`])
//! rendered: whole JSON or SSE.

pub mod answer;
pub mod error;
pub mod models;
pub mod openai;
pub mod render;
pub mod request_id;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Instant};

use axum::{
    Extension, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use self::{
    answer::Shape,
    error::ApiError,
    openai::{ChatRequest, CompletionRequest},
    request_id::RequestId,
};
use crate::{
    auth::{AuthError, Caller},
    generation::Generation,
    pipeline,
    state::AppState,
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
    // A value that is not visible ASCII is as malformed as an empty one.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    app.auth.authenticate(authorization).map_err(|failure| {
        app.metrics
            .auth_failures
            .get_or_create(&crate::metrics::Reason {
                reason: failure.reason(),
            })
            .inc();
        tracing::debug!(reason = failure.reason(), "request without a valid API key");
        let err = ApiError::from(failure);
        app.metrics.request("none", err.outcome());
        err
    })
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
/// (413, 400), then the pipeline: what the key may use (403), its tokens/min (429),
/// placement and the answer. Every response reports the key's limits.
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
    let mut response = match accept(&app, endpoint, &headers, body, &caller).await {
        Ok(generation) => {
            let ignored = openai::ignored_header(&generation.ignored);
            if !generation.ignored.is_empty() {
                tracing::debug!(request_id = %id, key = caller.id(), fields = ?generation.ignored, "ignoring unknown request fields");
            }
            let shape = Shape {
                endpoint,
                logprobs: generation.logprobs.is_some(),
                include_usage: generation.include_usage,
            };
            let ctx = pipeline::Context {
                app: Arc::clone(&app),
                id: id.as_str().to_owned(),
                generation,
                caller: caller.clone(),
            };
            let mut response = match pipeline::run(ctx).await {
                Ok(answer) => answer::respond(answer, shape),
                Err(err) => ApiError::from(err).into_response(),
            };
            if let Some(v) = ignored.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response
                    .headers_mut()
                    .insert("x-switchback-ignored-fields", v);
            }
            response
        }
        Err(err) => {
            if let ApiError::Auth(AuthError::RateLimited { limit, .. }) = &err {
                app.metrics
                    .rate_limited
                    .get_or_create(&crate::metrics::KeyLimit {
                        key: caller.id().to_owned(),
                        limit: limit.as_str(),
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
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    app.metrics
        .key_request(caller.id(), response.status().as_u16());
    response
}

/// What the door checks before the pipeline: the key's requests per minute (before the
/// body is read at all), then the body, parsed and validated, and the quality header.
async fn accept(
    app: &AppState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Body,
    caller: &Caller,
) -> Result<Generation, ApiError> {
    caller.take_request(Instant::now())?;
    let bytes = read_body(app, headers, body).await?;
    let mut g = match endpoint {
        Endpoint::Chat => ChatRequest::parse(&bytes)?.validate(&app.limits)?,
        Endpoint::Completion => CompletionRequest::parse(&bytes)?.validate(&app.limits)?,
    };
    quality_header(headers, &mut g)?;
    Ok(g)
}
