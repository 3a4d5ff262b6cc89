//! The exact GELU, `gelu(x) = x·Φ(x)` with `Φ` the standard normal CDF (Hendrycks & Gimpel,
//! "Gaussian Error Linear Units", 2016; PyTorch's `GELU(approximate='none')`, torchvision's
//! ViT MLP), and its derivative `gelu'(x) = Φ(x) + x·φ(x)`, `φ(x) = exp(-x²/2)/sqrt(2π)`,
//! computed on vectors.
//!
//! burn's flex backend calls libm's scalar `erff` once per element (and `expf` again in the
//! backward pass): 16-25% of a ViT training step on the CPU (BENCHMARKS.md). Here
//! `Φ(x) = erfc(-x/√2)/2` comes from the Chebyshev fit of `erfc` in Numerical Recipes (Press et
//! al., 2nd ed., §6.2: `erfc(z) = t·exp(-z² + P(t))`, `t = 1/(1 + z/2)`, fractional error below
//! 1.2e-7 for every `z >= 0`) with an exponential written out as a polynomial, so that the
//! compiler vectorises the whole loop. Evaluating `erfc` of `|x|/√2` keeps `Φ` relatively
//! accurate in the negative tail, where `(1 + erf(x/√2))/2` cancels, down to `x ≈ -13`; below,
//! the density `exp(-x²/2)` is under `f32`'s normal range and `Φ` and `φ` are flushed to zero.

use std::f32::consts::FRAC_1_SQRT_2;
use std::mem::MaybeUninit;

use super::exp::exp_each;
use crate::kernels::lanes::{LANES, VectorPass, each, each2, run_widest};

/// `1/sqrt(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Values per parallel task: large enough that a task outweighs its scheduling.
pub(super) const CHUNK: usize = 1 << 14;

/// Values computed together in one iteration: several vectors' worth, so that the long
/// dependency chain of each value (a division, a degree-9 polynomial, an exponential) overlaps
/// with the others' instead of waiting on its own latencies.
const BLOCK: usize = 2 * LANES;

/// `(t, P(t))` of `erfc(|x|/√2) = t·exp(P(t) - x²/2)` for each of `N` values, stage by
/// stage (see [`each`]).
#[inline(always)]
fn erfc_fit<const N: usize>(x: [f32; N]) -> ([f32; N], [f32; N]) {
    let z = each(x, |x| x.abs() * FRAC_1_SQRT_2);
    let t = each(z, |z| 1.0 / z.mul_add(0.5, 1.0));
    let mut p = [0.170_872_77_f32; N];
    for c in [
        -0.822_152_23,
        1.488_515_9,
        -1.135_204,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
        -1.265_512_2,
    ] {
        p = each2(p, t, |p, t| p.mul_add(t, c));
    }
    (t, p)
}

/// `Φ(x)` from `erfc(|x|/√2)/2`, given `x` and `erfc(|x|/√2)/2`.
#[inline(always)]
fn cdf_from_half_erfc(x: f32, half_erfc: f32) -> f32 {
    if x > 0.0 { 1.0 - half_erfc } else { half_erfc }
}

/// `x·Φ(x)` for each of `N` values, with `erfc(|x|/√2)/2 = t·exp(P(t) - x²/2)/2` (one
/// exponential).
#[inline(always)]
fn gelu<const N: usize>(x: [f32; N]) -> [f32; N] {
    let (t, p) = erfc_fit(x);
    let e = exp_each(each2(p, x, |p, x| p - 0.5 * x * x));
    let half_erfc = each2(t, e, |t, e| 0.5 * t * e);
    each2(x, half_erfc, |x, half_erfc| {
        x * cdf_from_half_erfc(x, half_erfc)
    })
}

/// `Φ(x) + x·φ(x)` for each of `N` values, with `φ(x) = exp(-x²/2)/sqrt(2π)` and
/// `erfc(|x|/√2)/2 = t·exp(-x²/2)·exp(P(t))/2`, sharing the density.
#[inline(always)]
fn gelu_derivative<const N: usize>(x: [f32; N]) -> [f32; N] {
    let (t, p) = erfc_fit(x);
    let density = exp_each(each(x, |x| -0.5 * x * x));
    let half_erfc = each2(
        each2(t, density, |t, d| 0.5 * t * d),
        exp_each(p),
        |a, b| a * b,
    );
    let cdf = each2(x, half_erfc, cdf_from_half_erfc);
    let slope = each2(x, density, |x, density| (x * FRAC_1_SQRT_2PI) * density);
    each2(slope, cdf, |slope, cdf| slope + cdf)
}

struct Forward<'a> {
    x: &'a [f32],
    y: &'a mut [MaybeUninit<f32>],
}

impl VectorPass for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let mut ys = self.y.chunks_exact_mut(BLOCK);
        let mut xs = self.x.chunks_exact(BLOCK);
        for (y, x) in (&mut ys).zip(&mut xs) {
            let x: [f32; BLOCK] = x.try_into().expect("a block of values");
            for (y, v) in y.iter_mut().zip(gelu(x)) {
                y.write(v);
            }
        }
        for (y, &x) in ys.into_remainder().iter_mut().zip(xs.remainder()) {
            y.write(gelu([x])[0]);
        }
    }
}

struct Backward<'a> {
    x: &'a [f32],
    grad: &'a [f32],
    dx: &'a mut [MaybeUninit<f32>],
}

impl VectorPass for Backward<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let mut dxs = self.dx.chunks_exact_mut(BLOCK);
        let mut xs = self.x.chunks_exact(BLOCK);
        let mut grads = self.grad.chunks_exact(BLOCK);
        for ((dx, x), g) in (&mut dxs).zip(&mut xs).zip(&mut grads) {
            let x: [f32; BLOCK] = x.try_into().expect("a block of values");
            let g: [f32; BLOCK] = g.try_into().expect("a block of gradients");
            for (dx, v) in dx
                .iter_mut()
                .zip(each2(g, gelu_derivative(x), |g, d| g * d))
            {
                dx.write(v);
            }
        }
        let rest = xs.remainder().iter().zip(grads.remainder());
        for (dx, (&x, &g)) in dxs.into_remainder().iter_mut().zip(rest) {
            dx.write(g * gelu_derivative([x])[0]);
        }
    }
}

/// `gelu(x)` element by element, in parallel.
pub fn gelu_forward(x: &[f32]) -> Vec<f32> {
    // SAFETY: each task writes every value of its chunk.
    unsafe {
        crate::kernels::flex_f32::par_filled(x.len(), CHUNK, |index, y| {
            let x = &x[index * CHUNK..][..y.len()];
            run_widest(Forward { x, y });
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
            run_widest(Backward {
                x: &x[at..][..dx.len()],
                grad: &grad[at..][..dx.len()],
                dx,
            });
        })
    }
}
