//! I-JEPA: Image-based Joint-Embedding Predictive Architecture (Assran et al., "Self-Supervised
//! Learning from Images with a Joint-Embedding Predictive Architecture", CVPR 2023,
//! arXiv:2301.08243; reference code: facebookresearch/ijepa `src/train.py`,
//! `src/models/vision_transformer.py`).
//!
//! Predict in representation space, not in pixels: a context encoder (the online ViT) sees one
//! large context block of the image; a momentum target encoder (its EMA, momentum 0.996 -> 1)
//! sees the whole image; a narrow ViT predictor, given the context tokens and a mask token at
//! each position of a target block (with fixed 2-D sin-cos position embeddings), predicts the
//! target encoder's representations of that block. With `M` target blocks, predictions `p` and
//! the layer-normed targets `t_hat = LN(t)` (no affine, eps 1e-5):
//!
//! `L = mean over blocks, patches and channels of smooth_l1(p, t_hat)` (beta 1)
//!
//! The prediction error is I-JEPA's energy: [`Ijepa::energy`] scores, per image, how well its
//! context explains its target blocks ([`Energy::PredictionError`](crate::energy::Energy)).
//!
//! Recipes: the paper's AdamW (weight decay 0.04 -> 0.4, lr 1e-3 for a batch of 2,048, i.e.
//! 1.25e-4 x batch / 256, 40 warmup epochs at ImageNet scale), one view cropped at scale
//! 0.3-1 without flips, 4 target blocks (scale 0.15-0.2, aspect 0.75-1.5) and a context block
//! (scale 0.85-1); predictor 12 blocks of width 384 at ImageNet scale, 4 of width 96 at CIFAR
//! scale. The ViT here keeps torchvision's class token, which both encoders run and the method
//! ignores (the reference ViT has none).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::mae::sincos_positions;
use super::{
    GlobalBatch, Heads, Method, MethodConfig, MethodSetup, Preset, Recipe, RecipeContext,
    Requirements, StepContext, TokenInput, ViewEmbeddings, at_least_one,
};
use crate::augment::{Masking, Masks, ViewTransform};
use crate::backbone::vit::{gather_tokens, select_shared_tokens};
use crate::check;
use crate::error::{Error, Result};
use crate::model::{ProjectionHeadConfig, TokenTransformer, TokenTransformerShape};
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// I-JEPA's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IjepaConfig {
    /// Side of a patch: the encoder's (16 at ImageNet scale, 4 at CIFAR scale).
    pub patch_size: usize,
    /// Predictor blocks.
    pub predictor_depth: usize,
    /// Predictor token width.
    pub predictor_dim: usize,
    /// Predictor attention heads.
    pub predictor_heads: usize,
}

impl IjepaConfig {
    /// The defaults of `preset`.
    pub fn preset(preset: Preset) -> Self {
        let (patch_size, predictor_depth, predictor_dim, predictor_heads) = match preset {
            Preset::Cifar => (4, 4, 96, 4),
            Preset::Imagenet => (16, 12, 384, 12),
        };
        Self {
            patch_size,
            predictor_depth,
            predictor_dim,
            predictor_heads,
        }
    }
}

impl MethodConfig for IjepaConfig {
    type Method = Ijepa;

    fn name(&self) -> &'static str {
        "I-JEPA"
    }

    fn patch_size(&self) -> Option<usize> {
        Some(self.patch_size)
    }

    fn validate(&self) -> Result<()> {
        at_least_one(&[
            ("method.patch_size", self.patch_size),
            ("method.predictor_depth", self.predictor_depth),
            ("method.predictor_dim", self.predictor_dim),
            ("method.predictor_heads", self.predictor_heads),
        ])?;
        let d = self.predictor_dim;
        if !d.is_multiple_of(self.predictor_heads) || !d.is_multiple_of(4) {
            return Err(Error::invalid_config(
                "method.predictor_dim",
                d,
                format!(
                    "a multiple of 4 and of predictor_heads ({})",
                    self.predictor_heads
                ),
            ));
        }
        Ok(())
    }

    fn heads(&self, _feature_dim: usize, _width: f64) -> Heads {
        Heads {
            projector: ProjectionHeadConfig::identity(),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let mut views = ViewTransform::masked_image(context.preset.scale(), (0.3, 1.0))
            .with_masking(Masking::ijepa(self.patch_size));
        views.groups[0].recipe.horizontal_flip = 0.0;
        let optimizer = OptimizerConfig::adamw(0.04).with_weight_decay_end(0.4);
        let lr = match context.preset {
            Preset::Cifar => LrConfig::per_256(1.25e-4),
            Preset::Imagenet => LrConfig::per_256(1.25e-4).with_warmup(40),
        };
        Recipe {
            views,
            optimizer,
            lr,
            ema: EmaConfig::to_one(0.996),
        }
    }

    fn init(&self, setup: &MethodSetup, device: &Device) -> Result<Ijepa> {
        Ok(Ijepa {
            predictor: self.predictor_shape(setup.feature_dim).init(device),
        })
    }
}

impl IjepaConfig {
    /// The predictor for encoder tokens of width `feature_dim` (it predicts that width).
    fn predictor_shape(&self, feature_dim: usize) -> TokenTransformerShape {
        TokenTransformerShape {
            input_dim: feature_dim,
            width: self.predictor_dim,
            depth: self.predictor_depth,
            heads: self.predictor_heads,
            output_dim: feature_dim,
        }
    }
}

