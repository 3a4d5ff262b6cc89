//! f32 convolution kernels on contiguous NCHW slices: forward, input gradient, weight gradient.
//!
//! Each is a matrix product over unfolded patches (im2col), computed by the `gemm` crate, whose
//! micro-kernels are chosen at run time (AVX-512, AVX2 + FMA, SSE, NEON, scalar). What this
//! module adds around it:
//! - images are processed in groups of about 1,024 output pixels, so that late ResNet stages
//!   (8x8 or 4x4 feature maps) still give one large product instead of many thin ones; or, where
//!   that measured faster ([`ConvAlgorithm::Im2colL2`]), in smaller groups whose patch matrix
//!   stays in the L2 cache;
//! - groups run in parallel on rayon's pool, each product single-threaded, with thread-local
//!   scratch buffers reused from call to call (no allocation per step);
//! - 1x1 stride-1 convolutions read the input directly (no unfolding);
//! - the input gradient is `Wᵀ · dY` folded back (col2im); the weight gradient is
//!   `Σ_n dY_n · cols_nᵀ`, accumulated per thread and summed once.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::channels_weight_grad::{channels_weight_grad, supports_channels_weight_grad};
use super::direct::{copy_row, direct_forward, supports_direct};
use super::direct_channels::{
    direct_channels_forward, direct_channels_input_grad, supports_direct_channels,
    supports_direct_channels_input_grad,
};
use super::direct_weight_grad::{direct_weight_grad, supports_direct_weight_grad};
use super::geometry::ConvGeometry;
use super::im2col::{col2im_add, im2col, im2row, padded_nhwc_len};
use super::plan::{ConvAlgorithm, ConvPass, run_chosen};
use super::winograd::{
    supports_winograd, winograd_4x4_forward, winograd_forward, winograd_weight_grad,
};
use crate::kernels::gemm::{Mat, matmul, matmul_strided};

/// Output pixels a group of images should reach before it is multiplied as one matrix.
const GROUP_COLUMNS: usize = 1024;

#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    gathered: Vec<f32>,
    nhwc: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| f(&mut cell.borrow_mut()))
}

/// `buffer[..len]`, growing `buffer` when needed; contents are unspecified.
pub(super) fn prefix(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Images per group: enough for [`GROUP_COLUMNS`] output pixels, but no fewer groups than
/// threads when the batch allows.
pub(super) fn group_size(g: &ConvGeometry) -> usize {
    let by_columns = GROUP_COLUMNS.div_ceil(g.out_pixels().max(1));
    let by_threads = g.batch.div_ceil(rayon::current_num_threads().max(1));
    by_columns.min(by_threads).max(1)
}

/// Images per group of [`ConvAlgorithm::Im2colL2`]: at most [`group_size`], and as many as keep
/// the group's patch matrix (`patch_len x images·pixels` floats) within half of a core's L2
/// cache; at least one.
fn cache_sized_group(g: &ConvGeometry) -> usize {
    let budget = l2_cache_bytes() / 2 / size_of::<f32>();
    let per_image = (g.patch_len() * g.out_pixels()).max(1);
    (budget / per_image).clamp(1, group_size(g))
}

/// The L2 cache of the first CPU, in bytes, as Linux reports it (1 MiB where it does not).
fn l2_cache_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        let read = |index: usize, file: &str| {
            std::fs::read_to_string(format!(
                "/sys/devices/system/cpu/cpu0/cache/index{index}/{file}"
            ))
            .ok()
            .map(|text| text.trim().to_string())
        };
        (0..8)
            .find(|&index| read(index, "level").as_deref() == Some("2"))
            .and_then(|index| read(index, "size"))
            .and_then(|size| parse_cache_size(&size))
            .unwrap_or(1 << 20)
    })
}

/// `"2048K"`, `"1M"` or `"524288"` in bytes.
fn parse_cache_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.strip_suffix(['K', 'k']) {
        Some(digits) => (digits, 1 << 10),
        None => match text.strip_suffix(['M', 'm']) {
            Some(digits) => (digits, 1 << 20),
            None => (text, 1),
        },
    };
    digits.trim().parse::<usize>().ok().map(|n| n * unit)
}

