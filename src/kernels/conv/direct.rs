//! Direct convolution for stride-1 layers: no unfolded patch matrix, the products formed in
//! registers straight from a zero-padded copy of each image.
//!
//! `y[n, o, i, j] = Σ_{c, a, b} w[o, c, a, b] · x̃[n, c, i + a, j + b]`, with `x̃` the input
//! padded by `padding` zeros on each side.
//!
//! im2col + gemm writes every input value `kh·kw` times into the patch matrix, and gemm then
//! packs that matrix once more; on layers with few channels (16-64) the copies cost about as
//! much as the products, and oneDNN's direct kernels run 2-3x faster there (BENCHMARKS.md).
//! Here a register tile of [`CHANNELS`] output channels by `R` output rows by `T` output
//! columns accumulates over every input channel and kernel tap: per tap, `R` vector loads of
//! the padded input and [`CHANNELS`] weight broadcasts feed `CHANNELS · R` vector
//! multiply-adds. The weights are repacked once per call so that a tap's [`CHANNELS`] weights
//! are adjacent. The tile is compiled for AVX-512, for AVX2 + FMA and without either, and the
//! widest the CPU has runs. Each output is one sum in a fixed order (channels, then kernel
//! rows, then kernel columns), so results do not depend on threads.

use std::cell::RefCell;

use rayon::prelude::*;

use super::geometry::ConvGeometry;
#[cfg(target_arch = "x86_64")]
use crate::kernels::isa::has_avx2_fma;
use crate::kernels::isa::has_avx512;

/// Output channels per register tile.
pub(super) const CHANNELS: usize = 4;

/// Whether [`direct_forward`] computes `g`: stride 1 and any kernel but an unpadded 1x1 (those
/// read the input directly as a matrix, with no unfolding, and stay with gemm).
pub fn supports_direct(g: &ConvGeometry) -> bool {
    g.is_valid() && g.stride == [1, 1] && !g.is_pointwise()
}

thread_local! {
    static PADDED: RefCell<PaddedImage> = const { RefCell::new(PaddedImage::new()) };
}

/// The tile shape and padded-image layout of one convolution.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub(super) channels: usize,
    taps: usize,
    kernel_height: usize,
    kernel_width: usize,
    pub(super) out_channels: usize,
    pub(super) out_height: usize,
    pub(super) out_width: usize,
    /// Rows and columns of the padded image, rounded up so that whole tiles stay inside.
    rows: usize,
    pub(super) cols: usize,
}

impl Layout {
    pub(super) fn of(g: &ConvGeometry, tile_rows: usize, tile_cols: usize) -> Self {
        let (out_height, out_width) = (g.out_height(), g.out_width());
        Self {
            channels: g.in_channels,
            taps: g.kernel_height * g.kernel_width,
            kernel_height: g.kernel_height,
            kernel_width: g.kernel_width,
            out_channels: g.out_channels,
            out_height,
            out_width,
            rows: out_height.next_multiple_of(tile_rows) + g.kernel_height - 1,
            cols: out_width.next_multiple_of(tile_cols) + g.kernel_width - 1,
        }
    }

    /// The whole zero-padded input of a layer of any stride, one tile per output pixel: rows
    /// and columns enough for the padded image and for every tap of every output pixel.
    pub(super) fn padded_input(g: &ConvGeometry) -> Self {
        let span = |input: usize, pad: usize, out: usize, stride: usize, kernel: usize| {
            (input + 2 * pad).max((out - 1) * stride + kernel)
        };
        let [pad_h, pad_w] = g.padding;
        let [stride_h, stride_w] = g.stride;
        let (out_height, out_width) = (g.out_height(), g.out_width());
        Self {
            rows: span(g.in_height, pad_h, out_height, stride_h, g.kernel_height),
            cols: span(g.in_width, pad_w, out_width, stride_w, g.kernel_width),
            ..Self::of(g, 1, 1)
        }
    }

    /// The same layout with `rows` rows per padded plane (at least the image's padded height;
    /// the rest zeros), for kernels that read past the last row.
    pub(super) fn with_rows(self, rows: usize) -> Self {
        assert!(rows >= self.out_height + self.kernel_height - 1);
        Self { rows, ..self }
    }

    pub(super) fn plane(&self) -> usize {
        self.rows * self.cols
    }
}

