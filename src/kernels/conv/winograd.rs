//! Winograd F(2x2, 3x3) convolution for 3x3 stride-1 layers (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", CVPR 2016).
//!
//! The output is cut into 2x2 tiles; tile `(t)` of output channel `o` needs the 4x4 input tile
//! `d_c` of every input channel `c`:
//!
//! `Y_o = Aᵀ [ Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B) ] A`
//!
//! with `G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`,
//! `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]` and
//! `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`. For each of the 16 positions `e` of the 4x4
//! transformed tile, the sum over `c` is one matrix product `M_e = V_e · U_e`
//! (`tiles x C_in` times `C_in x C_out`), computed by `gemm`: 16 multiply-adds per tile and
//! channel pair instead of the direct convolution's 36, 2.25x fewer.
//!
//! Rounding: the transforms only add, subtract and halve, so the result differs from the
//! direct sum by a few more roundings per output (each transformed value is a sum of up to 9
//! inputs before the channel sum); `tests/fast_conv.rs` bounds the relative Frobenius error
//! against the float64 direct convolution at 1e-4, like the im2col path.

use std::cell::RefCell;

use rayon::prelude::*;

use super::direct::{Layout, PaddedImage};
use super::geometry::ConvGeometry;
use super::kernels::{Mat, group_size, matmul_strided, prefix};

/// Positions of a transformed 4x4 tile.
const POSITIONS: usize = 16;

/// Whether [`winograd_forward`] computes `g`: a 3x3 kernel with stride 1 (any padding).
pub fn supports_winograd(g: &ConvGeometry) -> bool {
    g.is_valid() && g.kernel_height == 3 && g.kernel_width == 3 && g.stride == [1, 1]
}

#[derive(Default)]
struct Scratch {
    transformed: Vec<f32>,
    products: Vec<f32>,
    /// One image, zero-padded so that every input tile lies inside it.
    padded: PaddedImage,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The output tiling of `g`: 2x2 tiles, the last row or column cut when the output side is odd.
#[derive(Clone, Copy)]
struct Tiles {
    rows: usize,
    cols: usize,
}

impl Tiles {
    fn of(g: &ConvGeometry) -> Self {
        Self {
            rows: g.out_height().div_ceil(2),
            cols: g.out_width().div_ceil(2),
        }
    }

    fn per_image(self) -> usize {
        self.rows * self.cols
    }
}

/// Forward convolution of a 3x3 stride-1 layer by Winograd F(2x2, 3x3): the same result as
/// [`super::conv2d_forward`] up to rounding. `x [N, C_in, H, W]`, `w [C_out, C_in, 3, 3]`,
/// `y [N, C_out, H_out, W_out]`, contiguous; every element of `y` is written.
pub fn winograd_forward(g: &ConvGeometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    assert!(supports_winograd(g), "winograd: unsupported geometry {g:?}");
    assert_eq!(x.len(), g.input_len(), "winograd: input length");
    assert_eq!(w.len(), g.weight_len(), "winograd: weight length");
    assert_eq!(y.len(), g.output_len(), "winograd: output length");
    let weights = transform_weights(g, w);
    let tiles = Tiles::of(g);
    let image_out = g.out_channels * g.out_pixels();
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
                    padded,
                } = &mut *cell.borrow_mut();
                let v = prefix(transformed, POSITIONS * g.in_channels * columns);
                transform_input(g, tiles, x, first, count, padded, v);
                let m = prefix(products, POSITIONS * g.out_channels * columns);
                multiply(g, columns, v, &weights, m);
                transform_output(g, tiles, m, count, out);
            });
        });
}

