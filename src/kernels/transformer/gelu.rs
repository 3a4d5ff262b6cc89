//! The exact GELU, `gelu(x) = x·Φ(x)` with `Φ` the standard normal CDF (Hendrycks & Gimpel,
//! "Gaussian Error Linear Units", 2016; PyTorch's `GELU(approximate='none')`, torchvision's
//! ViT MLP), and its derivative `gelu'(x) = Φ(x) + x·φ(x)`, `φ(x) = exp(-x²/2)/sqrt(2π)`,
//! computed on vectors.
//!
//! burn's flex backend calls libm's scalar `erff` once per element (and `expf` again in the
//! backward pass): 16-25% of a ViT training step on the CPU (BENCHMARKS.md). Both passes here
//! need one function of `a = |x|` each, by symmetry (`Φ(x) = 1 - Φ(-x)`, `x·φ(x)` odd):
//! - forward: the upper tail `Q(a) = Φ(-a) = erfc(a/√2)/2`, then `gelu(x) = x·(1 - Q(a))` for
//!   `x > 0` and `x·Q(a)` otherwise;
//! - backward: `G(a) = Q(a) - a·φ(a)`, then `gelu'(x) = 1 - G(a)` for `x > 0` and `G(a)`
//!   otherwise.
//!
//! Each is a piecewise polynomial: `[0, 6)` is cut into [`INTERVALS`] intervals of width
//! 0.75, and on interval `k` the function is a polynomial in `s = a - (k + ½)·0.75` (degree 6
//! for `Q`, 7 for `G`; `tools/gelu_fit.py` fits and prints the tables). Beyond 6, `Q` and
//! `G` are below 4e-8 and taken as 0. There is no division and no exponential: on AVX2 the
//! eight intervals' coefficients of one power sit in one register, and a lane's coefficient is
//! one `vpermps` by its interval. The accuracy is absolute: about 1e-7 on `gelu` (relative
//! above 1) and on `gelu'` on the tests' grid over `[-12, 12]`; in the negative tail below -6,
//! `gelu` is `x·0` and `gelu'` is 0 (the previous version, with an exponential, kept `gelu`
//! relatively accurate down to -13). PyTorch's CPU GELU, `x·(1 + erf(x/√2))/2`, is absolute too:
//! the sum cancels in the negative tail.
//!
//! The portable path (no AVX2, or [`crate::conv::limit_instruction_set`] below it) runs the same
//! operations one value at a time for bit-identical results; on a baseline x86-64 build each
//! `mul_add` is then a call to libm's `fmaf`, so that path is several times slower than the
//! AVX2 one.

use std::mem::MaybeUninit;

/// Intervals of `|x|` with a polynomial of their own: one AVX2 register of coefficients.
const INTERVALS: usize = 8;

/// Width of an interval.
const WIDTH: f32 = 0.75;

/// Where the polynomials end: from here on `Q` and `G` count as 0.
const RANGE: f32 = INTERVALS as f32 * WIDTH;

/// Values per parallel task: large enough that a task outweighs its scheduling.
pub(super) const CHUNK: usize = 1 << 14;

/// `Q(a) = erfc(a/√2)/2`: row `j` holds the coefficient of `s^j` on each interval.
const TAIL: [[f32; INTERVALS]; 7] = [
    [
        0.35383025,
        0.13029452,
        0.03039636,
        0.0043324484,
        0.0003690785,
        1.8536724e-5,
        5.440382e-7,
        9.275064e-9,
    ],
    [
        -0.3718549,
        -0.2118769,
        -0.068786286,
        -0.012724114,
        -0.0013411207,
        -8.0546924e-5,
        -2.756974e-6,
        -5.379481e-8,
    ],
    [
        0.069722615,
        0.1191806,
        0.06448724,
        0.01670046,
        0.0022631257,
        0.0001661176,
        6.718541e-6,
        1.5119795e-7,
    ],
    [
        0.05324926,
        -0.009365789,
        -0.028839657,
        -0.012496119,
        -0.002322406,
        -0.00021461576,
        -1.03983275e-5,
        -2.7086895e-7,
    ],
    [
        -0.016606085,
        -0.01722473,
        0.0027671847,
        0.0054156235,
        0.0015828667,
        0.00019391195,
        1.1591576e-5,
        3.5800548e-7,
    ],
    [
        -0.006582518,
        0.0050799707,
        0.0032813556,
        -0.00091337884,
        -0.0007213566,
        -0.00013305887,
        -1.0591142e-5,
        -4.141093e-7,
    ],
    [
        0.0025500557,
        0.001299612,
        -0.0013538413,
        -0.00030971103,
        0.00018890874,
        6.320492e-5,
        6.7590368e-6,
        3.2391645e-7,
    ],
];

