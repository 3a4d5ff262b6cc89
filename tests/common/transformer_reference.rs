//! Float64 references of the transformer kernels and comparison helpers, shared by
//! `transformer_ops.rs` (the fused kernels) and `transformer_ops_fallback.rs` (burn's operations
//! with the kernels turned off).
#![allow(dead_code)]

use burn::tensor::{Tensor, TensorData};
use rand::Rng;
use rand::rngs::StdRng;
use selfsup::kernels::transformer::{AttentionShape, RowShape};

/// The tolerance of the fixtures: `|a - b| <= 1e-5 + 1e-4 |b|`.
pub fn assert_close(context: &str, actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{context}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a as f64 - e).abs() <= 1e-5 + 1e-4 * e.abs(),
            "{context}: value {i} is {a}, expected {e}"
        );
    }
}

/// The largest `|a - b| / max(|b|, 1)` (absolute below 1, relative above).
pub fn max_error(actual: &[f32], expected: &[f64]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| (a as f64 - e).abs() / e.abs().max(1.0))
        .fold(0.0, f64::max)
}

pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

pub fn gelu_reference(x: f64) -> f64 {
    x * normal_cdf(x)
}

pub fn gelu_derivative_reference(x: f64) -> f64 {
    normal_cdf(x) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

pub fn random_values(rng: &mut StdRng, len: usize, mean: f32, spread: f32) -> Vec<f32> {
    (0..len)
        .map(|_| mean + spread * rng.random_range(-1.0f32..1.0))
        .collect()
}

/// Float64 layer norm: `(y, dx, dgamma, dbeta)`.
pub fn layer_norm_reference(
    shape: RowShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    grad: &[f32],
    epsilon: f64,
) -> [Vec<f64>; 4] {
    let RowShape { rows, width } = shape;
    let mut out = [
        vec![0.0; rows * width],
        vec![0.0; rows * width],
        vec![0.0; width],
        vec![0.0; width],
    ];
    for r in 0..rows {
        let row = |v: &[f32], j: usize| v[r * width + j] as f64;
        let mean = (0..width).map(|j| row(x, j)).sum::<f64>() / width as f64;
        let var = (0..width).map(|j| (row(x, j) - mean).powi(2)).sum::<f64>() / width as f64;
        let rstd = 1.0 / (var + epsilon).sqrt();
        let xhat: Vec<f64> = (0..width).map(|j| (row(x, j) - mean) * rstd).collect();
        let scaled: Vec<f64> = (0..width).map(|j| row(grad, j) * gamma[j] as f64).collect();
        let a = scaled.iter().sum::<f64>() / width as f64;
        let b = scaled.iter().zip(&xhat).map(|(s, n)| s * n).sum::<f64>() / width as f64;
        for j in 0..width {
            out[0][r * width + j] = xhat[j] * gamma[j] as f64 + beta[j] as f64;
            out[1][r * width + j] = rstd * (scaled[j] - a - xhat[j] * b);
            out[2][j] += row(grad, j) * xhat[j];
            out[3][j] += row(grad, j);
        }
    }
    out
}

pub fn compare(context: &str, actual: TensorData, expected: TensorData) {
    let actual = actual.try_to_vec::<f32>().unwrap();
    let expected: Vec<f64> = expected
        .try_to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert_close(context, &actual, &expected);
}

/// Float64 attention: `(context, dqkv)` for the context gradient `grad`.
pub fn attention_reference(shape: AttentionShape, qkv: &[f32], grad: &[f32]) -> [Vec<f64>; 2] {
    let AttentionShape {
        batch,
        tokens: n,
        heads,
        head_dim: dh,
    } = shape;
    let d = heads * dh;
    let scale = 1.0 / (dh as f64).sqrt();
    let mut context = vec![0.0; batch * n * d];
    let mut dqkv = vec![0.0; batch * n * 3 * d];
    for b in 0..batch {
        for h in 0..heads {
            let at = |t: usize, part: usize, c: usize| (b * n + t) * 3 * d + part * d + h * dh + c;
            let value = |t, part, c| qkv[at(t, part, c)] as f64;
            let out = |t: usize, c: usize| (b * n + t) * d + h * dh + c;
            let mut p = vec![vec![0.0; n]; n];
            for i in 0..n {
                let scores: Vec<f64> = (0..n)
                    .map(|j| {
                        scale
                            * (0..dh)
                                .map(|c| value(i, 0, c) * value(j, 1, c))
                                .sum::<f64>()
                    })
                    .collect();
                let shift = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = scores.iter().map(|s| (s - shift).exp()).sum();
                for j in 0..n {
                    p[i][j] = (scores[j] - shift).exp() / total;
                }
                for c in 0..dh {
                    context[out(i, c)] = (0..n).map(|j| p[i][j] * value(j, 2, c)).sum();
                }
            }
            let g = |t: usize, c: usize| grad[out(t, c)] as f64;
            for i in 0..n {
                let dp: Vec<f64> = (0..n)
                    .map(|j| (0..dh).map(|c| g(i, c) * value(j, 2, c)).sum())
                    .collect();
                let projection: f64 = (0..n).map(|j| dp[j] * p[i][j]).sum();
                for j in 0..n {
                    let ds = scale * p[i][j] * (dp[j] - projection);
                    for c in 0..dh {
                        dqkv[at(i, 0, c)] += ds * value(j, 1, c);
                        dqkv[at(j, 1, c)] += ds * value(i, 0, c);
                        dqkv[at(j, 2, c)] += p[i][j] * g(i, c);
                    }
                }
            }
        }
    }
    [context, dqkv]
}

/// `nn.MultiheadAttention`'s computation from burn's tensor operations.
pub fn burn_attention(qkv: Tensor<2>, batch: usize, heads: usize) -> Tensor<2> {
    let [rows, packed] = qkv.dims();
    let (n, d) = (rows / batch, packed / 3);
    let dh = d / heads;
    let head = |i: usize| {
        qkv.clone()
            .narrow(1, i * d, d)
            .reshape([batch, n, heads, dh])
            .swap_dims(1, 2)
    };
    let scores = head(0)
        .matmul(head(1).swap_dims(2, 3))
        .div_scalar((dh as f64).sqrt());
    burn::tensor::activation::softmax(scores, 3)
        .matmul(head(2))
        .swap_dims(1, 2)
        .reshape([rows, d])
}

/// The values of a tensor.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Rows and widths with their epsilon: a single row, a single value, widths below, at and
/// above a vector, the ViT's 192, and a large epsilon (at which dropping it would show).
pub const ROW_SHAPES: [(usize, usize, f64); 7] = [
    (1, 192, 1e-6),
    (3, 1, 1e-6),
    (5, 7, 1e-5),
    (70, 33, 1e-6),
    (33, 16, 1e-6),
    (130, 192, 1e-6),
    (9, 20, 0.1),
];

/// `rows x width` values around 3 (an offset mean: the variance must not come from
/// `E[x²] - E[x]²`), the first row nearly constant (where the epsilon dominates).
pub fn layer_norm_input(rng: &mut StdRng, rows: usize, width: usize) -> Vec<f32> {
    let mut x = random_values(rng, rows * width, 3.0, 2.0);
    for (j, v) in x.iter_mut().take(width).enumerate() {
        *v = 3.0 + 1e-3 * (j % 3) as f32;
    }
    x
}

/// `(batch, tokens, heads, head_dim)`: one token, one head of one value, odd sizes, the ViT's
/// 65 tokens of 3 x 64.
pub const ATTENTION_SHAPES: [(usize, usize, usize, usize); 5] = [
    (2, 1, 2, 3),
    (1, 5, 1, 1),
    (3, 7, 3, 5),
    (2, 17, 2, 19),
    (2, 65, 3, 64),
];
