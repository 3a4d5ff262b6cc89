//! Weight gradient with the output channels in the vector lanes: the counterpart of
//! [`super::direct_channels_forward`] for the deep layers on small maps and for strided layers,
//! summing no products with padding.
//!
//! `dW[o, c, a, b] = Σ_n Σ_{(i, j)} dy[n, o, i, j] · x̃[n, c, i·s + a - p, j·s + b - p]`, the
//! sum over the output pixels whose tap `(a, b)` reads inside the image (through the others
//! it reads padding zeros).
//!
//! [`super::direct_weight_grad`] puts neighbouring positions of a map in a vector, which a 4 x 4
//! or 8 x 8 map does not fill, and im2row + gemm multiplies the zeros of the padding (16% of an
//! 8 x 8 layer's products, 31% of a 4 x 4 layer's). Here the output gradient of a group of
//! images is transposed channel-last (`[pixels, C_out]`, output channels rounded up to whole
//! blocks), and a register tile of [`VECTORS`] vectors of output channels by `I` input
//! channels of one tap runs down that tap's list of pixels
//! ([`super::border_classes::TapPixels`]): per pixel, [`VECTORS`] vector loads of the gradient
//! and `I` broadcasts from the zero-padded input planes feed `VECTORS · I` multiply-adds. The
//! tile's sums stay in a per-thread accumulator `[blocks, C_in, taps, block]` between groups.
//!
//! Reproducibility: the batch is split into one contiguous range of groups per thread, each
//! range summed group by group in order (and within a group, pixel by pixel in order), and the
//! ranges' sums added in range order: the result depends on the thread count and the
//! instruction set (both part of the cached choice's key in [`super::plan`]), never on how the
//! threads were scheduled.

use std::cell::RefCell;

use super::border_classes::TapPixels;
use super::direct::{Grid, Layout, MultiplyAdd, PaddedImage, Separate};
use super::geometry::ConvGeometry;
use super::kernels::{prefix, sum_in_ranges};
#[cfg(target_arch = "x86_64")]
use crate::kernels::isa::{has_avx2_fma, has_avx512};

/// Vectors of output channels per register tile.
const VECTORS: usize = 2;

/// Output pixels per group of images (the images of a group share one transposed gradient and
/// one padded input, about 256 KiB each at 128 channels).
const GROUP_PIXELS: usize = 512;

/// The most memory one thread's accumulator may take: 128 x 128 channels of a 3x3 kernel take
/// 0.6 MiB; the 512-channel layers (9.4 MiB each per thread) stay with the other algorithms.
const MAX_ACCUMULATOR_BYTES: usize = 4 << 20;

/// Whether [`channels_weight_grad`] computes `g`'s weight gradient: any stride and kernel but
/// an unpadded stride-1 1x1 (a plain product, left to gemm), within `MAX_ACCUMULATOR_BYTES`
/// (4 MiB) of accumulators per thread.
pub fn supports_channels_weight_grad(g: &ConvGeometry) -> bool {
    let accumulator_bytes = g.out_channels.next_multiple_of(VECTORS * 16)
        * g.in_channels
        * g.kernel_height
        * g.kernel_width
        * size_of::<f32>();
    g.is_valid() && !g.is_pointwise() && accumulator_bytes <= MAX_ACCUMULATOR_BYTES
}

thread_local! {
    static PADDED: RefCell<PaddedImage> = const { RefCell::new(PaddedImage::new()) };
    static GRADIENT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Weight gradient with the output channels in the vector lanes: the same result as
/// [`super::conv2d_weight_grad`] up to rounding. `x [N, C_in, H, W]`, `dy [N, C_out, H_out,
/// W_out]`, `dw [C_out, C_in, kh, kw]`, contiguous; every element of `dw` is written.
pub fn channels_weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    assert!(
        supports_channels_weight_grad(g),
        "weight gradient over channels: unsupported geometry {g:?}"
    );
    assert_eq!(
        x.len(),
        g.input_len(),
        "weight gradient over channels: input length"
    );
    assert_eq!(
        dy.len(),
        g.output_len(),
        "weight gradient over channels: output length"
    );
    assert_eq!(
        dw.len(),
        g.weight_len(),
        "weight gradient over channels: weight length"
    );
    // AVX-512: 2 x 8 accumulators of 16 lanes, 2 gradient vectors and a broadcast in 32
    // registers; AVX2: 2 x 6 of 8 lanes in 16.
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            return weight_grad_with::<8, Avx512Tile>(g, x, dy, dw);
        }
        if has_avx2_fma() {
            return weight_grad_with::<6, Avx2Tile>(g, x, dy, dw);
        }
    }
    weight_grad_with::<6, PortableTile>(g, x, dy, dw);
}