/// Forward convolution of a stride-1 layer, computed directly: the same result as
/// [`super::conv2d_forward`] up to rounding. `x [N, C_in, H, W]`, `w [C_out, C_in, kh, kw]`,
/// `y [N, C_out, H_out, W_out]`, contiguous; every element of `y` is written.
pub fn direct_forward(g: &ConvGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    assert!(
        supports_direct(g),
        "direct conv: unsupported geometry {g:?}"
    );
    assert_eq!(x.len(), g.input_len(), "direct conv: input length");
    assert_eq!(w.len(), g.weight_len(), "direct conv: weight length");
    assert_eq!(y.len(), g.output_len(), "direct conv: output length");
    let weights = repack_weights(g, w);
    let three = g.kernel_height == 3 && g.kernel_width == 3;
    let width = g.out_width();
    // Eight vector accumulators keep both multiply-add units busy through their latency: with
    // AVX-512, one row of 32 columns (two registers per channel) on maps wider than 16, two
    // rows of 16 on maps 9-16 wide; with 8-lane AVX2, one row of 16. Maps 8 wide or less take
    // two rows of 8 columns.
    let tile = if width <= 8 {
        (2, 8)
    } else if has_avx512() {
        if width > 16 { (1, 32) } else { (2, 16) }
    } else {
        (1, 16)
    };
    match (tile, three) {
        ((1, 32), true) => forward_tiled::<1, 32, ThreeByThree>(g, x, &weights, y),
        ((1, 32), false) => forward_tiled::<1, 32, AnySize>(g, x, &weights, y),
        ((2, 16), true) => forward_tiled::<2, 16, ThreeByThree>(g, x, &weights, y),
        ((2, 16), false) => forward_tiled::<2, 16, AnySize>(g, x, &weights, y),
        ((1, 16), true) => forward_tiled::<1, 16, ThreeByThree>(g, x, &weights, y),
        ((1, 16), false) => forward_tiled::<1, 16, AnySize>(g, x, &weights, y),
        (_, true) => forward_tiled::<2, 8, ThreeByThree>(g, x, &weights, y),
        (_, false) => forward_tiled::<2, 8, AnySize>(g, x, &weights, y),
    }
}

/// [`direct_forward`] with tiles of `R` rows by `T` columns, one image per task.
fn forward_tiled<const R: usize, const T: usize, K: KernelSize>(
    g: &ConvGeometry,
    x: &[f32],
    weights: &[f32],
    y: &mut [f32],
) {
    let layout = Layout::of(g, R, T);
    let image_in = g.in_channels * g.in_pixels();
    let image_out = g.out_channels * g.out_pixels();
    y.par_chunks_mut(image_out)
        .zip(x.par_chunks(image_in))
        .for_each(|(out, image)| {
            PADDED.with(|cell| {
                let padded = &mut *cell.borrow_mut();
                let padded = padded.fill(g, &layout, image);
                convolve_image::<R, T, K>(&layout, padded, weights, out);
            });
        });
}

/// `w [C_out, C_in, kh, kw]` as `[C_out / CHANNELS, C_in, kh·kw, CHANNELS]`, the last block of
/// output channels completed with zeros.
fn repack_weights(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
    let taps = g.kernel_height * g.kernel_width;
    let blocks = g.out_channels.div_ceil(CHANNELS);
    let mut packed = vec![0.0f32; blocks * g.in_channels * taps * CHANNELS];
    for o in 0..g.out_channels {
        let (block, lane) = (o / CHANNELS, o % CHANNELS);
        for c in 0..g.in_channels {
            for tap in 0..taps {
                packed[((block * g.in_channels + c) * taps + tap) * CHANNELS + lane] =
                    w[(o * g.in_channels + c) * taps + tap];
            }
        }
    }
    packed
}

/// Where images go in a zero-filled buffer: `planes` planes of `plane_len` values, rows of
/// `cols` values, pixel `(0, 0)` of each `height x width` source plane at `offset`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Grid {
    pub(super) planes: usize,
    pub(super) plane_len: usize,
    pub(super) cols: usize,
    pub(super) offset: usize,
    pub(super) height: usize,
    pub(super) width: usize,
}

impl Grid {
    /// `g`'s input padded into `layout`: the image at `(pad_h, pad_w)` of each plane.
    pub(super) fn padded_input(g: &ConvGeometry, layout: &Layout) -> Self {
        let [pad_h, pad_w] = g.padding;
        assert!(
            pad_h + g.in_height <= layout.rows && pad_w + g.in_width <= layout.cols,
            "padded image: {} x {} with padding {pad_h} x {pad_w} outside planes of {} x {}",
            g.in_height,
            g.in_width,
            layout.rows,
            layout.cols
        );
        Self {
            planes: layout.channels,
            plane_len: layout.plane(),
            cols: layout.cols,
            offset: pad_h * layout.cols + pad_w,
            height: g.in_height,
            width: g.in_width,
        }
    }
}

