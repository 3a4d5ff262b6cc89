//! Direct weight gradient of 3x3 stride-1 layers: no unfolded patch matrix, the sums formed in
//! registers straight from zero-padded copies of each image and its output gradient.
//!
//! `dW[o, c, a, b] = Σ_n Σ_{i, j} dy[n, o, i, j] · x̃[n, c, i + a, j + b]`, with `x̃` the input
//! padded by `padding` zeros on each side.
//!
//! im2row + gemm writes every input value nine times into the patch matrix before the product;
//! on layers with few channels the copy costs as much as the product (BENCHMARKS.md). Here each
//! image's output gradient is laid out on the padded input's grid (`dy[o, i, j]` at position
//! `p = i·cols + j`, zeros in the two extra columns), so that for every tap
//! `dW[o, c, a, b] = Σ_p dy[o, p] · x̃[c, p + a·cols + b]`: one sweep along a flat run of
//! positions, with no per-row loop and no waste on maps narrower than a vector. For a block of
//! [`CHANNELS`] output channels, one input channel and one kernel row `a`, a register tile of
//! `CHANNELS x 3` vectors of `T` lanes runs along the sweep: per step, `CHANNELS` vector loads
//! of `dy` and three shifted loads of `x̃` feed `3 · CHANNELS` multiply-adds. The tile's vectors
//! carry over from image to image in memory, and their lanes are added only once, at the end.
//! `T` is 16 with AVX-512, whose 32 registers hold the tiles of two kernel rows at once (24
//! accumulators, 4 gradients and 2 inputs: each step's gradient loads serve 24 multiply-adds),
//! and 8 otherwise (one row; with 16 registers, the gradients are read by the multiply-adds
//! from memory).
//!
//! Reproducibility: the batch is split into one contiguous range of images per thread, each
//! range summed image by image in order, the ranges' sums added in range order, and every sum
//! inside an image runs in a fixed order; the result depends on the thread count and the
//! instruction set (both part of the cached choice's key in [`super::plan`]), never on how the
//! threads were scheduled.

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
use super::direct::Fused;
use super::direct::{CHANNELS, Grid, Layout, MultiplyAdd, PaddedImage, Separate};
use super::geometry::ConvGeometry;
use super::kernels::sum_in_ranges;
#[cfg(target_arch = "x86_64")]
use crate::kernels::isa::{has_avx2_fma, has_avx512};

/// Taps per kernel row (the kernel is 3x3).
const TAPS: usize = 3;

/// The most memory one thread's vector accumulators may take (`C_out·C_in·9` vectors of 16
/// lanes at most): 64 input by 64 output channels fit; deeper layers, whose few positions per
/// image could not pay for sweeping that much memory per image, stay with the other algorithms.
const MAX_ACCUMULATOR_BYTES: usize = 4 << 20;

/// Whether [`direct_weight_grad`] computes `g`'s weight gradient: a 3x3 kernel with stride 1,
/// and at most 64 x 64 channels (more exactly, within `MAX_ACCUMULATOR_BYTES`, 4 MiB, of
/// accumulators).
pub fn supports_direct_weight_grad(g: &ConvGeometry) -> bool {
    let accumulator_bytes = g.out_channels.next_multiple_of(CHANNELS)
        * g.in_channels
        * TAPS
        * TAPS
        * 16
        * size_of::<f32>();
    g.is_valid()
        && g.stride == [1, 1]
        && g.kernel_height == TAPS
        && g.kernel_width == TAPS
        && accumulator_bytes <= MAX_ACCUMULATOR_BYTES
}

thread_local! {
    static PADDED_INPUT: RefCell<PaddedImage> = const { RefCell::new(PaddedImage::new()) };
    static PADDED_GRAD: RefCell<PaddedImage> = const { RefCell::new(PaddedImage::new()) };
}

/// Weight gradient of a 3x3 stride-1 layer, computed directly: the same result as
/// [`super::conv2d_weight_grad`] up to rounding, for finite inputs (the zero gradient on the
/// padded grid's two extra columns meets real input values, so an infinite input there gives
/// NaN where the other algorithms give a finite sum). `x [N, C_in, H, W]`, `dy [N, C_out, H_out,
/// W_out]`, `dw [C_out, C_in, 3, 3]`, contiguous; every element of `dw` is written.
pub fn direct_weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    assert!(
        supports_direct_weight_grad(g),
        "direct weight gradient: unsupported geometry {g:?}"
    );
    assert_eq!(
        x.len(),
        g.input_len(),
        "direct weight gradient: input length"
    );
    assert_eq!(
        dy.len(),
        g.output_len(),
        "direct weight gradient: output length"
    );
    assert_eq!(
        dw.len(),
        g.weight_len(),
        "direct weight gradient: weight length"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            return weight_grad_with::<16>(g, x, dy, dw, Isa::Avx512);
        }
        if has_avx2_fma() {
            return weight_grad_with::<8>(g, x, dy, dw, Isa::Avx2);
        }
    }
    weight_grad_with::<8>(g, x, dy, dw, Isa::Plain);
}

