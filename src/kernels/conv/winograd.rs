//! Winograd convolution for 3x3 stride-1 layers (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", CVPR 2016): forward passes (and so stride-1 input gradients)
//! by F(2x2, 3x3) or F(4x4, 3x3), weight gradients by F(3x3, 2x2).
//!
//! The output is cut into `M x M` tiles (`M` = 2 or 4); tile `t` of output channel `o` needs
//! the `N x N` input tile `d_c` (`N = M + 2`) of every input channel `c`:
//!
//! `Y_o = Aᵀ [ Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B) ] A`
//!
//! with the matrices of [`super::winograd_tiles`]. For each of the `N²` positions `e` of the
//! transformed tile, the sum over `c` is one matrix product `M_e = V_e · U_e` (`tiles x C_in`
//! times `C_in x C_out`), computed by `gemm`: `N²` multiply-adds per tile and channel pair
//! instead of the direct convolution's `9·M²`, 2.25x fewer for F(2x2, 3x3) and 4x for
//! F(4x4, 3x3).
//!
//! The transforms run on vectors: the input (and, for the weight gradient, the output gradient)
//! is copied channel-last, one image at a time ([`super::channel_last`]), so that one vector
//! holds a tile's value in [`LANES`] channels and each of the `N²` transformed values is a
//! vector store into `V_e`, `[tiles][C_in rounded up to LANES]`. The output transform reads
//! [`LANES`] neighbouring tiles of one output channel from each `M_e`, `[C_out][tiles]`. Run
//! one tile at a time with scalar loads and stores, the transforms took about 60% of the time
//! (BENCHMARKS.md).
//!
//! Rounding: F(2x2, 3x3)'s transforms only add, subtract and halve (each transformed value is a
//! sum of up to 9 inputs before the channel sum); F(4x4, 3x3)'s scale by up to 8 and by 1/6 and
//! 1/24, so its error is about 10x larger (1e-6 against 1e-7 relative in the tests). Both stay
//! far inside the 1e-4 relative Frobenius error that `tests/fast_conv.rs` allows against the
//! float64 direct convolution, as for the im2col path.

use std::cell::RefCell;
use std::marker::PhantomData;

use rayon::prelude::*;

use super::channel_last::{ChannelLastGrid, ChannelLastImage};
use super::geometry::ConvGeometry;
use super::kernels::{group_size, prefix, sum_in_ranges};
use super::winograd_tiles::{F2x2, F4x4, WinogradTile, input_2d, output_2d, weight_2d};
use crate::kernels::gemm::{Mat, matmul_strided};
use crate::kernels::lanes::{
    LANES, Lanes, VectorPass, add, array, load, neg, run_widest, scale, store, sub,
};

/// Whether [`winograd_forward`], [`winograd_4x4_forward`] and [`winograd_weight_grad`] compute
/// `g`: a 3x3 kernel with stride 1 (any padding).
pub fn supports_winograd(g: &ConvGeometry) -> bool {
    g.is_valid() && g.kernel_height == 3 && g.kernel_width == 3 && g.stride == [1, 1]
}

#[derive(Default)]
struct Scratch {
    transformed: Vec<f32>,
    products: Vec<f32>,
    /// Where each tile's output starts in its group's output.
    tile_starts: Vec<usize>,
    /// One input image, channel-last and zero-padded so that every input tile lies inside.
    input: ChannelLastImage,
    /// One output-gradient image, channel-last, zero-padded to whole tiles.
    gradient: ChannelLastImage,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The output tiling of `g` by `size x size` tiles, the last row or column cut where the
/// output side is not a multiple.
#[derive(Clone, Copy)]
struct Tiles {
    size: usize,
    rows: usize,
    cols: usize,
}

impl Tiles {
    fn of(g: &ConvGeometry, size: usize) -> Self {
        Self {
            size,
            rows: g.out_height().div_ceil(size),
            cols: g.out_width().div_ceil(size),
        }
    }

