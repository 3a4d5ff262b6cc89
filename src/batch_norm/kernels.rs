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

/// `Σ f(a_i, b_i, c_i)` over three equal slices, like [`sum_pairs`].
fn sum_triples(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f64 {
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks, c_chunks) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .zip(c_chunks.remainder())
        .map(|((x, y), z)| f(*x, *y, *z))
        .sum();
    for ((x, y), z) in a_chunks.zip(b_chunks).zip(c_chunks) {
        for i in 0..LANES {
            acc[i] += f(x[i], y[i], z[i]);
        }
    }
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

/// What the normalisation pass applies to its result before writing it.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    /// `y = bn(x)`.
    Identity,
    /// `y = max(bn(x), 0)`.
    Relu,
    /// `y = max(bn(x) + residual, 0)`, `residual` shaped like `x` (a ResNet block's output).
    AddRelu(&'a [f32]),
}

/// `y = epilogue((x - mean) / sqrt(var + eps) * gamma + beta)`, per channel.
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    shape: NormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    epilogue: Epilogue,
) -> Vec<f32> {
    assert_eq!(x.len(), shape.len(), "batch norm: input length");
    if let Epilogue::AddRelu(residual) = epilogue {
        assert_eq!(residual.len(), shape.len(), "batch norm: residual length");
    }
    let scale: Vec<f32> = (0..shape.channels)
        .map(|c| gamma[c] / ((var[c] as f64 + epsilon).sqrt() as f32))
        .collect();
    let shift: Vec<f32> = (0..shape.channels)
        .map(|c| beta[c] - mean[c] * scale[c])
        .collect();
    let pixels = shape.pixels;
    // SAFETY: every plane (chunk) is written in full below.
    unsafe {
        crate::flex_f32::par_filled(shape.len(), pixels, |plane, out| {
            let c = plane % shape.channels;
            let input = &x[plane * pixels..][..pixels];
            let (a, b) = (scale[c], shift[c]);
            match epilogue {
                Epilogue::Identity => {
                    for i in 0..pixels {
                        out[i].write(input[i] * a + b);
                    }
                }
                Epilogue::Relu => {
                    for i in 0..pixels {
                        out[i].write((input[i] * a + b).max(0.0));
                    }
                }
                Epilogue::AddRelu(residual) => {
                    let residual = &residual[plane * pixels..][..pixels];
                    for i in 0..pixels {
                        out[i].write((input[i] * a + b + residual[i]).max(0.0));
                    }
                }
            }
        })
    }
}

/// The gradient through a ReLU from its output `y`: `dy` where `y > 0`, else 0 (PyTorch's and
/// burn's convention at 0).
pub fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(y.len(), dy.len(), "relu backward: gradient length");
    const CHUNK: usize = 1 << 14;
    // SAFETY: every chunk is written in full below.
    unsafe {
        crate::flex_f32::par_filled(y.len(), CHUNK, |index, out| {
            let y = &y[index * CHUNK..][..out.len()];
            let dy = &dy[index * CHUNK..][..out.len()];
            for i in 0..out.len() {
                out[i].write(relu_mask(y[i], dy[i]));
            }
        })
    }
}

/// `g` where the ReLU's output `y` is positive, else 0.
#[inline(always)]
fn relu_mask(y: f32, g: f32) -> f32 {
    if y > 0.0 { g } else { 0.0 }
}

/// Gradients of training-mode batch normalisation (the statistics are those of `x`):
/// with `x̂ = (x - mean) / σ`, `σ = sqrt(var + eps)`, `M = batch * pixels`,
/// - `∂L/∂β = Σ dy`, `∂L/∂γ = Σ dy · x̂`,
/// - `∂L/∂x = γ / σ · (dy - ∂L/∂β / M - x̂ · ∂L/∂γ / M)`.
///
/// When a ReLU followed the normalisation, `relu_output` is its output `y`, and `dy` (the
/// gradient of the ReLU's output) is masked by `y > 0` on the fly.
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
    relu_output: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), shape.len(), "batch norm: input length");
    assert_eq!(dy.len(), shape.len(), "batch norm: gradient length");
    if let Some(y) = relu_output {
        assert_eq!(y.len(), shape.len(), "batch norm: ReLU output length");
    }
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
                match relu_output {
                    None => {
                        dbeta += sum_pairs(gp, gp, |g, _| g);
                        dgamma += sum_pairs(xp, gp, |v, g| (v - m) * s * g);
                    }
                    Some(y) => {
                        let yp = shape.plane(y, n, c);
                        dbeta += sum_pairs(yp, gp, relu_mask);
                        dgamma += sum_triples(xp, gp, yp, |v, g, y| (v - m) * s * relu_mask(y, g));
                    }
                }
            }
            (dgamma as f32, dbeta as f32)
        })
        .collect();
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
    let count = shape.count() as f32;
    let pixels = shape.pixels;
    // SAFETY: every plane (chunk) is written in full below.
    let dx = unsafe {
        crate::flex_f32::par_filled(shape.len(), pixels, |plane, out| {
            let c = plane % shape.channels;
            let xp = &x[plane * pixels..][..pixels];
            let gp = &dy[plane * pixels..][..pixels];
            let (m, s) = (mean[c], inv_std[c]);
            let factor = gamma[c] * s;
            let mean_dy = dbeta[c] / count;
            let mean_dy_xhat = dgamma[c] / count;
            let grad = |v: f32, g: f32| factor * (g - mean_dy - (v - m) * s * mean_dy_xhat);
            match relu_output {
                None => {
                    for i in 0..pixels {
                        out[i].write(grad(xp[i], gp[i]));
                    }
                }
                Some(y) => {
                    let yp = &y[plane * pixels..][..pixels];
                    for i in 0..pixels {
                        out[i].write(grad(xp[i], relu_mask(yp[i], gp[i])));
                    }
                }
            }
        })
    };
    (dx, dgamma, dbeta)
}
