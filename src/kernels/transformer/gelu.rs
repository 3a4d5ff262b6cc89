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

use super::exp::exp;
use crate::kernels::lanes::{VectorPass, run_widest};

/// `1/sqrt(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Values per parallel task: large enough that a task outweighs its scheduling.
pub(super) const CHUNK: usize = 1 << 14;

/// `(Φ(x), exp(-x²/2))`: the normal CDF and the unnormalised density, sharing `x²/2`.
#[inline(always)]
fn cdf_and_density(x: f32) -> (f32, f32) {
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / z.mul_add(0.5, 1.0);
    let p = 0.170_872_77_f32
        .mul_add(t, -0.822_152_23)
        .mul_add(t, 1.488_515_9)
        .mul_add(t, -1.135_204)
        .mul_add(t, 0.278_868_07)
        .mul_add(t, -0.186_288_06)
        .mul_add(t, 0.096_784_18)
        .mul_add(t, 0.374_091_96)
        .mul_add(t, 1.000_023_7)
        .mul_add(t, -1.265_512_2);
    let half_square = 0.5 * x * x;
    let density = exp(-half_square);
    // erfc(z) = t·exp(-z²)·exp(P(t)); z² = x²/2.
    let half_erfc = 0.5 * t * density * exp(p);
    let cdf = if x > 0.0 { 1.0 - half_erfc } else { half_erfc };
    (cdf, density)
}

/// `x·Φ(x)`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    x * cdf_and_density(x).0
}

/// `Φ(x) + x·φ(x)`.
#[inline(always)]
fn gelu_derivative(x: f32) -> f32 {
    let (cdf, density) = cdf_and_density(x);
    (x * FRAC_1_SQRT_2PI).mul_add(density, cdf)
}

struct Forward<'a> {
    x: &'a [f32],
    y: &'a mut [MaybeUninit<f32>],
}

impl VectorPass for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for (y, &x) in self.y.iter_mut().zip(self.x) {
            y.write(gelu(x));
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
        for ((dx, &x), &g) in self.dx.iter_mut().zip(self.x).zip(self.grad) {
            dx.write(g * gelu_derivative(x));
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
