//! The fused CPU batch norm (`selfsup::batch_norm`) against burn's `BatchNorm` on the flex
//! autodiff device: output, gradients of the input, gamma and beta (and of the residual), and the
//! running statistics, on fresh random inputs (odd sizes, batch 1, channel counts that are not a
//! multiple of 16), alone and fused with a ReLU or a residual add + ReLU.
#![cfg(feature = "flex")]

use burn::module::Param;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use selfsup::batch_norm::{
    NormShape, batch_norm, batch_norm_add_relu, batch_norm_relu, channel_moments,
    uses_fast_batch_norm,
};

fn relative_error(actual: TensorData, expected: TensorData) -> f64 {
    let a = actual.try_to_vec::<f32>().unwrap();
    let e = expected.try_to_vec::<f32>().unwrap();
    assert_eq!(a.len(), e.len());
    let diff: f64 = a
        .iter()
        .zip(&e)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let norm: f64 = e.iter().map(|y| (*y as f64).powi(2)).sum();
    assert!(norm > 0.0);
    (diff / norm).sqrt()
}

fn layer(channels: usize, gamma: &Tensor<1>, beta: &Tensor<1>, device: &Device) -> BatchNorm {
    let bn = BatchNormConfig::new(channels).init(device);
    BatchNorm {
        gamma: Param::from_tensor(gamma.clone()),
        beta: Param::from_tensor(beta.clone()),
        ..bn
    }
}

/// What follows the normalisation.
#[derive(Debug, Clone, Copy)]
enum Fused {
    Nothing,
    Relu,
    AddRelu,
}

fn check_against_burn(fused: Fused) {
    let device = Device::flex().autodiff();
    let seed = rand::random();
    device.seed(seed);
    for [batch, channels, height, width] in [
        [4, 16, 8, 8],
        [1, 5, 7, 3],
        [3, 33, 5, 9],
        [7, 3, 1, 1],
        [2, 40, 4, 4],
        // More images than one reduction block (8), the last block partial.
        [19, 6, 5, 3],
    ] {
        let dims = [batch, channels, height, width];
        let gamma = Tensor::<1>::random([channels], Distribution::Normal(1.0, 0.5), &device);
        let beta = Tensor::<1>::random([channels], Distribution::Normal(0.0, 0.5), &device);
        let ours = layer(channels, &gamma, &beta, &device);
        let theirs = layer(channels, &gamma, &beta, &device);
        let x = Tensor::<4>::random(dims, Distribution::Normal(0.5, 2.0), &device).require_grad();
        let residual =
            Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device).require_grad();
        assert!(uses_fast_batch_norm(&ours, &x));
        let (y_ours, y_theirs) = match fused {
            Fused::Nothing => (batch_norm(&ours, x.clone()), theirs.forward(x.clone())),
            Fused::Relu => (
                batch_norm_relu(&ours, x.clone()),
                relu(theirs.forward(x.clone())),
            ),
            Fused::AddRelu => (
                batch_norm_add_relu(&ours, x.clone(), residual.clone()),
                relu(theirs.forward(x.clone()) + residual.clone()),
            ),
        };
        let probe = Tensor::<4>::random(y_ours.dims(), Distribution::Normal(0.0, 1.0), &device);
        let g_ours = (y_ours.clone() * probe.clone()).sum().backward();
        let g_theirs = (y_theirs.clone() * probe).sum().backward();
        let case = format!("{fused:?} {dims:?} (seed {seed})");
        let mut checks = vec![
            (
                "output",
                y_ours.inner().into_data(),
                y_theirs.inner().into_data(),
            ),
            (
                "input grad",
                x.grad(&g_ours).unwrap().into_data(),
                x.grad(&g_theirs).unwrap().into_data(),
            ),
            (
                "gamma grad",
                ours.gamma.val().grad(&g_ours).unwrap().into_data(),
                theirs.gamma.val().grad(&g_theirs).unwrap().into_data(),
            ),
            (
                "beta grad",
                ours.beta.val().grad(&g_ours).unwrap().into_data(),
                theirs.beta.val().grad(&g_theirs).unwrap().into_data(),
            ),
            (
                "running mean",
                ours.running_mean.value_sync().into_data(),
                theirs.running_mean.value_sync().into_data(),
            ),
            (
                "running var",
                ours.running_var.value_sync().into_data(),
                theirs.running_var.value_sync().into_data(),
            ),
        ];
        if let Fused::AddRelu = fused {
            checks.push((
                "residual grad",
                residual.grad(&g_ours).unwrap().into_data(),
                residual.grad(&g_theirs).unwrap().into_data(),
            ));
        }
        for (what, a, b) in checks {
            let error = relative_error(a, b);
            assert!(error < 1e-4, "{what} of {case}: relative error {error:e}");
        }
    }
}

