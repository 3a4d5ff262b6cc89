//! f32 batch-normalisation kernels on contiguous NCHW slices: per-channel moments, the affine
//! normalisation, and the training-mode backward, each one or two passes over the activation.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::features::{self, GradientTerms};

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

    /// Whole planes per parallel task of the element-wise passes: at least [`FLUSH`] values,
    /// so the 1-pixel "planes" of `[N, D]` features are not one task each.
    fn planes_per_chunk(&self) -> usize {
        FLUSH.div_ceil(self.pixels.max(1))
    }

    /// Values per parallel task of the element-wise passes.
    fn chunk_len(&self) -> usize {
        self.planes_per_chunk() * self.pixels.max(1)
    }

    fn plane<'a>(&self, data: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        &data[(n * self.channels + c) * self.pixels..][..self.pixels]
    }
}

const LANES: usize = 16;

/// Values summed in f32 lanes before the lanes are added into the f64 totals: keeps the sums
/// accurate while planes of a few pixels (the 4x4 maps of a ResNet's last stage) cost no
/// reduction each.
const FLUSH: usize = 4096;

/// Lane-wise partial sums of `K` quantities over one channel, flushed into f64.
struct ChannelSums<const K: usize> {
    lanes: [[f32; LANES]; K],
    totals: [f64; K],
    pending: usize,
}

impl<const K: usize> ChannelSums<K> {
    fn new() -> Self {
        Self {
            lanes: [[0.0; LANES]; K],
            totals: [0.0; K],
            pending: 0,
        }
    }

    /// Adds `f(i)` for `i` in `0..len` (one plane); `f` reads the plane's values by index.
    #[inline(always)]
    fn add(&mut self, len: usize, mut f: impl FnMut(usize) -> [f32; K]) {
        let full = len - len % LANES;
        for base in (0..full).step_by(LANES) {
            for i in 0..LANES {
                for (lanes, value) in self.lanes.iter_mut().zip(f(base + i)) {
                    lanes[i] += value;
                }
            }
        }
        for i in full..len {
            for (total, value) in self.totals.iter_mut().zip(f(i)) {
                *total += value as f64;
            }
        }
        self.pending += full;
        if self.pending >= FLUSH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for k in 0..K {
            self.totals[k] += self.lanes[k].iter().map(|v| *v as f64).sum::<f64>();
            self.lanes[k] = [0.0; LANES];
        }
        self.pending = 0;
    }

    fn totals(mut self) -> [f64; K] {
        self.flush();
        self.totals
    }
}

/// Images per task of the per-channel reductions ([`channel_sums`]).
const IMAGE_BLOCK: usize = 8;

/// Per-channel sums of `K` quantities over every image and pixel: `add_plane(n, c, sums)` adds
/// the quantities of plane `(n, c)` to channel `c`'s `sums`.
///
/// The images go in fixed blocks of [`IMAGE_BLOCK`], one parallel task each, which reads its
/// planes in memory order (image by image, channel by channel) into its own per-channel sums;
/// the blocks' `f64` totals are then added in block order, so the result depends neither on
/// the thread count nor on the schedule. (Channel by channel, each task read one plane per
/// image, a few KiB every `C · H · W` floats: on a 32 x 32 map one 4 KiB page per image, where
/// the hardware prefetcher restarts at every page; the backward pass's sums took 1.5x as long.)
fn channel_sums<const K: usize>(
    shape: NormShape,
    add_plane: impl Fn(usize, usize, &mut ChannelSums<K>) + Sync,
) -> Vec<[f64; K]> {
    let blocks: Vec<Vec<[f64; K]>> = (0..shape.batch.div_ceil(IMAGE_BLOCK))
        .into_par_iter()
        .map(|block| {
            let mut sums: Vec<ChannelSums<K>> =
                (0..shape.channels).map(|_| ChannelSums::new()).collect();
            let images = block * IMAGE_BLOCK..((block + 1) * IMAGE_BLOCK).min(shape.batch);
            for n in images {
                for (c, sums) in sums.iter_mut().enumerate() {
                    add_plane(n, c, sums);
                }
            }
            sums.into_iter().map(ChannelSums::totals).collect()
        })
        .collect();
    add_blocks(blocks, shape.channels)
}

