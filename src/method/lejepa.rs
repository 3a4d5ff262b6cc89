//! LeJEPA: Latent-Euclidean JEPA (Balestriero & LeCun, "LeJEPA: Provable and Scalable
//! Self-Supervised Learning Without the Heuristics", 2025, arXiv:2511.08544; reference code:
//! galilai-group/lejepa, lightly's `LeJEPALoss`).
//!
//! No teacher, no stop-gradient, no predictor: one network embeds every crop, and collapse is
//! prevented by [SIGReg](super::sigreg), which drives the embeddings towards the isotropic
//! Gaussian the paper proves optimal for downstream risk. With the projections `z_v` of the
//! `V_g` global and `V_l` local crops (global first) and the global centre
//! `c = mean_{v < V_g} z_v`:
//!
//! `L = lambda SIGReg(z_1..z_V) + (1 - lambda) mean_{v, n, d} (c_nd - z_vnd)^2`
//!
//! with `lambda = 0.05` and SIGReg's random unit vectors drawn afresh every step from a stream
//! seeded by the run's seed and the step. The projector is lightly's `LeJEPAProjectionHead`:
//! `Linear(in, 2048) BN ReLU Linear(2048, 2048) BN ReLU Linear(2048, 64)`.
//!
//! Recipes: the paper's AdamW (lr 5e-4 x batch / 256, weight decay 0.05) with DINO's
//! multi-crop views; CIFAR: two 32-pixel global crops (add local crops with `--crops`);
//! ImageNet: 2 global and 6 local crops, 10 warmup epochs.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::sigreg::Sigreg;
use super::{
    Heads, Method, MethodConfig, MethodSetup, Preset, Recipe, RecipeContext, Requirements,
    StepContext, ViewEmbeddings, at_least_one, require_views, scaled,
};
use crate::augment::ViewTransform;
use crate::check;
use crate::error::{Error, Result};
use crate::model::{HeadBlockConfig, ProjectionHeadConfig};
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// LeJEPA's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LejepaConfig {
    /// Weight `lambda` of SIGReg; the invariance term gets `1 - lambda` (0.05).
    pub lambda: f64,
    /// Knots of SIGReg's frequency grid (17).
    pub knots: usize,
    /// Largest frequency of the grid (3).
    pub t_max: f64,
    /// Random unit vectors per step (1024).
    pub num_vectors: usize,
    /// Width of the projector's hidden layers (2048).
    pub hidden_dim: usize,
    /// Dimension of the projections SIGReg sees (64).
    pub output_dim: usize,
}

impl LejepaConfig {
    /// The defaults of `preset` (the same for both).
    pub fn preset(_preset: Preset) -> Self {
        let sigreg = Sigreg::default();
        Self {
            lambda: 0.05,
            knots: sigreg.knots,
            t_max: sigreg.t_max,
            num_vectors: sigreg.num_vectors,
            hidden_dim: 2048,
            output_dim: 64,
        }
    }

    fn sigreg(&self) -> Sigreg {
        Sigreg {
            knots: self.knots,
            t_max: self.t_max,
            num_vectors: self.num_vectors,
        }
    }
}

impl MethodConfig for LejepaConfig {
    type Method = Lejepa;

    fn name(&self) -> &'static str {
        "LeJEPA"
    }

    fn validate(&self) -> Result<()> {
        check::ensure(
            "method.lambda",
            self.lambda,
            (0.0..=1.0).contains(&self.lambda),
            "in [0, 1]",
        )?;
        self.sigreg().validate("method.")?;
        at_least_one(&[
            ("method.hidden_dim", self.hidden_dim),
            ("method.output_dim", self.output_dim),
        ])
    }

    fn heads(&self, feature_dim: usize, width: f64) -> Heads {
        let hidden = scaled(self.hidden_dim, width);
        Heads {
            projector: ProjectionHeadConfig::new(vec![
                HeadBlockConfig::hidden(feature_dim, hidden, false),
                HeadBlockConfig::hidden(hidden, hidden, false),
                HeadBlockConfig::linear(hidden, self.output_dim, true),
            ]),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let scale = context.preset.scale();
        let optimizer = OptimizerConfig::adamw(0.05);
        let (views, lr) = match context.preset {
            Preset::Cifar => (
                ViewTransform::dino(scale, context.local_crops.unwrap_or(0)),
                LrConfig::per_256(5e-4),
            ),
            Preset::Imagenet => (
                ViewTransform::dino(scale, context.local_crops.unwrap_or(6)),
                LrConfig::per_256(5e-4).with_warmup(10),
            ),
        };
        Recipe {
            views,
            optimizer,
            lr,
            ema: EmaConfig::to_one(0.996),
        }
    }

    fn init(&self, setup: &MethodSetup, _device: &Device) -> Result<Lejepa> {
        Ok(Lejepa {
            seed: setup.seed,
            config: self.clone(),
        })
    }
}

/// The LeJEPA module: the seed of SIGReg's random projections and the configuration.
#[derive(Module, Debug)]
pub struct Lejepa {
    /// The run's seed; each step's unit vectors come from it and the step.
    pub seed: u64,
    /// `lambda` and SIGReg's quadrature.
    #[module(skip)]
    pub config: LejepaConfig,
}

impl Method for Lejepa {
    fn name(&self) -> &'static str {
        "LeJEPA"
    }

    fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    fn loss(&self, views: &ViewEmbeddings, context: &StepContext) -> Result<Tensor<1>> {
        let projections = require_views("LeJEPA", "projections", &views.projections, 2)?;
        let num_global = views.num_global.max(1);
        let sigreg = self.config.sigreg();
        let dim = projections[0].dims()[1];
        let device = projections[0].device();
        let unit_vectors = sigreg.unit_vectors(dim, self.seed, context.progress.step, &device);
        lejepa_loss(
            &projections[..num_global],
            &projections[num_global..],
            unit_vectors,
            self.config.lambda,
            &sigreg,
        )
    }
}

/// LeJEPA's loss of the global and local crops' projections (each `[N, D]`) with SIGReg's
/// `unit_vectors` (`[D, M]`): see the [module docs](self).
pub fn lejepa_loss(
    global: &[Tensor<2>],
    local: &[Tensor<2>],
    unit_vectors: Tensor<2>,
    lambda: f64,
    sigreg: &Sigreg,
) -> Result<Tensor<1>> {
    let all: Vec<Tensor<2>> = global.iter().chain(local).cloned().collect();
    if global.is_empty() || all.len() < 2 {
        return Err(Error::MissingInput {
            context: "LeJEPA loss".into(),
            what: format!(
                "views: needs 1 or more global views and 2 or more in all, got {} and {}",
                global.len(),
                all.len()
            ),
        });
    }
    let regulariser = sigreg.loss(&all, unit_vectors)?;
    let invariance = lejepa_invariance(global, &all);
    Ok(regulariser.mul_scalar(lambda) + invariance.mul_scalar(1.0 - lambda))
}

/// `mean_{v, n, d} (c_nd - z_vnd)^2` with `c` the mean of the global views. Shapes are
/// checked by SIGReg first.
fn lejepa_invariance(global: &[Tensor<2>], all: &[Tensor<2>]) -> Tensor<1> {
    let centre = Tensor::stack::<3>(global.to_vec(), 0).mean_dim(0);
    let all = Tensor::stack::<3>(all.to_vec(), 0);
    (all - centre).square().mean()
}
