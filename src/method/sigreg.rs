//! SIGReg: Sketched Isotropic Gaussian Regularization (Balestriero & LeCun, "LeJEPA: Provable
//! and Scalable Self-Supervised Learning Without the Heuristics", 2025, arXiv:2511.08544;
//! reference code: galilai-group/lejepa, lightly's `SIGReg`).
//!
//! The embeddings `z_n` (`[N, D]`, per view) are projected on `M` random unit vectors `a_m`
//! (the columns of `A`, `[D, M]`, drawn afresh every step). For each projection, the
//! Epps-Pulley statistic measures how far the empirical characteristic function is from the
//! standard normal's, `phi(t) = exp(-t^2 / 2)`:
//!
//! `EP_m = N * integral_{-T}^{T} |mean_n exp(i t a_m.z_n) - phi(t)|^2 phi(t) dt`
//!
//! The integrand is even in `t`, so the integral is twice the trapezoidal rule over `K` knots
//! `t_k = k T / (K - 1)` in `[0, T]`, with weights `w = (dt, 2 dt, ..., 2 dt, dt) * phi(t_k)`,
//! and `|.|^2 = (mean cos - phi)^2 + (mean sin)^2`. The loss is the mean of `EP_m` over the
//! projections and the views; `T = 3`, `K = 17`, `M = 1024`.
//!
//! On the flex device the statistic is one kernel ([`crate::kernels::sigreg`]: one `sin_cos`
//! per projection and the knots by angle addition, in f64) where the composition evaluates
//! `cos` and `sin` at every knot, forward and backward.

use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check;
use crate::error::{Error, Result};

/// The quadrature of the Epps-Pulley integral and the number of random projections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sigreg {
    /// Knots of the frequency grid on `[0, t_max]` (17).
    pub knots: usize,
    /// Largest frequency `T` (3).
    pub t_max: f64,
    /// Random unit vectors per step `M` (1024).
    pub num_vectors: usize,
}

impl Default for Sigreg {
    fn default() -> Self {
        Self {
            knots: 17,
            t_max: 3.0,
            num_vectors: 1024,
        }
    }
}

impl Sigreg {
    /// Checks the ranges, naming each field under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if !(2..=1024).contains(&self.knots) {
            return Err(Error::invalid_config(
                format!("{prefix}knots"),
                self.knots,
                "in 2..=1024",
            ));
        }
        check::ensure(
            &format!("{prefix}t_max"),
            self.t_max,
            self.t_max > 0.0,
            "a finite value > 0",
        )?;
        super::at_least_one(&[(&format!("{prefix}num_vectors"), self.num_vectors)])
    }

    /// The quadrature of the Epps-Pulley integral.
    pub fn grid(&self) -> EppsPulleyGrid {
        EppsPulleyGrid::new(self.knots, self.t_max)
    }

    /// The step's random unit vectors `[dim, num_vectors]`: standard normal columns, each
    /// divided by its norm, drawn from a stream seeded by `seed` and `step` (the same on every
    /// process and after a resume).
    pub fn unit_vectors(&self, dim: usize, seed: u64, step: usize, device: &Device) -> Tensor<2> {
        let stream = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = StdRng::seed_from_u64(stream);
        let mut values: Vec<f64> = (0..dim * self.num_vectors)
            .map(|_| standard_normal(&mut rng))
            .collect();
        for m in 0..self.num_vectors {
            let norm = (0..dim)
                .map(|d| values[d * self.num_vectors + m].powi(2))
                .sum::<f64>()
                .sqrt();
            for d in 0..dim {
                values[d * self.num_vectors + m] /= norm;
            }
        }
        let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
        Tensor::from_data(TensorData::new(values, [dim, self.num_vectors]), device)
    }

    /// The SIGReg loss of `views` (each `[N, D]`) projected on `unit_vectors` (`[D, M]`).
    ///
    /// On the flex device (f32) the statistic is one kernel forward and one backward
    /// ([`crate::kernels::sigreg`]); elsewhere, and when the fast kernels are turned off
    /// ([`crate::transformer_ops::set_fast_transformer_ops`]), it is
    /// [`Self::loss_with_tensor_ops`]'s composition.
    pub fn loss(&self, views: &[Tensor<2>], unit_vectors: Tensor<2>) -> Result<Tensor<1>> {
        let projections = self.projections(views, unit_vectors)?;
        #[cfg(feature = "flex")]
        if runs_on_kernel(&projections) {
            use crate::kernels::sigreg::FastSigregOps;
            use burn::backend::Dispatch;
            return Ok(Tensor::from_dispatch(
                <Dispatch as FastSigregOps>::fast_epps_pulley(
                    projections.into_dispatch(),
                    self.knots,
                    self.t_max,
                ),
            ));
        }
        Ok(self.statistic_with_tensor_ops(projections))
    }

    /// [`Self::loss`] composed from burn's tensor operations on any device, as lightly and the
    /// reference code compute it: every projection times every knot, `[V, N, M, K]`, through
    /// `cos` and `sin`.
    pub fn loss_with_tensor_ops(
        &self,
        views: &[Tensor<2>],
        unit_vectors: Tensor<2>,
    ) -> Result<Tensor<1>> {
        let projections = self.projections(views, unit_vectors)?;
        Ok(self.statistic_with_tensor_ops(projections))
    }

    /// The projections `[V, N, M]` of `views` (each `[N, D]`) on `unit_vectors` (`[D, M]`),
    /// after checking the shapes.
    fn projections(&self, views: &[Tensor<2>], unit_vectors: Tensor<2>) -> Result<Tensor<3>> {
        let first = views.first().ok_or_else(|| Error::MissingInput {
            context: "SIGReg".into(),
            what: "embeddings: needs 1 or more views, got 0".into(),
        })?;
        let [_, d] = first.dims();
        check::min_batch(|| "SIGReg".into(), first, 1)?;
        for (v, view) in views.iter().enumerate().skip(1) {
            check::same_shape(|| format!("SIGReg: view {v}"), first, view)?;
        }
        let [rows, m] = unit_vectors.dims();
        if rows != d {
            return Err(Error::ShapeMismatch {
                context: "SIGReg: unit vectors".into(),
                expected: vec![d, m],
                found: vec![rows, m],
            });
        }
        let projected: Vec<Tensor<3>> = views
            .iter()
            .map(|z| z.clone().matmul(unit_vectors.clone()).unsqueeze_dim(0))
            .collect();
        Ok(Tensor::cat(projected, 0))
    }

    /// The statistic of projections `[V, N, M]` from burn's tensor operations.
    fn statistic_with_tensor_ops(&self, projections: Tensor<3>) -> Tensor<1> {
        let n = projections.dims()[1];
        let device = projections.device();
        let grid = self.grid();
        let k = grid.knots();
        let as_tensor = |values: Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(values, [k]), &device).reshape([1, 1, 1, k])
        };
        let t = as_tensor((0..k).map(|i| grid.knot(i) as f32).collect());
        let phi = t.clone().square().div_scalar(-2.0).exp();
        let weights = as_tensor(grid.weights.iter().map(|&w| w as f32).collect());
        let x_t = projections.unsqueeze_dim::<4>(3) * t;
        let cos_mean = x_t.clone().cos().mean_dim(1);
        let sin_mean = x_t.sin().mean_dim(1);
        let error = (cos_mean - phi).square() + sin_mean.square();
        let statistic = (error * weights).sum_dim(3);
        statistic.mean().mul_scalar(n as f64)
    }
}

