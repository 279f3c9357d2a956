//! The tier service model: what one request costs on a tier and how long a slot takes
//! for it, from the policy's per-tier speeds and the tier's prices. The live router and
//! the simulator build the joint decision's [`TierView`]s with it.

use crate::{placement::TierView, policy::TierModel};

/// The request as the service model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Estimated prompt tokens (at least 1).
    pub prompt_tokens: u32,
    /// The most output tokens the request allows; 0 when it sets no limit (then the
    /// tier's expected output length is used).
    pub output_tokens: u32,
}

/// One tier for the joint decision: `model` gives its speeds, `price` its $ per million
/// input and output tokens (none: free), `success` the predictor's probability.
pub fn tier_view<'a>(
    name: &'a str,
    model: &TierModel,
    price: Option<(f64, f64)>,
    success: Option<f32>,
    size: Size,
) -> TierView<'a> {
    let out = if size.output_tokens > 0 {
        size.output_tokens
    } else {
        model.expected_output_tokens
    };
    let prompt = f64::from(size.prompt_tokens);
    let first_token_s = (model.prefill_ms_per_token * prompt + model.decode_ms_per_token) / 1000.0;
    let service_s = first_token_s + model.decode_ms_per_token * f64::from(out) / 1000.0;
    let mean_service_s = first_token_s
        + model.decode_ms_per_token * f64::from(model.expected_output_tokens) / 1000.0;
    let cost = price.map_or(0.0, |(input, output)| {
        (input * prompt + output * f64::from(out)) / 1e6
    });
    TierView {
        name,
        cost,
        success,
        service_s,
        first_token_s,
        mean_service_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_without_a_limit_is_costed_at_the_tiers_expected_length() {
        let model = TierModel {
            prefill_ms_per_token: 1.0,
            decode_ms_per_token: 10.0,
            expected_output_tokens: 100,
        };
        let size = Size {
            prompt_tokens: 50,
            output_tokens: 0,
        };
        let t = tier_view("small", &model, Some((2.0, 4.0)), Some(0.5), size);
        assert!((t.first_token_s - 0.06).abs() < 1e-12, "{t:?}");
        assert!((t.service_s - 1.06).abs() < 1e-12, "{t:?}");
        assert_eq!(t.service_s, t.mean_service_s);
        assert!((t.cost - (2.0 * 50.0 + 4.0 * 100.0) / 1e6).abs() < 1e-15);
        // A limit of 10 tokens: shorter service and cheaper, the queue cost unchanged.
        let short = tier_view(
            "small",
            &model,
            Some((2.0, 4.0)),
            None,
            Size {
                output_tokens: 10,
                ..size
            },
        );
        assert!(short.service_s < t.service_s && short.cost < t.cost);
        assert_eq!(short.mean_service_s, t.mean_service_s);
        assert_eq!(tier_view("small", &model, None, None, size).cost, 0.0);
    }
}