#[test]
fn matches_burn_batch_norm_with_gradients_and_running_statistics() {
    check_against_burn(Fused::Nothing);
}

#[test]
fn fused_relu_matches_burn_batch_norm_then_relu() {
    check_against_burn(Fused::Relu);
}

#[test]
fn fused_residual_add_relu_matches_burn() {
    check_against_burn(Fused::AddRelu);
}

#[test]
fn inference_and_other_devices_use_burn() {
    // Without autodiff (evaluation), the layer normalises with its running statistics: burn's path.
    let device = Device::flex();
    let bn = BatchNormConfig::new(3).init(&device);
    let x = Tensor::<4>::random([2, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device);
    assert!(!uses_fast_batch_norm(&bn, &x));
    let error = relative_error(
        batch_norm(&bn, x.clone()).into_data(),
        bn.forward(x).into_data(),
    );
    assert!(error < 1e-6);
}

/// The heads' `FeatureBatchNorm` (`[N, D]`, PyTorch's `BatchNorm1d` semantics) on the fused
/// kernels, with and without the affine weights and the ReLU, against burn's `batch_norm_train`
/// (+ `relu`) and the unbiased running-variance update.
#[test]
fn feature_batch_norm_matches_burn_with_gradients_and_running_statistics() {
    use burn::tensor::module::batch_norm_train;
    use selfsup::model::FeatureBatchNormConfig;

    let device = Device::flex().autodiff();
    let seed = rand::random();
    device.seed(seed);
    for (affine, activate, [batch, features]) in [
        (true, true, [8, 37]),
        (true, false, [3, 5]),
        (false, true, [5, 64]),
        (false, false, [16, 3]),
        // More channels than one reduction task takes (512), and not a multiple of it.
        (true, false, [4, 600]),
        (false, true, [3, 1030]),
    ] {
        let case = format!("affine {affine}, relu {activate}, {batch}x{features} (seed {seed})");
        let norm = FeatureBatchNormConfig::new(features)
            .with_affine(affine)
            .init(&device);
        let x = Tensor::<2>::random([batch, features], Distribution::Normal(0.5, 2.0), &device)
            .require_grad();
        let y = norm.forward_activated(x.clone(), activate).unwrap();
        let (gamma, beta) = match (&norm.gamma, &norm.beta) {
            (Some(g), Some(b)) => (g.val(), b.val()),
            _ => (
                Tensor::ones([features], &device),
                Tensor::zeros([features], &device),
            ),
        };
        let reference = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
        let expected = if activate {
            relu(reference.output)
        } else {
            reference.output
        };
        let probe = Tensor::<2>::random([batch, features], Distribution::Normal(0.0, 1.0), &device);
        let g_ours = (y.clone() * probe.clone()).sum().backward();
        let g_ref = (expected.clone() * probe).sum().backward();
        let unbiased = reference
            .variance
            .mul_scalar(batch as f64 / (batch as f64 - 1.0));
        let mut checks = vec![
            (
                "output",
                y.inner().into_data(),
                expected.inner().into_data(),
            ),
            (
                "input grad",
                x.grad(&g_ours).unwrap().into_data(),
                x.grad(&g_ref).unwrap().into_data(),
            ),
            (
                "running mean",
                norm.running_mean.value_sync().into_data(),
                reference.mean.mul_scalar(0.1).inner().into_data(),
            ),
            (
                "running var",
                norm.running_var.value_sync().into_data(),
                unbiased.mul_scalar(0.1).add_scalar(0.9).inner().into_data(),
            ),
        ];
        if let (Some(g), Some(b)) = (&norm.gamma, &norm.beta) {
            checks.push((
                "gamma grad",
                g.val().grad(&g_ours).unwrap().into_data(),
                gamma.grad(&g_ref).unwrap().into_data(),
            ));
            checks.push((
                "beta grad",
                b.val().grad(&g_ours).unwrap().into_data(),
                beta.grad(&g_ref).unwrap().into_data(),
            ));
        }
        for (what, a, b) in checks {
            let error = relative_error(a, b);
            assert!(error < 1e-4, "{what} of {case}: relative error {error:e}");
        }
    }
}

/// Deterministic standard normal values (Box-Muller over a 64-bit LCG).
fn normal_values(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos())
        .collect()
}

