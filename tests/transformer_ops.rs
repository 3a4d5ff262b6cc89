//! The fused CPU GELU, layer norm and multi-head attention (`selfsup::transformer_ops`, kernels in
//! `selfsup::kernels::transformer`) against float64 references (every instruction set, the
//! default thread pool and one thread) and against burn's `gelu`, `LayerNorm` and attention
//! composed from tensor operations on the flex autodiff device (outputs and every gradient), on
//! odd shapes, single rows and single tokens; and their results bit for bit independent of the
//! number of threads.
#![cfg(feature = "flex")]

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use selfsup::conv::{InstructionSet, limit_instruction_set};
use selfsup::kernels::transformer::{
    AttentionShape, RowShape, attention_backward, attention_forward, gelu_backward, gelu_forward,
    layer_norm_backward, layer_norm_forward,
};
use selfsup::transformer_ops::{gelu, layer_norm, multi_head_attention};

/// The tolerance of the fixtures: `|a - b| <= 1e-5 + 1e-4 |b|`.
fn assert_close(context: &str, actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{context}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a as f64 - e).abs() <= 1e-5 + 1e-4 * e.abs(),
            "{context}: value {i} is {a}, expected {e}"
        );
    }
}

/// The largest `|a - b| / max(|b|, 1)` (absolute below 1, relative above).
fn max_error(actual: &[f32], expected: &[f64]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| (a as f64 - e).abs() / e.abs().max(1.0))
        .fold(0.0, f64::max)
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

fn gelu_reference(x: f64) -> f64 {
    x * normal_cdf(x)
}

