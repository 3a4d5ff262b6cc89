//! SimCLR's NT-Xent, the normalised-temperature cross-entropy (Chen et al., "A Simple Framework
//! for Contrastive Learning of Visual Representations", ICML 2020, arXiv:2002.05709; lightly's
//! `NTXentLoss` without memory bank).
//!
//! The contrastive baseline: for the `2N` embeddings of `N` images in two views, each one must
//! pick out its partner among the other `2N - 1` by cosine similarity:
//!
//! `L = -(1 / 2N) sum_i log( exp(s(i, p(i)) / T) / sum_{k != i} exp(s(i, k) / T) )`
//!
//! with `s` the cosine similarity, `p(i)` the other view of image `i` and temperature `T`
//! (0.5 in lightly's CIFAR benchmark, 0.1 in the paper's ImageNet runs). Unrelated images are
//! pushed apart explicitly, which is how contrastive methods avoid collapse.
//!
//! Recipes: CIFAR, lightly's benchmark (T 0.5, SGD 0.12 x batch / 256, weight decay 5e-4);
//! ImageNet, the paper's (T 0.1, LARS eta 1e-3, lr 0.3 x batch / 256, 10 warmup epochs,
//! weight decay 1e-6).

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::{
    Heads, Method, MethodConfig, MethodSetup, Preset, Recipe, RecipeContext, Requirements,
    StepContext, ViewEmbeddings, positive, require_views, scaled,
};
use crate::augment::ViewTransform;
use crate::check;
use crate::energy::l2_normalize;
use crate::error::Result;
use crate::model::ProjectionHeadConfig;
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// SimCLR's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimClrConfig {
    /// Temperature `T` (lightly's CIFAR benchmark: 0.5; the paper on ImageNet: 0.1).
    pub temperature: f64,
}

impl SimClrConfig {
    /// The defaults of `preset`.
    pub fn preset(preset: Preset) -> Self {
        let temperature = match preset {
            Preset::Cifar => 0.5,
            Preset::Imagenet => 0.1,
        };
        Self { temperature }
    }
}

impl MethodConfig for SimClrConfig {
    type Method = SimClr;

    fn name(&self) -> &'static str {
        "SimCLR"
    }

    fn validate(&self) -> Result<()> {
        positive(&[("method.temperature", self.temperature)])
    }

    fn heads(&self, feature_dim: usize, width: f64) -> Heads {
        Heads {
            projector: ProjectionHeadConfig::simclr_projector(
                feature_dim,
                scaled(2048, width),
                scaled(128, width),
            ),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let views = ViewTransform::simclr(context.preset.scale());
        let (optimizer, lr) = match context.preset {
            Preset::Cifar => (OptimizerConfig::cifar_sgd(), LrConfig::per_256(0.12)),
            Preset::Imagenet => (
                OptimizerConfig::lars(1e-3, 1e-6),
                LrConfig::per_256(0.3).with_warmup(10),
            ),
        };
        Recipe {
            views,
            optimizer,
            lr,
            ema: EmaConfig::to_one(0.99),
        }
    }

    fn init(&self, _setup: &MethodSetup, _device: &Device) -> Result<SimClr> {
        Ok(SimClr {
            temperature: self.temperature,
        })
    }
}

/// The SimCLR module.
#[derive(Module, Debug)]
pub struct SimClr {
    /// Temperature `T`.
    pub temperature: f64,
}

impl Method for SimClr {
    fn name(&self) -> &'static str {
        "SimCLR"
    }

    fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    fn loss(&self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Tensor<1>> {
        let projections = require_views("SimCLR", "projections", &views.projections, 2)?;
        super::mean_over_view_pairs(projections, |a, b| ntxent_loss(a, b, self.temperature))
    }
}

/// NT-Xent loss of two `[N, D]` embedding batches, row `i` of each a view of image `i`.
pub fn ntxent_loss(z1: Tensor<2>, z2: Tensor<2>, temperature: f64) -> Result<Tensor<1>> {
    check::same_shape(|| "NT-Xent loss: second view".into(), &z1, &z2)?;
    check::min_batch(|| "NT-Xent loss".into(), &z1, 2)?;
    let n = z1.dims()[0];
    let device = z1.device();
    let z = l2_normalize(Tensor::cat(vec![z1, z2], 0)); // [2N, D]
    let similarity = z.clone().matmul(z.transpose()).div_scalar(temperature);
    // Exclude each embedding's similarity with itself from its softmax.
    let self_pairs = Tensor::<2>::eye(2 * n, &device).equal_elem(1.0);
    let log_p = log_softmax(similarity.mask_fill(self_pairs, f32::NEG_INFINITY), 1);
    // Partner of row i: i + N for the first view, i - N for the second.
    let partners = Tensor::<1, Int>::arange(0..(2 * n) as i64, &device)
        .add_scalar(n as i64)
        .remainder_scalar((2 * n) as i64)
        .reshape([2 * n, 1]);
    Ok(log_p.gather(1, partners).mean().neg())
}