/// `channel_moments` (one shifted pass over image planes; two row-wise passes over `[N, D]`
/// features) against the two-pass float64 mean and biased variance, on the cases where a
/// one-pass variance can cancel: a mean 200 standard deviations from zero, a first image far
/// from the others in channel 0 (the shift comes from its plane), planes longer than one f32 flush (4,096
/// values), batch 1, and features wider than one reduction block.
#[test]
fn channel_moments_match_float64_where_one_pass_could_cancel() {
    // (dims [batch, channels, pixels], offset, sigma, shift of the first image in sigmas)
    let cases: [([usize; 3], f64, f64, f64); 8] = [
        ([4, 3, 35], 100.0, 0.5, 0.0),
        ([8, 2, 49], 0.0, 1.0, 8.0),
        ([2, 2, 4096 + 17], -3.0, 2.0, 0.0),
        ([1, 5, 9], 1.0, 1.0, 0.0),
        ([6, 700, 1], 50.0, 0.25, 0.0),
        ([1, 3, 1], 2.0, 1.0, 0.0),
        // The first image 3.5σ out: δ² / var about 10, kept in one pass.
        ([64, 2, 16], 5.0, 1.0, 3.5),
        // The first image 15σ out in a batch of 256: δ² / var about 120, past the limit of
        // the one-pass form, so channel 0's variance is computed again around the mean (the
        // other two keep the one-pass form).
        ([256, 3, 16], 0.0, 0.1, 15.0),
    ];
    for (index, (dims, offset, sigma, first_image_shift)) in cases.into_iter().enumerate() {
        let [batch, channels, pixels] = dims;
        let noise = normal_values(batch * channels * pixels, index as u64 + 1);
        let x: Vec<f32> = noise
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let shift = if i < pixels { first_image_shift } else { 0.0 };
                (offset + sigma * (z + shift)) as f32
            })
            .collect();
        let shape = NormShape {
            batch,
            channels,
            pixels,
        };
        let (mean, var) = channel_moments(shape, &x);
        for c in 0..channels {
            let values: Vec<f64> = (0..batch)
                .flat_map(|n| {
                    x[(n * channels + c) * pixels..][..pixels]
                        .iter()
                        .map(|v| *v as f64)
                })
                .collect();
            let count = values.len() as f64;
            let mean64 = values.iter().sum::<f64>() / count;
            let var64 = values.iter().map(|v| (v - mean64).powi(2)).sum::<f64>() / count;
            let what = format!("{dims:?} channel {c}");
            let mean_error = (mean[c] as f64 - mean64).abs();
            assert!(
                mean_error <= 1e-6 * mean64.abs() + 1e-5 * var64.sqrt(),
                "mean of {what}: {} against {mean64}",
                mean[c]
            );
            let var_error = (var[c] as f64 - var64).abs();
            assert!(
                var_error <= 1e-4 * var64 + 1e-12,
                "variance of {what}: {} against {var64}",
                var[c]
            );
        }
    }
}

