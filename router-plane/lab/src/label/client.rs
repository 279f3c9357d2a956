//! Asking the router: each question on each tier, greedy, with the log-probabilities the
//! confidence signals need; retried while the cluster is busy, and stopped (never scored
//! wrong) when it keeps refusing.

use std::{collections::BTreeMap, path::Path};

use serde_json::{Value, json};

use super::{
    Question, Scoring,
    code::{self, CodeError},
    judge::{Verdict, judge},
};
use crate::data::{Answer, Item};

/// Alternatives per step with letter scoring: as many as a router allows by default (its
/// `limits.max_top_logprobs`).
const LETTER_ALTERNATIVES: u32 = 20;

/// Why a labelling run stopped.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// No answer: no connection, or the answer could not be read.
    #[error("{what}: {source}")]
    Request {
        what: String,
        source: reqwest::Error,
    },
    #[error("{what}: {source}: {body}")]
    Json {
        what: String,
        source: serde_json::Error,
        body: String,
    },
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: reqwest::StatusCode,
        body: String,
    },
    /// A request the cluster turned away for now every time it was tried.
    #[error("{last} (after {tries} tries)")]
    Exhausted { last: Box<LabelError>, tries: u32 },
    /// A code answer could not be run (our side: no Python, no temporary directory).
    #[error("{what}: {source}")]
    Grading { what: String, source: CodeError },
    /// The labels could not be written.
    #[error("{path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// How `run` retries a request the cluster turned away for now: a 429, 502, 503 or 504
/// (a full queue, a worker that lost its stream, no first token in time on a busy CPU
/// worker) or a connection error. Waits `base`, doubling each time, or the router's
/// `Retry-After` when that is longer; after `attempts` tries the run stops with the last
/// error.
/// A batch job of hundreds of questions must not die on one such answer, nor must it
/// score the question as wrong (that would be a label the tier never earned).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub base: std::time::Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            base: std::time::Duration::from_secs(2),
        }
    }
}

impl Retry {
    /// The wait before try `attempt + 1` (after `attempt` failed ones), capped at a minute.
    /// The server's `Retry-After` is a floor, not the wait: a router says "1" to anyone it
    /// turns away, while a worker it took out of its routing set after a first-token
    /// timeout comes back only when the controller next reports it, tens of seconds later.
    fn wait(&self, attempt: u32, retry_after: Option<u64>) -> std::time::Duration {
        let own = self.base.saturating_mul(1 << (attempt - 1).min(16));
        let server = std::time::Duration::from_secs(retry_after.unwrap_or(0));
        own.max(server).min(std::time::Duration::from_secs(60))
    }
}

/// Whether an answer with this status is worth asking again (the cluster is busy or lost
/// the request), rather than a request it will never accept (400, 404, 413, ...).
fn retryable(status: reqwest::StatusCode) -> bool {
    use reqwest::StatusCode as S;
    matches!(
        status,
        S::TOO_MANY_REQUESTS | S::BAD_GATEWAY | S::SERVICE_UNAVAILABLE | S::GATEWAY_TIMEOUT
    )
}

/// POSTs `body` to `url`, retrying as `retry` says; the JSON answer of the first success,
/// or the last failure.
async fn ask(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    retry: Retry,
    what: &str,
) -> Result<Value, LabelError> {
    let request = |source| LabelError::Request {
        what: what.to_owned(),
        source,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (error, retry_after) = match http.post(url).json(body).send().await {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
                let text = resp.text().await.map_err(request)?;
                if status.is_success() {
                    return serde_json::from_str(&text).map_err(|source| LabelError::Json {
                        what: what.to_owned(),
                        source,
                        body: text,
                    });
                }
                let error = LabelError::Status {
                    what: what.to_owned(),
                    status,
                    body: text,
                };
                if !retryable(status) {
                    return Err(error);
                }
                (error, retry_after)
            }
            // A connection refused or reset: the router restarting, say. A timeout of the
            // client's own is not retried: the request may still be running there.
            Err(e) if e.is_connect() || (e.is_request() && !e.is_timeout()) => (request(e), None),
            Err(e) => return Err(request(e)),
        };
        if attempt >= retry.attempts.max(1) {
            return Err(LabelError::Exhausted {
                last: Box::new(error),
                tries: attempt,
            });
        }
        let wait = retry.wait(attempt, retry_after);
        eprintln!(
            "{error}; try {} in {:.0} s",
            attempt + 1,
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
    }
}

