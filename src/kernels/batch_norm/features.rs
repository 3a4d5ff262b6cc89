//! The batch-norm kernels for `[N, D]` features, one value per image and channel: a projection
//! head's `BatchNorm1d`.
//!
//! There a channel's values lie `D` floats apart. The per-plane kernels of [`super::kernels`]
//! would see `N · D` planes of one value each: a scalar `f64` add per value in the reductions,
//! and an integer division (to find the channel) per value in the element-wise passes. Here
//! every pass walks whole rows and vectorises across channels: the reductions keep one `f64`
//! accumulator per channel for a block of channels, the element-wise passes apply the per-channel
//! scale and shift to a row at a time. The results are the same sums in `f64`, so they agree
//! with the per-plane kernels to rounding.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::kernels::{ChannelAffine, Epilogue, relu, relu_mask_from_input};
use crate::kernels::flex_f32::par_filled;

/// Channels per parallel task of the reductions: small enough that a head's 256-2,048 features
/// give every core a few tasks, large enough that a task's rows are long vector runs; its
/// `f64` accumulators (2 KiB for two quantities) stay in L1 while it walks every row.
const CHANNEL_BLOCK: usize = 128;

/// Values per parallel task of the element-wise passes (whole rows, at least one).
const TASK_VALUES: usize = 1 << 14;

/// The channel ranges of the reduction tasks.
fn channel_blocks(channels: usize) -> impl IndexedParallelIterator<Item = std::ops::Range<usize>> {
    (0..channels.div_ceil(CHANNEL_BLOCK))
        .into_par_iter()
        .map(move |block| block * CHANNEL_BLOCK..((block + 1) * CHANNEL_BLOCK).min(channels))
}

/// Columns `range` of row `n` of a `[batch, channels]` matrix.
fn row<'a>(
    data: &'a [f32],
    channels: usize,
    n: usize,
    range: &std::ops::Range<usize>,
) -> &'a [f32] {
    &data[n * channels + range.start..n * channels + range.end]
}

/// Per-channel mean and biased variance of `x` (`[batch, channels]`), two passes over each
/// channel block (the second one from L1/L2), accumulated in `f64`.
pub(super) fn moments(batch: usize, channels: usize, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let count = batch as f64;
    let blocks: Vec<(Vec<f32>, Vec<f32>)> = channel_blocks(channels)
        .map(|range| {
            let mut sums = vec![0.0f64; range.len()];
            for n in 0..batch {
                for (sum, value) in sums.iter_mut().zip(row(x, channels, n, &range)) {
                    *sum += *value as f64;
                }
            }
            let means: Vec<f64> = sums.iter().map(|sum| sum / count).collect();
            let mut squares = vec![0.0f64; range.len()];
            for n in 0..batch {
                let values = row(x, channels, n, &range);
                for ((square, value), mean) in squares.iter_mut().zip(values).zip(&means) {
                    let deviation = *value as f64 - mean;
                    *square += deviation * deviation;
                }
            }
            (
                means.iter().map(|m| *m as f32).collect(),
                squares.iter().map(|s| (s / count) as f32).collect(),
            )
        })
        .collect();
    concatenate(blocks, channels)
}

/// The per-block pairs of vectors of the reductions, joined in block order.
fn concatenate(blocks: Vec<(Vec<f32>, Vec<f32>)>, channels: usize) -> (Vec<f32>, Vec<f32>) {
    let mut first = Vec::with_capacity(channels);
    let mut second = Vec::with_capacity(channels);
    for (a, b) in blocks {
        first.extend(a);
        second.extend(b);
    }
    (first, second)
}

/// `(Σ_n (x - mean) · inv_std · g, Σ_n g)` per channel, with `g = dy`, or, after a ReLU, `dy`
/// masked where the pre-activation `x · scale + shift` of `relu` was not positive: the
/// gradients of gamma and beta, in that order.
pub(super) fn gradient_sums(
    batch: usize,
    channels: usize,
    x: &[f32],
    dy: &[f32],
    relu: Option<&ChannelAffine>,
    mean: &[f32],
    inv_std: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let blocks: Vec<(Vec<f32>, Vec<f32>)> = channel_blocks(channels)
        .map(|range| {
            let width = range.len();
            let (m, s) = (&mean[range.clone()], &inv_std[range.clone()]);
            let mut dbeta = vec![0.0f64; width];
            let mut dgamma = vec![0.0f64; width];
            let mut masked = vec![0.0f32; width];
            for n in 0..batch {
                let (xs, gs) = (row(x, channels, n, &range), row(dy, channels, n, &range));
                let gs = match relu {
                    Some(affine) => {
                        let (a, b) = (&affine.scale[range.clone()], &affine.shift[range.clone()]);
                        for (c, (g, d)) in masked.iter_mut().zip(gs).enumerate() {
                            *g = relu_mask_from_input(xs[c], a[c], b[c], *d);
                        }
                        &masked[..]
                    }
                    None => gs,
                };
                let (gs, xs) = (&gs[..width], &xs[..width]);
                for c in 0..width {
                    dbeta[c] += gs[c] as f64;
                    dgamma[c] += ((xs[c] - m[c]) * s[c] * gs[c]) as f64;
                }
            }
            (
                dgamma.iter().map(|v| *v as f32).collect(),
                dbeta.iter().map(|v| *v as f32).collect(),
            )
        })
        .collect();
    concatenate(blocks, channels)
}