/// Whether [`Sigreg::loss`] runs on the CPU kernel: f32 projections on the flex device, the
/// fast kernels on.
#[cfg(feature = "flex")]
fn runs_on_kernel(projections: &Tensor<3>) -> bool {
    crate::transformer_ops::fast_transformer_ops_enabled()
        && crate::device::is_cpu(&projections.device())
        && projections.dtype() == burn::tensor::DType::F32
}

/// The Epps-Pulley quadrature: knots `t_k = k·step` for `k` in `0..K` and weights `w_k`, the
/// trapezoidal rule's over `[0, T]` doubled (the integrand is even in `t`) times the standard
/// normal's characteristic function `φ(t_k) = exp(-t_k²/2)`.
#[derive(Debug, Clone, PartialEq)]
pub struct EppsPulleyGrid {
    /// `Δt = T / (K - 1)`.
    pub step: f64,
    /// `w_k = (Δt, 2Δt, ..., 2Δt, Δt)_k · φ(t_k)`.
    pub weights: Vec<f64>,
}

impl EppsPulleyGrid {
    /// `knots` uniform knots over `[0, t_max]` ([`Sigreg::validate`] requires at least 2; with
    /// fewer the step is `t_max`, the two-knot grid's).
    pub fn new(knots: usize, t_max: f64) -> Self {
        let step = t_max / (knots.max(2) - 1) as f64;
        let weights = (0..knots)
            .map(|k| {
                let end = k == 0 || k + 1 == knots;
                let w = if end { step } else { 2.0 * step };
                let t = k as f64 * step;
                w * (-t * t / 2.0).exp()
            })
            .collect();
        Self { step, weights }
    }

    /// `K`.
    pub fn knots(&self) -> usize {
        self.weights.len()
    }

    /// `t_k`.
    pub fn knot(&self, k: usize) -> f64 {
        k as f64 * self.step
    }

    /// `φ(t_k) = exp(-t_k²/2)`.
    pub fn characteristic(&self, k: usize) -> f64 {
        let t = self.knot(k);
        (-t * t / 2.0).exp()
    }
}

/// A standard normal draw (Box-Muller).
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