/// Unfolds images `[first, first + count)` of `x` into `cols` (`patch_len x count*pixels`).
fn unfold_group(g: &ConvGeometry, x: &[f32], first: usize, count: usize, cols: &mut [f32]) {
    let image_len = g.in_channels * g.in_pixels();
    let pixels = g.out_pixels();
    let ld = count * pixels;
    for i in 0..count {
        let image = &x[(first + i) * image_len..][..image_len];
        if g.is_pointwise() {
            for c in 0..g.in_channels {
                copy_row(
                    &mut cols[c * ld + i * pixels..][..pixels],
                    &image[c * pixels..][..pixels],
                );
            }
        } else {
            im2col(g, image, cols, ld, i * pixels);
        }
    }
}

/// Copies the per-image `[channels, pixels]` blocks of `count` images starting at `first` into
/// one `[channels, count*pixels]` matrix.
fn gather(
    src: &[f32],
    channels: usize,
    pixels: usize,
    first: usize,
    count: usize,
    dst: &mut [f32],
) {
    let ld = count * pixels;
    for i in 0..count {
        let image = &src[(first + i) * channels * pixels..][..channels * pixels];
        for c in 0..channels {
            copy_row(
                &mut dst[c * ld + i * pixels..][..pixels],
                &image[c * pixels..][..pixels],
            );
        }
    }
}

/// The inverse of [`gather`] for a chunk of consecutive images: `[channels, count*pixels]` back
/// to `count` blocks of `[channels, pixels]`.
fn scatter(src: &[f32], channels: usize, pixels: usize, count: usize, dst: &mut [f32]) {
    let ld = count * pixels;
    for i in 0..count {
        for c in 0..channels {
            copy_row(
                &mut dst[(i * channels + c) * pixels..][..pixels],
                &src[c * ld + i * pixels..][..pixels],
            );
        }
    }
}

fn check_lengths(g: &ConvGeometry, x: usize, w: usize, y: usize) {
    assert!(g.is_valid(), "conv kernel: invalid geometry {g:?}");
    assert_eq!(x, g.input_len(), "conv kernel: input length");
    assert_eq!(w, g.weight_len(), "conv kernel: weight length");
    assert_eq!(y, g.output_len(), "conv kernel: output length");
}

/// The algorithms to choose among for `g`: im2col first, then im2col with cache-sized groups
/// where those are smaller, then those of `others` that apply, and how many there are (a fixed
/// array: no allocation on this per-layer path).
fn candidates<const OTHERS: usize>(
    g: &ConvGeometry,
    others: [(bool, ConvAlgorithm); OTHERS],
) -> ([ConvAlgorithm; 6], usize) {
    let mut candidates = [ConvAlgorithm::Im2col; 6];
    let mut count = 1;
    let smaller_groups = cache_sized_group(g) < group_size(g);
    for (applies, algorithm) in [(smaller_groups, ConvAlgorithm::Im2colL2)]
        .into_iter()
        .chain(others)
    {
        if applies {
            candidates[count] = algorithm;
            count += 1;
        }
    }
    (candidates, count)
}

/// Forward convolution: `y[n, o, p] = Σ_{c,ki,kj} w[o, c, ki, kj] · x[n, c, p·s + k - pad]`.
///
/// `x` is `[N, C_in, H, W]`, `w` is `[C_out, C_in, kh, kw]`, `y` is `[N, C_out, H_out, W_out]`,
/// all contiguous. Every element of `y` is written.
///
/// Stride-1 convolutions run by im2col (with either group size), by either direct kernel or
/// (3x3) by Winograd F(2x2, 3x3) or F(4x4, 3x3), whichever measured fastest for the shape on this machine
/// (see [`ConvAlgorithm`]); strided ones by im2col with either group size or the direct kernel
/// over output channels, measured the same way; unpadded stride-1 1x1 by gemm on the input.
pub fn conv2d_forward(g: &ConvGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    check_lengths(g, x.len(), w.len(), y.len());
    let (candidates, count) = candidates(
        g,
        [
            (supports_winograd(g), ConvAlgorithm::Winograd),
            (supports_winograd(g), ConvAlgorithm::Winograd4x4),
            (supports_direct(g), ConvAlgorithm::Direct),
            (supports_direct_channels(g), ConvAlgorithm::DirectChannels),
        ],
    );
    if count == 1 {
        im2col_forward(g, x, w, y, group_size(g));
        return;
    }
    run_chosen(
        g,
        ConvPass::Forward,
        &candidates[..count],
        y,
        |algorithm, out| match algorithm {
            ConvAlgorithm::Winograd => winograd_forward(g, x, w, out),
            ConvAlgorithm::Winograd4x4 => winograd_4x4_forward(g, x, w, out),
            ConvAlgorithm::Direct => direct_forward(g, x, w, out),
            ConvAlgorithm::DirectChannels => direct_channels_forward(g, x, w, out),
            ConvAlgorithm::Im2col => im2col_forward(g, x, w, out, group_size(g)),
            ConvAlgorithm::Im2colL2 => im2col_forward(g, x, w, out, cache_sized_group(g)),
        },
    );
}

