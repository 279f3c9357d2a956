//! The cascade stage, the pipeline's only loop. The answer dispatch opened is judged when
//! a higher tier could take over: the first tokens' log-probabilities against the tier's
//! floors (raised when the next tier has a free slot). An answer that is not confident
//! enough is dropped, which cancels what is left of its generation, and the query goes
//! back to placement on the next tier up, preferably on another node; every escalation is
//! counted, traced and reported in the decision.

use std::sync::Arc;

use switchback_common::trace_context;
use switchback_proto::pb;

use super::{
    Error, Failed,
    decision::{Escalation, JointView},
    dispatch::{self, Opened, Opening, finish_of},
    plan::{self, Plan, Want},
};
use crate::{
    cascade::{self as judgement, Confidence, EscalationReason, Verdict},
    generation::Needs,
    policy::Policy,
    state::AppState,
    view,
};

/// The answer the cascade kept, and what led to it.
pub struct Kept {
    pub opening: Opening,
    /// Lower tiers whose answers were dropped, in order.
    pub escalations: Vec<Escalation>,
    /// The first placement's joint decision (for `auto`).
    pub joint: Option<JointView>,
}

/// Opens an answer for `plan` and, while the plan allows a cascade and a higher tier the
/// caller may use can serve the request, judges it and escalates. On return `plan` names
/// the tier of the answer kept.
pub async fn run(
    app: &AppState,
    plan: &mut Plan,
    request: &pb::GenerateRequest,
    stream: bool,
    deadline: tokio::time::Instant,
) -> Result<Kept, Failed> {
    let policy = Arc::clone(&plan.policy);
    let mut escalations: Vec<Escalation> = Vec::new();
    let mut avoid_nodes: Vec<String> = Vec::new();
    let mut joint = None;
    // Worker attempts so far (retries and escalations), numbering the attempt spans.
    let mut attempts = 0;
    loop {
        let opening =
            dispatch::open(app, plan, request, stream, deadline, &avoid_nodes, attempts).await?;
        attempts += opening.retries.len() + 1;
        if joint.is_none() {
            joint = opening.placement.joint.clone();
        }
        let level = app
            .config
            .tiers
            .iter()
            .position(|t| *t == opening.placement.tier);
        // Never past the tiers the caller's key may reach.
        let next = level.and_then(|l| plan::next_tier(app, plan, l));
        let Some(next) = next
            .filter(|_| judgement::may_escalate(&policy.cascade, plan.cascade, escalations.len()))
        else {
            return Ok(Kept {
                opening,
                escalations,
                joint,
            });
        };
        let (opening, verdict, confidence) =
            judge_answer(app, opening, &next, &policy, plan.needs, deadline).await;
        let reason = match verdict {
            Verdict::Keep => {
                return Ok(Kept {
                    opening,
                    escalations,
                    joint,
                });
            }
            Verdict::Escalate(reason) => reason,
        };
        avoid_nodes.push(opening.placement.node.clone());
        escalations.push(escalate(app, opening, &next, reason, confidence));
        plan.want = Want::Named(next);
    }
}

/// Reads as much of the answer as the policy judges and takes the routing core's
/// escalation step on it; the verdict, with the confidence it was judged on.
async fn judge_answer(
    app: &AppState,
    mut opening: Opening,
    next: &str,
    policy: &Policy,
    needs: Needs,
    deadline: tokio::time::Instant,
) -> (Opening, Verdict, Option<Confidence>) {
    let (answer, judged) =
        read_for_judgement(opening.answer, policy.cascade.judge_tokens, deadline).await;
    opening.answer = answer;
    let confidence = judged.as_ref().ok().copied().flatten();
    let read = judgement::Answer {
        confidence,
        broke: judged.is_err(),
        unfinished_structured: needs.any()
            && opening.answer.finish() == Some(pb::FinishReason::Length),
    };
    let idle = policy.cascade.idle_boost > 0.0 && app.view.has_idle_slot(next);
    let verdict = judgement::next(&policy.cascade, &opening.placement.tier, &read, idle);
    (opening, verdict, confidence)
}

/// Drops a lower tier's answer for the tier `next` (dropping it cancels what is left of
/// its generation): counted, logged, traced, and returned for the decision.
fn escalate(
    app: &AppState,
    opening: Opening,
    next: &str,
    reason: EscalationReason,
    confidence: Option<Confidence>,
) -> Escalation {
    let placed = &opening.placement;
    let wasted_tokens = opening.answer.tokens();
    app.metrics
        .escalations
        .get_or_create(&crate::metrics::Escalation {
            from: placed.tier.clone(),
            to: next.to_owned(),
            reason: reason.as_str(),
        })
        .inc();
    app.metrics
        .wasted_tokens
        .get_or_create(&crate::metrics::Tier {
            tier: placed.tier.clone(),
        })
        .inc_by(u64::from(wasted_tokens));
    tracing::info!(from = %placed.tier, worker = %placed.worker, to = %next, reason = reason.as_str(), wasted_tokens, ?confidence, "escalating");
    opening.span.record("switchback.outcome", "escalated");
    if trace_context::exporting() {
        let mut attributes = vec![
            ("switchback.escalation.from", placed.tier.clone()),
            ("switchback.escalation.from_worker", placed.worker.clone()),
            ("switchback.escalation.to", next.to_owned()),
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
    Escalation {
        from_tier: placed.tier.clone(),
        from_worker: placed.worker.clone(),
        to_tier: next.to_owned(),
        reason,
        wasted_tokens,
        confidence,
    }
}

/// Reads as much of a lower tier's answer as the cascade judges (the first `k` tokens, or
/// all of it for `k` = 0) and measures its confidence. `Err` when the answer broke off
/// before that (then it is escalated too: the next tier may well answer).
async fn read_for_judgement(
    opened: Opened,
    k: u32,
    deadline: tokio::time::Instant,
) -> (Opened, Result<Option<Confidence>, Error>) {
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
                    .is_some_and(|c| finish_of(c.finish_reason).is_some())
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
                            Ok(Err(status)) => Error::from(status),
                            _ => Error::Timeout(0),
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
    let judged: Vec<judgement::Token<'_>> = tokens.iter().map(view::token).collect();
    (opened, Ok(Confidence::of(&judged)))
}