/// No channels (or no images): empty outputs, not values left unwritten.
#[test]
fn empty_shapes_give_empty_outputs() {
    use selfsup::batch_norm::{Epilogue, normalize, normalize_backward};

    for (batch, pixels) in [(3, 1), (3, 4), (0, 1)] {
        let shape = NormShape {
            batch,
            channels: 0,
            pixels,
        };
        let (mean, var) = channel_moments(shape, &[]);
        assert!(mean.is_empty() && var.is_empty());
        let y = normalize(shape, &[], &[], &[], &[], &[], 1e-5, Epilogue::Relu);
        assert!(y.is_empty(), "{shape:?}");
        let (dx, dgamma, dbeta) =
            normalize_backward(shape, &[], &[], &[], &[], &[], 1e-5, &[], false);
        assert!(
            dx.is_empty() && dgamma.is_empty() && dbeta.is_empty(),
            "{shape:?}"
        );
    }
}

/// The backward pass after a ReLU recomputes the ReLU's mask from the input instead of reading
/// the output: the gradients must be bit for bit those of the output's mask `y > 0` applied to
/// the gradient first (`relu_backward`), also where the pre-activation is exactly zero, tiny,
/// or NaN (inputs placed on the threshold, a channel with `gamma = 0`), for maps and for
/// `[N, D]` features.
#[test]
fn relu_mask_from_the_input_is_the_outputs_mask_exactly() {
    use selfsup::batch_norm::{Epilogue, normalize, normalize_backward, relu_backward};

    for (batch, channels, pixels) in [(3, 5, 7), (4, 3, 1), (2, 17, 16)] {
        let shape = NormShape {
            batch,
            channels,
            pixels,
        };
        let len = batch * channels * pixels;
        let mut x: Vec<f32> = normal_values(len, 11 + len as u64)
            .iter()
            .map(|v| *v as f32)
            .collect();
        let dy: Vec<f32> = normal_values(len, 29 + len as u64)
            .iter()
            .map(|v| *v as f32)
            .collect();
        let mut gamma: Vec<f32> = (0..channels).map(|c| 0.5 + 0.25 * c as f32).collect();
        gamma[channels - 1] = 0.0;
        let beta: Vec<f32> = (0..channels).map(|c| 0.1 * c as f32 - 0.2).collect();
        let (mean, var) = channel_moments(shape, &x);
        // Every fifth input at its channel's mean, where the pre-activation is beta up to
        // rounding: on channel 2 (beta = 0) a few ulps around the threshold.
        for i in (0..len).step_by(5) {
            let c = (i / pixels) % channels;
            x[i] = mean[c];
        }
        x[len / 2] = f32::NAN;
        let y = normalize(shape, &x, &gamma, &beta, &mean, &var, 1e-5, Epilogue::Relu);
        let masked = relu_backward(&y, &dy);
        let from_output =
            normalize_backward(shape, &x, &gamma, &beta, &mean, &var, 1e-5, &masked, false);
        let from_input = normalize_backward(shape, &x, &gamma, &beta, &mean, &var, 1e-5, &dy, true);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let what = format!("{batch}x{channels}x{pixels}");
        assert_eq!(bits(&from_input.0), bits(&from_output.0), "dx, {what}");
        assert_eq!(bits(&from_input.1), bits(&from_output.1), "dgamma, {what}");
        assert_eq!(bits(&from_input.2), bits(&from_output.2), "dbeta, {what}");
        let zero_outputs = y.iter().filter(|v| **v == 0.0).count();
        assert!(
            zero_outputs > len / 5,
            "{what}: {zero_outputs} zero outputs"
        );
    }
}

