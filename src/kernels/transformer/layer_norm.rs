//! Layer normalisation over the last dimension of `[rows, D]` (Ba, Kiros & Hinton, "Layer
//! Normalization", 2016), forward and backward, a row at a time:
//!
//! - forward `y = γ ⊙ x̂ + β`, `x̂ = (x - μ) · r`, with the row's mean `μ`, biased variance `σ²`
//!   and `r = 1/sqrt(σ² + ε)` (PyTorch's `nn.LayerNorm`, burn's `LayerNorm`);
//! - backward, with `g = ∂L/∂y`: `∂L/∂x = r · (g⊙γ - mean(g⊙γ) - x̂ · mean(g⊙γ⊙x̂))`,
//!   `∂L/∂γ = Σ_rows g⊙x̂`, `∂L/∂β = Σ_rows g`.
//!
//! Under autodiff, burn composes a layer norm from about ten tensor operations (means,
//! differences, a square root, broadcasts), each a pass over the activation and a node of the
//! graph; here the forward is one pass and the backward one, with the row statistics
//! ([`RowStatistics`]) kept from the forward. The parameter gradients are summed over fixed blocks of rows and the
//! blocks' sums added in order, so the result does not depend on the number of threads.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::kernels::lanes::{VectorPass, centred_sums, dot, run_widest, sum};

/// Rows per parallel task (and per partial sum of the parameter gradients).
const ROWS_PER_TASK: usize = 32;

/// Shape of a layer norm: `rows` rows of `width` values, normalised row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowShape {
    /// Rows (every dimension but the last, multiplied).
    pub rows: usize,
    /// Values per row (the last dimension), `> 0`.
    pub width: usize,
}

/// A row's statistics, kept from the forward pass for the backward pass.
///
/// The mean is `mean + correction`, kept as two numbers: the centred values are
/// `(x - mean) - correction`. The first mean, summed in `f32`, is off by up to about `1e-7`
/// of the values' magnitude, which is a large relative error in `x - μ` when a row's spread is
/// small against its mean; the sum of the centred values measures that error, and subtracting
/// it (the corrected two-pass algorithm, Chan, Golub & LeVeque 1983) leaves the centred values
/// accurate to their own rounding. A single `f32` mean could not hold the correction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RowStatistics {
    /// The mean as first summed.
    pub mean: f32,
    /// What the centred values' sum says the first mean is short by.
    pub correction: f32,
    /// `1/sqrt(σ² + ε)`.
    pub rstd: f32,
}

impl RowStatistics {
    /// `x - μ`.
    #[inline(always)]
    fn centre(&self, x: f32) -> f32 {
        (x - self.mean) - self.correction
    }
}

/// The statistics of one row: its mean, then the sum and the sum of squares of the values
/// centred on it in one pass, `σ² = Σc²/D - (Σc/D)²` (the corrected two-pass formula).
#[inline(always)]
fn row_statistics(x: &[f32], epsilon: f32) -> RowStatistics {
    let width = x.len() as f32;
    let mean = sum(x) / width;
    let (centred_sum, centred_squares) = centred_sums(x, mean);
    let correction = centred_sum / width;
    let variance = (centred_squares / width - correction * correction).max(0.0);
    RowStatistics {
        mean,
        correction,
        rstd: 1.0 / (variance + epsilon).sqrt(),
    }
}

struct ForwardRows<'a> {
    x: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    epsilon: f32,
    y: &'a mut [MaybeUninit<f32>],
    statistics: &'a mut [RowStatistics],
}

impl VectorPass for ForwardRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let width = self.gamma.len();
        let rows = self
            .x
            .chunks_exact(width)
            .zip(self.y.chunks_exact_mut(width));
        for ((x, y), statistics) in rows.zip(self.statistics.iter_mut()) {
            let row = row_statistics(x, self.epsilon);
            *statistics = row;
            for (((y, &x), &gamma), &beta) in y.iter_mut().zip(x).zip(self.gamma).zip(self.beta) {
                y.write((row.centre(x) * row.rstd).mul_add(gamma, beta));
            }
        }
    }
}