/// [`conv2d_forward`] by im2col + gemm, `per_group` images per product.
fn im2col_forward(g: &ConvGeometry, x: &[f32], w: &[f32], y: &mut [f32], per_group: usize) {
    let pixels = g.out_pixels();
    let patch = g.patch_len();
    let image_in = g.in_channels * g.in_pixels();
    let image_out = g.out_channels * pixels;
    let weight = Mat::row_major(w, patch);
    y.par_chunks_mut(per_group * image_out)
        .enumerate()
        .for_each(|(index, out)| {
            let first = index * per_group;
            let count = out.len() / image_out;
            let columns = count * pixels;
            with_scratch(|s| {
                if count == 1 && g.is_pointwise() {
                    let image = Mat::row_major(&x[first * image_in..][..image_in], pixels);
                    matmul(out, g.out_channels, pixels, patch, weight, image, false);
                    return;
                }
                let cols = prefix(&mut s.cols, patch * columns);
                unfold_group(g, x, first, count, cols);
                let cols = Mat::row_major(cols, columns);
                if count == 1 {
                    matmul(out, g.out_channels, pixels, patch, weight, cols, false);
                } else {
                    let product = prefix(&mut s.gathered, g.out_channels * columns);
                    matmul(product, g.out_channels, columns, patch, weight, cols, false);
                    scatter(product, g.out_channels, pixels, count, out);
                }
            });
        });
}

/// Gradient of the input, written over `dx` (`[N, C_in, H, W]`).
///
/// Stride 1 (and `padding < kernel`): a forward convolution of `dy` with the kernel flipped
/// spatially and transposed (`w'[c, o, a, b] = w[o, c, kh-1-a, kw-1-b]`) and padding
/// `kernel - 1 - padding`, which needs no scatter. Otherwise `dx = col2im(wᵀ · dy)` (with
/// either group size) or [`direct_channels_input_grad`], whichever measured fastest for the
/// shape.
pub fn conv2d_input_grad(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    check_lengths(g, dx.len(), w.len(), dy.len());
    let transposed_is_forward = g.stride == [1, 1]
        && !g.is_pointwise()
        && g.padding[0] < g.kernel_height
        && g.padding[1] < g.kernel_width;
    if transposed_is_forward {
        let flipped = ConvGeometry {
            batch: g.batch,
            in_channels: g.out_channels,
            in_height: g.out_height(),
            in_width: g.out_width(),
            out_channels: g.in_channels,
            kernel_height: g.kernel_height,
            kernel_width: g.kernel_width,
            stride: [1, 1],
            padding: [
                g.kernel_height - 1 - g.padding[0],
                g.kernel_width - 1 - g.padding[1],
            ],
        };
        conv2d_forward(&flipped, dy, &flip_kernels(g, w), dx);
        return;
    }
    let (candidates, count) = candidates(
        g,
        [(
            supports_direct_channels_input_grad(g),
            ConvAlgorithm::DirectChannels,
        )],
    );
    if count == 1 {
        im2col_input_grad(g, dy, w, dx, group_size(g));
        return;
    }
    run_chosen(
        g,
        ConvPass::InputGrad,
        &candidates[..count],
        dx,
        |algorithm, out| match algorithm {
            ConvAlgorithm::DirectChannels => direct_channels_input_grad(g, dy, w, out),
            ConvAlgorithm::Im2colL2 => im2col_input_grad(g, dy, w, out, cache_sized_group(g)),
            // Not candidates here (`run_chosen` runs im2col for them).
            ConvAlgorithm::Im2col
            | ConvAlgorithm::Winograd
            | ConvAlgorithm::Winograd4x4
            | ConvAlgorithm::Direct => im2col_input_grad(g, dy, w, out, group_size(g)),
        },
    );
}

