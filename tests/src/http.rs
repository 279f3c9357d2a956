//! Small HTTP helpers for talking to the router in tests.

use std::collections::HashMap;

/// A parsed server-sent-events body: the `data:` payloads in order.
#[derive(Debug)]
pub struct Sse {
    pub events: Vec<String>,
}

impl Sse {
    pub fn parse(body: &str) -> Self {
        let events = body
            .split("\n\n")
            .filter_map(|block| {
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                (!data.is_empty()).then(|| data.join("\n"))
            })
            .collect();
        Self { events }
    }

    /// Every event but `[DONE]`, as JSON.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.events
            .iter()
            .filter(|e| e.as_str() != "[DONE]")
            .map(|e| {
                serde_json::from_str(e)
                    .unwrap_or_else(|err| panic!("SSE event is not JSON ({err}): {e}"))
            })
            .collect()
    }
}

/// Response status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

pub async fn post(url: &str, body: impl Into<reqwest::Body>) -> Reply {
    send(
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body),
        url,
    )
    .await
}

/// POSTs JSON with extra headers, e.g. `("authorization", "Bearer sb-...")`.
pub async fn post_json_with(
    url: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(request, url).await
}

/// GETs with extra headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = reqwest::Client::new().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    send(request, url).await
}

async fn send(request: reqwest::RequestBuilder, url: &str) -> Reply {
    let resp = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading body of {url}: {e}"));
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post_json(url: &str, body: &serde_json::Value) -> Reply {
    post(url, body.to_string()).await
}
