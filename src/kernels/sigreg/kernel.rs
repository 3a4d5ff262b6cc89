//! The Epps-Pulley statistic of SIGReg on slices: see the [module docs](super).
//!
//! With projections `x_vnm` (`V` views, `N` samples, `M` directions), knots `t_k = k·Δt`,
//! weights `w_k` and `φ_k = exp(-t_k²/2)`:
//!
//! `C_vmk = mean_n cos(t_k x_vnm)`, `S_vmk = mean_n sin(t_k x_vnm)`,
//! `EP = N/(V·M) · Σ_{v,m,k} w_k ((C_vmk - φ_k)² + S_vmk²)`,
//! `∂EP/∂x_vnm = 2/(V·M) · Σ_k w_k t_k (S_vmk cos(t_k x_vnm) - (C_vmk - φ_k) sin(t_k x_vnm))`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::method::sigreg::EppsPulleyGrid;

/// Directions handled together: the recurrence runs across them in vectors, and a block's
/// running sums (`2·K·COLUMNS` values, 17 KiB at the default 17 knots) stay near the core.
const COLUMNS: usize = 64;

/// Projections `[views, samples, directions]`, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionShape {
    /// `V`.
    pub views: usize,
    /// `N`, the samples each mean runs over.
    pub samples: usize,
    /// `M`, the random directions.
    pub directions: usize,
}

impl ProjectionShape {
    fn len(&self) -> usize {
        self.views * self.samples * self.directions
    }
}

/// The empirical characteristic function at every knot: `C` and `S` (`[V, K, M]` each), what
/// the backward pass needs.
#[derive(Debug, Clone, PartialEq)]
pub struct EppsPulleyMoments {
    /// `C_vmk = mean_n cos(t_k x_vnm)`, at `(v·K + k)·M + m`.
    pub cos_means: Vec<f64>,
    /// `S_vmk = mean_n sin(t_k x_vnm)`, laid out as `cos_means`.
    pub sin_means: Vec<f64>,
}

/// `cos(kθ)` and `sin(kθ)` for `k = 0, 1, ...` of each of up to [`COLUMNS`] angles, advanced
/// one knot at a time by `e^{i(k+1)θ} = e^{ikθ}·e^{iθ}`.
struct Rotations {
    step_cos: [f64; COLUMNS],
    step_sin: [f64; COLUMNS],
    cos: [f64; COLUMNS],
    sin: [f64; COLUMNS],
}

impl Rotations {
    /// At `k = 0` for the angles `Δt·x` of `x`.
    fn new(x: &[f32], step: f64) -> Self {
        let mut rotations = Self {
            step_cos: [1.0; COLUMNS],
            step_sin: [0.0; COLUMNS],
            cos: [1.0; COLUMNS],
            sin: [0.0; COLUMNS],
        };
        for (i, &value) in x.iter().enumerate() {
            (rotations.step_sin[i], rotations.step_cos[i]) = (step * f64::from(value)).sin_cos();
        }
        rotations
    }

    /// From knot `k` to `k + 1`.
    #[inline(always)]
    fn advance(&mut self) {
        for i in 0..COLUMNS {
            let (c, s) = (self.cos[i], self.sin[i]);
            self.cos[i] = c * self.step_cos[i] - s * self.step_sin[i];
            self.sin[i] = s * self.step_cos[i] + c * self.step_sin[i];
        }
    }
}

/// The sums over the samples of `cos(t_k x)` and `sin(t_k x)` for view `view` and the
/// directions `start..start + width`: `[2][K][width]`, cosines first.
fn column_sums(
    x: &[f32],
    shape: ProjectionShape,
    grid: &EppsPulleyGrid,
    view: usize,
    start: usize,
    width: usize,
) -> Vec<f64> {
    let knots = grid.knots();
    let mut sums = vec![0.0; 2 * knots * width];
    let (cos_sums, sin_sums) = sums.split_at_mut(knots * width);
    for n in 0..shape.samples {
        let row = (view * shape.samples + n) * shape.directions + start;
        let mut rotations = Rotations::new(&x[row..][..width], grid.step);
        for k in 0..knots {
            let cos_k = &mut cos_sums[k * width..][..width];
            let sin_k = &mut sin_sums[k * width..][..width];
            for i in 0..width {
                cos_k[i] += rotations.cos[i];
                sin_k[i] += rotations.sin[i];
            }
            rotations.advance();
        }
    }
    sums
}

/// The statistic `EP` of projections `x` (`shape`, row-major) and the moments its gradient
/// needs, each direction's sums over the samples in a fixed order (the same result on any
/// number of threads).
///
/// # Panics
/// If `x` does not hold `shape`'s values.
pub fn epps_pulley_forward(
    shape: ProjectionShape,
    grid: &EppsPulleyGrid,
    x: &[f32],
) -> (f64, EppsPulleyMoments) {
    assert_eq!(x.len(), shape.len(), "Epps-Pulley: projections {shape:?}");
    let (knots, m) = (grid.knots(), shape.directions);
    let blocks = m.div_ceil(COLUMNS);
    let sums: Vec<Vec<f64>> = (0..shape.views * blocks)
        .into_par_iter()
        .map(|task| {
            let (view, start) = (task / blocks, (task % blocks) * COLUMNS);
            column_sums(x, shape, grid, view, start, COLUMNS.min(m - start))
        })
        .collect();
    let mut moments = EppsPulleyMoments {
        cos_means: vec![0.0; shape.views * knots * m],
        sin_means: vec![0.0; shape.views * knots * m],
    };
    let per_sample = 1.0 / shape.samples as f64;
    for (task, sums) in sums.iter().enumerate() {
        let (view, start) = (task / blocks, (task % blocks) * COLUMNS);
        let width = COLUMNS.min(m - start);
        for k in 0..knots {
            let at = (view * knots + k) * m + start;
            for i in 0..width {
                moments.cos_means[at + i] = sums[k * width + i] * per_sample;
                moments.sin_means[at + i] = sums[(knots + k) * width + i] * per_sample;
            }
        }
    }
    (statistic(shape, grid, &moments), moments)
}

