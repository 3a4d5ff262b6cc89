//! f32 batch-normalisation kernels on contiguous NCHW slices: per-channel moments, the affine
//! normalisation, and the training-mode backward, each one or two passes over the activation.

use rayon::prelude::*;

/// `[batch, channels, pixels]` of an NCHW activation (`pixels = H * W`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormShape {
    /// Images.
    pub batch: usize,
    /// Channels.
    pub channels: usize,
    /// Pixels per image and channel.
    pub pixels: usize,
}

impl NormShape {
    fn len(&self) -> usize {
        self.batch * self.channels * self.pixels
    }

    /// Values per channel: `batch * pixels`.
    pub fn count(&self) -> usize {
        self.batch * self.pixels
    }

    fn plane<'a>(&self, data: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        &data[(n * self.channels + c) * self.pixels..][..self.pixels]
    }
}

const LANES: usize = 16;

/// `Σ f(a_i, b_i)` over two equal slices, with 16 independent f32 accumulators (vectorised),
/// returned in f64.
fn sum_pairs(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += f(x[i], y[i]);
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| f(*x, *y)).sum();
    acc.iter().map(|v| *v as f64).sum::<f64>() + tail as f64
}

/// Per-channel mean and biased variance (`Σ (x - mean)² / count`), two passes per channel.
pub fn channel_moments(shape: NormShape, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), shape.len(), "batch norm: input length");
    let count = shape.count() as f64;
    let moments: Vec<(f32, f32)> = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = (0..shape.batch)
                .map(|n| {
                    let plane = shape.plane(x, n, c);
                    sum_pairs(plane, plane, |v, _| v)
                })
                .sum();
            let mean = (sum / count) as f32;
            let squares: f64 = (0..shape.batch)
                .map(|n| {
                    let plane = shape.plane(x, n, c);
                    sum_pairs(plane, plane, |v, _| (v - mean) * (v - mean))
                })
                .sum();
            (mean, (squares / count) as f32)
        })
        .collect();
    moments.into_iter().unzip()
}

/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, per channel, written over `y`.
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    shape: NormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    y: &mut [f32],
) {
    assert_eq!(x.len(), shape.len(), "batch norm: input length");
    assert_eq!(y.len(), shape.len(), "batch norm: output length");
    let scale: Vec<f32> = (0..shape.channels)
        .map(|c| gamma[c] / ((var[c] as f64 + epsilon).sqrt() as f32))
        .collect();
    let shift: Vec<f32> = (0..shape.channels)
        .map(|c| beta[c] - mean[c] * scale[c])
        .collect();
    y.par_chunks_mut(shape.pixels)
        .enumerate()
        .for_each(|(plane, out)| {
            let c = plane % shape.channels;
            let input = &x[plane * shape.pixels..][..shape.pixels];
            let (a, b) = (scale[c], shift[c]);
            for (o, v) in out.iter_mut().zip(input) {
                *o = v * a + b;
            }
        });
}

/// Gradients of training-mode batch normalisation (the statistics are those of `x`):
/// with `x̂ = (x - mean) / σ`, `σ = sqrt(var + eps)`, `M = batch * pixels`,
/// - `∂L/∂β = Σ dy`, `∂L/∂γ = Σ dy · x̂`,
/// - `∂L/∂x = γ / σ · (dy - ∂L/∂β / M - x̂ · ∂L/∂γ / M)`.
///
/// Returns `(dx, dgamma, dbeta)`.
#[allow(clippy::too_many_arguments)]
pub fn normalize_backward(
    shape: NormShape,
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), shape.len(), "batch norm: input length");
    assert_eq!(dy.len(), shape.len(), "batch norm: gradient length");
    let inv_std: Vec<f32> = (0..shape.channels)
        .map(|c| (1.0 / (var[c] as f64 + epsilon).sqrt()) as f32)
        .collect();
    let sums: Vec<(f32, f32)> = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let (m, s) = (mean[c], inv_std[c]);
            let (mut dbeta, mut dgamma) = (0.0f64, 0.0f64);
            for n in 0..shape.batch {
                let (xp, gp) = (shape.plane(x, n, c), shape.plane(dy, n, c));
                dbeta += sum_pairs(gp, gp, |g, _| g);
                dgamma += sum_pairs(xp, gp, |v, g| (v - m) * s * g);
            }
            (dgamma as f32, dbeta as f32)
        })
        .collect();
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
    let count = shape.count() as f32;
    let mut dx = vec![0.0f32; shape.len()];
    dx.par_chunks_mut(shape.pixels)
        .enumerate()
        .for_each(|(plane, out)| {
            let c = plane % shape.channels;
            let xp = &x[plane * shape.pixels..][..shape.pixels];
            let gp = &dy[plane * shape.pixels..][..shape.pixels];
            let (m, s) = (mean[c], inv_std[c]);
            let factor = gamma[c] * s;
            let mean_dy = dbeta[c] / count;
            let mean_dy_xhat = dgamma[c] / count;
            for ((o, v), g) in out.iter_mut().zip(xp).zip(gp) {
                let xhat = (v - m) * s;
                *o = factor * (g - mean_dy - xhat * mean_dy_xhat);
            }
        });
    (dx, dgamma, dbeta)
}