/// `U_e[c, o]`, stored `[16][C_out][C_in]`: `G g_oc Gᵀ` for every filter.
fn transform_weights(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
    let (cin, cout) = (g.in_channels, g.out_channels);
    let mut u = vec![0.0f32; POSITIONS * cout * cin];
    for o in 0..cout {
        for c in 0..cin {
            let k = &w[(o * cin + c) * 9..][..9];
            let mut gk = [[0.0f32; 3]; 4];
            for j in 0..3 {
                let [a, b, d] = [k[j], k[3 + j], k[6 + j]];
                gk[0][j] = a;
                gk[1][j] = 0.5 * (a + b + d);
                gk[2][j] = 0.5 * (a - b + d);
                gk[3][j] = d;
            }
            for (i, row) in gk.iter().enumerate() {
                let [a, b, d] = *row;
                let values = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (j, value) in values.into_iter().enumerate() {
                    u[((i * 4 + j) * cout + o) * cin + c] = value;
                }
            }
        }
    }
    u
}

/// `V_e[t, c]`, stored `[16][C_in][tiles]`: `Bᵀ d B` of every input tile of images
/// `[first, first + count)`.
fn transform_input(
    g: &ConvGeometry,
    tiles: Tiles,
    x: &[f32],
    first: usize,
    count: usize,
    padded: &mut PaddedImage,
    v: &mut [f32],
) {
    let layout = Layout::of(g, 2, 2);
    let image_in = g.in_channels * g.in_pixels();
    let columns = count * tiles.per_image();
    for i in 0..count {
        let padded = padded.fill(g, &layout, &x[(first + i) * image_in..][..image_in]);
        for (c, plane) in padded.chunks_exact(layout.plane()).enumerate() {
            for tr in 0..tiles.rows {
                for tc in 0..tiles.cols {
                    let d = load_tile(plane, layout.cols, tr, tc);
                    let t = (i * tiles.rows + tr) * tiles.cols + tc;
                    let transformed = input_transform(&d);
                    for (e, value) in transformed.into_iter().enumerate() {
                        v[(e * g.in_channels + c) * columns + t] = value;
                    }
                }
            }
        }
    }
}

/// Input tile `(tr, tc)` (rows `2·tr ..` and columns `2·tc ..`, four of each) of a padded
/// plane of `cols` columns ([`Layout::of`] with 2x2 tiles holds every tile).
#[inline(always)]
fn load_tile(plane: &[f32], cols: usize, tr: usize, tc: usize) -> [[f32; 4]; 4] {
    let start = 2 * tr * cols + 2 * tc;
    std::array::from_fn(|r| {
        plane[start + r * cols..][..4]
            .try_into()
            .expect("four values")
    })
}

/// `Bᵀ d B`, row-major.
#[inline(always)]
fn input_transform(d: &[[f32; 4]; 4]) -> [f32; POSITIONS] {
    let mut r = [[0.0f32; 4]; 4];
    for j in 0..4 {
        r[0][j] = d[0][j] - d[2][j];
        r[1][j] = d[1][j] + d[2][j];
        r[2][j] = d[2][j] - d[1][j];
        r[3][j] = d[1][j] - d[3][j];
    }
    let mut out = [0.0f32; POSITIONS];
    for (i, row) in r.iter().enumerate() {
        out[i * 4] = row[0] - row[2];
        out[i * 4 + 1] = row[1] + row[2];
        out[i * 4 + 2] = row[2] - row[1];
        out[i * 4 + 3] = row[1] - row[3];
    }
    out
}

/// `M_e = V_e · U_e` for the 16 positions, stored `[16][C_out][tiles]`: tiles are the
/// product's contiguous dimension, the gemm micro-kernel's native orientation.
fn multiply(g: &ConvGeometry, columns: usize, v: &[f32], u: &[f32], m: &mut [f32]) {
    products_per_position(m, v, u, [columns, g.out_channels, g.in_channels], false);
}

/// For each of the 16 positions `e`, `dst_e (+)= lhs_e · rhs_e` with `[m, n, k]` the product's
/// shape, every matrix column-major (`lhs_e` `m x k`, `rhs_e` `k x n`, `dst_e` `m x n`, each
/// block after the previous one): the orientation of gemm's micro-kernels.
fn products_per_position(
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    [m, n, k]: [usize; 3],
    accumulate: bool,
) {
    for e in 0..POSITIONS {
        let lhs = Mat {
            data: &lhs[e * m * k..][..m * k],
            row_stride: 1,
            col_stride: m,
        };
        let rhs = Mat {
            data: &rhs[e * k * n..][..k * n],
            row_stride: 1,
            col_stride: k,
        };
        let dst = &mut dst[e * m * n..][..m * n];
        matmul_strided(dst, 1, m, m, n, k, lhs, rhs, accumulate);
    }
}