/// `N/(V·M) · Σ_{v,m,k} w_k ((C_vmk - φ_k)² + S_vmk²)`.
fn statistic(shape: ProjectionShape, grid: &EppsPulleyGrid, moments: &EppsPulleyMoments) -> f64 {
    let (knots, m) = (grid.knots(), shape.directions);
    let mut total = 0.0;
    for view in 0..shape.views {
        for (k, &weight) in grid.weights.iter().enumerate() {
            let at = (view * knots + k) * m;
            let phi = grid.characteristic(k);
            let error: f64 = (0..m)
                .map(|i| {
                    let (c, s) = (moments.cos_means[at + i], moments.sin_means[at + i]);
                    (c - phi) * (c - phi) + s * s
                })
                .sum();
            total += weight * error;
        }
    }
    total * shape.samples as f64 / (shape.views * m) as f64
}

/// `grad · ∂EP/∂x` for every projection, `[V, N, M]`.
///
/// # Panics
/// If `x` does not hold `shape`'s values or `moments` are not of `shape` and `grid`.
pub fn epps_pulley_backward(
    shape: ProjectionShape,
    grid: &EppsPulleyGrid,
    x: &[f32],
    moments: &EppsPulleyMoments,
    grad: f64,
) -> Vec<f32> {
    assert_eq!(x.len(), shape.len(), "Epps-Pulley: projections {shape:?}");
    let (knots, m) = (grid.knots(), shape.directions);
    assert!(
        moments.cos_means.len() == shape.views * knots * m
            && moments.sin_means.len() == moments.cos_means.len(),
        "Epps-Pulley: moments of {shape:?} at {knots} knots"
    );
    let (along_cos, along_sin) = gradient_coefficients(shape, grid, moments, grad);
    let rows_per_task = (4096 / m.max(1)).max(1);
    // SAFETY: `gradient_row` writes every value of each row of the chunk.
    unsafe {
        crate::kernels::flex_f32::par_filled(x.len(), rows_per_task * m, |index, dx| {
            for (r, dx) in dx.chunks_mut(m).enumerate() {
                let row = index * rows_per_task + r;
                let view = row / shape.samples;
                let coefficients = view * knots * m..(view + 1) * knots * m;
                gradient_row(
                    &x[row * m..][..m],
                    &along_cos[coefficients.clone()],
                    &along_sin[coefficients],
                    grid,
                    dx,
                );
            }
        })
    }
}

/// `a_vmk = g·2/(V·M)·w_k t_k S_vmk` and `b_vmk = g·2/(V·M)·w_k t_k (C_vmk - φ_k)`, so that
/// `∂EP/∂x_vnm = Σ_k a_vmk cos(t_k x_vnm) - b_vmk sin(t_k x_vnm)`; `[V, K, M]` each.
fn gradient_coefficients(
    shape: ProjectionShape,
    grid: &EppsPulleyGrid,
    moments: &EppsPulleyMoments,
    grad: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (knots, m) = (grid.knots(), shape.directions);
    let scale = grad * 2.0 / (shape.views * m) as f64;
    let mut along_cos = vec![0.0; moments.cos_means.len()];
    let mut along_sin = vec![0.0; moments.cos_means.len()];
    for view in 0..shape.views {
        for (k, &weight) in grid.weights.iter().enumerate() {
            let factor = scale * weight * grid.knot(k);
            let phi = grid.characteristic(k);
            let at = (view * knots + k) * m;
            for i in at..at + m {
                along_cos[i] = factor * moments.sin_means[i];
                along_sin[i] = factor * (moments.cos_means[i] - phi);
            }
        }
    }
    (along_cos, along_sin)
}

/// One row of projections' gradient `Σ_k a_k cos(t_k x) - b_k sin(t_k x)`, with the row's
/// view's coefficients `[K, M]`.
fn gradient_row(
    x: &[f32],
    along_cos: &[f64],
    along_sin: &[f64],
    grid: &EppsPulleyGrid,
    dx: &mut [MaybeUninit<f32>],
) {
    let m = x.len();
    for start in (0..m).step_by(COLUMNS) {
        let width = COLUMNS.min(m - start);
        let mut rotations = Rotations::new(&x[start..][..width], grid.step);
        let mut sum = [0.0f64; COLUMNS];
        for k in 0..grid.knots() {
            let a = &along_cos[k * m + start..][..width];
            let b = &along_sin[k * m + start..][..width];
            for i in 0..width {
                sum[i] += a[i] * rotations.cos[i] - b[i] * rotations.sin[i];
            }
            rotations.advance();
        }
        for (dx, &sum) in dx[start..][..width].iter_mut().zip(&sum) {
            dx.write(sum as f32);
        }
    }
}
