//! MoCo v2: Momentum Contrast (He et al., CVPR 2020, arXiv:1911.05722) with the MLP head,
//! stronger augmentations and cosine schedule of "Improved Baselines with Momentum Contrastive
//! Learning" (Chen et al. 2020, arXiv:2003.04297; reference code: facebookresearch/moco
//! `moco/builder.py`).
//!
//! Queries come from the online encoder, keys from its momentum copy (the key encoder,
//! `xi <- m xi + (1 - m) theta` after every step, `m` constant). With `q = normalise(f_q(x_1))`,
//! `k = normalise(f_k(x_2))` and a queue of `K` normalised keys of earlier batches:
//!
//! `L = -mean_b log( exp(q.k / T) / (exp(q.k / T) + sum_{n in queue} exp(q.n / T)) )`,
//!
//! the cross-entropy of the logits `[q.k, q.queue^T] / T` to index 0, `T = 0.2`. After the
//! step the keys are enqueued and the oldest dropped. The symmetric option (the MoCo CIFAR-10
//! demo's and solo-learn's) also scores the second view's queries against the first view's
//! keys, averages the two losses and enqueues both sets of keys.
//!
//! Recipes: CIFAR, the demo's momentum 0.99 and queue of 4,096, symmetric, with lightly's SGD
//! recipe (0.12 x batch / 256, weight decay 5e-4) and MoCo v2's views; ImageNet, the paper's
//! (momentum 0.999, queue 65,536, SGD 0.03 x batch / 256, weight decay 1e-4, asymmetric).
//! The key encoder's batch norm is not shuffled across devices ("shuffling BN"): on one
//! device it would only reorder the batch.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::queue::EmbeddingQueue;
use super::{
    Heads, Method, MethodConfig, MethodSetup, Preset, Recipe, RecipeContext, Requirements,
    StepContext, ViewEmbeddings, at_least_one, positive, require_views, scaled,
};
use crate::augment::ViewTransform;
use crate::check;
use crate::energy::l2_normalize;
use crate::error::Result;
use crate::model::ProjectionHeadConfig;
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// MoCo v2's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MocoConfig {
    /// Softmax temperature `T` (0.2 in MoCo v2).
    pub temperature: f64,
    /// Keys kept in the queue `K` (65,536 on ImageNet, 4,096 on CIFAR).
    pub queue_length: usize,
    /// Score both views' queries against the other view's keys.
    pub symmetric: bool,
    /// Output dimension of the projector (128).
    pub projection_dim: usize,
}

impl MocoConfig {
    /// The defaults of `preset`.
    pub fn preset(preset: Preset) -> Self {
        let (queue_length, symmetric) = match preset {
            Preset::Cifar => (4096, true),
            Preset::Imagenet => (65536, false),
        };
        Self {
            temperature: 0.2,
            queue_length,
            symmetric,
            projection_dim: 128,
        }
    }
}

impl MethodConfig for MocoConfig {
    type Method = Moco;

    fn name(&self) -> &'static str {
        "MoCo v2"
    }

    fn validate(&self) -> Result<()> {
        positive(&[("method.temperature", self.temperature)])?;
        at_least_one(&[
            ("method.queue_length", self.queue_length),
            ("method.projection_dim", self.projection_dim),
        ])
    }

    /// The paper's 2-layer MLP; its hidden width is the backbone's feature dimension, as in
    /// the reference (`dim_mlp = fc.weight.shape[1]`).
    fn heads(&self, feature_dim: usize, width: f64) -> Heads {
        Heads {
            projector: ProjectionHeadConfig::moco_projector(
                feature_dim,
                feature_dim,
                scaled(self.projection_dim, width),
            ),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let views = ViewTransform::simsiam(context.preset.scale());
        match context.preset {
            Preset::Cifar => Recipe {
                views,
                optimizer: OptimizerConfig::cifar_sgd(),
                lr: LrConfig::per_256(0.12),
                ema: EmaConfig::constant(0.99),
            },
            Preset::Imagenet => Recipe {
                views,
                optimizer: OptimizerConfig::sgd(1e-4),
                lr: LrConfig::per_256(0.03),
                ema: EmaConfig::constant(0.999),
            },
        }
    }

    fn init(&self, setup: &MethodSetup, device: &Device) -> Result<Moco> {
        Ok(Moco {
            queue: EmbeddingQueue::random_unit(1, self.queue_length, setup.embedding_dim, device)?,
            temperature: self.temperature,
            symmetric: self.symmetric,
        })
    }
}

