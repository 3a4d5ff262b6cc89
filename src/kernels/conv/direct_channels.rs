//! Direct convolution with the output channels in the vector lanes: for the deep layers on
//! small maps (8 x 8, 4 x 4), where a vector along an image row has too few pixels to fill,
//! and for strided layers.
//!
//! `y[n, o, i, j] = Σ_{c, a, b} w[o, c, a, b] · x̃[n, c, i·s + a, j·s + b]`, with `x̃` the
//! input padded by `padding` zeros on each side and `s` the stride.
//!
//! [`super::direct_forward`] puts neighbouring output pixels of one row in a vector: on a 4 x 4
//! map half of each 8-lane vector is padding, and the 16-lane vectors of AVX-512 never fill.
//! Here a vector holds `V` neighbouring output channels of one pixel instead (the layout oneDNN
//! uses for these layers), so the map's size does not matter: a register tile of [`VECTORS`]
//! vectors of output channels by `P` output pixels (anywhere in the image: the tile's pixels
//! are a list of offsets into the padded image, so a tile runs on from one row into the next,
//! and a stride only spaces the offsets) accumulates over every input channel and kernel tap.
//! Per tap, [`VECTORS`] vector loads of the weights and `P` broadcasts of input values feed
//! `VECTORS · P` vector multiply-adds. The tile's sums are stored channel-last and transposed
//! once per image into `[C_out, H_out, W_out]`.
//!
//! A tile runs only the taps that read inside the image for its pixels
//! ([`super::border_classes`]): the pixels are grouped by their valid taps across several
//! images, which on 4 x 4 maps with 3x3 kernels skips the 31% of the products that would
//! multiply padding zeros. Each output is one sum in a fixed order (channels, then taps), and
//! the taps a tile runs beyond a pixel's own add exact zeros, so results depend neither on the
//! threads nor on how the pixels were grouped into tiles (tested bit for bit).

use std::cell::RefCell;

use rayon::prelude::*;

use super::border_classes::PixelTiles;
use super::direct::{Grid, Layout, MultiplyAdd, PaddedImage, Separate};
use super::geometry::ConvGeometry;
use super::kernels::prefix;
#[cfg(target_arch = "x86_64")]
use crate::kernels::isa::{has_avx2_fma, has_avx512};

/// Vectors of output channels per register tile.
const VECTORS: usize = 2;

/// The most values a tile's sums take (AVX-512: 8 pixels x 32 channels), so the per-group
/// loop keeps them on the stack.
const MAX_TILE: usize = 8 * VECTORS * 16;

/// Output pixels per task that [`images_per_task`] aims for.
const GROUP_PIXELS: usize = 512;

/// Whether [`direct_channels_forward`] computes `g`: any stride and kernel but an unpadded
/// stride-1 1x1 (that one reads the input directly as a matrix and stays with gemm).
pub fn supports_direct_channels(g: &ConvGeometry) -> bool {
    g.is_valid() && !g.is_pointwise()
}

thread_local! {
    static PADDED: RefCell<PaddedImage> = const { RefCell::new(PaddedImage::new()) };
    static CHANNEL_LAST: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Forward convolution with the output channels in the vector lanes: the
/// same result as [`super::conv2d_forward`] up to rounding. `x [N, C_in, H, W]`, `w [C_out,
/// C_in, kh, kw]`, `y [N, C_out, H_out, W_out]`, contiguous; every element of `y` is written.
pub fn direct_channels_forward(g: &ConvGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    assert!(
        supports_direct_channels(g),
        "direct conv over channels: unsupported geometry {g:?}"
    );
    assert_eq!(
        x.len(),
        g.input_len(),
        "direct conv over channels: input length"
    );
    assert_eq!(
        w.len(),
        g.weight_len(),
        "direct conv over channels: weight length"
    );
    assert_eq!(
        y.len(),
        g.output_len(),
        "direct conv over channels: output length"
    );
    // AVX-512: 2 x 8 accumulators of 16 lanes, 2 weight vectors and a broadcast in 32
    // registers (with 12 pixels LLVM loads all twelve broadcasts ahead and spills accumulators:
    // 2.3x slower on `w16-l4-3x3`; 10 pixels measured 20% slower than 8); with 16 registers,
    // 2 x 6 of 8 lanes.
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            return forward_with::<8, Avx512Tile>(g, x, w, y);
        }
        if has_avx2_fma() {
            return forward_with::<6, Avx2Tile>(g, x, w, y);
        }
    }
    forward_with::<6, PortableTile>(g, x, w, y);
}