/// `Aᵀ M A` of every tile, written into the `count` images of `out` (`[count, C_out, H_out,
/// W_out]`), cutting the tiles that stick out of an odd-sized output.
fn transform_output(g: &ConvGeometry, tiles: Tiles, m: &[f32], count: usize, out: &mut [f32]) {
    let (oh, ow) = (g.out_height(), g.out_width());
    let cout = g.out_channels;
    let columns = count * tiles.per_image();
    for o in 0..cout {
        for i in 0..count {
            let plane = &mut out[(i * cout + o) * oh * ow..][..oh * ow];
            for tr in 0..tiles.rows {
                for tc in 0..tiles.cols {
                    let t = (i * tiles.rows + tr) * tiles.cols + tc;
                    let mut tile = [0.0f32; POSITIONS];
                    for (e, value) in tile.iter_mut().enumerate() {
                        *value = m[(e * cout + o) * columns + t];
                    }
                    let y = output_transform(&tile);
                    for (a, row) in y.iter().enumerate() {
                        let r = 2 * tr + a;
                        if r >= oh {
                            break;
                        }
                        for (b, &value) in row.iter().enumerate() {
                            let col = 2 * tc + b;
                            if col < ow {
                                plane[r * ow + col] = value;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `Aᵀ m A` of a transformed tile (row-major 4x4): the 2x2 output tile.
#[inline(always)]
fn output_transform(m: &[f32; POSITIONS]) -> [[f32; 2]; 2] {
    let mut s = [[0.0f32; 4]; 2];
    for j in 0..4 {
        s[0][j] = m[j] + m[4 + j] + m[8 + j];
        s[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
    }
    [
        [s[0][0] + s[0][1] + s[0][2], s[0][1] - s[0][2] - s[0][3]],
        [s[1][0] + s[1][1] + s[1][2], s[1][1] - s[1][2] - s[1][3]],
    ]
}

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
    let tiles = Tiles::of(g);
    let per_group = group_size(g);
    let groups = g.batch.div_ceil(per_group);
    let parts = rayon::current_num_threads().clamp(1, groups.max(1));
    let sums_len = POSITIONS * cout * cin;
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let mut sums = vec![0.0f32; sums_len];
            for index in (part * groups / parts)..((part + 1) * groups / parts) {
                let first = index * per_group;
                let count = per_group.min(g.batch - first);
                let columns = count * tiles.per_image();
                SCRATCH.with(|cell| {
                    let Scratch {
                        transformed,
                        products,
                        padded,
                    } = &mut *cell.borrow_mut();
                    let v = prefix(transformed, POSITIONS * cin * columns);
                    transform_input_tile_major(g, tiles, x, first, count, padded, v);
                    let d = prefix(products, POSITIONS * cout * columns);
                    transform_output_grad(g, tiles, dy, first, count, d);
                    accumulate_products(g, columns, v, d, &mut sums);
                });
            }
            sums
        })
        .collect();
    let total = partials
        .into_iter()
        .reduce(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += *y);
            a
        })
        .unwrap_or_else(|| vec![0.0; sums_len]);
    for o in 0..cout {
        for c in 0..cin {
            let mut m = [0.0f32; POSITIONS];
            for (e, value) in m.iter_mut().enumerate() {
                *value = total[(e * cout + o) * cin + c];
            }
            let kernel = weight_grad_transform(&m);
            dw[(o * cin + c) * 9..][..9].copy_from_slice(&kernel);
        }
    }
}

/// `B'ᵀ d B'` of every input tile, stored `[16][tiles][C_in]` (channels contiguous, the
/// product's native orientation).
fn transform_input_tile_major(
    g: &ConvGeometry,
    tiles: Tiles,
    x: &[f32],
    first: usize,
    count: usize,
    padded: &mut PaddedImage,
    v: &mut [f32],
) {
    let cin = g.in_channels;
    let layout = Layout::of(g, 2, 2);
    let image_in = cin * g.in_pixels();
    let columns = count * tiles.per_image();
    for i in 0..count {
        let padded = padded.fill(g, &layout, &x[(first + i) * image_in..][..image_in]);
        for tr in 0..tiles.rows {
            for tc in 0..tiles.cols {
                let t = (i * tiles.rows + tr) * tiles.cols + tc;
                for (c, plane) in padded.chunks_exact(layout.plane()).enumerate() {
                    let d = load_tile(plane, layout.cols, tr, tc);
                    let transformed = weight_grad_input_transform(&d);
                    for (e, value) in transformed.into_iter().enumerate() {
                        v[(e * columns + t) * cin + c] = value;
                    }
                }
            }
        }
    }
}

/// `B'ᵀ d B'` for F(3, 2). `B'ᵀ = S Bᵀ` with `S = diag(1, 1, 1, -1)` (only the last row's sign
/// differs from F(2, 3)'s), so `B'ᵀ d B' = S (Bᵀ d B) S`: F(2, 3)'s transform with the last row
/// and the last column negated.
#[inline(always)]
fn weight_grad_input_transform(d: &[[f32; 4]; 4]) -> [f32; POSITIONS] {
    let mut out = input_transform(d);
    for k in 0..4 {
        out[k * 4 + 3] = -out[k * 4 + 3];
        out[12 + k] = -out[12 + k];
    }
    out
}

/// `G' δ G'ᵀ` of every 2x2 output-gradient tile (zero beyond an odd-sized output), stored
/// `[16][C_out][tiles]`.
fn transform_output_grad(
    g: &ConvGeometry,
    tiles: Tiles,
    dy: &[f32],
    first: usize,
    count: usize,
    d: &mut [f32],
) {
    let (oh, ow, cout) = (g.out_height(), g.out_width(), g.out_channels);
    let columns = count * tiles.per_image();
    for o in 0..cout {
        for i in 0..count {
            let plane = &dy[((first + i) * cout + o) * oh * ow..][..oh * ow];
            for tr in 0..tiles.rows {
                for tc in 0..tiles.cols {
                    let at = |a: usize, b: usize| {
                        let (r, col) = (2 * tr + a, 2 * tc + b);
                        if r < oh && col < ow {
                            plane[r * ow + col]
                        } else {
                            0.0
                        }
                    };
                    let delta = [[at(0, 0), at(0, 1)], [at(1, 0), at(1, 1)]];
                    let t = (i * tiles.rows + tr) * tiles.cols + tc;
                    for (e, value) in gradient_transform(&delta).into_iter().enumerate() {
                        d[(e * cout + o) * columns + t] = value;
                    }
                }
            }
        }
    }
}

/// `G' δ G'ᵀ` of a 2x2 tile, row-major 4x4.
#[inline(always)]
fn gradient_transform(delta: &[[f32; 2]; 2]) -> [f32; POSITIONS] {
    let expand = |a: f32, b: f32| [a, 0.5 * (a + b), 0.5 * (a - b), b];
    let columns = [
        expand(delta[0][0], delta[1][0]),
        expand(delta[0][1], delta[1][1]),
    ];
    let mut out = [0.0f32; POSITIONS];
    for i in 0..4 {
        let row = expand(columns[0][i], columns[1][i]);
        out[i * 4..][..4].copy_from_slice(&row);
    }
    out
}

/// `sums_e += V_e · D_e` for the 16 positions: `[C_in x tiles] · [tiles x C_out]`, stored
/// `[16][C_out][C_in]`.
fn accumulate_products(g: &ConvGeometry, columns: usize, v: &[f32], d: &[f32], sums: &mut [f32]) {
    products_per_position(sums, v, d, [g.in_channels, g.out_channels, columns], true);
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
