//! Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar et al., ICML 2021,
//! arXiv:2103.03230; reference code: facebookresearch/barlowtwins `main.py`).
//!
//! The cross-correlation matrix of the two views' embeddings, each normalised per feature over
//! the batch, is driven to the identity:
//!
//! `C = BN(z1)^T BN(z2) / N`,
//! `L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2`, with `lambda = 0.0051`.
//!
//! `BN` is a batch normalisation without affine parameters (biased variance, eps 1e-5), as the
//! reference code's `nn.BatchNorm1d(affine=False)`. With more than two views the loss is averaged
//! over all pairs of views.
//!
//! Recipes: CIFAR, lightly's benchmark (SGD 0.12 x batch / 256, weight decay 5e-4, BYOL's
//! views); ImageNet, the paper's (LARS eta 1e-3, lr 0.2 x batch / 256, 10 warmup epochs,
//! weight decay 1.5e-6; the paper's separate bias rate of 0.0048 is not reproduced: biases
//! take the weights' rate without decay or adaptation).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::gram::{ProductSide, off_diagonal_cross_squares_through};
use super::{
    Heads, Method, MethodConfig, MethodSetup, Preset, Recipe, RecipeContext, Requirements,
    StepContext, ViewEmbeddings, non_negative, require_views, scaled,
};
use crate::augment::ViewTransform;
use crate::check;
use crate::error::Result;
use crate::model::ProjectionHeadConfig;
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// Default weight of the redundancy-reduction term.
pub const BARLOW_TWINS_LAMBDA: f64 = 0.0051;

/// Variance epsilon of the per-feature normalisation (PyTorch BatchNorm's default).
pub const BARLOW_TWINS_BN_EPS: f64 = 1e-5;

/// Barlow Twins' configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BarlowTwinsConfig {
    /// Weight of the off-diagonal (redundancy-reduction) term, 0.0051.
    pub lambda: f64,
}

impl Default for BarlowTwinsConfig {
    fn default() -> Self {
        Self {
            lambda: BARLOW_TWINS_LAMBDA,
        }
    }
}

impl BarlowTwinsConfig {
    /// The defaults of `preset` (the same for both).
    pub fn preset(_preset: Preset) -> Self {
        Self::default()
    }
}

impl MethodConfig for BarlowTwinsConfig {
    type Method = BarlowTwins;

    fn name(&self) -> &'static str {
        "Barlow Twins"
    }

    fn validate(&self) -> Result<()> {
        non_negative(&[("method.lambda", self.lambda)])
    }

    fn heads(&self, feature_dim: usize, width: f64) -> Heads {
        let d = scaled(8192, width);
        Heads {
            projector: ProjectionHeadConfig::barlow_twins_projector(feature_dim, d, d),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let views = ViewTransform::barlow_twins(context.preset.scale());
        let (optimizer, lr) = match context.preset {
            Preset::Cifar => (OptimizerConfig::cifar_sgd(), LrConfig::per_256(0.12)),
            Preset::Imagenet => (
                OptimizerConfig::lars(1e-3, 1.5e-6),
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

    fn init(&self, _setup: &MethodSetup, _device: &Device) -> Result<BarlowTwins> {
        Ok(BarlowTwins {
            lambda: self.lambda,
        })
    }
}

/// The Barlow Twins module.
#[derive(Module, Debug)]
pub struct BarlowTwins {
    /// Weight of the off-diagonal (redundancy-reduction) term.
    pub lambda: f64,
}

impl Method for BarlowTwins {
    fn name(&self) -> &'static str {
        "Barlow Twins"
    }

    fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    fn loss(&self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Tensor<1>> {
        let projections = require_views("Barlow Twins", "projections", &views.projections, 2)?;
        super::mean_over_view_pairs(projections, |a, b| barlow_twins_loss(a, b, self.lambda))
    }
}

/// Normalises each feature (column) of `[N, D]` over the batch: zero mean, unit (biased)
/// variance, `eps` added to the variance.
pub fn normalize_features(z: Tensor<2>, eps: f64) -> Tensor<2> {
    let centered = z.clone() - z.mean_dim(0);
    let var = centered.clone().square().mean_dim(0);
    centered / var.add_scalar(eps).sqrt()
}

/// Barlow Twins loss of two `[N, D]` embedding batches. The off-diagonal sum goes through the
/// batch's `N x N` Gram matrices when `2 N < D` ([`super::gram`]).
pub fn barlow_twins_loss(z1: Tensor<2>, z2: Tensor<2>, lambda: f64) -> Result<Tensor<1>> {
    let [n, d] = z1.dims();
    barlow_twins_loss_through(z1, z2, lambda, ProductSide::cheaper(n, d, false))
}

/// [`barlow_twins_loss`] with the off-diagonal sum through `side`.
pub fn barlow_twins_loss_through(
    z1: Tensor<2>,
    z2: Tensor<2>,
    lambda: f64,
    side: ProductSide,
) -> Result<Tensor<1>> {
    check::same_shape(|| "Barlow Twins loss: second view".into(), &z1, &z2)?;
    check::min_batch(|| "Barlow Twins loss".into(), &z1, 2)?;
    let n = z1.dims()[0] as f64;
    let a = normalize_features(z1, BARLOW_TWINS_BN_EPS);
    let b = normalize_features(z2, BARLOW_TWINS_BN_EPS);
    let on_diagonal = (a.clone() * b.clone())
        .sum_dim(0)
        .div_scalar(n)
        .sub_scalar(1.0)
        .square()
        .sum();
    let off_diagonal = off_diagonal_cross_squares_through(a, b, side).div_scalar(n * n);
    Ok(on_diagonal + off_diagonal.mul_scalar(lambda))
}