    fn per_image(self) -> usize {
        self.rows * self.cols
    }

    /// The padded input holding every input tile (`size + 2` square), channel-last.
    fn input_grid(self, g: &ConvGeometry) -> ChannelLastGrid {
        ChannelLastGrid {
            channels: g.in_channels,
            height: g.in_height,
            width: g.in_width,
            rows: self.size * self.rows + 2,
            cols: self.size * self.cols + 2,
            top: g.padding[0],
            left: g.padding[1],
        }
    }

    /// The output gradient, channel-last, zeros completing the last tiles.
    fn gradient_grid(self, g: &ConvGeometry) -> ChannelLastGrid {
        ChannelLastGrid {
            channels: g.out_channels,
            height: g.out_height(),
            width: g.out_width(),
            rows: self.size * self.rows,
            cols: self.size * self.cols,
            top: 0,
            left: 0,
        }
    }

    /// Where tile `t` of a group (image `t / per_image`) starts in the group's output.
    fn start(self, g: &ConvGeometry, t: usize) -> usize {
        let (image, tile) = (t / self.per_image(), t % self.per_image());
        let (tr, tc) = (tile / self.cols, tile % self.cols);
        image * g.out_channels * g.out_pixels() + self.size * (tr * g.out_width() + tc)
    }
}

/// One matrix per position of the transformed tile, each `len` values, `stride` apart: an odd
/// number of cache lines, so that the matrices do not start at the same offset modulo a power
/// of two. The transforms read or write all positions of a tile
/// at once; with unpadded matrices of 2^k values (512 channels x 64 tiles, say) those 16 or
/// 36 streams fell into one cache set and evicted each other (F(4x4, 3x3) ran 3x slower on a
/// 4 x 4 map with 512 channels).
#[derive(Clone, Copy)]
struct Positions {
    count: usize,
    len: usize,
    stride: usize,
}

impl Positions {
    fn new(count: usize, len: usize) -> Self {
        Self {
            count,
            len,
            stride: (len.div_ceil(LANES) | 1) * LANES,
        }
    }

    fn total(self) -> usize {
        self.count * self.stride
    }

    /// Matrix `e` of `values`.
    fn of(self, values: &[f32], e: usize) -> &[f32] {
        &values[e * self.stride..][..self.len]
    }

