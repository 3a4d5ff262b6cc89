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
//!
//! Recipes: CIFAR, solo-learn's (LARS eta 0.02, lr 0.3 x batch / 256, weight decay 1e-4,
//! without its trust-ratio clipping; with lightly's SGD recipe VICReg diverges at lr 0.12);
//! ImageNet, the paper's (LARS eta 1e-3, lr 0.2 x batch / 256, 10 warmup epochs, weight decay
//! 1e-6).

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::gram::{ProductSide, off_diagonal_self_squares_through};
use super::{
    Heads, Method, MethodConfig, MethodSetup, Preset, Recipe, RecipeContext, Requirements,
    StepContext, ViewEmbeddings, non_negative, positive, require_views, scaled,
};
use crate::augment::ViewTransform;
use crate::check;
use crate::error::Result;
use crate::model::ProjectionHeadConfig;
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// VICReg's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VicregConfig {
    /// Invariance weight `lambda` (25).
    pub lambda_invariance: f64,
    /// Variance weight `mu` (25).
    pub mu_variance: f64,
    /// Covariance weight `nu` (1).
    pub nu_covariance: f64,
    /// `eps` under the square root of the variance (1e-4).
    pub eps: f64,
}

impl Default for VicregConfig {
    fn default() -> Self {
        Self {
            lambda_invariance: 25.0,
            mu_variance: 25.0,
            nu_covariance: 1.0,
            eps: 1e-4,
        }
    }
}

impl VicregConfig {
    /// The defaults of `preset` (the same for both).
    pub fn preset(_preset: Preset) -> Self {
        Self::default()
    }
}

impl MethodConfig for VicregConfig {
    type Method = Vicreg;

    fn name(&self) -> &'static str {
        "VICReg"
    }

    fn validate(&self) -> Result<()> {
        non_negative(&[
            ("method.lambda_invariance", self.lambda_invariance),
            ("method.mu_variance", self.mu_variance),
            ("method.nu_covariance", self.nu_covariance),
        ])?;
        positive(&[("method.eps", self.eps)])
    }

    fn heads(&self, feature_dim: usize, width: f64) -> Heads {
        let d = scaled(8192, width);
        Heads {
            projector: ProjectionHeadConfig::vicreg_projector(feature_dim, d, d),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let views = ViewTransform::vicreg(context.preset.scale());
        let (optimizer, lr) = match context.preset {
            Preset::Cifar => (OptimizerConfig::lars(0.02, 1e-4), LrConfig::per_256(0.3)),
            Preset::Imagenet => (
                OptimizerConfig::lars(1e-3, 1e-6),
                LrConfig::per_256(0.2).with_warmup(10),
            ),
        };
        Recipe {
            views,
            optimizer,
            lr,
            ema: EmaConfig::to_one(0.99),
        }
    }

    fn init(&self, _setup: &MethodSetup, _device: &Device) -> Result<Vicreg> {
        Ok(Vicreg {
            lambda_invariance: self.lambda_invariance,
            mu_variance: self.mu_variance,
            nu_covariance: self.nu_covariance,
            eps: self.eps,
        })
    }
}

/// The VICReg module.
#[derive(Module, Debug)]
pub struct Vicreg {
    /// Weight of the invariance (MSE) term.
    pub lambda_invariance: f64,
    /// Weight of the variance term.
    pub mu_variance: f64,
    /// Weight of the covariance term.
    pub nu_covariance: f64,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl Method for Vicreg {
    fn name(&self) -> &'static str {
        "VICReg"
    }

    fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    fn loss(&self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Tensor<1>> {
        let projections = require_views("VICReg", "projections", &views.projections, 2)?;
        super::mean_over_view_pairs(projections, |a, b| self.pair_loss(a, b))
    }
}

impl Vicreg {
    /// VICReg loss of two `[N, D]` embedding batches, the covariance through the cheaper side
    /// ([`ProductSide::cheaper`]).
    pub fn pair_loss(&self, z1: Tensor<2>, z2: Tensor<2>) -> Result<Tensor<1>> {
        let [n, d] = z1.dims();
        self.pair_loss_through(z1, z2, ProductSide::cheaper(n, d, true))
    }

    /// VICReg loss of two `[N, D]` embedding batches, the covariance through `side`.
    pub fn pair_loss_through(
        &self,
        z1: Tensor<2>,
        z2: Tensor<2>,
        side: ProductSide,
    ) -> Result<Tensor<1>> {
        check::same_shape(|| "VICReg loss: second view".into(), &z1, &z2)?;
        check::min_batch(|| "VICReg loss".into(), &z1, 2)?;
        let invariance = (z1.clone() - z2.clone()).square().mean();
        let variance = (variance_term(z1.clone(), self.eps) + variance_term(z2.clone(), self.eps))
            .div_scalar(2.0);
        let covariance = covariance_term_through(z1, side) + covariance_term_through(z2, side);
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

/// `sum_{i != j} Cov(z)_ij^2 / D` with the unbiased covariance, through the `N x N` Gram
/// matrix of the centred batch when `2 N <= D` ([`super::gram`]).
pub fn covariance_term(z: Tensor<2>) -> Tensor<1> {
    let [n, d] = z.dims();
    covariance_term_through(z, ProductSide::cheaper(n, d, true))
}

/// [`covariance_term`] through `side`.
pub fn covariance_term_through(z: Tensor<2>, side: ProductSide) -> Tensor<1> {
    let [n, d] = z.dims();
    let centered = z.clone() - z.mean_dim(0);
    let unbiased = (n - 1) as f64;
    off_diagonal_self_squares_through(centered, side).div_scalar(unbiased * unbiased * d as f64)
}
