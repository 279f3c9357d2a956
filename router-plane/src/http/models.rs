//! `GET /v1/models` and `GET /v1/models/{id}`: what the caller's key may use (`auto`, the
//! tiers, the models), as OpenAI model objects. Both count against the key's request rate.
//! A model id may hold `/` or `.` (worker configs name models freely), so the retrieve
//! route takes the rest of the path as the id.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{answer::unix_now, authenticate, error::ApiError};
use crate::{auth::Caller, pipeline, state::AppState};

/// The list: `{"object": "list", "data": [model, ...]}`.
pub async fn list(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    metered(&app, &headers, |caller| {
        Json(json!({"object": "list", "data": entries(&app, caller)})).into_response()
    })
}

/// One model object, the same as its entry in the list, or a 404 `model_not_found`.
pub async fn retrieve(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    metered(&app, &headers, |caller| {
        let id = match id {
            Ok(Path(id)) => id,
            Err(rejection) => {
                return ApiError::invalid("model", format!("invalid model id: {rejection}"))
                    .into_response();
            }
        };
        match entries(&app, caller).into_iter().find(|m| m["id"] == id) {
            Some(model) => Json(model).into_response(),
            None => ApiError::from(pipeline::Error::UnknownModel(id)).into_response(),
        }
    })
}

/// Runs `answer` for an authenticated caller within its request rate, counting the
/// response against the key.
fn metered(
    app: &AppState,
    headers: &HeaderMap,
    answer: impl FnOnce(&Caller) -> Response,
) -> Response {
    let caller = match authenticate(app, headers) {
        Ok(c) => c,
        Err(err) => return err.into_response(),
    };
    // A listing is a request like any other: it counts against the key's request rate.
    if let Err(err) = caller.take_request(Instant::now()) {
        let err = ApiError::from(err);
        app.metrics.key_request(caller.id(), err.status().as_u16());
        return err.into_response();
    }
    let response = answer(&caller);
    app.metrics
        .key_request(caller.id(), response.status().as_u16());
    response
}

/// The model objects the caller may use, in listing order: `auto`, the tiers, the models.
fn entries(app: &AppState, caller: &Caller) -> Vec<Value> {
    let created = unix_now();
    let mut data = vec![
        json!({"id": "auto", "object": "model", "created": created, "owned_by": "switchback"}),
    ];
    let tier_ok = |tier: &str| {
        app.config
            .tiers
            .iter()
            .position(|t| t == tier)
            .is_none_or(|i| caller.allows_tier(i))
    };
    let pairs = app.view.models();
    let mut tiers: Vec<&str> = pairs.iter().map(|(t, _)| t.as_str()).collect();
    tiers.dedup();
    for tier in tiers.into_iter().filter(|t| tier_ok(t)) {
        data.push(json!({"id": tier, "object": "model", "created": created, "owned_by": "switchback", "switchback": {"kind": "tier"}}));
    }
    for (tier, model) in pairs
        .iter()
        .filter(|(t, m)| tier_ok(t) && caller.allows_model(m))
    {
        data.push(json!({"id": model, "object": "model", "created": created, "owned_by": "switchback", "switchback": {"kind": "model", "tier": tier}}));
    }
    data
}
