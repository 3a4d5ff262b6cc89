//! `e^x` as straight-line arithmetic that the compiler vectorises (libm's `expf` is a call per
//! element): for the attention's softmax.

use std::f32::consts::{LN_2, LOG2_E};

use crate::kernels::lanes::{each, each2};

/// `e^x` to about 2 ulp: `x = n·ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 polynomial for
/// `e^r` (the minimax coefficients of Cephes' `expf`), and `2^n` built in the exponent bits.
/// Below -87 it returns 0 (the true value, below 1.7e-38, would be subnormal), above 88.72
/// infinity; NaN stays NaN.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    exp_each([x])[0]
}

/// [`exp`] of each of `N` values, stage by stage (see [`each`]): over a block of several
/// vectors the chains of the polynomial run side by side. Each value's result is bit-identical
/// to [`exp`]'s.
#[inline(always)]
pub(super) fn exp_each<const N: usize>(x: [f32; N]) -> [f32; N] {
    /// `1.5·2^23`: adding it rounds an `f32` below `2^22` to the nearest integer `n`, which
    /// then sits in the low bits of the sum (`bits = 0x4B40_0000 + n`).
    const ROUND: f32 = 12_582_912.0;
    /// `ln 2` split so that `n·LN_2_HI` is exact for the `n` that occur.
    const LN_2_HI: f32 = 0.693_359_4;
    const LN_2_LO: f32 = LN_2 - LN_2_HI;
    let clamped = each(x, |x| x.clamp(-87.0, 88.0));
    let rounded = each(clamped, |x| x * LOG2_E + ROUND);
    let n = each(rounded, |rounded| rounded - ROUND);
    let r = each2(n, clamped, |n, x| n.mul_add(-LN_2_HI, x));
    let r = each2(n, r, |n, r| n.mul_add(-LN_2_LO, r));
    let mut p = [1.987_569_1e-4_f32; N];
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = each2(p, r, |p, r| p.mul_add(r, c));
    }
    let e_r = each2(each2(p, r, |p, r| p * r), r, |pr, r| pr.mul_add(r, r) + 1.0);
    // `2^n` has the exponent bits `n + 127`: `(0x4B40_0000 + n + 127) << 23` wraps to exactly
    // that, with integer operations only (a saturating float-to-int cast does not vectorise).
    let value = each2(e_r, rounded, |e_r, rounded| {
        e_r * f32::from_bits(rounded.to_bits().wrapping_add(127) << 23)
    });
    each2(value, x, |value, input| {
        if input < -87.0 {
            0.0
        } else if input > 88.72 {
            f32::INFINITY
        } else {
            value
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm() {
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let (ours, reference) = (exp(x) as f64, (x as f64).exp());
            assert!(
                ((ours - reference) / reference).abs() < 3e-7,
                "exp({x}) = {ours}, expected {reference}"
            );
        }
    }
}