/// The I-JEPA module: the predictor (trained with the context encoder).
#[derive(Module, Debug)]
pub struct Ijepa {
    /// Context tokens and mask tokens at the target positions to predicted target tokens.
    pub predictor: TokenTransformer,
}

impl Method for Ijepa {
    fn name(&self) -> &'static str {
        "I-JEPA"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            momentum_target: true,
            tokens: TokenInput::ContextAndTarget,
            global_batch: GlobalBatch::Local,
            ..Requirements::default()
        }
    }

    fn loss(&self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Tensor<1>> {
        let (predictions, targets) = self.predict(views)?;
        ijepa_loss(predictions, targets)
    }
}

impl Ijepa {
    /// The predictions of every target block and their targets (the target encoder's tokens of
    /// the block, not yet layer-normed), each `[M * B, K_t, D]` with the blocks stacked along
    /// the batch (block-major).
    pub fn predict(&self, views: &ViewEmbeddings) -> Result<(Tensor<3>, Tensor<3>)> {
        let missing = |what: &str| Error::MissingInput {
            context: "I-JEPA".into(),
            what: what.into(),
        };
        let context = views
            .tokens
            .clone()
            .ok_or_else(|| missing("context tokens"))?;
        let all = views
            .target_tokens
            .clone()
            .ok_or_else(|| missing("target encoder tokens"))?;
        let masks = views.masks.as_ref().ok_or_else(|| missing("masks"))?;
        let n = all.dims()[1];
        let patches = all.narrow(1, 1, n - 1);
        let targets = masks
            .targets
            .iter()
            .map(|block| gather_tokens(patches.clone(), block.clone()))
            .collect::<Result<Vec<_>>>()?;
        let predictions = self.predictor(context, masks)?;
        Ok((predictions, Tensor::cat(targets, 0)))
    }

    /// The predictor on the context tokens (`[B, 1 + K_c, D]`, class token first) for every
    /// target block of `masks`: `[M * B, K_t, D]`, block-major.
    pub fn predictor(&self, context: Tensor<3>, masks: &Masks) -> Result<Tensor<3>> {
        let [b, k, _] = context.dims();
        let dp = self.predictor.width();
        let blocks = masks.targets.len();
        if blocks == 0 {
            return Err(Error::MissingInput {
                context: "I-JEPA predictor".into(),
                what: "target blocks in the masks".into(),
            });
        }
        let n = masks.grid * masks.grid;
        let positions = sincos_positions(masks.grid, dp, &context.device()).narrow(0, 1, n);
        let at =
            |indices: &Tensor<2, Int>| select_shared_tokens(positions.clone(), indices.clone());
        let context = self.predictor.embed(context.narrow(1, 1, k - 1)) + at(&masks.keep)?;
        let kt = masks.targets[0].dims()[1];
        let mut sequences = Vec::with_capacity(blocks);
        for block in &masks.targets {
            let queries = self.predictor.mask_tokens(b, kt) + at(block)?;
            sequences.push(Tensor::cat(vec![context.clone(), queries], 1));
        }
        Ok(self.predictor.predict_last(Tensor::cat(sequences, 0), kt))
    }

    /// I-JEPA's energy of each image `[B]`: the mean smooth-L1 prediction error over its
    /// target blocks, low when the context explains the targets. Run it on a `valid()` model
    /// with [`embed_batch`](crate::model::JointEmbedding::embed_batch)'s embeddings.
    pub fn energy(&self, views: &ViewEmbeddings) -> Result<Tensor<1>> {
        let (predictions, targets) = self.predict(views)?;
        let [mb, kt, d] = predictions.dims();
        let blocks = views.masks.as_ref().map_or(1, |m| m.targets.len().max(1));
        let b = mb / blocks;
        let energies = crate::energy::Energy::PredictionError.energy(
            predictions.reshape([mb * kt, d]),
            layer_norm(targets).reshape([mb * kt, d]),
        )?;
        Ok(energies
            .reshape([blocks, b, kt])
            .mean_dim(2)
            .mean_dim(0)
            .reshape([b]))
    }
}

/// LayerNorm over the last dimension without affine parameters, eps 1e-5 (`F.layer_norm`).
fn layer_norm(x: Tensor<3>) -> Tensor<3> {
    let mean = x.clone().mean_dim(2);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(2);
    centred / var.add_scalar(1e-5).sqrt()
}

/// I-JEPA's loss of predictions and targets (`[.., K, D]`): smooth-L1 (beta 1) against the
/// layer-normed, detached targets, averaged over every element.
pub fn ijepa_loss(predictions: Tensor<3>, targets: Tensor<3>) -> Result<Tensor<1>> {
    check::same_shape(|| "I-JEPA loss: targets".into(), &predictions, &targets)?;
    let targets = layer_norm(targets.detach());
    Ok(smooth_l1(predictions - targets).mean())
}

/// `0.5 x^2` where `|x| < 1`, else `|x| - 0.5`, elementwise.
pub fn smooth_l1<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let abs = x.clone().abs();
    let small = abs.clone().lower_elem(1.0);
    let quadratic = x.square().mul_scalar(0.5);
    let linear = abs.sub_scalar(0.5);
    linear.mask_where(small, quadratic)
}