    fn of_mut(self, values: &mut [f32], e: usize) -> &mut [f32] {
        &mut values[e * self.stride..][..self.len]
    }
}

/// Forward convolution of a 3x3 stride-1 layer by Winograd F(2x2, 3x3): the same result as
/// [`super::conv2d_forward`] up to rounding. `x [N, C_in, H, W]`, `w [C_out, C_in, 3, 3]`,
/// `y [N, C_out, H_out, W_out]`, contiguous; every element of `y` is written.
pub fn winograd_forward(g: &ConvGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    forward::<F2x2, 4, 2>(g, x, w, y);
}

/// [`winograd_forward`] by F(4x4, 3x3): 6x6 input tiles, 4x fewer multiplies than the direct
/// convolution (F(2x2, 3x3): 2.25x), larger transforms.
pub fn winograd_4x4_forward(g: &ConvGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    forward::<F4x4, 6, 4>(g, x, w, y);
}

/// Winograd F(M x M, 3x3) forward: per group of images, the input transform, one product per
/// position of the `N x N` transformed tile, the output transform.
fn forward<T: WinogradTile<N, M>, const N: usize, const M: usize>(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) {
    assert!(supports_winograd(g), "winograd: unsupported geometry {g:?}");
    assert_eq!(x.len(), g.input_len(), "winograd: input length");
    assert_eq!(w.len(), g.weight_len(), "winograd: weight length");
    assert_eq!(y.len(), g.output_len(), "winograd: output length");
    let weights = transform_weights::<T, N, M>(g, w);
    let tiles = Tiles::of(g, M);
    let image_in = g.in_channels * g.in_pixels();
    let image_out = g.out_channels * g.out_pixels();
    let grid = tiles.input_grid(g);
    let per_group = group_size(g);
    y.par_chunks_mut(per_group * image_out)
        .enumerate()
        .for_each(|(index, out)| {
            let first = index * per_group;
            let count = out.len() / image_out;
            let columns = count * tiles.per_image();
            SCRATCH.with(|cell| {
                let Scratch {
                    transformed,
                    products,
                    tile_starts,
                    input,
                    ..
                } = &mut *cell.borrow_mut();
                let v_layout = Positions::new(N * N, columns * grid.stride());
                let v = prefix(transformed, v_layout.total());
                for i in 0..count {
                    let image = input.place(grid, &x[(first + i) * image_in..][..image_in]);
                    run_widest(TileTransform::<InputTile<T, M, false>, N> {
                        tiles,
                        grid,
                        image,
                        first_tile: i * tiles.per_image(),
                        positions: v_layout,
                        out: &mut *v,
                        kernel: PhantomData,
                    });
                }
                let m_layout = Positions::new(N * N, g.out_channels * columns);
                let m = prefix(products, m_layout.total());
                multiply(g, [v_layout, m_layout], grid.stride(), v, &weights, m);
                tile_starts.clear();
                tile_starts.extend((0..columns).map(|t| tiles.start(g, t)));
                run_widest(OutputTransform::<T, N, M> {
                    g,
                    m,
                    positions: m_layout,
                    tile_starts,
                    out,
                    tile: PhantomData,
                });
            });
        });
}

/// `U_e[c, o] = (G g_oc Gᵀ)_e` of every filter, stored `[C_out][N·N][C_in]`: one contiguous
/// block per output channel, computed in parallel, each written in `N·N` rows of `C_in`.
fn transform_weights<T: WinogradTile<N, M>, const N: usize, const M: usize>(
    g: &ConvGeometry,
    w: &[f32],
) -> Vec<f32> {
    let cin = g.in_channels;
    let mut u = vec![0.0f32; g.out_channels * N * N * cin];
    u.par_chunks_mut(N * N * cin)
        .enumerate()
        .for_each(|(o, block)| {
            for c in 0..cin {
                let transformed = weight_2d::<T, N, M>(&w[(o * cin + c) * 9..][..9]);
                for (e, &value) in transformed.iter().flatten().enumerate() {
                    block[e * cin + c] = value;
                }
            }
        });
    u
}

/// A transform of one tile of [`LANES`] channels into `N x N` values, reading the tile's
/// values through `at(row, column)`.
trait TileKernel<const N: usize> {
    /// Pixels between the corners of neighbouring tiles.
    const STEP: usize;

    fn transform(at: impl Fn(usize, usize) -> Lanes) -> [[Lanes; N]; N];
}

/// `Bᵀ d B` of an `N x N` input tile; with `NEGATE` the weight gradient's `B'ᵀ d B'`.
struct InputTile<T, const M: usize, const NEGATE: bool>(PhantomData<T>);

impl<T: WinogradTile<N, M>, const N: usize, const M: usize, const NEGATE: bool> TileKernel<N>
    for InputTile<T, M, NEGATE>
{
    const STEP: usize = M;

    #[inline(always)]
    fn transform(at: impl Fn(usize, usize) -> Lanes) -> [[Lanes; N]; N] {
        let d: [[Lanes; N]; N] = array(|r| array(|j| at(r, j)));
        let mut transformed = input_2d::<T, N, M>(&d);
        if NEGATE {
            negate_last_row_and_column(&mut transformed);
        }
        transformed
    }
}

/// `G' δ G'ᵀ` of a 2x2 output-gradient tile, for the weight gradient.
struct GradientTile;

impl TileKernel<4> for GradientTile {
    const STEP: usize = 2;