/// `G(a) = Q(a) - a·φ(a)`: row `j` holds the coefficient of `s^j` on each interval.
const SLOPE_TAIL: [[f32; INTERVALS]; 8] = [
    [
        0.21438459,
        -0.10806671,
        -0.09857791,
        -0.029068526,
        -0.004157198,
        -0.00031369276,
        -1.2891162e-5,
        -2.9296453e-7,
    ],
    [
        -0.69141805,
        -0.15559693,
        0.10425421,
        0.0622292,
        0.012593944,
        0.0012093654,
        5.9984817e-5,
        1.5926531e-6,
    ],
    [
        0.26908454,
        0.3258849,
        0.03123656,
        -0.048275266,
        -0.016725965,
        -0.0021620565,
        -0.00013278138,
        -4.1781113e-6,
    ],
    [
        0.188121,
        -0.115032814,
        -0.0945789,
        0.0068845814,
        0.0120728,
        0.0023413182,
        0.00018485231,
        7.0184733e-6,
    ],
    [
        -0.095639594,
        -0.056426674,
        0.044647995,
        0.014371877,
        -0.0042353137,
        -0.0016671792,
        -0.00017978116,
        -8.41581e-6,
    ],
    [
        -0.03451286,
        0.040488277,
        0.004024203,
        -0.010509952,
        -0.00039402134,
        0.00076826266,
        0.00012816631,
        7.709666e-6,
    ],
    [
        0.019369047,
        0.0027135026,
        -0.0097577,
        0.0019174562,
        0.0011901187,
        -0.0001696923,
        -6.8854206e-5,
        -5.930201e-6,
    ],
    [
        0.004226527,
        -0.0066724448,
        0.0020272245,
        0.0009433261,
        -0.00052089256,
        -3.2163425e-5,
        2.4982075e-5,
        3.2904045e-6,
    ],
];

/// The interval of `a >= 0` (the last one for `a` beyond the range, which the callers replace;
/// 0 for NaN) and `s`, `a` less the interval's centre.
#[inline(always)]
fn interval(a: f32) -> (usize, f32) {
    let k = ((a * (1.0 / WIDTH)) as i32).min(INTERVALS as i32 - 1);
    let centre = (k as f32).mul_add(WIDTH, WIDTH / 2.0);
    (k as usize, a - centre)
}

/// The piecewise polynomial `rows` at `a >= 0`, by Horner's rule with fused multiply-adds.
#[inline(always)]
fn piecewise<const D: usize>(rows: &[[f32; INTERVALS]; D], a: f32) -> f32 {
    let (k, s) = interval(a);
    let mut p = rows[D - 1][k];
    for row in rows[..D - 1].iter().rev() {
        p = p.mul_add(s, row[k]);
    }
    p
}

/// `1 - tail` above zero, `tail` at and below it; `1` or `0` past the range (NaN stays NaN).
#[inline(always)]
fn from_tail(x: f32, tail: f32) -> f32 {
    match (x.abs() >= RANGE, x > 0.0) {
        (true, true) => 1.0,
        (true, false) => 0.0,
        (false, true) => 1.0 - tail,
        (false, false) => tail,
    }
}

/// `x·Φ(x)`, one value at a time: the portable path, and the AVX2 path's last values.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    x * from_tail(x, piecewise(&TAIL, x.abs()))
}

/// `gelu'(x) = Φ(x) + x·φ(x)`, one value at a time.
#[inline(always)]
fn gelu_derivative(x: f32) -> f32 {
    from_tail(x, piecewise(&SLOPE_TAIL, x.abs()))
}