/// The instructions the per-image sums are compiled for (checked by [`direct_weight_grad`]).
#[derive(Clone, Copy)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Plain,
}

/// Where one image's padded input and output gradient lie, for vectors of `T` lanes.
#[derive(Clone, Copy)]
struct Planes {
    /// The padded input: `W_out + 2` columns, and rows enough for the sweep's last loads.
    layout: Layout,
    /// Positions swept per image: `H_out · cols` rounded up to whole vectors.
    span: usize,
}

impl Planes {
    fn new<const T: usize>(g: &ConvGeometry) -> Self {
        let layout = Layout::of(g, 1, 1);
        let span = (layout.out_height * layout.cols).next_multiple_of(T);
        // The last load of the sweep ends at span + 2·cols + 2.
        let rows = (span + (TAPS - 1) * (layout.cols + 1)).div_ceil(layout.cols);
        Self {
            layout: layout.with_rows(rows),
            span,
        }
    }

    fn blocks(&self) -> usize {
        self.layout.out_channels.div_ceil(CHANNELS)
    }

    /// Where one image's output gradient goes: `[blocks·CHANNELS, span]` with `dy[o, i, j]` at
    /// `i·cols + j`, zeros in the extra columns, the tail of the span and the extra channels.
    fn gradient_grid(&self) -> Grid {
        Grid {
            planes: self.blocks() * CHANNELS,
            plane_len: self.span,
            cols: self.layout.cols,
            offset: 0,
            height: self.layout.out_height,
            width: self.layout.out_width,
        }
    }
}

/// The vector accumulators of one (block, input channel, kernel row).
type Tile<const T: usize> = [[[f32; T]; TAPS]; CHANNELS];

fn weight_grad_with<const T: usize>(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    isa: Isa,
) {
    let planes = Planes::new::<T>(g);
    let layout = planes.layout;
    // [blocks, C_in, 3] tiles: output channels rounded up to whole blocks (the extra ones stay
    // zero and are dropped).
    let tiles_len = planes.blocks() * g.in_channels * TAPS;
    let image_in = g.in_channels * g.in_pixels();
    let image_out = g.out_channels * g.out_pixels();
    let sums_len = tiles_len * CHANNELS * TAPS;
    let total = sum_in_ranges(g.batch, sums_len, |images| {
        let mut tiles: Vec<Tile<T>> = vec![[[[0.0; T]; TAPS]; CHANNELS]; tiles_len];
        for n in images {
            let image = &x[n * image_in..][..image_in];
            let grad = &dy[n * image_out..][..image_out];
            PADDED_INPUT.with(|input| {
                PADDED_GRAD.with(|padded_grad| {
                    let input = &mut *input.borrow_mut();
                    let input = input.fill(g, &layout, image);
                    let padded_grad = &mut *padded_grad.borrow_mut();
                    let padded_grad = padded_grad.place(planes.gradient_grid(), grad);
                    accumulate_image::<T>(isa, &planes, input, padded_grad, &mut tiles);
                });
            });
        }
        add_lanes::<T>(&tiles)
    });
    write_weight_grad(g, &total, dw);
}

/// The lanes of each vector accumulator added in order: `[blocks, C_in, 3, CHANNELS, 3]`.
fn add_lanes<const T: usize>(tiles: &[Tile<T>]) -> Vec<f32> {
    tiles
        .as_flattened()
        .as_flattened()
        .iter()
        .map(|lanes| lanes.iter().sum())
        .collect()
}

/// `sums [blocks, C_in, 3 (a), CHANNELS, 3 (b)]` into `dw [C_out, C_in, 3, 3]`.
fn write_weight_grad(g: &ConvGeometry, sums: &[f32], dw: &mut [f32]) {
    let channels = g.in_channels;
    for o in 0..g.out_channels {
        let (block, lane) = (o / CHANNELS, o % CHANNELS);
        for c in 0..channels {
            for a in 0..TAPS {
                let from = (((block * channels + c) * TAPS + a) * CHANNELS + lane) * TAPS;
                let to = ((o * channels + c) * TAPS + a) * TAPS;
                dw[to..to + TAPS].copy_from_slice(&sums[from..from + TAPS]);
            }
        }
    }
}