/// How long a tier's program may run before it counts as wrong (HumanEval's harness
/// allows 3 s; a shared CPU busy with inference gets more).
const CODE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// How a labelling run asks.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// The router's base URL.
    pub router: &'a str,
    /// The tiers to ask, each a key of the labels' `scores`.
    pub tiers: &'a [String],
    pub scoring: Scoring,
    /// Tokens per answer with text scoring.
    pub max_tokens: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub retry: Retry,
    /// The Python that runs code answers.
    pub python: &'a Path,
}

/// Asks the router each question on each tier and scores the answers (code by running it
/// with `python`). Requests are greedy. Hands each question's [`Item`] to `finished` as
/// soon as all its tiers have answered (so a long run that fails loses only the questions
/// in flight). A request the cluster turns away for now is retried as `retry` says; one
/// that still fails stops the run (a label must not be silently missing).
pub async fn run(
    opts: &Options<'_>,
    questions: &[Question],
    mut finished: impl FnMut(Item) -> Result<(), LabelError>,
) -> Result<(), LabelError> {
    use futures::StreamExt;
    let Options {
        router,
        tiers,
        scoring,
        max_tokens,
        concurrency,
        retry,
        python,
    } = *opts;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .map_err(LabelError::Client)?;
    let url = format!("{}/v1/chat/completions", router.trim_end_matches('/'));
    let jobs = questions
        .iter()
        .enumerate()
        .flat_map(|(qi, q)| tiers.iter().map(move |t| (qi, q, t.clone())));
    let mut answers = futures::stream::iter(jobs)
        .map(|(qi, q, tier)| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                // Log-probabilities too: the answer's confidence is what `fit-cascade`
                // fits the cascade floors on.
                // Five alternatives per step give the first step's margin and entropy (the
                // signal a cascade can read after the prefill alone).
                let mut body = json!({"model": tier, "max_tokens": max_tokens, "logprobs": true,
                                      "top_logprobs": 5,
                                      "messages": [{"role": "user", "content": q.prompt}]});
                if scoring == Scoring::Letter {
                    body["max_tokens"] = json!(1);
                    body["top_logprobs"] = json!(LETTER_ALTERNATIVES);
                }
                let asked = std::time::Instant::now();
                let what = format!("{} on {tier}", q.id);
                let v = ask(&http, &url, &body, retry, &what).await?;
                let seconds = asked.elapsed().as_secs_f64();
                let (verdict, confidence, mut answer) = judge(q, scoring, &v);
                answer.seconds = seconds;
                let score = match verdict {
                    Verdict::Score(s) => s,
                    Verdict::Run(program) => f64::from(u8::from(
                        code::passes(python, &program, CODE_TIMEOUT)
                            .await
                            .map_err(|source| LabelError::Grading { what, source })?,
                    )),
                };
                Ok::<_, LabelError>((qi, tier, score, confidence, answer))
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut scores: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); questions.len()];
    let mut confidence: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); questions.len()];
    let mut recorded: Vec<BTreeMap<String, Answer>> = vec![BTreeMap::new(); questions.len()];
    while let Some(answer) = answers.next().await {
        let (qi, tier, score, conf, answer) = answer?;
        if let Some(c) = conf {
            confidence[qi].insert(tier.clone(), c);
        }
        recorded[qi].insert(tier.clone(), answer);
        scores[qi].insert(tier, score);
        if scores[qi].len() == tiers.len() {
            let q = &questions[qi];
            finished(Item {
                id: q.id.clone(),
                prompt: q.prompt.clone(),
                source: q.source.clone(),
                scores: std::mem::take(&mut scores[qi]),
                costs: BTreeMap::new(),
                confidence: std::mem::take(&mut confidence[qi]),
                answers: std::mem::take(&mut recorded[qi]),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::Gold;

    /// A router stand-in that answers the scripted statuses in turn (then 200 with the
    /// answer "B"), counting the requests it gets; its base URL and the count.
    async fn scripted(
        script: Vec<(u16, Option<&'static str>)>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use axum::{http::StatusCode, response::IntoResponse};
        use std::sync::{Arc, atomic::AtomicUsize, atomic::Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = hits.clone();
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let step = script.get(n).copied();
                async move {
                    match step {
                        Some((code, retry_after)) => {
                            let mut r = (
                                StatusCode::from_u16(code).expect("status"),
                                axum::Json(json!({"error": {"message": "scripted"}})),
                            )
                                .into_response();
                            if let Some(secs) = retry_after {
                                r.headers_mut()
                                    .insert("retry-after", secs.parse().expect("header"));
                            }
                            r
                        }
                        None => axum::Json(json!({"choices": [
                            {"message": {"role": "assistant", "content": "B"}}]}))
                        .into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (url, hits)
    }

    async fn label_one(url: &str, attempts: u32) -> Result<Vec<Item>, String> {
        let q = Question {
            id: "q1".into(),
            source: "s".into(),
            prompt: "Which letter?".into(),
            gold: Gold::Letter {
                answer: 'B',
                last: 'D',
            },
        };
        let retry = Retry {
            attempts,
            base: std::time::Duration::from_millis(1),
        };
        let tiers = ["small".to_owned()];
        let opts = Options {
            router: url,
            tiers: &tiers,
            scoring: Scoring::Text,
            max_tokens: 8,
            concurrency: 1,
            retry,
            python: Path::new("python3"),
        };
        let mut items = Vec::new();
        run(&opts, &[q], |i| {
            items.push(i);
            Ok(())
        })
        .await
        .map(|()| items)
        .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_busy_cluster_is_asked_again_and_the_label_is_the_answers() {
        use std::sync::atomic::Ordering;
        let (url, hits) = scripted(vec![
            (504, None),
            (503, Some("0")),
            (429, Some("0")),
            (502, None),
        ])
        .await;
        let items = label_one(&url, 5).await.expect("labelled");
        assert_eq!(hits.load(Ordering::SeqCst), 5);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].scores["small"], 1.0);
        assert_eq!(items[0].answers["small"].text, "B", "the answer is kept");
    }

    #[tokio::test]
    async fn a_request_the_cluster_refuses_is_not_retried_and_stops_the_run() {
        use std::sync::atomic::Ordering;
        let (url, hits) = scripted(vec![(400, None)]).await;
        let err = label_one(&url, 5).await.expect_err("the run stops");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(err.contains("q1 on small: HTTP 400"), "{err}");
    }

    #[tokio::test]
    async fn the_run_stops_when_the_tries_are_spent() {
        use std::sync::atomic::Ordering;
        let (url, hits) = scripted(vec![(504, None); 10]).await;
        let err = label_one(&url, 3).await.expect_err("the run stops");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        assert!(
            err.contains("504") && err.ends_with("(after 3 tries)"),
            "{err}"
        );
    }

    #[test]
    fn retries_double_and_wait_at_least_the_servers_retry_after() {
        use std::time::Duration;
        let r = Retry {
            attempts: 9,
            base: Duration::from_secs(2),
        };
        let waits: Vec<u64> = (1..=4).map(|a| r.wait(a, None).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16]);
        assert_eq!(r.wait(1, Some(7)), Duration::from_secs(7));
        assert_eq!(r.wait(3, Some(1)), Duration::from_secs(8));
        assert_eq!(r.wait(8, None), Duration::from_secs(60));
        assert_eq!(r.wait(1, Some(3600)), Duration::from_secs(60));
    }
}