/// The register tile of one instruction set: `P` pixels by [`Self::BLOCK`] output channels.
trait ChannelTile<const P: usize> {
    /// Output channels per tile: [`VECTORS`] vectors.
    const BLOCK: usize;

    /// One group of images' channel-last sums with this tile (a function compiled for the
    /// instruction set, so that the tile inlines into code that may use it).
    fn convolve_group(plan: &Plan, tiles: &PixelTiles<P>, padded: &[f32], sums: &mut [f32]);

    /// Writes the tile at pixels `offsets` to `out[k · BLOCK + o]`: the sum over the input
    /// channels `c` and the taps `(tap, index)` of `block_weights[(c · kernel_taps + index) ·
    /// BLOCK + o] · padded[c · plane + offsets[k] + tap]`.
    ///
    /// # Safety
    /// The CPU has the tile's instructions, `block_weights` holds whole channels of
    /// `kernel_taps · BLOCK` values, every `index < kernel_taps`, and every `c · plane +
    /// offsets[k] + tap` is inside `padded`.
    unsafe fn sums(
        padded: &[f32],
        plane: usize,
        taps: &[(usize, usize)],
        kernel_taps: usize,
        block_weights: &[f32],
        offsets: &[usize; P],
        out: &mut [f32],
    );
}

/// Portable code: 8-lane arrays the compiler vectorises for the build's baseline target.
struct PortableTile;

impl<const P: usize> ChannelTile<P> for PortableTile {
    const BLOCK: usize = VECTORS * 8;

    fn convolve_group(plan: &Plan, tiles: &PixelTiles<P>, padded: &[f32], sums: &mut [f32]) {
        convolve_tiles::<P, Self>(plan, tiles, padded, sums);
    }

    #[inline(always)]
    unsafe fn sums(
        padded: &[f32],
        plane: usize,
        taps: &[(usize, usize)],
        kernel_taps: usize,
        block_weights: &[f32],
        offsets: &[usize; P],
        out: &mut [f32],
    ) {
        const BLOCK: usize = VECTORS * 8;
        let mut acc = [[[0.0f32; 8]; VECTORS]; P];
        for (channel, channel_weights) in
            block_weights.chunks_exact(kernel_taps * BLOCK).enumerate()
        {
            let base = channel * plane;
            for &(tap, index) in taps {
                let weights = &channel_weights[index * BLOCK..][..BLOCK];
                for (k, sums) in acc.iter_mut().enumerate() {
                    let value = padded[base + offsets[k] + tap];
                    for (sum, weight) in sums.as_flattened_mut().iter_mut().zip(weights) {
                        *sum = Separate::multiply_add(*sum, *weight, value);
                    }
                }
            }
        }
        out[..P * BLOCK].copy_from_slice(acc.as_flattened().as_flattened());
    }
}

