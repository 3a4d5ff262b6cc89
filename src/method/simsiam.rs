//! SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021,
//! arXiv:2011.10566; reference code: facebookresearch/simsiam).
//!
//! One network, no negatives, no momentum encoder: the prediction of one view regresses the
//! projection of the other under stop-gradient, which is what prevents collapse:
//!
//! `L = -(1 / (V (V - 1))) sum_{i != j} mean_b cos(p_i, sg(z_j))`
//!
//! For two views: `L = -(cos(p1, sg z2) + cos(p2, sg z1)) / 2`.
//!
//! Recipes: CIFAR, lightly's benchmark (SGD 0.12 x batch / 256, weight decay 5e-4);
//! ImageNet, the paper's (SGD 0.05 x batch / 256, weight decay 1e-4, the predictor at a fixed
//! learning rate, `--fix-pred-lr`).

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

/// SimSiam's configuration: the loss has no hyper-parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSiamConfig {}

impl SimSiamConfig {
    /// The defaults of `preset` (the same for both).
    pub fn preset(_preset: Preset) -> Self {
        Self {}
    }
}

impl MethodConfig for SimSiamConfig {
    type Method = SimSiam;

    fn name(&self) -> &'static str {
        "SimSiam"
    }

    fn validate(&self) -> Result<()> {
        Ok(())
    }

    fn heads(&self, feature_dim: usize, width: f64) -> Heads {
        Heads {
            projector: ProjectionHeadConfig::simsiam_projector(
                feature_dim,
                scaled(2048, width),
                scaled(2048, width),
            ),
            predictor: Some(ProjectionHeadConfig::simsiam_predictor(
                scaled(2048, width),
                scaled(512, width),
            )),
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let views = ViewTransform::simsiam(context.preset.scale());
        let (optimizer, lr) = match context.preset {
            Preset::Cifar => (OptimizerConfig::cifar_sgd(), LrConfig::per_256(0.12)),
            Preset::Imagenet => (
                OptimizerConfig::sgd(1e-4).with_predictor_fixed_lr(),
                LrConfig::per_256(0.05),
            ),
        };
        Recipe {
            views,
            optimizer,
            lr,
            ema: EmaConfig::to_one(0.99),
        }
    }

    fn init(&self, _setup: &MethodSetup, _device: &Device) -> Result<SimSiam> {
        Ok(SimSiam {})
    }
}

/// The SimSiam module. Needs a predictor; the target is the online projection under
/// stop-gradient.
#[derive(Module, Debug, Default)]
pub struct SimSiam {}

impl Method for SimSiam {
    fn name(&self) -> &'static str {
        "SimSiam"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            predictor: true,
            global_batch: GlobalBatch::Local,
            ..Requirements::default()
        }
    }

    fn loss(&self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Tensor<1>> {
        let predictions = require_views("SimSiam", "predictions", &views.predictions, 2)?;
        let projections = require_views("SimSiam", "projections", &views.projections, 2)?;
        simsiam_loss(predictions, projections)
    }
}

/// SimSiam loss of predictions `p_v` and projections `z_v` (detached here):
/// `-(1 / (V (V - 1))) sum_{i != j} mean cos(p_i, sg z_j)`.
pub fn simsiam_loss(predictions: &[Tensor<2>], projections: &[Tensor<2>]) -> Result<Tensor<1>> {
    let (total, pairs) =
        super::sum_over_ordered_pairs("SimSiam", predictions, projections, |p, z| {
            cosine_similarity(p, z.detach()).mean()
        })?;
    Ok(total.div_scalar(-(pairs as f64)))
}