/// [`conv2d_input_grad`] of a layer that is not a forward convolution, as `col2im(wᵀ · dy)`,
/// `per_group` images per product.
fn im2col_input_grad(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32], per_group: usize) {
    let pixels = g.out_pixels();
    let patch = g.patch_len();
    let image_in = g.in_channels * g.in_pixels();
    let image_out = g.out_channels * pixels;
    let weight_t = Mat::row_major(w, patch).transposed();
    dx.par_chunks_mut(per_group * image_in)
        .enumerate()
        .for_each(|(index, grad_in)| {
            let first = index * per_group;
            let count = grad_in.len() / image_in;
            let columns = count * pixels;
            with_scratch(|s| {
                let grad_out: &[f32] = if count == 1 {
                    &dy[first * image_out..][..image_out]
                } else {
                    let buffer = prefix(&mut s.gathered, image_out * count);
                    gather(dy, g.out_channels, pixels, first, count, buffer);
                    buffer
                };
                let grad_out = Mat::row_major(grad_out, columns);
                if count == 1 && g.is_pointwise() {
                    matmul(
                        grad_in,
                        patch,
                        pixels,
                        g.out_channels,
                        weight_t,
                        grad_out,
                        false,
                    );
                    return;
                }
                let cols = prefix(&mut s.cols, patch * columns);
                matmul(
                    cols,
                    patch,
                    columns,
                    g.out_channels,
                    weight_t,
                    grad_out,
                    false,
                );
                if g.is_pointwise() {
                    scatter(cols, g.in_channels, pixels, count, grad_in);
                } else {
                    grad_in.fill(0.0);
                    for i in 0..count {
                        let image = &mut grad_in[i * image_in..][..image_in];
                        col2im_add(g, cols, columns, i * pixels, image);
                    }
                }
            });
        });
}

/// `w'[c, o, a, b] = w[o, c, kh-1-a, kw-1-b]`: the kernels flipped spatially, input and
/// output channels swapped. Written in order, one input channel's block per task (the weights
/// of a deep layer are megabytes; written in the source's order, every kernel went to another
/// cache line).
fn flip_kernels(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
    let (kh, kw) = (g.kernel_height, g.kernel_width);
    let taps = kh * kw;
    let mut flipped = vec![0.0f32; w.len()];
    flipped
        .par_chunks_mut(g.out_channels * taps)
        .enumerate()
        .for_each(|(c, block)| {
            for (o, kernel) in block.chunks_exact_mut(taps).enumerate() {
                let source = &w[(o * g.in_channels + c) * taps..][..taps];
                for (value, &tap) in kernel.iter_mut().zip(source.iter().rev()) {
                    *value = tap;
                }
            }
        });
    flipped
}

/// The reduction every weight gradient shares: `groups` split into one contiguous range per
/// thread, `sum_range` summing its range in order into a vector of `len` values, and the
/// ranges' sums added in range order. The result depends on the thread count (part of the
/// cached choice's key) but never on how rayon scheduled the work, so training runs are
/// reproducible.
pub(super) fn sum_in_ranges(
    groups: usize,
    len: usize,
    sum_range: impl Fn(Range<usize>) -> Vec<f32> + Sync + Send,
) -> Vec<f32> {
    let parts = rayon::current_num_threads().clamp(1, groups.max(1));
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|part| sum_range((part * groups / parts)..((part + 1) * groups / parts)))
        .collect();
    partials
        .into_iter()
        .reduce(|mut sum, partial| {
            for (s, p) in sum.iter_mut().zip(&partial) {
                *s += *p;
            }
            sum
        })
        .unwrap_or_else(|| vec![0.0; len])
}

