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

    /// The knots `t_k` and the trapezoidal weights (doubled, times `phi(t_k)`).
    fn grid(&self) -> (Vec<f32>, Vec<f32>) {
        let dt = self.t_max / (self.knots - 1) as f64;
        let t: Vec<f64> = (0..self.knots).map(|k| k as f64 * dt).collect();
        let weights = t
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                let end = k == 0 || k == self.knots - 1;
                let w = if end { dt } else { 2.0 * dt };
                (w * (-t * t / 2.0).exp()) as f32
            })
            .collect();
        (t.iter().map(|&t| t as f32).collect(), weights)
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
    pub fn loss(&self, views: &[Tensor<2>], unit_vectors: Tensor<2>) -> Result<Tensor<1>> {
        let first = views.first().ok_or_else(|| Error::MissingInput {
            context: "SIGReg".into(),
            what: "embeddings: needs 1 or more views, got 0".into(),
        })?;
        let [n, d] = first.dims();
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
        let device = first.device();
        let (t, weights) = self.grid();
        let k = t.len();
        let t = Tensor::<1>::from_data(TensorData::new(t, [k]), &device).reshape([1, 1, 1, k]);
        let phi = t.clone().square().div_scalar(-2.0).exp();
        let weights = Tensor::<1>::from_data(TensorData::new(weights, [k]), &device);
        let projected: Vec<Tensor<3>> = views
            .iter()
            .map(|z| z.clone().matmul(unit_vectors.clone()).unsqueeze_dim(0))
            .collect();
        let x_t = Tensor::cat(projected, 0).unsqueeze_dim::<4>(3) * t;
        let cos_mean = x_t.clone().cos().mean_dim(1);
        let sin_mean = x_t.sin().mean_dim(1);
        let error = (cos_mean - phi).square() + sin_mean.square();
        let statistic = (error * weights.reshape([1, 1, 1, k])).sum_dim(3);
        Ok(statistic.mean().mul_scalar(n as f64))
    }
}

/// A standard normal draw (Box-Muller).
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