/// Adds one image's products to the vector accumulators `tiles`, with the widest instructions
/// `isa` names.
fn accumulate_image<const T: usize>(
    isa: Isa,
    planes: &Planes,
    input: &[f32],
    grad: &[f32],
    tiles: &mut [Tile<T>],
) {
    match isa {
        // SAFETY: `direct_weight_grad` chose this variant after checking the CPU has
        // AVX-512F, AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { accumulate_image_avx512::<T>(planes, input, grad, tiles) },
        // SAFETY: `direct_weight_grad` chose this variant after checking for AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { accumulate_image_avx2::<T>(planes, input, grad, tiles) },
        Isa::Plain => accumulate_blocks::<T, Separate>(planes, input, grad, tiles),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn accumulate_image_avx512<const T: usize>(
    planes: &Planes,
    input: &[f32],
    grad: &[f32],
    tiles: &mut [Tile<T>],
) {
    accumulate_blocks::<T, Fused>(planes, input, grad, tiles);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn accumulate_image_avx2<const T: usize>(
    planes: &Planes,
    input: &[f32],
    grad: &[f32],
    tiles: &mut [Tile<T>],
) {
    accumulate_blocks::<T, Fused>(planes, input, grad, tiles);
}

/// Every (output-channel block, input channel, kernel row) of one image.
#[inline(always)]
fn accumulate_blocks<const T: usize, M: MultiplyAdd>(
    planes: &Planes,
    input: &[f32],
    grad: &[f32],
    tiles: &mut [Tile<T>],
) {
    let layout = &planes.layout;
    let mut tiles = tiles.chunks_exact_mut(TAPS);
    for block_grad in grad.chunks_exact(CHANNELS * planes.span) {
        for plane in input.chunks_exact(layout.plane()) {
            let [first, second, third] = tiles
                .next()
                .expect("one tile per block, channel and kernel row")
            else {
                unreachable!("chunks of TAPS tiles");
            };
            if T >= 16 {
                accumulate_kernel_rows::<T, M, 2>(planes, plane, block_grad, 0, [first, second]);
            } else {
                // 16 registers: two rows' 24 accumulators would spill.
                accumulate_kernel_rows::<T, M, 1>(planes, plane, block_grad, 0, [first]);
                accumulate_kernel_rows::<T, M, 1>(planes, plane, block_grad, 1, [second]);
            }
            accumulate_kernel_rows::<T, M, 1>(planes, plane, block_grad, 2, [third]);
        }
    }
}

/// Adds `dy[o, p] · x̃[c, p + (a + r)·cols + b]` over the image's positions `p` to the lanes of
/// `tiles[r][o][b]`, for the block's [`CHANNELS`] output channels `o`, the three taps `b` and
/// `R` kernel rows from `a`. With AVX-512, two rows at once share each step's gradient loads:
/// 24 accumulators, 4 gradients and 2 inputs in its 32 registers (the weight gradient of
/// `w16-l2-3x3` 15% faster than one row at a time, BENCHMARKS.md).
#[inline(always)]
fn accumulate_kernel_rows<const T: usize, M: MultiplyAdd, const R: usize>(
    planes: &Planes,
    plane: &[f32],
    block_grad: &[f32],
    a: usize,
    tiles: [&mut Tile<T>; R],
) {
    let (span, cols) = (planes.span, planes.layout.cols);
    // The last load starts at span - T + 2·cols + 2; `Planes::new` sized the plane for it.
    assert!(a + R <= TAPS && span % T == 0);
    assert!(plane.len() >= span + (TAPS - 1) * (cols + 1));
    assert!(block_grad.len() >= CHANNELS * span);
    let mut acc: [Tile<T>; R] = std::array::from_fn(|r| *tiles[r]);
    for p in (0..span).step_by(T) {
        // SAFETY: lane·span + p + T <= CHANNELS·span (asserted above).
        let grads: [&[f32; T]; CHANNELS] = std::array::from_fn(|lane| unsafe {
            &*block_grad.as_ptr().add(lane * span + p).cast::<[f32; T]>()
        });
        // Indexed loops: written with iterators over `acc`, LLVM kept the accumulators in
        // memory (15x slower).
        #[allow(clippy::needless_range_loop)]
        for b in 0..TAPS {
            for r in 0..R {
                let offset = (a + r) * cols;
                // SAFETY: p + offset + b + T <= span + 2·cols + 2 <= plane length (asserted
                // above).
                let inputs = unsafe { &*plane.as_ptr().add(p + offset + b).cast::<[f32; T]>() };
                for (lane, grad) in grads.iter().enumerate() {
                    for ((value, d), x) in acc[r][lane][b].iter_mut().zip(*grad).zip(inputs) {
                        *value = M::multiply_add(*value, *d, *x);
                    }
                }
            }
        }
    }
    for (tile, acc) in tiles.into_iter().zip(acc) {
        *tile = acc;
    }
}
