//! Unit tests of `service`.

use super::*;
use crate::{config::SimConfig, engine::sim::SimEngine};
use switchback_proto::pb::generate_request::Prompt as PbPrompt;

fn service(
    capacity: u32,
    max_queue: u32,
    decode_ms: f64,
) -> (InferenceService, Arc<Load>, TaskTracker) {
    let load = Arc::new(Load::new(capacity));
    let tracker = TaskTracker::new();
    let engine = Arc::new(SimEngine::new(SimConfig {
        prefill_ms_per_token: 0.0,
        decode_ms_per_token: decode_ms,
        default_tokens: 4,
    }));
    let svc = InferenceService::new(
        Identity {
            worker_id: "w".into(),
            tier: "small".into(),
            model: "m".into(),
        },
        engine,
        Arc::clone(&load),
        Limits {
            max_queue,
            stalled_caller: Duration::from_secs(1),
            default_max_tokens: 4,
            max_tokens_limit: 100,
        },
        tracker.clone(),
        CancellationToken::new(),
    );
    (svc, load, tracker)
}

fn request(max_tokens: u32) -> Request<pb::GenerateRequest> {
    Request::new(pb::GenerateRequest {
        request_id: "r".into(),
        prompt: Some(PbPrompt::Text("hello".into())),
        sampling: Some(pb::SamplingParams {
            max_tokens,
            ..Default::default()
        }),
        top_logprobs: 0,
        ..Default::default()
    })
}

/// Waits (bounded) until the spawned relay tasks have made `cond` true.
async fn settle(what: &str, cond: impl Fn() -> bool) {
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !cond() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never happened: {what}");
}

async fn drain(
    stream: ReceiverStream<Result<pb::GenerateChunk, Status>>,
) -> Vec<pb::GenerateChunk> {
    stream.map(|c| c.expect("chunk")).collect().await
}

#[tokio::test]
async fn streams_tokens_then_usage() {
    let (svc, _load, _t) = service(2, 4, 1.0);
    let chunks = drain(
        svc.generate(request(3))
            .await
            .expect("accepted")
            .into_inner(),
    )
    .await;
    assert_eq!(chunks.len(), 4);
    let last = chunks.last().expect("final chunk");
    assert_eq!(last.finish_reason, pb::FinishReason::Length as i32);
    assert_eq!(last.usage.as_ref().map(|u| u.completion_tokens), Some(3));
    assert!(
        chunks[..3]
            .iter()
            .all(|c| c.tokens.len() == 1 && !c.text.is_empty())
    );
}

#[tokio::test]
async fn a_caller_that_stops_reading_loses_its_slot() {
    // One slot; the sim makes 100 tokens in 10 ms, far more than the relay buffers.
    let (svc, load, _t) = service(1, 4, 0.1);
    let unread = svc.generate(request(100)).await.expect("accepted");
    settle("the unread answer fills its buffer", || load.running() == 1).await;
    // The next caller waits for the slot, which the stall (1 s here) gives back.
    let next = tokio::time::timeout(
        Duration::from_secs(20),
        drain(svc.generate(request(3)).await.expect("queued").into_inner()),
    )
    .await
    .expect("the stalled caller's slot never came back");
    assert_eq!(
        next.last()
            .and_then(|c| c.usage.as_ref())
            .map(|u| u.completion_tokens),
        Some(3)
    );
    // The unread stream ends without a finish: its generation was cancelled.
    let cut: Vec<_> = unread.into_inner().collect().await;
    assert!(cut.len() < 100, "{} chunks", cut.len());
    assert!(
        cut.iter()
            .all(|c| c.as_ref().is_ok_and(|c| c.usage.is_none()))
    );
}

#[tokio::test]
async fn invalid_requests_are_rejected_with_invalid_argument() {
    let (svc, _load, _t) = service(1, 1, 1.0);
    let mut no_prompt = request(1);
    no_prompt.get_mut().prompt = None;
    assert_eq!(
        svc.generate(no_prompt).await.err().map(|s| s.code()),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        svc.generate(request(101)).await.err().map(|s| s.code()),
        Some(tonic::Code::InvalidArgument)
    );
}

#[tokio::test]
async fn stop_sequences_end_the_stream_and_count_what_was_generated() {
    let (svc, _load, _t) = service(1, 1, 1.0);
    let free = drain(svc.generate(request(8)).await.expect("open").into_inner()).await;
    let text: String = free.iter().map(|c| c.text.as_str()).collect();
    // The sim's words each start with a space: stop at the third word's start.
    let third = text
        .match_indices(' ')
        .nth(2)
        .map(|(i, _)| i)
        .expect("three words");
    let stop = text[third..third + 3].to_owned();
    let mut req = request(8);
    req.get_mut().sampling.get_or_insert_default().stop = vec![stop.clone()];
    let chunks = drain(svc.generate(req).await.expect("open").into_inner()).await;
    let got: String = chunks.iter().map(|c| c.text.as_str()).collect();
    let at = text.find(&stop).expect("stop");
    assert_eq!(got, text[..at], "stop {stop:?} in {text:?}");
    // Each free chunk is one token: where each starts and ends in the text.
    let mut spans = Vec::new();
    let mut offset = 0;
    for c in free.iter().filter(|c| !c.tokens.is_empty()) {
        spans.push((offset, offset + c.text.len()));
        offset += c.text.len();
    }
    let returned = spans.iter().filter(|(start, _)| *start < at).count();
    let generated = 1 + spans
        .iter()
        .position(|(_, end)| *end >= at + stop.len())
        .expect("the stop ends in a token");
    let last = chunks.last().expect("final chunk");
    assert_eq!(last.finish_reason, pb::FinishReason::Stop as i32);
    assert_eq!(
        last.usage.as_ref().map(|u| u.completion_tokens),
        Some(generated as u32),
        "usage counts every token generated, the one the stop ends in too"
    );
    assert_eq!(
        chunks.iter().map(|c| c.tokens.len()).sum::<usize>(),
        returned,
        "tokens that start after the stop are not listed"
    );
    assert!(generated > returned);
}

