//! The pipeline's answer as an HTTP response: one JSON body, or a `text/event-stream` of
//! OpenAI chunks (`data: {...}`, ending `data: [DONE]`) rendered as the relay yields
//! them; both with the decision's `x-switchback-*` headers.

use std::{convert::Infallible, time::SystemTime};

use axum::{
    Json,
    body::{Body, Bytes},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;

use super::{
    Endpoint,
    error::ApiError,
    render::{self, StreamHead},
};
use crate::pipeline::{self, Answer, Decision, Event, Relay};

/// How the client asked for the answer to look.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub endpoint: Endpoint,
    /// Log-probabilities in the answer.
    pub logprobs: bool,
    /// A usage chunk before `[DONE]` (`stream_options.include_usage`).
    pub include_usage: bool,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The response for an answer.
pub fn respond(answer: Answer, shape: Shape) -> Response {
    let Answer { id, decision, body } = answer;
    let created = unix_now();
    let mut response = match body {
        pipeline::Body::Whole(collected) => Json(render::whole(
            shape.endpoint,
            &id,
            created,
            &decision,
            &collected,
            shape.logprobs,
        ))
        .into_response(),
        pipeline::Body::Stream(relay) => {
            let head = StreamHead::new(
                shape.endpoint,
                id,
                created,
                decision.model.clone(),
                shape.logprobs,
            );
            let mut response = Response::new(Body::from_stream(sse(
                relay,
                head,
                decision.clone(),
                shape.include_usage,
            )));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    };
    decision_headers(&mut response, &decision);
    response
}

/// The relay's events as SSE: the role-only opening chunk for chat, a chunk per piece,
/// the usage chunk when asked for, and `[DONE]` after the end or after the error event of
/// a stream that broke.
fn sse(
    mut relay: Relay,
    mut head: StreamHead,
    decision: Decision,
    include_usage: bool,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    async_stream::stream! {
        if head.endpoint == Endpoint::Chat {
            yield Ok(render::event(&head.chunk(None, &[], &[], None)));
        }
        while let Some(event) = relay.next().await {
            match event {
                Event::Piece(p) => yield Ok(render::event(&head.chunk(Some(&p.text), &p.tokens, &p.tool_calls, p.finish))),
                Event::End { usage, streamed_tokens } => {
                    if include_usage {
                        yield Ok(render::event(&head.usage(render::usage(usage.as_ref(), streamed_tokens), &decision)));
                    }
                }
                Event::Broke(err) => {
                    yield Ok(render::event(&ApiError::from(err).body()));
                    break;
                }
            }
        }
        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
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