/// A thread's zero-filled buffer holding one image at a time, placed on a [`Grid`] (a padded
/// input, or an output gradient laid onto the padded input's grid).
///
/// The zeros depend only on the grid, and every image placed on it overwrites the same cells:
/// so the buffer is zeroed when the grid changes, and each image then costs the copy of its
/// own rows. (Zeroing the borders per image, as this code first did, was about 1% of a
/// training step in `memset` alone.)
pub(super) struct PaddedImage {
    values: Vec<f32>,
    /// The grid the zeros are for.
    zeroed_for: Option<Grid>,
}

impl PaddedImage {
    pub(super) const fn new() -> Self {
        Self {
            values: Vec::new(),
            zeroed_for: None,
        }
    }

    /// `image [C_in, H, W]` padded into `layout`.
    pub(super) fn fill(&mut self, g: &ConvGeometry, layout: &Layout, image: &[f32]) -> &[f32] {
        self.place(Grid::padded_input(g, layout), image)
    }

    /// `source` (`[planes, height, width]`, or fewer planes: the rest stay zero) on `grid`.
    pub(super) fn place(&mut self, grid: Grid, source: &[f32]) -> &[f32] {
        assert!(
            grid.width <= grid.cols
                && grid.offset + (grid.height.max(1) - 1) * grid.cols + grid.width
                    <= grid.plane_len,
            "padded image: {} x {} planes outside the grid",
            grid.height,
            grid.width
        );
        if self.zeroed_for != Some(grid) {
            self.values.clear();
            self.values.resize(grid.planes * grid.plane_len, 0.0);
            self.zeroed_for = Some(grid);
        }
        let source_plane = (grid.height * grid.width).max(1);
        for (plane, source) in self
            .values
            .chunks_exact_mut(grid.plane_len)
            .zip(source.chunks_exact(source_plane))
        {
            for (i, line) in source.chunks_exact(grid.width.max(1)).enumerate() {
                copy_row(
                    &mut plane[grid.offset + i * grid.cols..][..line.len()],
                    line,
                );
            }
        }
        &self.values
    }
}

impl Default for PaddedImage {
    fn default() -> Self {
        Self::new()
    }
}

/// `dst = src`, in blocks of 8 that compile to vector moves: image rows and planes of the
/// deep layers are short (4-64 values), where a `memcpy` call per row costs more than the copy.
#[inline(always)]
pub(super) fn copy_row(dst: &mut [f32], src: &[f32]) {
    let mut blocks = dst.chunks_exact_mut(8);
    let mut sources = src.chunks_exact(8);
    for (d, s) in (&mut blocks).zip(&mut sources) {
        let d: &mut [f32; 8] = d.try_into().expect("8 values");
        *d = s.try_into().expect("8 values");
    }
    for (d, s) in blocks.into_remainder().iter_mut().zip(sources.remainder()) {
        *d = *s;
    }
}