/// `γ ⊙ x̂ + β` for each row of `x`, and each row's statistics for [`layer_norm_backward`].
///
/// # Panics
/// If `x` is not `shape.rows · shape.width` values or `gamma`, `beta` not `shape.width`.
pub fn layer_norm_forward(
    shape: RowShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<RowStatistics>) {
    let RowShape { rows, width } = shape;
    assert!(width > 0, "layer norm: rows of zero width");
    assert_eq!(
        x.len(),
        rows * width,
        "layer norm: input of {rows} x {width}"
    );
    assert_eq!(
        (gamma.len(), beta.len()),
        (width, width),
        "layer norm: γ, β"
    );
    let mut y = Vec::with_capacity(x.len());
    let mut statistics = vec![RowStatistics::default(); rows];
    y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(ROWS_PER_TASK * width)
        .zip(statistics.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, (y, statistics))| {
            run_widest(ForwardRows {
                x: &x[task * ROWS_PER_TASK * width..][..y.len()],
                gamma,
                beta,
                epsilon: epsilon as f32,
                y,
                statistics,
            })
        });
    // SAFETY: every task wrote each value of its rows.
    unsafe { y.set_len(x.len()) };
    (y, statistics)
}

struct BackwardRows<'a> {
    x: &'a [f32],
    grad: &'a [f32],
    gamma: &'a [f32],
    statistics: &'a [RowStatistics],
    dx: &'a mut [MaybeUninit<f32>],
    /// `[∂L/∂γ, ∂L/∂β]` of these rows, each `width` values.
    parameter_grads: &'a mut [f32],
}

impl VectorPass for BackwardRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let width = self.gamma.len();
        let (dgamma, dbeta) = self.parameter_grads.split_at_mut(width);
        let (mut normalised, mut scaled_grad) = (vec![0.0; width], vec![0.0; width]);
        let rows = self
            .x
            .chunks_exact(width)
            .zip(self.grad.chunks_exact(width))
            .zip(self.dx.chunks_exact_mut(width));
        for (((x, grad), dx), statistics) in rows.zip(self.statistics) {
            let rstd = statistics.rstd;
            for (((n, s), &x), (&g, &gamma)) in normalised
                .iter_mut()
                .zip(scaled_grad.iter_mut())
                .zip(x)
                .zip(grad.iter().zip(self.gamma))
            {
                *n = statistics.centre(x) * rstd;
                *s = g * gamma;
            }
            let mean_scaled = sum(&scaled_grad) / width as f32;
            let mean_projection = dot(&scaled_grad, &normalised) / width as f32;
            for ((dx, &s), &n) in dx.iter_mut().zip(&scaled_grad).zip(&normalised) {
                dx.write(rstd * (s - mean_scaled - n * mean_projection));
            }
            for (((dgamma, dbeta), &g), &n) in dgamma
                .iter_mut()
                .zip(dbeta.iter_mut())
                .zip(grad)
                .zip(&normalised)
            {
                *dgamma = g.mul_add(n, *dgamma);
                *dbeta += g;
            }
        }
    }
}

/// The gradients of [`layer_norm_forward`] for the output gradient `grad`:
/// `(∂L/∂x, ∂L/∂γ, ∂L/∂β)`.
///
/// # Panics
/// If the lengths do not match `shape` (as [`layer_norm_forward`]).
pub fn layer_norm_backward(
    shape: RowShape,
    x: &[f32],
    gamma: &[f32],
    statistics: &[RowStatistics],
    grad: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let RowShape { rows, width } = shape;
    assert!(width > 0, "layer norm: rows of zero width");
    assert_eq!(
        (x.len(), grad.len(), statistics.len(), gamma.len()),
        (rows * width, rows * width, rows, width),
        "layer norm backward: input, gradient, statistics, γ"
    );
    let mut dx = Vec::with_capacity(x.len());
    let partial_grads: Vec<Vec<f32>> = dx.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(ROWS_PER_TASK * width)
        .enumerate()
        .map(|(task, dx)| {
            let at = task * ROWS_PER_TASK * width;
            let mut parameter_grads = vec![0.0; 2 * width];
            run_widest(BackwardRows {
                x: &x[at..][..dx.len()],
                grad: &grad[at..][..dx.len()],
                gamma,
                statistics: &statistics[task * ROWS_PER_TASK..][..dx.len() / width],
                dx,
                parameter_grads: &mut parameter_grads,
            });
            parameter_grads
        })
        .collect();
    // SAFETY: every task wrote each value of its rows.
    unsafe { dx.set_len(x.len()) };
    let mut parameter_grads = vec![0.0; 2 * width];
    for partial in &partial_grads {
        for (total, &p) in parameter_grads.iter_mut().zip(partial) {
            *total += p;
        }
    }
    let dbeta = parameter_grads.split_off(width);
    (dx, parameter_grads, dbeta)
}