    #[inline(always)]
    fn transform(at: impl Fn(usize, usize) -> Lanes) -> [[Lanes; 4]; 4] {
        let expand = |a: Lanes, b: Lanes| [a, scale(add(a, b), 0.5), scale(sub(a, b), 0.5), b];
        let columns = [expand(at(0, 0), at(1, 0)), expand(at(0, 1), at(1, 1))];
        array(|i| expand(columns[0][i], columns[1][i]))
    }
}

/// `K`'s transform of every tile of one channel-last image, for [`LANES`] channels at a time,
/// stored as `N·N` matrices `[tiles][channels]` (rows of the grid's channel stride): the input
/// transform's `V_e` is the lhs of the product, `tiles x C_in` with rows a stride apart.
struct TileTransform<'a, K, const N: usize> {
    tiles: Tiles,
    grid: ChannelLastGrid,
    /// The image on `grid`.
    image: &'a [f32],
    /// The image's first tile among the group's.
    first_tile: usize,
    /// The layout of `out`.
    positions: Positions,
    out: &'a mut [f32],
    kernel: PhantomData<K>,
}

impl<K: TileKernel<N>, const N: usize> VectorPass for TileTransform<'_, K, N> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let stride = self.grid.stride();
        let row = self.grid.cols * stride;
        for tr in 0..self.tiles.rows {
            for tc in 0..self.tiles.cols {
                let t = self.first_tile + tr * self.tiles.cols + tc;
                let corner = K::STEP * (tr * row + tc * stride);
                for block in (0..stride).step_by(LANES) {
                    let transformed = K::transform(|r, j| {
                        load(self.image, corner + r * row + j * stride + block)
                    });
                    for (e, value) in transformed.iter().flatten().enumerate() {
                        let at = e * self.positions.stride + t * stride + block;
                        store(self.out, at, value);
                    }
                }
            }
        }
    }
}

/// `M_e = V_e · U_e` for each position, `M_e` stored `[C_out][tiles]`: tiles are the
/// product's contiguous dimension, the gemm micro-kernel's native output orientation (gemm
/// packs the operands either way). `V_e` is `tiles x C_in` with rows `stride` apart; `U_e` is `C_in x C_out` in
/// [`transform_weights`]' layout.
fn multiply(
    g: &ConvGeometry,
    [v_layout, m_layout]: [Positions; 2],
    stride: usize,
    v: &[f32],
    u: &[f32],
    m: &mut [f32],
) {
    let (cin, cout) = (g.in_channels, g.out_channels);
    let columns = m_layout.len / cout;
    for e in 0..m_layout.count {
        let lhs = Mat {
            data: v_layout.of(v, e),
            row_stride: stride,
            col_stride: 1,
        };
        let rhs = Mat {
            data: &u[e * cin..],
            row_stride: 1,
            col_stride: m_layout.count * cin,
        };
        let dst = m_layout.of_mut(m, e);
        matmul_strided(dst, 1, columns, columns, cout, cin, lhs, rhs, false);
    }
}

/// `Aᵀ M A` of every tile of a group, [`LANES`] tiles at a time, written into the group's
/// output (`[count, C_out, H_out, W_out]`), cutting the tiles that stick out of the output.
struct OutputTransform<'a, T, const N: usize, const M: usize> {
    g: &'a ConvGeometry,
    /// `M`, `[N·N][C_out][tiles]`.
    m: &'a [f32],
    /// The layout of `m`.
    positions: Positions,
    /// Where each tile's output starts in the group's output ([`Tiles::start`]).
    tile_starts: &'a [usize],
    out: &'a mut [f32],
    tile: PhantomData<T>,
}