/// The MoCo module: the queue of keys and the loss settings.
#[derive(Module, Debug)]
pub struct Moco {
    /// Normalised keys of earlier batches (one slot).
    pub queue: EmbeddingQueue,
    /// Softmax temperature `T`.
    pub temperature: f64,
    /// Whether both views serve as queries.
    pub symmetric: bool,
}

impl Method for Moco {
    fn name(&self) -> &'static str {
        "MoCo v2"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            momentum_target: true,
            ..Requirements::default()
        }
    }

    fn loss(&self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Tensor<1>> {
        let queries = require_views("MoCo", "projections", &views.projections, 2)?;
        let keys = require_views("MoCo", "key projections", &views.targets, 2)?;
        let queue = self.queue.slot(0)?;
        let t = self.temperature;
        let forward = unit_info_nce(l2_normalize(queries[0].clone()), unit(&keys[1]), &queue, t)?;
        if !self.symmetric {
            return Ok(forward);
        }
        let backward = unit_info_nce(l2_normalize(queries[1].clone()), unit(&keys[0]), &queue, t)?;
        Ok((forward + backward).div_scalar(2.0))
    }

    /// Enqueues the keys the loss used: the second view's, or both views' when symmetric.
    fn after_step(self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Self> {
        let keys = require_views("MoCo", "key projections", &views.targets, 2)?;
        let new = if self.symmetric {
            Tensor::cat(vec![unit(&keys[0]), unit(&keys[1])], 0)
        } else {
            unit(&keys[1])
        };
        Ok(Self {
            queue: self.queue.push(&[new])?,
            ..self
        })
    }
}

/// L2-normalised and detached.
fn unit(keys: &Tensor<2>) -> Tensor<2> {
    l2_normalize(keys.clone().detach())
}

/// MoCo's InfoNCE of queries `q` `[B, D]` against their keys `k` `[B, D]` and a queue
/// `[K, D]`, all L2-normalised here; keys and queue are detached: `CE([q.k, q.queue^T] / T, 0)`.
pub fn info_nce(
    q: Tensor<2>,
    k: Tensor<2>,
    queue: Tensor<2>,
    temperature: f64,
) -> Result<Tensor<1>> {
    unit_info_nce(l2_normalize(q), unit(&k), &unit(&queue), temperature)
}

/// [`info_nce`] of unit vectors.
fn unit_info_nce(
    q: Tensor<2>,
    k: Tensor<2>,
    queue: &Tensor<2>,
    temperature: f64,
) -> Result<Tensor<1>> {
    check::same_shape(|| "MoCo loss: keys against queries".into(), &q, &k)?;
    let [batch, dim] = q.dims();
    let [_, queue_dim] = queue.dims();
    if queue_dim != dim {
        return Err(crate::Error::ShapeMismatch {
            context: "MoCo loss: queue".into(),
            expected: vec![queue.dims()[0], dim],
            found: queue.dims().to_vec(),
        });
    }
    let positive = (q.clone() * k).sum_dim(1);
    let negative = q.matmul(queue.clone().transpose());
    let logits = Tensor::cat(vec![positive, negative], 1).div_scalar(temperature);
    let log_p = log_softmax(logits, 1);
    Ok(log_p.narrow(1, 0, 1).reshape([batch]).mean().neg())
}