/// The per-channel reductions run in parallel (the moments over channels, the backward pass's
/// gradient sums over fixed blocks of images): the same bits with one thread as with the
/// default pool, over several image blocks and a partial last one.
#[test]
fn reductions_do_not_depend_on_the_thread_count() {
    use selfsup::batch_norm::normalize_backward;

    let shape = NormShape {
        batch: 21,
        channels: 7,
        pixels: 12,
    };
    let len = shape.batch * shape.channels * shape.pixels;
    let x: Vec<f32> = normal_values(len, 5).iter().map(|v| *v as f32).collect();
    let dy: Vec<f32> = normal_values(len, 6).iter().map(|v| *v as f32).collect();
    let gamma: Vec<f32> = (0..shape.channels).map(|c| 1.0 + 0.1 * c as f32).collect();
    let beta: Vec<f32> = (0..shape.channels).map(|c| 0.05 * c as f32).collect();
    let run = || {
        let (mean, var) = channel_moments(shape, &x);
        let (dx, dgamma, dbeta) =
            normalize_backward(shape, &x, &gamma, &beta, &mean, &var, 1e-5, &dy, true);
        [mean, var, dx, dgamma, dbeta].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
    };
    let pooled = run();
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run);
    assert_eq!(pooled, one_thread);
}

/// The backward pass of normalisation + residual add + ReLU masks the gradient in the pass that
/// sums the statistics' gradients: the same bits as masking first (`relu_backward`) and then
/// [`normalize_backward`] without a ReLU, for the input's, gamma's, beta's and the residual's
/// gradients; on several image blocks with a partial last one, on `[N, D]` features, and empty.
#[test]
fn add_relu_backward_is_masking_then_normalizing_exactly() {
    use selfsup::batch_norm::{
        Epilogue, normalize, normalize_add_relu_backward, normalize_backward, relu_backward,
    };

    for (batch, channels, pixels) in [(19, 5, 12), (3, 4, 1), (8, 3, 16), (0, 3, 4)] {
        let shape = NormShape {
            batch,
            channels,
            pixels,
        };
        let len = batch * channels * pixels;
        let x: Vec<f32> = normal_values(len, 41).iter().map(|v| *v as f32).collect();
        let dy: Vec<f32> = normal_values(len, 43).iter().map(|v| *v as f32).collect();
        let residual: Vec<f32> = normal_values(len, 47).iter().map(|v| *v as f32).collect();
        let gamma: Vec<f32> = (0..channels).map(|c| 0.75 + 0.125 * c as f32).collect();
        let beta: Vec<f32> = (0..channels).map(|c| 0.1 - 0.05 * c as f32).collect();
        let (mean, var) = if batch == 0 {
            (vec![0.0; channels], vec![1.0; channels])
        } else {
            channel_moments(shape, &x)
        };
        let epilogue = Epilogue::AddRelu(&residual);
        let y = normalize(shape, &x, &gamma, &beta, &mean, &var, 1e-5, epilogue);
        let masked = relu_backward(&y, &dy);
        let (dx, dgamma, dbeta) =
            normalize_backward(shape, &x, &gamma, &beta, &mean, &var, 1e-5, &masked, false);
        let fused = normalize_add_relu_backward(shape, &x, &gamma, &mean, &var, 1e-5, &dy, &y);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let what = format!("{batch}x{channels}x{pixels}");
        assert_eq!(bits(&fused.0), bits(&dx), "dx, {what}");
        assert_eq!(bits(&fused.1), bits(&dgamma), "dgamma, {what}");
        assert_eq!(bits(&fused.2), bits(&dbeta), "dbeta, {what}");
        assert_eq!(bits(&fused.3), bits(&masked), "residual gradient, {what}");
        if len > 0 {
            let zeros = masked.iter().filter(|g| **g == 0.0).count();
            assert!(
                zeros > len / 5 && zeros < len,
                "{what}: {zeros} masked of {len}"
            );
        }
    }
}