/// [`channel_sums`] that also writes an output shaped like the activation: `add_plane(n, c,
/// sums, out)` receives plane `(n, c)` of `out` and must write all of it (an empty `out`:
/// nothing is written, and the planes handed over are empty).
fn channel_sums_writing<const K: usize>(
    shape: NormShape,
    out: &mut [MaybeUninit<f32>],
    add_plane: impl Fn(usize, usize, &mut ChannelSums<K>, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<[f64; K]> {
    assert!(
        out.is_empty() || out.len() == shape.len(),
        "batch norm: output length"
    );
    let image_len = shape.channels * shape.pixels;
    let block_sums = |block: usize, out: &mut [MaybeUninit<f32>]| {
        let mut sums: Vec<ChannelSums<K>> =
            (0..shape.channels).map(|_| ChannelSums::new()).collect();
        let images = block * IMAGE_BLOCK..((block + 1) * IMAGE_BLOCK).min(shape.batch);
        for (j, n) in images.enumerate() {
            for (c, sums) in sums.iter_mut().enumerate() {
                let plane = if out.is_empty() {
                    &mut []
                } else {
                    &mut out[j * image_len + c * shape.pixels..][..shape.pixels]
                };
                add_plane(n, c, sums, plane);
            }
        }
        sums.into_iter()
            .map(ChannelSums::totals)
            .collect::<Vec<_>>()
    };
    let blocks: Vec<Vec<[f64; K]>> = if out.is_empty() || image_len == 0 {
        (0..shape.batch.div_ceil(IMAGE_BLOCK))
            .into_par_iter()
            .map(|block| block_sums(block, &mut []))
            .collect()
    } else {
        out.par_chunks_mut(IMAGE_BLOCK * image_len)
            .enumerate()
            .map(|(block, out)| block_sums(block, out))
            .collect()
    };
    add_blocks(blocks, shape.channels)
}

/// The per-channel totals of every block, added in block order.
fn add_blocks<const K: usize>(blocks: Vec<Vec<[f64; K]>>, channels: usize) -> Vec<[f64; K]> {
    let mut totals = vec![[0.0f64; K]; channels];
    for block in blocks {
        for (total, sums) in totals.iter_mut().zip(block) {
            for (t, s) in total.iter_mut().zip(sums) {
                *t += s;
            }
        }
    }
    totals
}

/// The largest `δ² / var` for which [`channel_moments`] keeps its one-pass variance.
const CANCELLATION_LIMIT: f64 = 16.0;

/// Per-channel mean and biased variance (`Σ (x - mean)² / count`), in one pass over the
/// activation for almost every channel.
///
/// Each channel's sums are of `d = x - k` and `d²`, with `k` the mean of the channel's first
/// plane (read twice; the rest once); then `mean = k + Σd / M` and `var = Σd² / M - (Σd / M)²`.
/// Shifting by a value near the mean is what keeps the subtraction from cancelling: its
/// rounding error is that of the sums amplified by `1 + δ² / var`, `δ = mean - k`. One image's
/// plane can lie far from the channel's mean (a channel that fires on few images), and `δ²`
/// can reach `(N - 1) · var`; where `δ² > 16 · var` the channel's variance is computed again
/// in a second pass, around the mean, as the two-pass form does. So the error is at most 17
/// times that of the sums, which are f32 lanes flushed into `f64` between planes once
/// 4,096 values have gathered (about 1e-6 relative for the planes of a ResNet).
/// `[N, D]` features (one pixel) take row-wise kernels that vectorise across channels.
///
/// Unlike the backward pass's sums (`channel_sums`), each parallel task here is one channel,
/// read plane by plane: over blocks of images in memory order the moments measured no faster in
/// the training step and up to 1.5x slower alone (`benches/batch_norm.rs`, BENCHMARKS.md).
pub fn channel_moments(shape: NormShape, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), shape.len(), "batch norm: input length");
    if shape.pixels == 1 {
        return features::moments(shape.batch, shape.channels, x);
    }
    let count = shape.count() as f64;
    let pixels = shape.pixels;
    let moments: Vec<(f32, f32)> = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            if shape.batch == 0 || pixels == 0 {
                return (f32::NAN, f32::NAN);
            }
            let first = shape.plane(x, 0, c);
            let shift = (first.iter().map(|v| *v as f64).sum::<f64>() / pixels as f64) as f32;
            let mut sums = ChannelSums::<2>::new();
            for n in 0..shape.batch {
                let plane = shape.plane(x, n, c);
                sums.add(pixels, |i| {
                    let d = plane[i] - shift;
                    [d, d * d]
                });
            }
            let [deviations, squares] = sums.totals();
            let mean_deviation = deviations / count;
            let one_pass = squares / count - mean_deviation * mean_deviation;
            let mean = shift as f64 + mean_deviation;
            if mean_deviation * mean_deviation <= CANCELLATION_LIMIT * one_pass {
                return (mean as f32, one_pass as f32);
            }
            let mean = mean as f32;
            let mut squares = ChannelSums::<1>::new();
            for n in 0..shape.batch {
                let plane = shape.plane(x, n, c);
                squares.add(pixels, |i| {
                    let d = plane[i] - mean;
                    [d * d]
                });
            }
            (mean, (squares.totals()[0] / count) as f32)
        })
        .collect();
    moments.into_iter().unzip()
}

