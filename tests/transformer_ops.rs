//! The fused CPU GELU and layer norm (`selfsup::transformer_ops`, kernels in
//! `selfsup::kernels::transformer`) against float64 references (every instruction set, the
//! default thread pool and one thread) and against burn's `gelu` and `LayerNorm` on the flex
//! autodiff device (outputs and every gradient), on odd shapes and single rows; and their
//! results bit for bit independent of the number of threads.
#![cfg(feature = "flex")]

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use selfsup::conv::{InstructionSet, limit_instruction_set};
use selfsup::kernels::transformer::{
    RowShape, gelu_backward, gelu_forward, layer_norm_backward, layer_norm_forward,
};
use selfsup::transformer_ops::{gelu, layer_norm};

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
