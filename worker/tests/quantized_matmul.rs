//! The patched candle-core in third_party/ computes a quantized matmul over many rows (a
//! prompt's prefill, a batch of decoding sequences) by tiles that read each weight row once
//! per block of rows. The answer must be the one the single-row path (upstream's loop, kept
//! for decoding one sequence) gives for each row: bit for bit, since every output element
//! is the same dot product.

use candle_core::{
    Device, Module, Tensor,
    quantized::{GgmlDType, QMatMul, QTensor},
};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

#[test]
fn many_rows_at_once_equal_each_row_alone() {
    let dev = Device::Cpu;
    // m spans two row blocks and a remainder; n is not a multiple of the column tile.
    let (m, k, n) = (70, 512, 37);
    let lhs = Tensor::from_vec(values(m * k, 1), (m, k), &dev).expect("lhs");
    let weights = Tensor::from_vec(values(n * k, 2), (n, k), &dev).expect("weights");
    for dtype in [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        let q = QTensor::quantize(&weights, dtype).expect("quantize");
        let dequantized = q.dequantize(&dev).expect("dequantize");
        let mm = QMatMul::from_qtensor(q).expect("qmatmul");
        let all = mm.forward(&lhs).expect("forward m rows");
        assert_eq!(all.dims(), [m, n]);
        let all: Vec<Vec<f32>> = all.to_vec2().expect("values");
        for (row, got) in all.iter().enumerate() {
            let one = mm
                .forward(&lhs.narrow(0, row, 1).expect("row"))
                .expect("forward one row");
            let want: Vec<Vec<f32>> = one.to_vec2().expect("values");
            assert_eq!(got, &want[0], "{dtype:?}, row {row}");
        }
        // And both are the matmul they stand for, up to the activations' quantization.
        let exact: Vec<Vec<f32>> = lhs
            .matmul(&dequantized.t().expect("t"))
            .expect("f32 matmul")
            .to_vec2()
            .expect("values");
        for (got, want) in all.iter().flatten().zip(exact.iter().flatten()) {
            assert!(
                (got - want).abs() <= 0.05 * want.abs().max(4.0),
                "{dtype:?}: {got} vs {want}"
            );
        }
    }
}

/// The patched AVX2 dot products (Q4_1, Q5_0, Q5_1; upstream has only the scalar loop for
/// them) agree with the scalar reference, on blocks that cover every bit pattern's range.
#[test]
fn simd_dot_products_match_the_scalar_reference() {
    use candle_core::quantized::k_quants::{
        BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, GgmlType,
    };

    fn check<T: GgmlType>(name: &str) {
        let k = 32 * 64;
        let (w, a) = (values(k, 11), values(k, 12));
        let mut wq = vec![T::zeros(); k / T::BLCK_SIZE];
        T::from_float(&w, &mut wq);
        let mut aq = vec![T::VecDotType::zeros(); k / T::BLCK_SIZE];
        T::VecDotType::from_float(&a, &mut aq);
        let simd = T::vec_dot(k, &wq, &aq);
        let scalar = T::vec_dot_unopt(k, &wq, &aq);
        assert!(
            (simd - scalar).abs() <= 1e-4 * scalar.abs().max(1.0),
            "{name}: {simd} vs {scalar}"
        );
        // Within the quantization error of the f32 dot product: a small fraction of
        // |w|·|a| (a wrong kernel is off by the order of the sum itself).
        let exact: f32 = w.iter().zip(&a).map(|(x, y)| x * y).sum();
        let norms = w.iter().map(|x| x * x).sum::<f32>().sqrt()
            * a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (simd - exact).abs() <= 0.01 * norms,
            "{name}: {simd} vs the f32 dot product {exact} (|w||a| = {norms})"
        );
    }
    check::<BlockQ4_0>("Q4_0");
    check::<BlockQ4_1>("Q4_1");
    check::<BlockQ5_0>("Q5_0");
    check::<BlockQ5_1>("Q5_1");
    check::<BlockQ8_0>("Q8_0");
}