impl<T: WinogradTile<N, M>, const N: usize, const M: usize> VectorPass
    for OutputTransform<'_, T, N, M>
{
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let (oh, ow) = (self.g.out_height(), self.g.out_width());
        let cout = self.g.out_channels;
        let columns = self.tile_starts.len();
        let whole_tiles = oh % M == 0 && ow % M == 0;
        for o in 0..cout {
            let plane = o * oh * ow;
            for block in (0..columns).step_by(LANES) {
                let lanes = LANES.min(columns - block);
                let m: [[Lanes; N]; N] = array(|r| {
                    array(|j| {
                        let matrix = self.positions.of(self.m, r * N + j);
                        let row = &matrix[o * columns + block..][..lanes];
                        let mut value = [0.0f32; LANES];
                        value[..lanes].copy_from_slice(row);
                        value
                    })
                });
                let y = output_2d::<T, N, M>(&m);
                for (lane, &start) in self.tile_starts[block..][..lanes].iter().enumerate() {
                    let at = plane + start;
                    let (rows, cols) = if whole_tiles {
                        (M, M)
                    } else {
                        let within = start % (oh * ow);
                        (M.min(oh - within / ow), M.min(ow - within % ow))
                    };
                    for (a, row) in y.iter().enumerate().take(rows) {
                        for (b, value) in row.iter().enumerate().take(cols) {
                            self.out[at + a * ow + b] = value[lane];
                        }
                    }
                }
            }
        }
    }
}

/// Positions of F(2x2, 3x3)'s 4x4 transformed tile, which the weight gradient uses.
const POSITIONS: usize = 16;

/// Gradient of the weight of a 3x3 stride-1 layer by Winograd F(3x3, 2x2), written over `dw`
/// (`[C_out, C_in, 3, 3]`): the same result as [`super::conv2d_weight_grad`] up to rounding.
///
/// The weight gradient correlates each 4x4 input tile `d` with the 2x2 output-gradient tile
/// `δ` that it produced, giving a 3x3 result: Winograd's F(3, 2) in each dimension,
///
/// `dW_oc = A'ᵀ [ Σ_tiles (G' δ_o G'ᵀ) ⊙ (B'ᵀ d_c B') ] A'`
///
/// with `G' = [[1, 0], [½, ½], [½, -½], [0, 1]]`,
/// `B'ᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]]` and
/// `A'ᵀ = [[1, 1, 1, 0], [0, 1, -1, 0], [0, 1, 1, 1]]`; the sum over every tile of the batch
/// is, for each of the 16 positions, one product `(C_in x tiles) · (tiles x C_out)`.
/// Tiles are summed over a fixed split of the batch, partial sums added in order: the result
/// does not depend on thread scheduling.
pub fn winograd_weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    assert!(supports_winograd(g), "winograd: unsupported geometry {g:?}");
    assert_eq!(x.len(), g.input_len(), "winograd: input length");
    assert_eq!(dy.len(), g.output_len(), "winograd: output gradient length");
    assert_eq!(dw.len(), g.weight_len(), "winograd: weight length");
    let (cin, cout) = (g.in_channels, g.out_channels);
    let tiles = Tiles::of(g, 2);
    let (input_grid, gradient_grid) = (tiles.input_grid(g), tiles.gradient_grid(g));
    let image_in = cin * g.in_pixels();
    let image_out = cout * g.out_pixels();
    let per_group = group_size(g);
    let groups = g.batch.div_ceil(per_group);
    let sums_layout = Positions::new(POSITIONS, cout * cin);
    let total = sum_in_ranges(groups, sums_layout.total(), |range| {
        let mut sums = vec![0.0f32; sums_layout.total()];
        for index in range {
            let first = index * per_group;
            let count = per_group.min(g.batch - first);
            let columns = count * tiles.per_image();
            SCRATCH.with(|cell| {
                let Scratch {
                    transformed,
                    products,
                    input,
                    gradient,
                    ..
                } = &mut *cell.borrow_mut();
                let v_layout = Positions::new(POSITIONS, columns * input_grid.stride());
                let d_layout = Positions::new(POSITIONS, columns * gradient_grid.stride());
                let v = prefix(transformed, v_layout.total());
                let d = prefix(products, d_layout.total());
                for i in 0..count {
                    let n = first + i;
                    let first_tile = i * tiles.per_image();
                    let image = input.place(input_grid, &x[n * image_in..][..image_in]);
                    run_widest(TileTransform::<InputTile<F2x2, 2, true>, 4> {
                        tiles,
                        grid: input_grid,
                        image,
                        first_tile,
                        positions: v_layout,
                        out: &mut *v,
                        kernel: PhantomData,
                    });
                    let image = gradient.place(gradient_grid, &dy[n * image_out..][..image_out]);
                    run_widest(TileTransform::<GradientTile, 4> {
                        tiles,
                        grid: gradient_grid,
                        image,
                        first_tile,
                        positions: d_layout,
                        out: &mut *d,
                        kernel: PhantomData,
                    });
                }
                let strides = [input_grid.stride(), gradient_grid.stride()];
                let layouts = [v_layout, d_layout, sums_layout];
                accumulate_products(g, layouts, strides, [v, d], &mut sums);
            });
        }
        sums
    });
    for o in 0..cout {
        for c in 0..cin {
            let mut m = [0.0f32; POSITIONS];
            for (e, value) in m.iter_mut().enumerate() {
                *value = sums_layout.of(&total, e)[o * cin + c];
            }
            let kernel = weight_grad_transform(&m);
            dw[(o * cin + c) * 9..][..9].copy_from_slice(&kernel);
        }
    }
}

