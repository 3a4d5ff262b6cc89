//! The two Winograd algorithms for 3x3 kernels, F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", CVPR 2016): their transforms along one
//! dimension, from which [`input_2d`], [`output_2d`] and [`weight_2d`] form the 2-D ones
//! (`Bᵀ d B`, `Aᵀ m A`, `G g Gᵀ`).
//!
//! F(2x2, 3x3), from 4x4 input tiles (points 0, 1, -1, ∞):
//! `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`,
//! `G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`, `Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`:
//! 16 multiplies per 4 outputs and channel pair, 2.25x fewer than the direct 9 per output.
//!
//! F(4x4, 3x3), from 6x6 input tiles (points 0, 1, -1, 2, -2, ∞):
//! `Bᵀ = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
//! [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]`,
//! `G = [[¼, 0, 0], [-⅙, -⅙, -⅙], [-⅙, ⅙, -⅙], [1/24, 1/12, ⅙], [1/24, -1/12, ⅙], [0, 0, 1]]`,
//! `Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]`:
//! 36 multiplies per 16 outputs, 4x fewer, at the price of larger transforms and of
//! coefficients up to 8 that cost accuracy (tested against float64 at 1e-4, like the rest).

use crate::kernels::lanes::{Lanes, add, array, scale, sub};

/// One Winograd algorithm F(M x M, 3x3), reading `N x N` input tiles (`N = M + 2`).
pub(super) trait WinogradTile<const N: usize, const M: usize> {
    /// `Bᵀ d` of one column of an input tile.
    fn input(d: [Lanes; N]) -> [Lanes; N];
    /// `Aᵀ m` of one column of a transformed tile.
    fn output(m: [Lanes; N]) -> [Lanes; M];
    /// `G k` of one column of a 3x3 kernel.
    fn weight(k: [f32; 3]) -> [f32; N];
}

/// F(2x2, 3x3).
pub(super) struct F2x2;

/// F(4x4, 3x3).
pub(super) struct F4x4;

impl WinogradTile<4, 2> for F2x2 {
    #[inline(always)]
    fn input([d0, d1, d2, d3]: [Lanes; 4]) -> [Lanes; 4] {
        [sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3)]
    }

    #[inline(always)]
    fn output([m0, m1, m2, m3]: [Lanes; 4]) -> [Lanes; 2] {
        [add(add(m0, m1), m2), sub(sub(m1, m2), m3)]
    }

    fn weight([a, b, c]: [f32; 3]) -> [f32; 4] {
        [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
    }
}

impl WinogradTile<6, 4> for F4x4 {
    #[inline(always)]
    fn input([d0, d1, d2, d3, d4, d5]: [Lanes; 6]) -> [Lanes; 6] {
        let p = sub(d4, scale(d2, 4.0));
        let q = sub(d3, scale(d1, 4.0));
        let r = sub(d4, d2);
        let s = scale(sub(d3, d1), 2.0);
        [
            add(sub(scale(d0, 4.0), scale(d2, 5.0)), d4),
            add(p, q),
            sub(p, q),
            add(r, s),
            sub(r, s),
            add(sub(scale(d1, 4.0), scale(d3, 5.0)), d5),
        ]
    }

    #[inline(always)]
    fn output([m0, m1, m2, m3, m4, m5]: [Lanes; 6]) -> [Lanes; 4] {
        let (a, b) = (add(m1, m2), sub(m1, m2));
        let (c, d) = (add(m3, m4), sub(m3, m4));
        [
            add(add(m0, a), c),
            add(b, scale(d, 2.0)),
            add(a, scale(c, 4.0)),
            add(add(b, scale(d, 8.0)), m5),
        ]
    }

    fn weight([a, b, c]: [f32; 3]) -> [f32; 6] {
        [
            a / 4.0,
            -(a + b + c) / 6.0,
            -(a - b + c) / 6.0,
            a / 24.0 + b / 12.0 + c / 6.0,
            a / 24.0 - b / 12.0 + c / 6.0,
            c,
        ]
    }
}

/// `Bᵀ d B` of an input tile `d` (rows of `N`): the columns transformed, then the rows.
#[inline(always)]
pub(super) fn input_2d<T: WinogradTile<N, M>, const N: usize, const M: usize>(
    d: &[[Lanes; N]; N],
) -> [[Lanes; N]; N] {
    let columns: [[Lanes; N]; N] = array(|j| T::input(array(|r| d[r][j])));
    array(|i| T::input(array(|j| columns[j][i])))
}

/// `Aᵀ m A` of a transformed tile `m`: the `M x M` output tile.
#[inline(always)]
pub(super) fn output_2d<T: WinogradTile<N, M>, const N: usize, const M: usize>(
    m: &[[Lanes; N]; N],
) -> [[Lanes; M]; M] {
    let columns: [[Lanes; M]; N] = array(|j| T::output(array(|r| m[r][j])));
    array(|i| T::output(array(|j| columns[j][i])))
}

/// `G k Gᵀ` of a 3x3 kernel `k` (row-major), row-major `N x N`.
pub(super) fn weight_2d<T: WinogradTile<N, M>, const N: usize, const M: usize>(
    k: &[f32],
) -> [[f32; N]; N] {
    let columns: [[f32; N]; 3] = std::array::from_fn(|j| T::weight([k[j], k[3 + j], k[6 + j]]));
    std::array::from_fn(|i| T::weight(std::array::from_fn(|j| columns[j][i])))
}