/// An activation-shaped output written in parallel, whole planes per task:
/// `fill(plane, channel, out)` must write every value of plane `plane` (of channel `channel`).
fn planes_filled(
    shape: NormShape,
    fill: impl Fn(usize, usize, &mut [MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    let pixels = shape.pixels;
    // SAFETY: every chunk is whole planes, each handed to `fill`, which writes all of it.
    unsafe {
        crate::kernels::flex_f32::par_filled(shape.len(), shape.chunk_len(), |chunk, out| {
            for (j, out) in out.chunks_exact_mut(pixels).enumerate() {
                let plane = chunk * shape.planes_per_chunk() + j;
                fill(plane, plane % shape.channels, out);
            }
        })
    }
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

/// The per-channel affine map `x ↦ x · scale + shift` of the normalisation, with `scale = γ /
/// sqrt(var + eps)` and `shift = β - mean · scale`. Both passes take it from here, so the
/// backward pass's ReLU mask `x · scale + shift > 0` is bit for bit the sign of the forward
/// pass's output (the same two roundings of the same values).
pub(super) struct ChannelAffine {
    pub(super) scale: Vec<f32>,
    pub(super) shift: Vec<f32>,
}

impl ChannelAffine {
    pub(super) fn new(
        channels: usize,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        epsilon: f64,
    ) -> Self {
        let scale: Vec<f32> = (0..channels)
            .map(|c| gamma[c] / ((var[c] as f64 + epsilon).sqrt() as f32))
            .collect();
        let shift = (0..channels)
            .map(|c| beta[c] - mean[c] * scale[c])
            .collect();
        Self { scale, shift }
    }
}

/// `g` where the forward pass's pre-activation `x · a + b` was positive (so its ReLU output
/// `y > 0`), else 0.
#[inline(always)]
pub(super) fn relu_mask_from_input(x: f32, a: f32, b: f32, g: f32) -> f32 {
    if x * a + b > 0.0 { g } else { 0.0 }
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
    let ChannelAffine { scale, shift } =
        ChannelAffine::new(shape.channels, gamma, beta, mean, var, epsilon);
    if shape.pixels == 1 {
        return features::normalize(shape.batch, shape.channels, x, &scale, &shift, epilogue);
    }
    let pixels = shape.pixels;
    planes_filled(shape, |plane, c, out| {
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
                    out[i].write(relu(input[i] * a + b));
                }
            }
            Epilogue::AddRelu(residual) => {
                let residual = &residual[plane * pixels..][..pixels];
                for i in 0..pixels {
                    out[i].write(relu(input[i] * a + b + residual[i]));
                }
            }
        }
    })
}

/// The gradient through a ReLU from its output `y`: `dy` where `y > 0`, else 0 (PyTorch's and
/// burn's convention at 0).
pub fn relu_backward(y: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(y.len(), dy.len(), "relu backward: gradient length");
    const CHUNK: usize = 1 << 14;
    // SAFETY: every chunk is written in full below.
    unsafe {
        crate::kernels::flex_f32::par_filled(y.len(), CHUNK, |index, out| {
            let y = &y[index * CHUNK..][..out.len()];
            let dy = &dy[index * CHUNK..][..out.len()];
            for i in 0..out.len() {
                out[i].write(relu_mask(y[i], dy[i]));
            }
        })
    }
}

/// `max(v, 0)` that keeps a NaN (as PyTorch's ReLU does): `f32::max` would turn it into 0 and
/// hide a diverging network from the non-finite loss check.
#[inline(always)]
pub(super) fn relu(v: f32) -> f32 {
    if v < 0.0 { 0.0 } else { v }
}