/// The sign change that turns `Bᵀ d B` into the weight gradient's `B'ᵀ d B'`: `B'ᵀ = S Bᵀ`
/// with `S = diag(1, 1, 1, -1)` (only the last row's sign differs from F(2, 3)'s), so
/// `B'ᵀ d B' = S (Bᵀ d B) S`, the last row and the last column negated.
#[inline(always)]
fn negate_last_row_and_column<const N: usize>(t: &mut [[Lanes; N]; N]) {
    for row in t.iter_mut() {
        row[N - 1] = neg(row[N - 1]);
    }
    t[N - 1] = t[N - 1].map(neg);
}

/// `sums_e += V_e · D_e` for the 16 positions: `[C_in x tiles] · [tiles x C_out]`, stored
/// `[16][C_out][C_in]`. `V_e` and `D_e` are `[tiles][channels]` with rows `strides` apart.
fn accumulate_products(
    g: &ConvGeometry,
    [v_layout, d_layout, sums_layout]: [Positions; 3],
    [input_stride, gradient_stride]: [usize; 2],
    [v, d]: [&[f32]; 2],
    sums: &mut [f32],
) {
    let (cin, cout) = (g.in_channels, g.out_channels);
    let columns = v_layout.len / input_stride;
    for e in 0..POSITIONS {
        let lhs = Mat {
            data: v_layout.of(v, e),
            row_stride: 1,
            col_stride: input_stride,
        };
        let rhs = Mat {
            data: d_layout.of(d, e),
            row_stride: gradient_stride,
            col_stride: 1,
        };
        let dst = sums_layout.of_mut(sums, e);
        matmul_strided(dst, 1, cin, cin, cout, columns, lhs, rhs, true);
    }
}

/// `A'ᵀ m A'` of a summed 4x4 tile: the 3x3 kernel gradient, row-major.
#[inline(always)]
fn weight_grad_transform(m: &[f32; POSITIONS]) -> [f32; 9] {
    let reduce = |a: f32, b: f32, c: f32, d: f32| [a + b + c, b - c, b + c + d];
    let mut rows = [[0.0f32; 4]; 3];
    for j in 0..4 {
        let [r0, r1, r2] = reduce(m[j], m[4 + j], m[8 + j], m[12 + j]);
        rows[0][j] = r0;
        rows[1][j] = r1;
        rows[2][j] = r2;
    }
    let mut out = [0.0f32; 9];
    for (i, row) in rows.iter().enumerate() {
        out[i * 3..][..3].copy_from_slice(&reduce(row[0], row[1], row[2], row[3]));
    }
    out
}