/// The same operations in the same order as the scalar functions, 8 lanes at a time: the
/// results are bit-identical.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{INTERVALS, RANGE, SLOPE_TAIL, TAIL, WIDTH, gelu, gelu_derivative};

    const LANES: usize = 8;

    /// The tables as registers, and [`super::interval`]'s last interval.
    struct Piecewise<const D: usize> {
        rows: [__m256; D],
        last_interval: __m256i,
    }

    impl<const D: usize> Piecewise<D> {
        #[target_feature(enable = "avx2,fma")]
        fn new(rows: &[[f32; INTERVALS]; D]) -> Self {
            let mut registers = [_mm256_setzero_ps(); D];
            for (register, row) in registers.iter_mut().zip(rows) {
                // SAFETY: a row holds `INTERVALS` = 8 values.
                *register = unsafe { _mm256_loadu_ps(row.as_ptr()) };
            }
            Self {
                rows: registers,
                last_interval: _mm256_set1_epi32(INTERVALS as i32 - 1),
            }
        }

        /// [`super::piecewise`] of 8 values of `a`. A NaN or an `a` past `2^31` converts to
        /// `i32::MIN` here (0 or `i32::MAX` in Rust's cast): interval 0 (`vpermps` reads the
        /// low 3 bits) and a NaN, or a value [`from_tail`] replaces.
        #[target_feature(enable = "avx2,fma")]
        fn at(&self, a: __m256) -> __m256 {
            let scaled = _mm256_mul_ps(a, _mm256_set1_ps(1.0 / WIDTH));
            let k = _mm256_min_epi32(_mm256_cvttps_epi32(scaled), self.last_interval);
            let centre = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(k),
                _mm256_set1_ps(WIDTH),
                _mm256_set1_ps(WIDTH / 2.0),
            );
            let s = _mm256_sub_ps(a, centre);
            let mut p = _mm256_permutevar8x32_ps(self.rows[D - 1], k);
            for row in self.rows[..D - 1].iter().rev() {
                p = _mm256_fmadd_ps(p, s, _mm256_permutevar8x32_ps(*row, k));
            }
            p
        }
    }

    /// `|x|`.
    #[target_feature(enable = "avx2,fma")]
    fn abs(x: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), x)
    }

    /// [`super::from_tail`] on 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn from_tail(x: __m256, a: __m256, tail: __m256) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_setzero_ps());
        let beyond = _mm256_cmp_ps::<_CMP_GE_OQ>(a, _mm256_set1_ps(RANGE));
        let inside = _mm256_blendv_ps(tail, _mm256_sub_ps(one, tail), positive);
        let outside = _mm256_and_ps(one, positive);
        _mm256_blendv_ps(inside, outside, beyond)
    }

    /// `y = gelu(x)`; `x` and `y` of one length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn forward(x: &[f32], y: &mut [MaybeUninit<f32>]) {
        let tail = Piecewise::new(&TAIL);
        let mut ys = y.chunks_exact_mut(LANES);
        let mut xs = x.chunks_exact(LANES);
        for (y, x) in (&mut ys).zip(&mut xs) {
            // SAFETY: `x` and `y` hold `LANES` values (`chunks_exact`); `MaybeUninit<f32>` has
            // the layout of `f32`.
            unsafe {
                let x = _mm256_loadu_ps(x.as_ptr());
                let a = abs(x);
                let value = _mm256_mul_ps(x, from_tail(x, a, tail.at(a)));
                _mm256_storeu_ps(y.as_mut_ptr().cast(), value);
            }
        }
        for (y, &x) in ys.into_remainder().iter_mut().zip(xs.remainder()) {
            y.write(gelu(x));
        }
    }

    /// `dx = grad·gelu'(x)`; the three of one length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn backward(x: &[f32], grad: &[f32], dx: &mut [MaybeUninit<f32>]) {
        let slope = Piecewise::new(&SLOPE_TAIL);
        let mut dxs = dx.chunks_exact_mut(LANES);
        let mut xs = x.chunks_exact(LANES);
        let mut grads = grad.chunks_exact(LANES);
        for ((dx, x), g) in (&mut dxs).zip(&mut xs).zip(&mut grads) {
            // SAFETY: as in `forward`.
            unsafe {
                let x = _mm256_loadu_ps(x.as_ptr());
                let g = _mm256_loadu_ps(g.as_ptr());
                let a = abs(x);
                let value = _mm256_mul_ps(g, from_tail(x, a, slope.at(a)));
                _mm256_storeu_ps(dx.as_mut_ptr().cast(), value);
            }
        }
        let rest = xs.remainder().iter().zip(grads.remainder());
        for (dx, (&x, &g)) in dxs.into_remainder().iter_mut().zip(rest) {
            dx.write(g * gelu_derivative(x));
        }
    }
}

/// `y = gelu(x)` on one task's values, with AVX2 where the CPU has it (and no limit forbids it).
fn forward_chunk(x: &[f32], y: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::isa::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::forward(x, y) };
    }
    for (y, &x) in y.iter_mut().zip(x) {
        y.write(gelu(x));
    }
}

/// `dx = grad·gelu'(x)` on one task's values, as [`forward_chunk`].
fn backward_chunk(x: &[f32], grad: &[f32], dx: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::isa::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::backward(x, grad, dx) };
    }
    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(grad) {
        dx.write(g * gelu_derivative(x));
    }
}

/// `gelu(x)` element by element, in parallel.
pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    // SAFETY: each task writes every value of its chunk.
    unsafe {
        crate::kernels::flex_f32::par_filled(x.len(), CHUNK, |index, y| {
            forward_chunk(&x[index * CHUNK..][..y.len()], y);
        })
    }
}

/// `grad · gelu'(x)` element by element, in parallel: the input gradient of [`gelu_forward`].
///
/// # Panics
/// If `x` and `grad` differ in length.
pub fn gelu_backward(x: &[f32], grad: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), grad.len(), "gelu backward: input and gradient");
    // SAFETY: each task writes every value of its chunk.
    unsafe {
        crate::kernels::flex_f32::par_filled(x.len(), CHUNK, |index, dx| {
            let at = index * CHUNK;
            backward_chunk(&x[at..][..dx.len()], &grad[at..][..dx.len()], dx);
        })
    }
}