fn gelu_derivative_reference(x: f64) -> f64 {
    normal_cdf(x) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Every instruction set this CPU has, then the widest again (resetting the limit).
const LIMITS: [Option<InstructionSet>; 3] = [
    Some(InstructionSet::Portable),
    Some(InstructionSet::Avx2),
    None,
];

/// A grid over [-12, 12] (both tails, zero, every binade the step visits), plus ±0,
/// ±30 and random values, enough to fill several parallel tasks.
fn gelu_inputs(rng: &mut StdRng) -> Vec<f32> {
    let mut x: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
    x.extend([0.0, -0.0, 30.0, -30.0, 1e-30, -1e-30]);
    x.extend((0..5_000).map(|_| rng.random_range(-6.0f32..6.0)));
    x
}

#[test]
fn gelu_matches_float64_reference_on_every_instruction_set() {
    let mut rng = StdRng::seed_from_u64(7);
    let x = gelu_inputs(&mut rng);
    let grad: Vec<f32> = x.iter().map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let y_expected: Vec<f64> = x.iter().map(|&x| gelu_reference(x as f64)).collect();
    let dx_expected: Vec<f64> = x
        .iter()
        .zip(&grad)
        .map(|(&x, &g)| g as f64 * gelu_derivative_reference(x as f64))
        .collect();
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut results = Vec::new();
    for limit in LIMITS {
        limit_instruction_set(limit);
        let (y, dx) = (gelu_forward(&x), gelu_backward(&x, &grad));
        let (y_1, dx_1) = one_thread.install(|| (gelu_forward(&x), gelu_backward(&x, &grad)));
        assert_close(&format!("gelu, {limit:?}"), &y, &y_expected);
        assert_close(&format!("gelu backward, {limit:?}"), &dx, &dx_expected);
        assert_eq!((&y, &dx), (&y_1, &dx_1), "one thread, {limit:?}");
        eprintln!(
            "{limit:?}: gelu error {:.2e}, backward {:.2e}",
            max_error(&y, &y_expected),
            max_error(&dx, &dx_expected)
        );
        assert!(max_error(&y, &y_expected) < 2e-6, "gelu error, {limit:?}");
        assert!(
            max_error(&dx, &dx_expected) < 4e-6,
            "backward error, {limit:?}"
        );
        results.push((y, dx));
    }
    // The same operations in the same order on every instruction set (fused multiply-adds
    // are exact everywhere): one result.
    assert!(results.windows(2).all(|pair| pair[0] == pair[1]));
    // NaN propagates, as in PyTorch.
    assert!(gelu_forward(&[f32::NAN])[0].is_nan());
    assert!(gelu_backward(&[f32::NAN], &[1.0])[0].is_nan());
}

/// Rows and widths: a single row, a single value, widths below, at and above a vector, and
/// the ViT's 192.
const ROW_SHAPES: [(usize, usize); 6] = [(1, 192), (3, 1), (5, 7), (70, 33), (33, 16), (130, 192)];

fn random_values(rng: &mut StdRng, len: usize, mean: f32, spread: f32) -> Vec<f32> {
    (0..len)
        .map(|_| mean + spread * rng.random_range(-1.0f32..1.0))
        .collect()
}

/// Float64 layer norm: `(y, dx, dgamma, dbeta)`.
fn layer_norm_reference(
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

#[test]
fn layer_norm_matches_float64_reference_on_every_instruction_set() {
    let mut rng = StdRng::seed_from_u64(11);
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (rows, width) in ROW_SHAPES {
        let shape = RowShape { rows, width };
        // An offset mean: the variance must not come from E[x²] - E[x]².
        let x = random_values(&mut rng, rows * width, 3.0, 2.0);
        let gamma = random_values(&mut rng, width, 1.0, 0.5);
        let beta = random_values(&mut rng, width, 0.0, 0.5);
        let grad = random_values(&mut rng, rows * width, 0.0, 1.0);
        let epsilon = 1e-6;
        let expected = layer_norm_reference(shape, &x, &gamma, &beta, &grad, epsilon);
        let run = || {
            let (y, statistics) = layer_norm_forward(shape, &x, &gamma, &beta, epsilon);
            let (dx, dgamma, dbeta) = layer_norm_backward(shape, &x, &gamma, &statistics, &grad);
            [y, dx, dgamma, dbeta]
        };
        for limit in LIMITS {
            limit_instruction_set(limit);
            let ours = run();
            let context = format!("layer norm {rows} x {width}, {limit:?}");
            for (name, (actual, expected)) in ["y", "dx", "dgamma", "dbeta"]
                .iter()
                .zip(ours.iter().zip(&expected))
            {
                assert_close(&format!("{context}: {name}"), actual, expected);
            }
            assert_eq!(ours, one_thread.install(run), "{context}: one thread");
        }
    }
}

fn flex_layer_norm(width: usize, epsilon: f64, device: &Device) -> LayerNorm {
    let mut ln = LayerNormConfig::new(width)
        .with_epsilon(epsilon)
        .init(device);
    ln.gamma = Param::from_tensor(Tensor::random(
        [width],
        Distribution::Normal(1.0, 0.5),
        device,
    ));
    ln.beta = Some(Param::from_tensor(Tensor::random(
        [width],
        Distribution::Normal(0.0, 0.5),
        device,
    )));
    ln
}

fn compare(context: &str, actual: TensorData, expected: TensorData) {
    let actual = actual.try_to_vec::<f32>().unwrap();
    let expected: Vec<f64> = expected
        .try_to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert_close(context, &actual, &expected);
}

#[test]
fn gelu_and_layer_norm_match_burn_with_gradients() {
    let device = Device::flex().autodiff();
    device.seed(rand::random());
    for dims in [[2, 65, 192], [1, 1, 7], [3, 5, 33]] {
        let [_, _, width] = dims;
        let x = Tensor::<3>::random(dims, Distribution::Normal(0.5, 2.0), &device).require_grad();
        let probe = Tensor::<3>::random(dims, Distribution::Normal(0.0, 1.0), &device);

        let ours = gelu(x.clone());
        let theirs = burn::tensor::activation::gelu(x.clone());
        let g_ours = (ours.clone() * probe.clone()).sum().backward();
        let g_theirs = (theirs.clone() * probe.clone()).sum().backward();
        let context = format!("gelu {dims:?}");
        compare(&context, ours.into_data(), theirs.into_data());
        compare(
            &format!("{context}: dx"),
            x.grad(&g_ours).unwrap().into_data(),
            x.grad(&g_theirs).unwrap().into_data(),
        );

        let ln = flex_layer_norm(width, 1e-6, &device);
        let ours = layer_norm(&ln, x.clone(), 1e-6);
        let theirs = ln.forward(x.clone());
        let g_ours = (ours.clone() * probe.clone()).sum().backward();
        let g_theirs = (theirs.clone() * probe).sum().backward();
        let context = format!("layer norm {dims:?}");
        compare(&context, ours.into_data(), theirs.into_data());
        let beta = ln.beta.as_ref().unwrap();
        for (name, ours, theirs) in [
            ("dx", x.grad(&g_ours), x.grad(&g_theirs)),
            ("dgamma", None, None),
        ] {
            if let (Some(ours), Some(theirs)) = (ours, theirs) {
                compare(
                    &format!("{context}: {name}"),
                    ours.into_data(),
                    theirs.into_data(),
                );
            }
        }
        compare(
            &format!("{context}: dgamma"),
            ln.gamma.val().grad(&g_ours).unwrap().into_data(),
            ln.gamma.val().grad(&g_theirs).unwrap().into_data(),
        );
        compare(
            &format!("{context}: dbeta"),
            beta.val().grad(&g_ours).unwrap().into_data(),
            beta.val().grad(&g_theirs).unwrap().into_data(),
        );
    }
}

#[test]
fn plain_flex_tensors_and_layer_norms_without_bias_use_burn_results() {
    let device = Device::flex();
    let x = Tensor::<2>::random([9, 20], Distribution::Normal(0.0, 3.0), &device);
    compare(
        "gelu, no autodiff",
        gelu(x.clone()).into_data(),
        burn::tensor::activation::gelu(x.clone()).into_data(),
    );
    let ln = flex_layer_norm(20, 1e-5, &device);
    compare(
        "layer norm, no autodiff",
        layer_norm(&ln, x.clone(), 1e-5).into_data(),
        ln.forward(x.clone()).into_data(),
    );
    let no_bias = LayerNormConfig::new(20).with_bias(false).init(&device);
    compare(
        "layer norm without bias",
        layer_norm(&no_bias, x.clone(), 1e-5).into_data(),
        no_bias.forward(x).into_data(),
    );
}

/// Float64 attention: `(context, dqkv)` for the context gradient `grad`.
fn attention_reference(shape: AttentionShape, qkv: &[f32], grad: &[f32]) -> [Vec<f64>; 2] {
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

/// `(batch, tokens, heads, head_dim)`: one token, one head of one value, odd sizes, the ViT's
/// 65 tokens of 3 x 64.
const ATTENTION_SHAPES: [(usize, usize, usize, usize); 5] = [
    (2, 1, 2, 3),
    (1, 5, 1, 1),
    (3, 7, 3, 5),
    (2, 17, 2, 19),
    (2, 65, 3, 64),
];

#[test]
fn attention_matches_float64_reference_on_every_instruction_set() {
    let mut rng = StdRng::seed_from_u64(13);
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (batch, tokens, heads, head_dim) in ATTENTION_SHAPES {
        let shape = AttentionShape {
            batch,
            tokens,
            heads,
            head_dim,
        };
        let d = heads * head_dim;
        // Scores of a few units: the softmax is neither uniform nor one-hot.
        let qkv = random_values(&mut rng, batch * tokens * 3 * d, 0.0, 1.5);
        let grad = random_values(&mut rng, batch * tokens * d, 0.0, 1.0);
        let expected = attention_reference(shape, &qkv, &grad);
        let run = || {
            let (context, probabilities) = attention_forward(shape, &qkv, true);
            let (inference, none) = attention_forward(shape, &qkv, false);
            assert_eq!((&inference, none.len()), (&context, 0));
            let dqkv = attention_backward(shape, &qkv, &probabilities, &grad);
            [context, dqkv]
        };
        for limit in LIMITS {
            limit_instruction_set(limit);
            let ours = run();
            let context = format!("attention {shape:?}, {limit:?}");
            assert_close(&format!("{context}: context"), &ours[0], &expected[0]);
            assert_close(&format!("{context}: dqkv"), &ours[1], &expected[1]);
            assert_eq!(ours, one_thread.install(run), "{context}: one thread");
        }
    }
}

/// `nn.MultiheadAttention`'s computation from burn's tensor operations.
fn burn_attention(qkv: Tensor<2>, batch: usize, heads: usize) -> Tensor<2> {
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

#[test]
fn attention_matches_burn_with_gradients_and_falls_back_without_flex_kernels() {
    for device in [Device::flex().autodiff(), Device::flex()] {
        device.seed(rand::random());
        for (batch, tokens, heads, head_dim) in [(2, 65, 3, 16), (1, 1, 1, 4), (3, 9, 2, 5)] {
            let dims = [batch * tokens, 3 * heads * head_dim];
            let qkv = Tensor::<2>::random(dims, Distribution::Normal(0.0, 1.5), &device);
            let context = format!("attention {batch} x {tokens}, {heads} x {head_dim}");
            if !device.is_autodiff() {
                compare(
                    &context,
                    multi_head_attention(qkv.clone(), batch, heads).into_data(),
                    burn_attention(qkv, batch, heads).into_data(),
                );
                continue;
            }
            let qkv = qkv.require_grad();
            let ours = multi_head_attention(qkv.clone(), batch, heads);
            let theirs = burn_attention(qkv.clone(), batch, heads);
            let probe = Tensor::<2>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
            let g_ours = (ours.clone() * probe.clone()).sum().backward();
            let g_theirs = (theirs.clone() * probe).sum().backward();
            compare(&context, ours.into_data(), theirs.into_data());
            compare(
                &format!("{context}: dqkv"),
                qkv.grad(&g_ours).unwrap().into_data(),
                qkv.grad(&g_theirs).unwrap().into_data(),
            );
        }
    }
}
