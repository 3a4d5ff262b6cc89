//! VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce & LeCun, ICLR 2022,
//! arXiv:2105.04906; reference code: facebookresearch/vicreg `main_vicreg.py`).
//!
//! `L = lambda * MSE(z1, z2) + mu * (v(z1) + v(z2)) / 2 + nu * (c(z1) + c(z2))` with
//! - invariance `MSE(z1, z2) = mean_{b,j} (z1_bj - z2_bj)^2`,
//! - variance `v(z) = mean_j relu(1 - sqrt(Var_b(z_j) + eps))` (unbiased variance),
//! - covariance `c(z) = sum_{i != j} Cov(z)_ij^2 / D`, `Cov(z) = (z - mean)^T (z - mean) / (N - 1)`,
//!
//! with `lambda = mu = 25`, `nu = 1`, `eps = 1e-4`. With more than two views the loss is
//! averaged over all pairs of views.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use super::{Requirements, ViewEmbeddings, require_views};
use crate::check;
use crate::error::Result;

/// The VICReg objective.
#[derive(Module, Debug)]
pub struct VicregLoss {
    /// Weight of the invariance (MSE) term.
    pub lambda_invariance: f64,
    /// Weight of the variance term.
    pub mu_variance: f64,
    /// Weight of the covariance term.
    pub nu_covariance: f64,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl Default for VicregLoss {
    fn default() -> Self {
        Self {
            lambda_invariance: 25.0,
            mu_variance: 25.0,
            nu_covariance: 1.0,
            eps: 1e-4,
        }
    }
}

impl VicregLoss {
    /// What the joint embedding must provide.
    pub fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    /// Loss of one batch of views.
    pub fn forward(&self, views: &ViewEmbeddings) -> Result<Tensor<1>> {
        let projections = require_views("VICReg", "projections", &views.projections, 2)?;
        super::mean_over_view_pairs(projections, |a, b| self.pair_loss(a, b))
    }

    /// VICReg loss of two `[N, D]` embedding batches.
    pub fn pair_loss(&self, z1: Tensor<2>, z2: Tensor<2>) -> Result<Tensor<1>> {
        check::same_shape(|| "VICReg loss: second view".into(), &z1, &z2)?;
        check::min_batch(|| "VICReg loss".into(), &z1, 2)?;
        let invariance = (z1.clone() - z2.clone()).square().mean();
        let variance = (variance_term(z1.clone(), self.eps) + variance_term(z2.clone(), self.eps))
            .div_scalar(2.0);
        let covariance = covariance_term(z1) + covariance_term(z2);
        Ok(invariance.mul_scalar(self.lambda_invariance)
            + variance.mul_scalar(self.mu_variance)
            + covariance.mul_scalar(self.nu_covariance))
    }
}

/// `mean_j relu(1 - sqrt(Var_b(z_j) + eps))`, unbiased variance.
pub fn variance_term(z: Tensor<2>, eps: f64) -> Tensor<1> {
    let std = z.var(0).add_scalar(eps).sqrt();
    relu(std.neg().add_scalar(1.0)).mean()
}

/// `sum_{i != j} Cov(z)_ij^2 / D` with the unbiased covariance.
pub fn covariance_term(z: Tensor<2>) -> Tensor<1> {
    let [n, d] = z.dims();
    let centered = z.clone() - z.mean_dim(0);
    let cov = centered
        .clone()
        .transpose()
        .matmul(centered)
        .div_scalar((n - 1) as f64);
    let off_diagonal_mask = Tensor::<2>::eye(d, &cov.device()).neg().add_scalar(1.0);
    (cov * off_diagonal_mask)
        .square()
        .sum()
        .div_scalar(d as f64)
}
