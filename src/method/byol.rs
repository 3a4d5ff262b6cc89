//! BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020, arXiv:2006.07733;
//! reference code: deepmind-research/byol).
//!
//! The online network's prediction of one view regresses the EMA target network's projection
//! of the other view:
//!
//! `L = sum_{i != j} mean_b (2 - 2 cos(q_online(v_i), sg(z_target(v_j)))) / (V - 1)`
//!
//! For two views this is the paper's symmetrised loss
//! `mean(2 - 2 cos(p1, sg z2)) + mean(2 - 2 cos(p2, sg z1))`. The target follows the online
//! weights with `tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2` after every step.
//!
//! Recipes: CIFAR, lightly's benchmark (SGD 0.12 x batch / 256, weight decay 5e-4,
//! `tau_base` 0.99); ImageNet, the paper's (LARS eta 1e-3, lr 0.2 x batch / 256, 10 warmup
//! epochs, weight decay 1.5e-6, `tau_base` 0.996).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{
    GlobalBatch, Heads, Method, MethodConfig, MethodSetup, Preset, Recipe, RecipeContext,
    Requirements, StepContext, ViewEmbeddings, require_views, scaled,
};
use crate::augment::ViewTransform;
use crate::energy::cosine_similarity;
use crate::error::Result;
use crate::model::ProjectionHeadConfig;
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// BYOL's configuration: the loss has no hyper-parameters; the target's momentum is part of
/// the [`Recipe`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByolConfig {}

impl ByolConfig {
    /// The defaults of `preset` (the same for both).
    pub fn preset(_preset: Preset) -> Self {
        Self {}
    }
}

impl MethodConfig for ByolConfig {
    type Method = Byol;

    fn name(&self) -> &'static str {
        "BYOL"
    }

    fn validate(&self) -> Result<()> {
        Ok(())
    }

    fn heads(&self, feature_dim: usize, width: f64) -> Heads {
        Heads {
            projector: ProjectionHeadConfig::byol_projector(
                feature_dim,
                scaled(4096, width),
                scaled(256, width),
            ),
            predictor: Some(ProjectionHeadConfig::byol_predictor(
                scaled(256, width),
                scaled(4096, width),
            )),
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let views = ViewTransform::byol(context.preset.scale());
        match context.preset {
            Preset::Cifar => Recipe {
                views,
                optimizer: OptimizerConfig::cifar_sgd(),
                lr: LrConfig::per_256(0.12),
                ema: EmaConfig::to_one(0.99),
            },
            Preset::Imagenet => Recipe {
                views,
                optimizer: OptimizerConfig::lars(1e-3, 1.5e-6),
                lr: LrConfig::per_256(0.2).with_warmup(10),
                ema: EmaConfig::to_one(0.996),
            },
        }
    }

    fn init(&self, _setup: &MethodSetup, _device: &Device) -> Result<Byol> {
        Ok(Byol {})
    }
}

/// The BYOL module: a predictor and an EMA target, no state of its own.
#[derive(Module, Debug, Default)]
pub struct Byol {}

impl Method for Byol {
    fn name(&self) -> &'static str {
        "BYOL"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            predictor: true,
            momentum_target: true,
            global_batch: GlobalBatch::Local,
            ..Requirements::default()
        }
    }

    fn loss(&self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Tensor<1>> {
        let predictions = require_views("BYOL", "predictions", &views.predictions, 2)?;
        let targets = require_views("BYOL", "target projections", &views.targets, 2)?;
        byol_loss(predictions, targets)
    }
}

/// BYOL loss of predictions `p_v` and target projections `z_v` (one `[B, D]` per view, targets
/// detached here): `sum_{i != j} mean(2 - 2 cos(p_i, sg z_j)) / (V - 1)`.
pub fn byol_loss(predictions: &[Tensor<2>], targets: &[Tensor<2>]) -> Result<Tensor<1>> {
    let (total, _) = super::sum_over_ordered_pairs("BYOL", predictions, targets, |p, z| {
        cosine_similarity(p, z.detach())
            .mul_scalar(-2.0)
            .add_scalar(2.0)
            .mean()
    })?;
    Ok(total.div_scalar((predictions.len() - 1) as f64))
}
