//! SwAV: Swapping Assignments between Views (Caron et al., NeurIPS 2020, arXiv:2006.09882;
//! reference code: facebookresearch/swav `main_swav.py`; lightly's `SwaVLoss`).
//!
//! Embeddings are scored against `K` prototypes, `s = z . C` (unit-norm `z` and prototypes).
//! The codes of each global (high-resolution) crop are a balanced soft assignment computed with
//! Sinkhorn-Knopp ([`sinkhorn`], 3 iterations, `eps = 0.05`); every other crop predicts them:
//!
//! `L = (1 / G) sum_{i < G} (1 / (V - 1)) sum_{v != i} -mean_b sum_k q_i log softmax(s_v / T)`,
//!
//! with `G` global crops of `V` crops in all and temperature `T = 0.1`. The prototypes are
//! frozen (no gradient) for the first iterations, and a queue of past embeddings
//! ([`EmbeddingQueue`]) can enlarge the batch the codes are balanced over.
//!
//! Recipes: CIFAR, lightly's benchmark (3,000 prototypes, two 32-pixel crops, SGD 0.12 x
//! batch / 256, weight decay 5e-4, prototypes never frozen, no queue); ImageNet, the paper's
//! batch-256 recipe (2 x 224 + 6 x 96 crops, LARS eta 1e-3, lr 0.6 x batch / 256 to 0.0006,
//! weight decay 1e-6, prototypes frozen for the first 313 steps; the queue is off by default,
//! `queue_length = 3840` turns it on).

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::queue::EmbeddingQueue;
use super::sinkhorn::sinkhorn;
use super::{
    Heads, MAX_DIM, Method, MethodConfig, MethodSetup, Preset, Recipe, RecipeContext, Requirements,
    StepContext, ViewEmbeddings, at_least_one, at_most, positive, require_views, scaled,
};
use crate::augment::ViewTransform;
use crate::check;
use crate::energy::l2_normalize;
use crate::error::{Error, Result};
use crate::model::{ProjectionHeadConfig, Prototypes};
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// SwAV's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwavConfig {
    /// Number of prototypes `K` (3000).
    pub num_prototypes: usize,
    /// Softmax temperature (0.1).
    pub temperature: f64,
    /// Sinkhorn-Knopp iterations (3).
    pub sinkhorn_iterations: usize,
    /// Sinkhorn-Knopp `eps` (0.05).
    pub sinkhorn_epsilon: f64,
    /// Steps with frozen prototypes (about one epoch in the reference code).
    pub freeze_prototypes_steps: usize,
    /// Embeddings kept per global crop in the queue; 0 disables the queue.
    pub queue_length: usize,
}

impl SwavConfig {
    /// The defaults of `preset`.
    pub fn preset(preset: Preset) -> Self {
        Self {
            num_prototypes: 3000,
            temperature: 0.1,
            sinkhorn_iterations: 3,
            sinkhorn_epsilon: 0.05,
            freeze_prototypes_steps: match preset {
                Preset::Cifar => 0,
                Preset::Imagenet => 313,
            },
            queue_length: 0,
        }
    }
}

impl MethodConfig for SwavConfig {
    type Method = Swav;

    fn name(&self) -> &'static str {
        "SwAV"
    }

    fn validate(&self) -> Result<()> {
        positive(&[
            ("method.temperature", self.temperature),
            ("method.sinkhorn_epsilon", self.sinkhorn_epsilon),
        ])?;
        at_least_one(&[("method.num_prototypes", self.num_prototypes)])?;
        at_most(&[
            ("method.sinkhorn_iterations", self.sinkhorn_iterations, 1000),
            ("method.queue_length", self.queue_length, MAX_DIM),
        ])
    }

    fn heads(&self, feature_dim: usize, width: f64) -> Heads {
        Heads {
            projector: ProjectionHeadConfig::swav_projector(
                feature_dim,
                scaled(2048, width),
                scaled(128, width),
            ),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let scale = context.preset.scale();
        match context.preset {
            Preset::Cifar => Recipe {
                views: ViewTransform::swav(scale, context.local_crops.unwrap_or(0)),
                optimizer: OptimizerConfig::cifar_sgd(),
                lr: LrConfig::per_256(0.12),
                ema: EmaConfig::to_one(0.99),
            },
            Preset::Imagenet => Recipe {
                views: ViewTransform::swav(scale, context.local_crops.unwrap_or(6)),
                optimizer: OptimizerConfig::lars(1e-3, 1e-6),
                lr: LrConfig::per_256(0.6).with_final_lr(0.0006),
                ema: EmaConfig::to_one(0.99),
            },
        }
    }

    fn init(&self, setup: &MethodSetup, device: &Device) -> Result<Swav> {
        let queue = (self.queue_length > 0)
            .then(|| {
                EmbeddingQueue::empty(
                    setup.num_global,
                    self.queue_length,
                    setup.embedding_dim,
                    device,
                )
            })
            .transpose()?;
        Ok(Swav {
            prototypes: Prototypes::new(setup.embedding_dim, self.num_prototypes, device)?,
            queue,
            temperature: self.temperature,
            sinkhorn_iterations: self.sinkhorn_iterations,
            sinkhorn_epsilon: self.sinkhorn_epsilon,
            freeze_prototypes_steps: self.freeze_prototypes_steps,
        })
    }
}