/// Gradient of the weight: `dw = Σ_n dy_n · cols(x_n)ᵀ`, written over `dw`
/// (`[C_out, C_in, kh, kw]`).
///
/// The patches are unfolded pixel-major (im2row, `(ki, kj, c)` order), so the product runs in
/// the gemm micro-kernel's native column-major orientation (`m = C_in·kh·kw` contiguous, `k` =
/// pixels); the result, accumulated as `[C_out, kh, kw, C_in]`, is permuted once at the end.
///
/// 3x3 stride-1 layers run by im2col (with either group size), by Winograd F(3x3, 2x2), by
/// [`direct_weight_grad`] or by [`channels_weight_grad`], whichever measured fastest for the
/// shape (see [`ConvAlgorithm`]); other layers by im2col with either group size or by
/// [`channels_weight_grad`] where it applies, measured the same way.
pub fn conv2d_weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    check_lengths(g, x.len(), dw.len(), dy.len());
    let (candidates, count) = candidates(
        g,
        [
            (supports_winograd(g), ConvAlgorithm::Winograd),
            (supports_direct_weight_grad(g), ConvAlgorithm::Direct),
            (
                supports_channels_weight_grad(g),
                ConvAlgorithm::DirectChannels,
            ),
        ],
    );
    if count == 1 {
        im2col_weight_grad(g, x, dy, dw, group_size(g));
        return;
    }
    run_chosen(
        g,
        ConvPass::WeightGrad,
        &candidates[..count],
        dw,
        |algorithm, out| match algorithm {
            ConvAlgorithm::Winograd => winograd_weight_grad(g, x, dy, out),
            ConvAlgorithm::Direct => direct_weight_grad(g, x, dy, out),
            ConvAlgorithm::DirectChannels => channels_weight_grad(g, x, dy, out),
            // Not a weight-gradient candidate (`run_chosen` runs im2col for it).
            ConvAlgorithm::Im2col | ConvAlgorithm::Winograd4x4 => {
                im2col_weight_grad(g, x, dy, out, group_size(g))
            }
            ConvAlgorithm::Im2colL2 => {
                im2col_weight_grad(g, x, dy, out, cache_sized_group(g));
            }
        },
    );
}

/// [`conv2d_weight_grad`] by im2row + gemm, `per_group` images per product.
fn im2col_weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], dw: &mut [f32], per_group: usize) {
    let pixels = g.out_pixels();
    let patch = g.patch_len();
    let image_in = g.in_channels * g.in_pixels();
    let image_out = g.out_channels * pixels;
    let groups = g.batch.div_ceil(per_group);
    let weight_len = g.weight_len();
    let total = sum_in_ranges(groups, weight_len, |range| {
        let mut acc = vec![0.0f32; weight_len];
        for index in range {
            let first = index * per_group;
            let count = per_group.min(g.batch - first);
            let columns = count * pixels;
            with_scratch(|s| {
                let Scratch {
                    cols,
                    gathered,
                    nhwc,
                } = s;
                let grad_out: &[f32] = if count == 1 {
                    &dy[first * image_out..][..image_out]
                } else {
                    let buffer = prefix(gathered, image_out * count);
                    gather(dy, g.out_channels, pixels, first, count, buffer);
                    buffer
                };
                let rows = prefix(cols, columns * patch);
                let nhwc = prefix(nhwc, padded_nhwc_len(g));
                for i in 0..count {
                    let image = &x[(first + i) * image_in..][..image_in];
                    im2row(
                        g,
                        image,
                        nhwc,
                        &mut rows[i * pixels * patch..][..pixels * patch],
                    );
                }
                // lhs[kk, p] = rows[p * patch + kk]; rhs[p, o] = grad_out[o * columns + p];
                // dst[kk, o] = acc[o * patch + kk].
                let lhs = Mat {
                    data: rows,
                    row_stride: 1,
                    col_stride: patch,
                };
                let rhs = Mat {
                    data: grad_out,
                    row_stride: 1,
                    col_stride: columns,
                };
                matmul_strided(
                    &mut acc,
                    1,
                    patch,
                    patch,
                    g.out_channels,
                    columns,
                    lhs,
                    rhs,
                    true,
                );
            });
        }
        acc
    });
    // [C_out, kh, kw, C_in] -> [C_out, C_in, kh, kw].
    let (kh, kw, channels) = (g.kernel_height, g.kernel_width, g.in_channels);
    for o in 0..g.out_channels {
        for a in 0..kh {
            for b in 0..kw {
                for c in 0..channels {
                    dw[((o * channels + c) * kh + a) * kw + b] =
                        total[((o * kh + a) * kw + b) * channels + c];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cache_size;

    #[test]
    fn cache_sizes_parse_as_linux_writes_them() {
        assert_eq!(parse_cache_size("2048K"), Some(2 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("524288"), Some(524_288));
        assert_eq!(parse_cache_size("many"), None);
    }
}