/// `g` where the ReLU's output `y` is positive, else 0.
#[inline(always)]
pub(super) fn relu_mask(y: f32, g: f32) -> f32 {
    if y > 0.0 { g } else { 0.0 }
}

/// Gradients of training-mode batch normalisation (the statistics are those of `x`):
/// with `x̂ = (x - mean) / σ`, `σ = sqrt(var + eps)`, `M = batch * pixels`,
/// - `∂L/∂β = Σ dy`, `∂L/∂γ = Σ dy · x̂`,
/// - `∂L/∂x = γ / σ · (dy - ∂L/∂β / M - x̂ · ∂L/∂γ / M)`.
///
/// When a ReLU followed the normalisation (`relu`), `dy` is the gradient of the ReLU's output,
/// masked on the fly where the forward pass's pre-activation was not positive. The mask is
/// recomputed from `x` with [`normalize`]'s own arithmetic (`x · scale + shift`, from the same
/// `gamma`, `beta`, `mean`, `var`), so it is exactly the output's `y > 0` without reading `y`:
/// one stream of memory fewer in each of the two passes.
///
/// Returns `(dx, dgamma, dbeta)`.
#[allow(clippy::too_many_arguments)]
pub fn normalize_backward(
    shape: NormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    dy: &[f32],
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), shape.len(), "batch norm: input length");
    assert_eq!(dy.len(), shape.len(), "batch norm: gradient length");
    let inv_std = inverse_std(&var[..shape.channels], epsilon);
    let affine = relu.then(|| ChannelAffine::new(shape.channels, gamma, beta, mean, var, epsilon));
    if shape.pixels == 1 {
        return features_backward(shape, x, gamma, mean, &inv_std, dy, affine.as_ref());
    }
    let pixels = shape.pixels;
    // [Σ dy, Σ dy · x̂] per channel, with dy masked by the ReLU when there is one.
    let sums = channel_sums::<2>(shape, |n, c, sums| {
        let (xp, gp) = (shape.plane(x, n, c), shape.plane(dy, n, c));
        let (m, s) = (mean[c], inv_std[c]);
        match &affine {
            None => sums.add(pixels, |i| [gp[i], (xp[i] - m) * s * gp[i]]),
            Some(affine) => {
                let (a, b) = (affine.scale[c], affine.shift[c]);
                sums.add(pixels, |i| {
                    let g = relu_mask_from_input(xp[i], a, b, gp[i]);
                    [g, (xp[i] - m) * s * g]
                });
            }
        }
    });
    let terms = InputGradient {
        gamma,
        mean,
        inv_std: &inv_std,
        relu: affine.as_ref(),
    };
    let (dx, dgamma, dbeta) = terms.apply(shape, x, dy, &sums);
    (dx, dgamma, dbeta)
}

/// `1 / sqrt(var + eps)` per channel.
fn inverse_std(var: &[f32], epsilon: f64) -> Vec<f32> {
    var.iter()
        .map(|v| (1.0 / (*v as f64 + epsilon).sqrt()) as f32)
        .collect()
}

/// What the input gradient `∂L/∂x = γ / σ · (g - ∂L/∂β / M - x̂ · ∂L/∂γ / M)` of
/// [`normalize_backward`] needs per channel besides the sums, `g` being `dy`, masked by the
/// ReLU when `relu`.
struct InputGradient<'a> {
    gamma: &'a [f32],
    mean: &'a [f32],
    inv_std: &'a [f32],
    relu: Option<&'a ChannelAffine>,
}