#[tokio::test]
async fn tools_and_schemas_are_refused_by_an_engine_that_cannot_do_them() {
    let (svc, _load, _t) = service(1, 1, 1.0);
    let mut tools = request(4);
    tools.get_mut().tools = vec![pb::Tool {
        name: "now".into(),
        ..Default::default()
    }];
    let Err(status) = svc.generate(tools).await else {
        panic!("tools accepted by an engine that cannot call them")
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("does not call tools"),
        "{status:?}"
    );
    let mut json = request(4);
    json.get_mut().response_format = Some(pb::ResponseFormat {
        kind: pb::response_format::Kind::JsonObject as i32,
        schema: String::new(),
    });
    let Err(status) = svc.generate(json).await else {
        panic!("a schema accepted by an engine that cannot constrain output")
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let mut named = request(4);
    named.get_mut().tool_choice = Some(pb::ToolChoice {
        mode: pb::tool_choice::Mode::Required as i32,
        name: String::new(),
    });
    assert_eq!(
        svc.generate(named).await.err().map(|s| s.code()),
        Some(tonic::Code::InvalidArgument),
        "a required call without tools"
    );
}

#[tokio::test]
async fn a_worker_bounds_what_any_caller_sends() {
    let (svc, _load, _t) = service(1, 1, 1.0);
    let refused = |mut req: Request<pb::GenerateRequest>,
                   edit: &dyn Fn(&mut pb::GenerateRequest)| {
        edit(req.get_mut());
        req
    };
    let cases: Vec<(&str, Request<pb::GenerateRequest>)> = vec![
        (
            "request_id",
            refused(request(1), &|r| r.request_id = "r\nERROR forged".into()),
        ),
        (
            "request_id",
            refused(request(1), &|r| r.request_id = "r".repeat(129)),
        ),
        (
            "prompt",
            refused(request(1), &|r| {
                r.prompt = Some(PbPrompt::Text("x".repeat(MAX_PROMPT_BYTES + 1)));
            }),
        ),
        (
            "chat.messages",
            refused(request(1), &|r| {
                r.prompt = Some(PbPrompt::Chat(pb::ChatPrompt {
                    messages: vec![
                        pb::ChatMessage {
                            role: "user".into(),
                            content: "x".into(),
                            ..Default::default()
                        };
                        MAX_MESSAGES + 1
                    ],
                }));
            }),
        ),
        (
            "sampling.stop",
            refused(request(1), &|r| {
                r.sampling.get_or_insert_default().stop = vec!["s".into(); MAX_STOP + 1];
            }),
        ),
    ];
    for (field, req) in cases {
        let Err(status) = svc.generate(req).await else {
            panic!("{field}: accepted");
        };
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    // At the bounds, accepted.
    let mut ok = request(1);
    ok.get_mut().request_id = "r".repeat(MAX_REQUEST_ID_BYTES);
    ok.get_mut().sampling.get_or_insert_default().stop = vec!["s".into(); MAX_STOP];
    assert!(svc.generate(ok).await.is_ok());
}

#[tokio::test]
async fn full_queue_is_resource_exhausted_and_slots_are_respected() {
    let (svc, load, _t) = service(1, 1, 100.0);
    let first = svc.generate(request(10)).await.expect("first runs");
    let mut first = first.into_inner();
    first.next().await; // generating now
    let second = svc.generate(request(10)).await.expect("second queues");
    assert_eq!((load.running(), load.waiting()), (1, 1));
    let third = svc.generate(request(10)).await;
    assert_eq!(
        third.err().map(|s| s.code()),
        Some(tonic::Code::ResourceExhausted)
    );
    drop(second); // a caller that leaves while queued is uncounted
    settle("the queued request to be uncounted", || load.waiting() == 0).await;
    drop(first); // and one that leaves mid-generation frees its slot
    settle("the running request to be cancelled", || {
        load.running() == 0
    })
    .await;
}

#[tokio::test]
async fn draining_refuses_new_work() {
    let (svc, load, _t) = service(1, 1, 1.0);
    load.start_draining();
    assert_eq!(
        svc.generate(request(1)).await.err().map(|s| s.code()),
        Some(tonic::Code::Unavailable)
    );
    let health = svc
        .health(Request::new(pb::HealthRequest {}))
        .await
        .expect("health")
        .into_inner();
    assert!(!health.serving);
}