/// A `[batch, channels]` result written row by row in parallel: `write_row(n, out)` must write
/// every value of row `n`.
fn rows_filled(
    batch: usize,
    channels: usize,
    write_row: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    if batch == 0 || channels == 0 {
        return Vec::new();
    }
    let rows_per_task = (TASK_VALUES / channels).max(1);
    // SAFETY: every row of every chunk is handed to `write_row`, which writes all of it.
    unsafe {
        par_filled(batch * channels, rows_per_task * channels, |task, out| {
            for (j, out) in out.chunks_exact_mut(channels).enumerate() {
                write_row(task * rows_per_task + j, out);
            }
        })
    }
}

/// `y = epilogue(x · scale + shift)`, per channel, for `[batch, channels]` features.
pub(super) fn normalize(
    batch: usize,
    channels: usize,
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    epilogue: Epilogue,
) -> Vec<f32> {
    rows_filled(batch, channels, |n, out| {
        let xs = &x[n * channels..][..channels];
        let affine = out.iter_mut().zip(xs).zip(scale.iter().zip(shift));
        match epilogue {
            Epilogue::Identity => {
                for ((out, x), (a, b)) in affine {
                    out.write(x * a + b);
                }
            }
            Epilogue::Relu => {
                for ((out, x), (a, b)) in affine {
                    out.write(relu(x * a + b));
                }
            }
            Epilogue::AddRelu(residual) => {
                let residual = &residual[n * channels..][..channels];
                for (((out, x), (a, b)), r) in affine.zip(residual) {
                    out.write(relu(x * a + b + r));
                }
            }
        }
    })
}

/// The per-channel constants of the input gradient (see
/// [`super::kernels::normalize_backward`]): `γ · inv_std`, `Σ dy / M`, `Σ dy · x̂ / M`.
pub(super) struct GradientTerms<'a> {
    /// The batch mean per channel.
    pub(super) mean: &'a [f32],
    /// `1 / sqrt(var + eps)` per channel.
    pub(super) inv_std: &'a [f32],
    /// `γ · inv_std` per channel.
    pub(super) factor: &'a [f32],
    /// `Σ dy / M` per channel (`dy` masked by the ReLU when there is one).
    pub(super) mean_dy: &'a [f32],
    /// `Σ dy · x̂ / M` per channel.
    pub(super) mean_dy_xhat: &'a [f32],
}

/// `dx = factor · (g - mean_dy - (x - mean) · inv_std · mean_dy_xhat)` for `[batch, channels]`
/// features, `g` being `dy` masked by the ReLU's pre-activation (`relu`) when there is one.
pub(super) fn input_gradient(
    batch: usize,
    channels: usize,
    x: &[f32],
    dy: &[f32],
    relu: Option<&ChannelAffine>,
    terms: &GradientTerms,
) -> Vec<f32> {
    let mean = &terms.mean[..channels];
    let inv_std = &terms.inv_std[..channels];
    let factor = &terms.factor[..channels];
    let mean_dy = &terms.mean_dy[..channels];
    let mean_dy_xhat = &terms.mean_dy_xhat[..channels];
    rows_filled(batch, channels, |n, out| {
        let xs = &x[n * channels..][..channels];
        let gs = &dy[n * channels..][..channels];
        let grad = |c: usize, g: f32| {
            let xhat = (xs[c] - mean[c]) * inv_std[c];
            factor[c] * (g - mean_dy[c] - xhat * mean_dy_xhat[c])
        };
        match relu {
            Some(affine) => {
                let (a, b) = (&affine.scale[..channels], &affine.shift[..channels]);
                for c in 0..channels {
                    out[c].write(grad(c, relu_mask_from_input(xs[c], a[c], b[c], gs[c])));
                }
            }
            None => {
                for c in 0..channels {
                    out[c].write(grad(c, gs[c]));
                }
            }
        }
    })
}