/// The SwAV module: trainable prototypes, the optional queue of past global-crop embeddings
/// (one slot per global crop), and the loss hyper-parameters.
#[derive(Module, Debug)]
pub struct Swav {
    /// The learnable prototypes.
    pub prototypes: Prototypes,
    /// Past L2-normalised embeddings of each global crop, read once full.
    pub queue: Option<EmbeddingQueue>,
    /// Softmax temperature `T` of the predictions.
    pub temperature: f64,
    /// Sinkhorn-Knopp iterations.
    pub sinkhorn_iterations: usize,
    /// Sinkhorn-Knopp entropic regularisation `eps`.
    pub sinkhorn_epsilon: f64,
    /// Optimiser steps during which the prototypes get no gradient.
    pub freeze_prototypes_steps: usize,
}

impl Method for Swav {
    fn name(&self) -> &'static str {
        "SwAV"
    }

    fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    /// L2-normalises the prototypes, as the reference code does before every iteration.
    fn before_step(self, _context: &StepContext) -> Result<Self> {
        Ok(Self {
            prototypes: self.prototypes.normalized(),
            ..self
        })
    }

    fn loss(&self, views: &ViewEmbeddings, context: &StepContext) -> Result<Tensor<1>> {
        let projections = require_views("SwAV", "projections", &views.projections, 2)?;
        let globals = views.num_global;
        if globals == 0 || globals > projections.len() {
            return Err(Error::invalid_config(
                "SwAV num_global",
                globals,
                format!("between 1 and the number of views ({})", projections.len()),
            ));
        }
        let frozen = context.progress.step < self.freeze_prototypes_steps;
        let scores = projections
            .iter()
            .map(|z| self.prototypes.scores(z.clone(), frozen))
            .collect::<Result<Vec<_>>>()?;
        let (high, low) = scores.split_at(globals);
        let queue_scores = match &self.queue {
            Some(queue) if queue.is_full() => Some(self.queue_scores(queue, globals)?),
            _ => None,
        };
        swav_loss(
            high,
            low,
            queue_scores.as_deref(),
            self.temperature,
            self.sinkhorn_iterations,
            self.sinkhorn_epsilon,
        )
    }

    /// Pushes the L2-normalised global-crop embeddings into the queue.
    fn after_step(self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Self> {
        let Some(queue) = self.queue else {
            return Ok(self);
        };
        let slots = queue.shape()[0];
        if views.num_global != slots {
            return Err(Error::invalid_config(
                "SwAV global crops",
                views.num_global,
                format!("{slots}, the number the queue was made for"),
            ));
        }
        let globals: Vec<Tensor<2>> = views.projections[..slots]
            .iter()
            .map(|z| l2_normalize(z.clone().detach()))
            .collect();
        Ok(Self {
            queue: Some(queue.push(&globals)?),
            ..self
        })
    }
}

impl Swav {
    /// Prototype scores of the queued embeddings of each global crop, without gradient.
    fn queue_scores(&self, queue: &EmbeddingQueue, globals: usize) -> Result<Vec<Tensor<2>>> {
        (0..globals)
            .map(|c| self.prototypes.scores(queue.slot(c)?, true))
            .collect()
    }
}

/// Cross-entropy between codes `q` and the softmax of `scores / T`:
/// `-mean_b sum_k q_bk log softmax(scores_b / T)_k`.
fn swapped_prediction(scores: Tensor<2>, codes: Tensor<2>, temperature: f64) -> Tensor<1> {
    let log_p = log_softmax(scores.div_scalar(temperature), 1);
    (log_p * codes).sum_dim(1).mean().neg()
}

/// SwAV loss of prototype scores (`[B, K]` per crop): `high` are the global crops whose codes
/// are computed, `low` the other crops. `queue`, if given, holds scores of past embeddings of
/// each global crop, appended before Sinkhorn and dropped after it.
pub fn swav_loss(
    high: &[Tensor<2>],
    low: &[Tensor<2>],
    queue: Option<&[Tensor<2>]>,
    temperature: f64,
    sinkhorn_iterations: usize,
    sinkhorn_epsilon: f64,
) -> Result<Tensor<1>> {
    let crops = high.len() + low.len();
    if high.is_empty() || crops < 2 {
        return Err(Error::MissingInput {
            context: "SwAV loss".into(),
            what: format!(
                "crops: needs one global crop and two crops in all, got {} global and {} other",
                high.len(),
                low.len()
            ),
        });
    }
    for (v, s) in high.iter().chain(low).enumerate().skip(1) {
        check::same_shape(|| format!("SwAV loss: scores of crop {v}"), &high[0], s)?;
    }
    let batch = high[0].dims()[0];
    let mut total: Option<Tensor<1>> = None;
    for (i, scores_i) in high.iter().enumerate() {
        let mut to_balance = scores_i.clone().detach();
        if let Some(queue) = queue {
            let stored = queue.get(i).ok_or_else(|| Error::MissingInput {
                context: "SwAV loss".into(),
                what: format!("queue scores of global crop {i}"),
            })?;
            to_balance = Tensor::cat(vec![to_balance, stored.clone().detach()], 0);
        }
        let mut codes = sinkhorn(to_balance, sinkhorn_iterations, sinkhorn_epsilon);
        if queue.is_some() {
            codes = codes.narrow(0, 0, batch);
        }
        let mut sub: Option<Tensor<1>> = None;
        for (v, scores_v) in high
            .iter()
            .enumerate()
            .chain(low.iter().enumerate().map(|(v, s)| (v + high.len(), s)))
        {
            if v == i {
                continue;
            }
            let term = swapped_prediction(scores_v.clone(), codes.clone(), temperature);
            sub = Some(match sub {
                Some(s) => s + term,
                None => term,
            });
        }
        let sub = sub
            .expect("at least two crops")
            .div_scalar((crops - 1) as f64);
        total = Some(match total {
            Some(t) => t + sub,
            None => sub,
        });
    }
    Ok(total
        .expect("at least one global crop")
        .div_scalar(high.len() as f64))
}
