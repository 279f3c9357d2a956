//! The admit stage: what the caller's key allows of a validated request. Its default
//! quality target for `auto`, whether it may use the model it names (403), and its tokens
//! per minute, charged up front (429): the prompt estimate and the most the answer may
//! use, settled against the worker's usage when the answer is done. The key's requests
//! per minute are taken at the door, before the body is read.

use std::time::Instant;

use super::Error;
use crate::{
    auth::{AuthError, Caller, Charge},
    generation::Generation,
    state::AppState,
};

/// Admits `g` for `caller`, filling in what the key sets, or refuses it (counted).
pub fn admit(
    app: &AppState,
    request_id: &str,
    caller: &Caller,
    g: &mut Generation,
) -> Result<Option<Charge>, Error> {
    let admitted = charge(app, caller, g);
    if let Err(err) = &admitted {
        if let Error::Auth(AuthError::RateLimited { limit, .. }) = err {
            app.metrics
                .rate_limited
                .get_or_create(&crate::metrics::KeyLimit {
                    key: caller.id().to_owned(),
                    limit: limit.as_str(),
                })
                .inc();
        }
        tracing::debug!(request_id, key = caller.id(), %err, "request refused");
        app.metrics.request("none", err.outcome());
    }
    admitted
}

fn charge(app: &AppState, caller: &Caller, g: &mut Generation) -> Result<Option<Charge>, Error> {
    if g.model == "auto" && g.quality.is_none() {
        g.quality = caller.key().and_then(|k| k.default_quality);
    }
    caller.authorize(&g.model, &app.config.tiers, || app.view.models())?;
    // Charged up front: the prompt estimate and the most the answer may use (the router's
    // limit when the request sets none); settled against the worker's usage at the end.
    let output = g.max_tokens.unwrap_or(app.limits.max_tokens_limit);
    let charge = caller.charge_tokens(
        g.estimated_prompt_tokens() + u64::from(output),
        Instant::now(),
    )?;
    Ok(charge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testing;

    #[test]
    fn a_model_outside_the_key_is_refused_and_counted() {
        let mut k = testing::key("t");
        k.tiers = Some((0, 0));
        k.ceiling = Some(0);
        let app = testing::app(testing::gate(vec![k]));
        let caller = app.auth.authenticate(Some("Bearer t")).expect("key");
        let mut g = testing::generation("large");
        let err = admit(&app, "req-1", &caller, &mut g).expect_err("forbidden");
        assert!(
            matches!(err, Error::Auth(AuthError::Forbidden { .. })),
            "{err:?}"
        );
        let metrics = app.metrics.encode();
        assert!(
            metrics.contains(r#"tier="none",outcome="forbidden"} 1"#),
            "{metrics}"
        );
        // The tier it may use, and `auto`, pass.
        for model in ["small", "auto"] {
            let mut g = testing::generation(model);
            assert!(admit(&app, "req-2", &caller, &mut g).is_ok(), "{model}");
        }
    }

    #[test]
    fn the_key_fills_the_quality_target_and_is_charged_up_front() {
        let mut k = testing::key("t");
        k.default_quality = Some(0.7);
        k.tokens_per_minute = Some(40);
        let app = testing::app(testing::gate(vec![k]));
        let caller = app.auth.authenticate(Some("Bearer t")).expect("key");
        let mut g = testing::generation("auto");
        let charge = admit(&app, "req-1", &caller, &mut g).expect("admitted");
        assert_eq!(g.quality, Some(0.7));
        assert!(charge.is_some(), "the key has a tokens-per-minute limit");
        // A request's own target stays; a named tier gets none.
        let mut g = testing::generation("small");
        g.max_tokens = Some(1);
        let _charged = admit(&app, "req-2", &caller, &mut g).expect("admitted");
        assert_eq!(g.quality, None);
        // Over the minute's tokens: refused, counted against the key's limit.
        let mut g = testing::generation("auto");
        g.max_tokens = Some(100);
        let err = admit(&app, "req-3", &caller, &mut g).expect_err("over the limit");
        assert!(matches!(
            err,
            Error::Auth(AuthError::RateLimited {
                retry_after: None,
                ..
            })
        ));
        let metrics = app.metrics.encode();
        assert!(
            metrics.contains(r#"limit="tokens_per_minute""#),
            "{metrics}"
        );
    }
}