/// A [`ChannelTile`] of `P` x [`VECTORS`] accumulators of `$lanes` lanes, written with the
/// `std::arch` intrinsics of one instruction set (`$features`): the two x86 variants differ
/// only in vector type and width.
#[cfg(target_arch = "x86_64")]
macro_rules! intrinsics_tile {
    ($(#[$doc:meta])* $name:ident, $lanes:literal, $features:literal,
     $zero:ident, $load:ident, $splat:ident, $fma:ident, $store:ident) => {
        $(#[$doc])*
        struct $name;

        impl<const P: usize> ChannelTile<P> for $name {
            const BLOCK: usize = VECTORS * $lanes;

            fn convolve_group(
                plan: &Plan,
                tiles: &PixelTiles<P>,
                padded: &[f32],
                sums: &mut [f32],
            ) {
                #[target_feature(enable = $features)]
                fn with_features<const P: usize>(
                    plan: &Plan,
                    tiles: &PixelTiles<P>,
                    padded: &[f32],
                    sums: &mut [f32],
                ) {
                    convolve_tiles::<P, $name>(plan, tiles, padded, sums);
                }
                // SAFETY: `direct_channels_forward` chose this tile after checking that the
                // CPU has these features.
                unsafe { with_features::<P>(plan, tiles, padded, sums) }
            }

            #[inline(always)]
            unsafe fn sums(
                padded: &[f32],
                plane: usize,
                taps: &[(usize, usize)],
                kernel_taps: usize,
                block_weights: &[f32],
                offsets: &[usize; P],
                out: &mut [f32],
            ) {
                use std::arch::x86_64::{$fma, $load, $splat, $store, $zero};
                const BLOCK: usize = VECTORS * $lanes;
                assert!(out.len() >= P * BLOCK);
                // SAFETY (whole block): the caller guarantees the features and that every read
                // is inside `padded` and `block_weights`; the stores are inside `out` (asserted).
                unsafe {
                    let mut acc = [[$zero(); VECTORS]; P];
                    let channel_len = kernel_taps * BLOCK;
                    for channel in 0..block_weights.len() / channel_len {
                        let base = padded.as_ptr().add(channel * plane);
                        let weights = block_weights.as_ptr().add(channel * channel_len);
                        for &(tap, index) in taps {
                            let w0 = $load(weights.add(index * BLOCK));
                            let w1 = $load(weights.add(index * BLOCK + $lanes));
                            let at = base.add(tap);
                            for (k, sums) in acc.iter_mut().enumerate() {
                                let value = $splat(*at.add(offsets[k]));
                                sums[0] = $fma(w0, value, sums[0]);
                                sums[1] = $fma(w1, value, sums[1]);
                            }
                        }
                    }
                    for (k, sums) in acc.iter().enumerate() {
                        for (v, sum) in sums.iter().enumerate() {
                            $store(out.as_mut_ptr().add((k * VECTORS + v) * $lanes), *sum);
                        }
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
intrinsics_tile!(
    /// AVX2 + FMA: `P` x 2 accumulators of 8 lanes.
    Avx2Tile, 8, "avx2,fma",
    _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps
);

#[cfg(target_arch = "x86_64")]
intrinsics_tile!(
    /// AVX-512: `P` x 2 accumulators of 16 lanes.
    Avx512Tile, 16, "avx512f,avx2,fma",
    _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps
);

/// What every group of images shares: the padded planes' shape and the repacked weights.
pub(super) struct Plan {
    /// Planes per image of the padded tensor the tiles read (the channels summed over).
    pub(super) channels: usize,
    /// Values per padded plane.
    pub(super) plane: usize,
    /// The weights as `[blocks, channels, kh·kw, block]`: blocks of the channels in the lanes,
    /// the last block completed with zeros.
    pub(super) weights: Vec<f32>,
    /// Taps of the kernel, `kh·kw`.
    pub(super) kernel_taps: usize,
    /// Channels in the lanes per block (a tile's).
    pub(super) block: usize,
    /// The channels in the lanes rounded up to whole blocks.
    pub(super) padded_channels: usize,
}

impl Plan {
    /// The forward pass of `g`: output channels in the lanes, input channels summed over.
    fn new(g: &ConvGeometry, w: &[f32], block: usize) -> Self {
        let layout = Layout::padded_input(g);
        let taps = g.kernel_height * g.kernel_width;
        // w[o, c, t] at lane o, summed channel c.
        let weights = pack(g.out_channels, g.in_channels, taps, block, |o, c| {
            &w[(o * g.in_channels + c) * taps..][..taps]
        });
        Self {
            channels: layout.channels,
            plane: layout.plane(),
            weights,
            kernel_taps: taps,
            block,
            padded_channels: g.out_channels.next_multiple_of(block),
        }
    }

    /// The input gradient of `g` read from padded planes of `plane` values: input channels in
    /// the lanes, output channels summed over.
    pub(super) fn transposed(g: &ConvGeometry, w: &[f32], block: usize, plane: usize) -> Self {
        let taps = g.kernel_height * g.kernel_width;
        // w[o, c, t] at lane c, summed channel o.
        let weights = pack(g.in_channels, g.out_channels, taps, block, |c, o| {
            &w[(o * g.in_channels + c) * taps..][..taps]
        });
        Self {
            channels: g.out_channels,
            plane,
            weights,
            kernel_taps: taps,
            block,
            padded_channels: g.in_channels.next_multiple_of(block),
        }
    }
}

/// `[blocks, summed, taps, block]` with `kernel(lane, summed)`'s taps at `lane`, the lanes beyond
/// `lanes` zero. Written in order, one summed channel of a block at a time: its reads, `block`
/// runs of `taps` values, stay in cache for the next channel's (writing in the source's order
/// instead touched a new cache line with every value).
fn pack<'w>(
    lanes: usize,
    summed: usize,
    taps: usize,
    block: usize,
    kernel: impl Fn(usize, usize) -> &'w [f32],
) -> Vec<f32> {
    let mut weights = vec![0.0f32; lanes.next_multiple_of(block) * summed * taps];
    for (b, packed) in weights.chunks_exact_mut(summed * taps * block).enumerate() {
        let in_block = (b * block..lanes.min((b + 1) * block)).enumerate();
        for (c, channel) in packed.chunks_exact_mut(taps * block).enumerate() {
            for (lane, o) in in_block.clone() {
                for (tap, &value) in kernel(o, c).iter().enumerate() {
                    channel[tap * block + lane] = value;
                }
            }
        }
    }
    weights
}

/// Images per task: about [`GROUP_PIXELS`] result pixels, so that the border classes of small
/// maps fill whole tiles (up to `tile_pixels` images: a 4 x 4 map has one pixel of each corner
/// class per image), but no fewer tasks than threads when the batch allows.
fn images_per_task(pixels: usize, batch: usize, tile_pixels: usize) -> usize {
    let by_pixels = GROUP_PIXELS.div_ceil(pixels.max(1));
    let by_threads = batch.div_ceil(rayon::current_num_threads().max(1));
    by_pixels.min(tile_pixels).min(by_threads).max(1)
}

/// One call of a kernel over channels, ready to run on groups of images: the plan, the tiles
/// of a whole group and of a shorter last one, and the shapes of the tensor read and written.
struct Groups<const P: usize> {
    plan: Plan,
    /// Images per group.
    images: usize,
    /// The tiles of `images` images.
    full: PixelTiles<P>,
    /// The tiles of the last group, if the batch does not divide into whole groups.
    last: Option<PixelTiles<P>>,
    /// Where a whole group of the tensor read goes in the padded planes.
    grid: Grid,
    /// Values per image of the tensor read.
    source_image: usize,
    /// Pixels per plane of the result (its channels are the plan's lanes).
    result_pixels: usize,
}

impl<const P: usize> Groups<P> {
    /// Every group of `source` into `result`, one group per task.
    fn run<K: ChannelTile<P>>(&self, source: &[f32], result: &mut [f32]) {
        let plan = &self.plan;
        let result_image = result.len() / (source.len() / self.source_image);
        let sums_per_image = self.result_pixels * plan.padded_channels;
        result
            .par_chunks_mut(self.images * result_image)
            .zip(source.par_chunks(self.images * self.source_image))
            .for_each(|(out, group)| {
                let count = out.len() / result_image;
                let tiles = match &self.last {
                    Some(last) if count < self.images => last,
                    _ => &self.full,
                };
                PADDED.with(|padded| {
                    CHANNEL_LAST.with(|sums| {
                        let padded = &mut *padded.borrow_mut();
                        let padded = padded.place(self.grid, group);
                        let sums = &mut *sums.borrow_mut();
                        let sums = prefix(sums, count * sums_per_image);
                        K::convolve_group(plan, tiles, padded, sums);
                        for (out, sums) in out
                            .chunks_exact_mut(result_image)
                            .zip(sums.chunks_exact(sums_per_image))
                        {
                            transpose_into(sums, plan.padded_channels, self.result_pixels, out);
                        }
                    });
                });
            });
    }
}

/// [`direct_channels_forward`] with tile `K` of `P` pixels.
fn forward_with<const P: usize, K: ChannelTile<P>>(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) {
    let layout = Layout::padded_input(g);
    let images = images_per_task(g.out_pixels(), g.batch, P);
    let image_len = layout.channels * layout.plane();
    let rest = g.batch % images;
    let groups = Groups {
        plan: Plan::new(g, w, K::BLOCK),
        images,
        full: PixelTiles::new(g, layout.cols, image_len, images),
        last: (rest > 0).then(|| PixelTiles::new(g, layout.cols, image_len, rest)),
        // Room for a whole group's planes; a shorter last group leaves the planes after it
        // unread.
        grid: Grid {
            planes: images * layout.channels,
            ..Grid::padded_input(g, &layout)
        },
        source_image: g.in_channels * g.in_pixels(),
        result_pixels: g.out_pixels(),
    };
    groups.run::<K>(x, y);
}

/// Whether [`direct_channels_input_grad`] computes `g`'s input gradient: any valid layer.
pub fn supports_direct_channels_input_grad(g: &ConvGeometry) -> bool {
    g.is_valid()
}

/// Input gradient with the input channels in the vector lanes, for strided layers (whose
/// input gradient is not a forward convolution):
/// `dx[n, c, h, w] = Σ_{o, a, b} w[o, c, a, b] · dy[n, o, (h + p - a) / s, (w + p - b) / s]`
/// over the taps that divide evenly and land inside `dy`. The same result as
/// [`super::conv2d_input_grad`] up to rounding. `dy [N, C_out, H_out, W_out]`, `w [C_out, C_in,
/// kh, kw]`, `dx [N, C_in, H, W]`, contiguous; every element of `dx` is written.
///
/// The tiles are `PixelTiles::transposed`'s: input pixels of one parity (with stride 2, a
/// quarter of them) share which weights they use, and each parity's border classes skip the
/// taps that fall outside `dy`. Im2col + col2im instead multiplies every output pixel by every
/// weight and scatter-adds the products into `dx`.
pub fn direct_channels_input_grad(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    assert!(
        supports_direct_channels_input_grad(g),
        "input gradient over channels: unsupported geometry {g:?}"
    );
    assert_eq!(
        dy.len(),
        g.output_len(),
        "input gradient over channels: output length"
    );
    assert_eq!(
        w.len(),
        g.weight_len(),
        "input gradient over channels: weight length"
    );
    assert_eq!(
        dx.len(),
        g.input_len(),
        "input gradient over channels: input length"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            return input_grad_with::<8, Avx512Tile>(g, dy, w, dx);
        }
        if has_avx2_fma() {
            return input_grad_with::<6, Avx2Tile>(g, dy, w, dx);
        }
    }
    input_grad_with::<6, PortableTile>(g, dy, w, dx);
}

/// [`direct_channels_input_grad`] with tile `K` of `P` pixels.
fn input_grad_with<const P: usize, K: ChannelTile<P>>(
    g: &ConvGeometry,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) {
    let [stride_h, stride_w] = g.stride;
    let (out_height, out_width) = (g.out_height(), g.out_width());
    // Zeros before the gradient for the taps that reach back `k` rows, and after it up to the
    // last row an input pixel's window names, `(H - 1 + p) / s`.
    let top = (g.kernel_height - 1) / stride_h;
    let left = (g.kernel_width - 1) / stride_w;
    let rows = top + out_height.max((g.in_height - 1 + g.padding[0]) / stride_h + 1);
    let cols = left + out_width.max((g.in_width - 1 + g.padding[1]) / stride_w + 1);
    let images = images_per_task(g.in_pixels(), g.batch, P);
    let image_len = g.out_channels * rows * cols;
    let rest = g.batch % images;
    let tiles = |count| PixelTiles::transposed(g, cols, image_len, count, [top, left]);
    let groups = Groups {
        plan: Plan::transposed(g, w, K::BLOCK, rows * cols),
        images,
        full: tiles(images),
        last: (rest > 0).then(|| tiles(rest)),
        grid: Grid {
            planes: images * g.out_channels,
            plane_len: rows * cols,
            cols,
            offset: top * cols + left,
            height: out_height,
            width: out_width,
        },
        source_image: g.out_channels * g.out_pixels(),
        result_pixels: g.in_pixels(),
    };
    groups.run::<K>(dy, dx);
}

/// `sums [pixels, padded_channels]` (channel-last) into `out [C_out, pixels]`.
fn transpose_into(sums: &[f32], padded_channels: usize, pixels: usize, out: &mut [f32]) {
    for (o, plane) in out.chunks_exact_mut(pixels).enumerate() {
        for (p, value) in plane.iter_mut().enumerate() {
            *value = sums[p * padded_channels + o];
        }
    }
}

/// Every tile of one group of images: blocks of output channels by the tiles' pixels, into
/// `sums [images · pixels, padded_channels]`.
#[inline(always)]
fn convolve_tiles<const P: usize, K: ChannelTile<P>>(
    plan: &Plan,
    tiles: &PixelTiles<P>,
    padded: &[f32],
    sums: &mut [f32],
) {
    let (plane, channels) = (plan.plane, plan.channels);
    let block_len = channels * plan.kernel_taps * plan.block;
    // Every read below is at most here: the farthest window's widest tap in the last channel.
    assert!(
        (channels - 1) * plane + tiles.last_read < padded.len(),
        "direct conv over channels: read outside the padded images"
    );
    assert!(
        tiles
            .taps
            .iter()
            .all(|&(_, index)| index < plan.kernel_taps),
        "direct conv over channels: a tap outside the kernel"
    );
    assert!(
        tiles
            .rows
            .iter()
            .flatten()
            .all(|&row| (row + 1) * plan.padded_channels <= sums.len()),
        "direct conv over channels: a pixel outside the sums"
    );
    assert_eq!(
        plan.block,
        K::BLOCK,
        "direct conv over channels: weights packed for the tile"
    );
    let mut tile = [0.0f32; MAX_TILE];
    let tile = &mut tile[..P * K::BLOCK];
    for (b, block_weights) in plan.weights.chunks_exact(block_len).enumerate() {
        for ((offsets, rows), taps) in tiles.offsets.iter().zip(&tiles.rows).zip(&tiles.tap_ranges)
        {
            let taps = &tiles.taps[taps.clone()];
            // SAFETY: the caller chose `K` for this CPU; `block_weights` holds C_in channels of
            // kernel_taps·block values (chunks_exact); tap indices are below kernel_taps and
            // reads end at (C_in - 1)·plane + last_read < padded.len() (asserted above).
            unsafe {
                K::sums(
                    padded,
                    plane,
                    taps,
                    plan.kernel_taps,
                    block_weights,
                    offsets,
                    tile,
                )
            };
            // K::BLOCK, a constant, for `plan.block`: the copies compile to vector moves
            // instead of a `memcpy` call per pixel.
            for (&row, values) in rows.iter().zip(tile.chunks_exact(K::BLOCK)) {
                let at = row * plan.padded_channels + b * K::BLOCK;
                sums[at..at + K::BLOCK].copy_from_slice(values);
            }
        }
    }
}