impl InputGradient<'_> {
    /// `(dx, dgamma, dbeta)` of planes (`shape.pixels > 1`) from the per-channel `sums` `[Σ g,
    /// Σ g · x̂]`: one pass over `x` and `dy` for `dx`.
    fn apply(
        &self,
        shape: NormShape,
        x: &[f32],
        dy: &[f32],
        sums: &[[f64; 2]],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = sums
            .iter()
            .map(|[dbeta, dgamma]| (*dgamma as f32, *dbeta as f32))
            .unzip();
        let dx = self.input_gradient(shape, x, dy, &dgamma, &dbeta);
        (dx, dgamma, dbeta)
    }

    fn input_gradient(
        &self,
        shape: NormShape,
        x: &[f32],
        dy: &[f32],
        dgamma: &[f32],
        dbeta: &[f32],
    ) -> Vec<f32> {
        let pixels = shape.pixels;
        let count = shape.count() as f32;
        planes_filled(shape, |plane, c, out| {
            let xp = &x[plane * pixels..][..pixels];
            let gp = &dy[plane * pixels..][..pixels];
            let (m, s) = (self.mean[c], self.inv_std[c]);
            let factor = self.gamma[c] * s;
            let mean_dy = dbeta[c] / count;
            let mean_dy_xhat = dgamma[c] / count;
            let grad = |v: f32, g: f32| factor * (g - mean_dy - (v - m) * s * mean_dy_xhat);
            match self.relu {
                None => {
                    for i in 0..pixels {
                        out[i].write(grad(xp[i], gp[i]));
                    }
                }
                Some(affine) => {
                    let (a, b) = (affine.scale[c], affine.shift[c]);
                    for i in 0..pixels {
                        let g = relu_mask_from_input(xp[i], a, b, gp[i]);
                        out[i].write(grad(xp[i], g));
                    }
                }
            }
        })
    }
}

/// Gradients of `y = max(bn(x) + residual, 0)` (a ResNet block's end) from the gradient `dy` of
/// `y`: [`normalize_backward`] of the masked gradient `g = dy · [y > 0]`, which is also the
/// residual's gradient. The mask is applied in the pass that sums the statistics' gradients,
/// which writes `g` as it goes: one pass over `y`, `dy` and `x`, then one over `x` and `g`
/// (masking first in a pass of its own read `g` once more).
///
/// Returns `(dx, dgamma, dbeta, d_residual)`.
#[allow(clippy::too_many_arguments)]
pub fn normalize_add_relu_backward(
    shape: NormShape,
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    dy: &[f32],
    y: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), shape.len(), "batch norm: input length");
    assert_eq!(dy.len(), shape.len(), "batch norm: gradient length");
    assert_eq!(y.len(), shape.len(), "batch norm: output length");
    if shape.pixels == 1 {
        let masked = relu_backward(y, dy);
        // Beta only enters the recomputed ReLU mask, which is off here.
        let (dx, dgamma, dbeta) =
            normalize_backward(shape, x, gamma, &[], mean, var, epsilon, &masked, false);
        return (dx, dgamma, dbeta, masked);
    }
    let inv_std = inverse_std(&var[..shape.channels], epsilon);
    let pixels = shape.pixels;
    let mut masked = Vec::with_capacity(shape.len());
    let sums = channel_sums_writing(
        shape,
        &mut masked.spare_capacity_mut()[..shape.len()],
        |n, c, sums, out| {
            let (xp, gp, yp) = (
                shape.plane(x, n, c),
                shape.plane(dy, n, c),
                shape.plane(y, n, c),
            );
            let (m, s) = (mean[c], inv_std[c]);
            sums.add(pixels, |i| {
                let g = relu_mask(yp[i], gp[i]);
                out[i].write(g);
                [g, (xp[i] - m) * s * g]
            });
        },
    );
    // SAFETY: `channel_sums_writing` handed every plane of `masked` to the closure, which wrote
    // each of its values.
    unsafe { masked.set_len(shape.len()) };
    let terms = InputGradient {
        gamma,
        mean,
        inv_std: &inv_std,
        relu: None,
    };
    let (dx, dgamma, dbeta) = terms.apply(shape, x, &masked, &sums);
    (dx, dgamma, dbeta, masked)
}

/// [`normalize_backward`] for `[N, D]` features, by the row-wise kernels of [`super::features`].
fn features_backward(
    shape: NormShape,
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    dy: &[f32],
    relu: Option<&ChannelAffine>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (batch, channels) = (shape.batch, shape.channels);
    let (dgamma, dbeta) = features::gradient_sums(batch, channels, x, dy, relu, mean, inv_std);
    let count = shape.count() as f32;
    let factor: Vec<f32> = gamma.iter().zip(inv_std).map(|(g, s)| g * s).collect();
    let mean_dy: Vec<f32> = dbeta.iter().map(|v| v / count).collect();
    let mean_dy_xhat: Vec<f32> = dgamma.iter().map(|v| v / count).collect();
    let terms = GradientTerms {
        mean,
        inv_std,
        factor: &factor,
        mean_dy: &mean_dy,
        mean_dy_xhat: &mean_dy_xhat,
    };
    let dx = features::input_gradient(batch, channels, x, dy, relu, &terms);
    (dx, dgamma, dbeta)
}