/// The register tile of one instruction set: [`Self::BLOCK`] output channels by up to `I`
/// input channels of one tap.
trait GradientTile {
    /// Output channels per tile: [`VECTORS`] vectors.
    const BLOCK: usize;

    /// One group's products added to `acc` (a function compiled for the instruction set, so
    /// that the tile inlines into code that may use it).
    fn accumulate_group<const I: usize>(
        plan: &Plan,
        pixels: &TapPixels,
        padded: &[f32],
        grad: &[f32],
        acc: &mut [f32],
    );

    /// Adds `Σ_{(row, window) ∈ pixels} grad[row + o] · padded[k · plane + window + tap]` to
    /// `acc[k · acc_stride + o]`, for `o < BLOCK` and `k < J`.
    ///
    /// # Safety
    /// The CPU has the tile's instructions; every `row + BLOCK <= grad.len()`, every `(J - 1) ·
    /// plane + window + tap < padded.len()`, and `(J - 1) · acc_stride + BLOCK <= acc.len()`.
    unsafe fn sums<const J: usize>(
        grad: &[f32],
        padded: &[f32],
        plane: usize,
        tap: usize,
        pixels: &[(usize, usize)],
        acc: &mut [f32],
        acc_stride: usize,
    );
}

/// Portable code: 8-lane arrays the compiler vectorises for the build's baseline target.
struct PortableTile;

impl GradientTile for PortableTile {
    const BLOCK: usize = VECTORS * 8;

    fn accumulate_group<const I: usize>(
        plan: &Plan,
        pixels: &TapPixels,
        padded: &[f32],
        grad: &[f32],
        acc: &mut [f32],
    ) {
        accumulate_tiles::<I, Self>(plan, pixels, padded, grad, acc);
    }

    #[inline(always)]
    unsafe fn sums<const J: usize>(
        grad: &[f32],
        padded: &[f32],
        plane: usize,
        tap: usize,
        pixels: &[(usize, usize)],
        acc: &mut [f32],
        acc_stride: usize,
    ) {
        const BLOCK: usize = VECTORS * 8;
        let mut sums = [[0.0f32; BLOCK]; J];
        for (k, sum) in sums.iter_mut().enumerate() {
            sum.copy_from_slice(&acc[k * acc_stride..][..BLOCK]);
        }
        for &(row, window) in pixels {
            let gradient = &grad[row..][..BLOCK];
            for (k, sum) in sums.iter_mut().enumerate() {
                let value = padded[k * plane + window + tap];
                for (s, d) in sum.iter_mut().zip(gradient) {
                    *s = Separate::multiply_add(*s, *d, value);
                }
            }
        }
        for (k, sum) in sums.iter().enumerate() {
            acc[k * acc_stride..][..BLOCK].copy_from_slice(sum);
        }
    }
}