/// One image's output `[C_out, H_out, W_out]`, with the widest instructions this CPU has.
fn convolve_image<const R: usize, const T: usize, K: KernelSize>(
    layout: &Layout,
    padded: &[f32],
    weights: &[f32],
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA (has_avx512 checked).
            return unsafe { convolve_image_avx512::<R, T, K>(layout, padded, weights, out) };
        }
        if has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (has_avx2_fma checked).
            return unsafe { convolve_image_avx2::<R, T, K>(layout, padded, weights, out) };
        }
    }
    convolve_tiles::<R, T, Separate, K>(layout, padded, weights, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn convolve_image_avx512<const R: usize, const T: usize, K: KernelSize>(
    layout: &Layout,
    padded: &[f32],
    weights: &[f32],
    out: &mut [f32],
) {
    convolve_tiles::<R, T, Fused, K>(layout, padded, weights, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn convolve_image_avx2<const R: usize, const T: usize, K: KernelSize>(
    layout: &Layout,
    padded: &[f32],
    weights: &[f32],
    out: &mut [f32],
) {
    convolve_tiles::<R, T, Fused, K>(layout, padded, weights, out);
}

/// `acc + a·b`: one fused instruction where the CPU has FMA, else a multiply and an add
/// (`f32::mul_add` without FMA hardware is a slow library call).
pub(super) trait MultiplyAdd {
    fn multiply_add(acc: f32, a: f32, b: f32) -> f32;
}

pub(super) struct Fused;
pub(super) struct Separate;

impl MultiplyAdd for Fused {
    #[inline(always)]
    fn multiply_add(acc: f32, a: f32, b: f32) -> f32 {
        a.mul_add(b, acc)
    }
}

impl MultiplyAdd for Separate {
    #[inline(always)]
    fn multiply_add(acc: f32, a: f32, b: f32) -> f32 {
        acc + a * b
    }
}

/// Every `CHANNELS x R x T` output tile of one image.
#[inline(always)]
fn convolve_tiles<const R: usize, const T: usize, M: MultiplyAdd, K: KernelSize>(
    layout: &Layout,
    padded: &[f32],
    weights: &[f32],
    out: &mut [f32],
) {
    let block_len = layout.channels * layout.taps * CHANNELS;
    debug_assert_eq!(K::of(layout), (layout.kernel_height, layout.kernel_width));
    let out_plane = layout.out_height * layout.out_width;
    for (block, block_weights) in weights.chunks_exact(block_len).enumerate() {
        for top in (0..layout.out_height).step_by(R) {
            for left in (0..layout.out_width).step_by(T) {
                let acc = tile::<R, T, M, K>(layout, padded, block_weights, top, left);
                for (lane, rows) in acc.iter().enumerate() {
                    let o = block * CHANNELS + lane;
                    if o >= layout.out_channels {
                        break;
                    }
                    for (r, values) in rows.iter().enumerate() {
                        if top + r >= layout.out_height {
                            break;
                        }
                        let width = T.min(layout.out_width - left);
                        let at = o * out_plane + (top + r) * layout.out_width + left;
                        out[at..at + width].copy_from_slice(&values[..width]);
                    }
                }
            }
        }
    }
}

/// The kernel's size: fixed at 3x3 (the loops over taps unroll), or read from the layout.
trait KernelSize {
    fn of(layout: &Layout) -> (usize, usize);
}

struct ThreeByThree;
struct AnySize;

impl KernelSize for ThreeByThree {
    #[inline(always)]
    fn of(_: &Layout) -> (usize, usize) {
        (3, 3)
    }
}

impl KernelSize for AnySize {
    #[inline(always)]
    fn of(layout: &Layout) -> (usize, usize) {
        (layout.kernel_height, layout.kernel_width)
    }
}

/// The output tile at row `top`, column `left` of one block of output channels.
#[inline(always)]
fn tile<const R: usize, const T: usize, M: MultiplyAdd, K: KernelSize>(
    layout: &Layout,
    padded: &[f32],
    block_weights: &[f32],
    top: usize,
    left: usize,
) -> [[[f32; T]; R]; CHANNELS] {
    let (kh, kw) = K::of(layout);
    let mut acc = [[[0.0f32; T]; R]; CHANNELS];
    let tap_block = kh * kw * CHANNELS;
    // Every load below starts at most here; `Layout::of` sized the planes for whole tiles.
    let last_start = (top + R - 1 + kh - 1) * layout.cols + left + kw - 1;
    assert!(
        last_start + T <= layout.plane(),
        "direct conv: tile outside the padded plane"
    );
    assert_eq!(block_weights.len(), layout.channels * tap_block);
    for (plane, channel_weights) in padded
        .chunks_exact(layout.plane())
        .zip(block_weights.chunks_exact(tap_block))
    {
        for a in 0..kh {
            for b in 0..kw {
                // SAFETY: `channel_weights` holds kh·kw blocks of CHANNELS (chunks_exact).
                let w = unsafe {
                    &*channel_weights
                        .as_ptr()
                        .add((a * kw + b) * CHANNELS)
                        .cast::<[f32; CHANNELS]>()
                };
                let inputs: [&[f32; T]; R] = std::array::from_fn(|r| {
                    let start = (top + r + a) * layout.cols + left + b;
                    // SAFETY: start + T <= last_start + T <= plane length (asserted above).
                    unsafe { &*plane.as_ptr().add(start).cast::<[f32; T]>() }
                });
                for (lane, weight) in w.iter().enumerate() {
                    for (row, x) in acc[lane].iter_mut().zip(inputs) {
                        for (value, input) in row.iter_mut().zip(x) {
                            *value = M::multiply_add(*value, *weight, *input);
                        }
                    }
                }
            }
        }
    }
    acc
}