/// A [`GradientTile`] of [`VECTORS`] x `J` accumulators of `$lanes` lanes, written with the
/// `std::arch` intrinsics of one instruction set (`$features`).
#[cfg(target_arch = "x86_64")]
macro_rules! intrinsics_tile {
    ($(#[$doc:meta])* $name:ident, $lanes:literal, $features:literal,
     $zero:ident, $load:ident, $splat:ident, $fma:ident, $store:ident) => {
        $(#[$doc])*
        struct $name;

        impl GradientTile for $name {
            const BLOCK: usize = VECTORS * $lanes;

            fn accumulate_group<const I: usize>(
                plan: &Plan,
                pixels: &TapPixels,
                padded: &[f32],
                grad: &[f32],
                acc: &mut [f32],
            ) {
                #[target_feature(enable = $features)]
                fn with_features<const I: usize>(
                    plan: &Plan,
                    pixels: &TapPixels,
                    padded: &[f32],
                    grad: &[f32],
                    acc: &mut [f32],
                ) {
                    accumulate_tiles::<I, $name>(plan, pixels, padded, grad, acc);
                }
                // SAFETY: `channels_weight_grad` chose this tile after checking that the CPU
                // has these features.
                unsafe { with_features::<I>(plan, pixels, padded, grad, acc) }
            }

            #[inline(always)]
            unsafe fn sums<const J: usize>(
                grad: &[f32],
                padded: &[f32],
                plane: usize,
                tap: usize,
                pixels: &[(usize, usize)],
                acc: &mut [f32],
                acc_stride: usize,
            ) {
                use std::arch::x86_64::{$fma, $load, $splat, $store, $zero};
                // SAFETY (whole block): the caller guarantees the features and that every read
                // and store is inside `grad`, `padded` and `acc`.
                unsafe {
                    let mut sums = [[$zero(); VECTORS]; J];
                    for (k, sum) in sums.iter_mut().enumerate() {
                        for (v, lanes) in sum.iter_mut().enumerate() {
                            *lanes = $load(acc.as_ptr().add(k * acc_stride + v * $lanes));
                        }
                    }
                    let gradient = grad.as_ptr();
                    let input = padded.as_ptr().add(tap);
                    for &(row, window) in pixels {
                        let d0 = $load(gradient.add(row));
                        let d1 = $load(gradient.add(row + $lanes));
                        let at = input.add(window);
                        for (k, sum) in sums.iter_mut().enumerate() {
                            let value = $splat(*at.add(k * plane));
                            sum[0] = $fma(d0, value, sum[0]);
                            sum[1] = $fma(d1, value, sum[1]);
                        }
                    }
                    for (k, sum) in sums.iter().enumerate() {
                        for (v, lanes) in sum.iter().enumerate() {
                            $store(acc.as_mut_ptr().add(k * acc_stride + v * $lanes), *lanes);
                        }
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
intrinsics_tile!(
    /// AVX2 + FMA: 2 x `J` accumulators of 8 lanes.
    Avx2Tile, 8, "avx2,fma",
    _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps
);

#[cfg(target_arch = "x86_64")]
intrinsics_tile!(
    /// AVX-512: 2 x `J` accumulators of 16 lanes.
    Avx512Tile, 16, "avx512f,avx2,fma",
    _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps
);

/// What every group shares: the padded layout and the accumulator's shape.
struct Plan {
    layout: Layout,
    /// Taps of the kernel, `kh·kw`.
    kernel_taps: usize,
    /// Blocks of output channels.
    blocks: usize,
    /// Output channels per block (a tile's).
    block: usize,
}

impl Plan {
    fn accumulator_len(&self) -> usize {
        self.blocks * self.layout.channels * self.kernel_taps * self.block
    }

    /// Values per pixel of the transposed gradient: the output channels in whole blocks.
    fn padded_channels(&self) -> usize {
        self.blocks * self.block
    }
}

/// [`channels_weight_grad`] with tile `K` of `I` input channels.
fn weight_grad_with<const I: usize, K: GradientTile>(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    let plan = Plan {
        layout: Layout::padded_input(g),
        kernel_taps: g.kernel_height * g.kernel_width,
        blocks: g.out_channels.div_ceil(K::BLOCK),
        block: K::BLOCK,
    };
    let layout = plan.layout;
    let out_pixels = g.out_pixels();
    // No fewer groups than threads when the batch allows (each thread sums whole groups).
    let by_threads = g.batch.div_ceil(rayon::current_num_threads().max(1));
    let images = GROUP_PIXELS
        .div_ceil(out_pixels.max(1))
        .min(by_threads)
        .max(1);
    let (image_in, image_out) = (g.in_channels * g.in_pixels(), g.out_channels * out_pixels);
    let image_len = layout.channels * layout.plane();
    let grad_stride = plan.padded_channels();
    let full = TapPixels::new(g, layout.cols, image_len, grad_stride, images);
    let rest = g.batch % images;
    let last = (rest > 0).then(|| TapPixels::new(g, layout.cols, image_len, grad_stride, rest));
    // Room for a whole group's planes; a shorter last group leaves the planes after it unread.
    let grid = Grid {
        planes: images * layout.channels,
        ..Grid::padded_input(g, &layout)
    };
    let groups = g.batch.div_ceil(images);
    let total = sum_in_ranges(groups, plan.accumulator_len(), |range| {
        let mut acc = vec![0.0f32; plan.accumulator_len()];
        for group in range {
            let first = group * images;
            let count = images.min(g.batch - first);
            let pixels = match &last {
                Some(last) if count == rest => last,
                _ => &full,
            };
            PADDED.with(|padded| {
                GRADIENT.with(|grad| {
                    let padded = &mut *padded.borrow_mut();
                    let padded = padded.place(grid, &x[first * image_in..][..count * image_in]);
                    let grad = &mut *grad.borrow_mut();
                    let grad = prefix(grad, count * out_pixels * grad_stride);
                    let source = &dy[first * image_out..][..count * image_out];
                    transpose_gradient(source, g.out_channels, out_pixels, grad_stride, grad);
                    K::accumulate_group::<I>(&plan, pixels, padded, grad, &mut acc);
                });
            });
        }
        acc
    });
    write_weight_grad(g, &plan, &total, dw);
}

/// `dy [images, C_out, pixels]` into `grad [images · pixels, stride]`, the channels beyond
/// `C_out` zero.
fn transpose_gradient(dy: &[f32], channels: usize, pixels: usize, stride: usize, grad: &mut [f32]) {
    for (image, rows) in dy
        .chunks_exact(channels * pixels)
        .zip(grad.chunks_exact_mut(pixels * stride))
    {
        for (p, row) in rows.chunks_exact_mut(stride).enumerate() {
            for (o, value) in row[..channels].iter_mut().enumerate() {
                *value = image[o * pixels + p];
            }
            row[channels..].fill(0.0);
        }
    }
}

/// `sums [blocks, C_in, taps, block]` into `dw [C_out, C_in, taps]`.
fn write_weight_grad(g: &ConvGeometry, plan: &Plan, sums: &[f32], dw: &mut [f32]) {
    let (channels, taps, block) = (g.in_channels, plan.kernel_taps, plan.block);
    for (o, filter) in dw.chunks_exact_mut(channels * taps).enumerate() {
        let (b, lane) = (o / block, o % block);
        for (c, channel) in filter.chunks_exact_mut(taps).enumerate() {
            for (t, value) in channel.iter_mut().enumerate() {
                *value = sums[((b * channels + c) * taps + t) * block + lane];
            }
        }
    }
}

/// Every tile of one group: blocks of output channels by `I` input channels (the last ones one
/// at a time) by taps, each over its tap's pixels.
#[inline(always)]
fn accumulate_tiles<const I: usize, K: GradientTile>(
    plan: &Plan,
    pixels: &TapPixels,
    padded: &[f32],
    grad: &[f32],
    acc: &mut [f32],
) {
    let plane = plan.layout.plane();
    let channels = plan.layout.channels;
    let taps = plan.kernel_taps;
    assert_eq!(plan.block, K::BLOCK, "weight gradient over channels: block");
    assert_eq!(
        pixels.taps.len(),
        taps,
        "weight gradient over channels: taps"
    );
    // Every read below is at most here: the farthest window's tap in the last channel, and the
    // last pixel's row of the last block.
    assert!(
        (channels - 1) * plane + pixels.last_read < padded.len(),
        "weight gradient over channels: read outside the padded images"
    );
    assert!(
        pixels.last_row + plan.padded_channels() <= grad.len(),
        "weight gradient over channels: read outside the gradient"
    );
    assert_eq!(acc.len(), plan.accumulator_len());
    let acc_stride = taps * K::BLOCK;
    for b in 0..plan.blocks {
        let block_grad = &grad[b * K::BLOCK..];
        let mut c = 0;
        while c < channels {
            let inputs = if c + I <= channels { I } else { 1 };
            for (t, (tap, list)) in pixels.taps.iter().enumerate() {
                let at = ((b * channels + c) * taps + t) * K::BLOCK;
                let input = &padded[c * plane..];
                // SAFETY: the caller chose `K` for this CPU; rows end at last_row + block ·
                // (b + 1) <= grad.len(), reads at (channels - 1)·plane + last_read <
                // padded.len(), and the tile's `inputs` channels at `at` lie inside `acc`
                // (c + inputs <= channels), all asserted above.
                unsafe {
                    if inputs == I {
                        K::sums::<I>(
                            block_grad,
                            input,
                            plane,
                            *tap,
                            list,
                            &mut acc[at..],
                            acc_stride,
                        );
                    } else {
                        K::sums::<1>(
                            block_grad,
                            input,
                            plane,
                            *tap,
                            list,
                            &mut acc[at..],
                            acc_stride,
                        );
                    }
                }
            }
            c += inputs;
        }
    }
}
