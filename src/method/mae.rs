//! MAE: Masked Autoencoders (He et al., "Masked Autoencoders Are Scalable Vision Learners",
//! CVPR 2022, arXiv:2111.06377; reference code: facebookresearch/mae `models_mae.py`).
//!
//! A fraction (75%) of each image's patches is masked at random; the ViT encoder sees only the
//! visible ones. A lightweight decoder (the method's own parameters) embeds the encoder's
//! tokens, puts a shared learned mask token at every masked position, adds fixed 2-D sin-cos
//! position embeddings, runs its own transformer blocks and predicts each patch's pixels. With
//! the normalised target `t_hat = (t - mean(t)) / sqrt(var(t) + 1e-6)` of each patch (unbiased
//! variance over its `p^2 * 3` values, `norm_pix_loss`) and the mask `m` (1 = masked):
//!
//! `L = sum_n m_n mean_j (pred_nj - t_hat_nj)^2 / sum_n m_n`
//!
//! Recipes: the paper's AdamW (betas 0.9 / 0.95, weight decay 0.05, lr 1.5e-4 x batch / 256,
//! 40 warmup epochs at ImageNet scale), one view cropped at scale 0.2-1 with flips; decoder 8
//! blocks of width 512 (16 heads) at ImageNet scale, 4 of width 256 (8 heads) at CIFAR scale.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{
    GlobalBatch, Heads, Method, MethodConfig, MethodSetup, Preset, Recipe, RecipeContext,
    Requirements, StepContext, TokenInput, ViewEmbeddings, at_least_one,
};
use crate::augment::{Masking, Masks, ViewTransform};
use crate::backbone::vit::gather_tokens;
use crate::check;
use crate::error::{Error, Result};
use crate::model::{ProjectionHeadConfig, TokenTransformer, TokenTransformerShape};
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// MAE's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaeConfig {
    /// Side of a patch: the encoder's (16 at ImageNet scale, 4 at CIFAR scale).
    pub patch_size: usize,
    /// Fraction of masked patches (0.75).
    pub mask_ratio: f64,
    /// Decoder blocks.
    pub decoder_depth: usize,
    /// Decoder token width.
    pub decoder_dim: usize,
    /// Decoder attention heads.
    pub decoder_heads: usize,
    /// Normalise each target patch by its mean and variance (the paper's default).
    pub norm_pix_loss: bool,
}

impl MaeConfig {
    /// The defaults of `preset`.
    pub fn preset(preset: Preset) -> Self {
        let (patch_size, decoder_depth, decoder_dim, decoder_heads) = match preset {
            Preset::Cifar => (4, 4, 256, 8),
            Preset::Imagenet => (16, 8, 512, 16),
        };
        Self {
            patch_size,
            mask_ratio: 0.75,
            decoder_depth,
            decoder_dim,
            decoder_heads,
            norm_pix_loss: true,
        }
    }
}

impl MethodConfig for MaeConfig {
    type Method = Mae;

    fn name(&self) -> &'static str {
        "MAE"
    }

    fn patch_size(&self) -> Option<usize> {
        Some(self.patch_size)
    }

    fn validate(&self) -> Result<()> {
        check::ensure(
            "method.mask_ratio",
            self.mask_ratio,
            (0.0..1.0).contains(&self.mask_ratio),
            "in [0, 1)",
        )?;
        at_least_one(&[
            ("method.patch_size", self.patch_size),
            ("method.decoder_depth", self.decoder_depth),
            ("method.decoder_dim", self.decoder_dim),
            ("method.decoder_heads", self.decoder_heads),
        ])?;
        self.decoder_shape(1).validate("method.decoder")
    }

    fn heads(&self, _feature_dim: usize, _width: f64) -> Heads {
        Heads {
            projector: ProjectionHeadConfig::identity(),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let masking = Masking::Random {
            patch_size: self.patch_size,
            ratio: self.mask_ratio,
        };
        let views =
            ViewTransform::masked_image(context.preset.scale(), (0.2, 1.0)).with_masking(masking);
        let optimizer = OptimizerConfig {
            adam_betas: [0.9, 0.95],
            ..OptimizerConfig::adamw(0.05)
        };
        let lr = match context.preset {
            Preset::Cifar => LrConfig::per_256(1.5e-4),
            Preset::Imagenet => LrConfig::per_256(1.5e-4).with_warmup(40),
        };
        Recipe {
            views,
            optimizer,
            lr,
            ema: EmaConfig::to_one(0.996),
        }
    }

    fn init(&self, setup: &MethodSetup, device: &Device) -> Result<Mae> {
        Ok(Mae {
            decoder: self.decoder_shape(setup.feature_dim).init(device),
            patch_size: self.patch_size,
            norm_pix_loss: self.norm_pix_loss,
        })
    }
}

impl MaeConfig {
    /// The decoder for encoder tokens of width `input_dim`.
    fn decoder_shape(&self, input_dim: usize) -> TokenTransformerShape {
        TokenTransformerShape {
            input_dim,
            width: self.decoder_dim,
            depth: self.decoder_depth,
            heads: self.decoder_heads,
            output_dim: self.patch_size * self.patch_size * 3,
        }
    }
}

/// The MAE module: the decoder (trained with the encoder) and the loss settings.
#[derive(Module, Debug)]
pub struct Mae {
    /// The decoder: encoder tokens and mask tokens to the pixels of every patch.
    pub decoder: TokenTransformer,
    /// Side of a patch.
    pub patch_size: usize,
    /// Normalised pixel targets.
    pub norm_pix_loss: bool,
}

impl Method for Mae {
    fn name(&self) -> &'static str {
        "MAE"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            tokens: TokenInput::Kept,
            global_batch: GlobalBatch::Local,
            ..Requirements::default()
        }
    }

    fn loss(&self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Tensor<1>> {
        let missing = |what: &str| Error::MissingInput {
            context: "MAE loss".into(),
            what: what.into(),
        };
        let tokens = views
            .tokens
            .clone()
            .ok_or_else(|| missing("encoder tokens"))?;
        let images = views.images.clone().ok_or_else(|| missing("images"))?;
        let masks = views.masks.as_ref().ok_or_else(|| missing("masks"))?;
        let pred = self.decode(tokens, masks)?;
        let target = patchify(images, self.patch_size)?;
        let mask = masked_patches(masks, pred.device())?;
        mae_loss(pred, target, mask, self.norm_pix_loss)
    }
}

impl Mae {
    /// The decoder's pixel predictions `[B, N, p^2 * 3]` for every patch, from the encoder's
    /// tokens of the visible patches (`[B, 1 + K, D]`, class token first).
    pub fn decode(&self, tokens: Tensor<3>, masks: &Masks) -> Result<Tensor<3>> {
        let restore = masks.restore.clone().ok_or_else(|| Error::MissingInput {
            context: "MAE decoder".into(),
            what: "the masks' restore order (MAE's random masking)".into(),
        })?;
        let [b, k, _] = tokens.dims();
        let x = self.decoder.embed(tokens);
        let dd = self.decoder.width();
        let n = masks.grid * masks.grid;
        let visible = x.clone().narrow(1, 1, k - 1);
        let shuffled = Tensor::cat(vec![visible, self.decoder.mask_tokens(b, n + 1 - k)], 1);
        let unshuffled = gather_tokens(shuffled, restore)?;
        let x = Tensor::cat(vec![x.narrow(1, 0, 1), unshuffled], 1);
        let positions = sincos_positions(masks.grid, dd, &x.device());
        Ok(self.decoder.predict_last(x + positions.unsqueeze(), n))
    }
}

/// `[B, N]` with 1 at the masked patches, from the masks' restore order (a patch is masked
/// when its position in `keep ++ masked` is past the kept ones).
fn masked_patches(masks: &Masks, device: Device) -> Result<Tensor<2>> {
    let restore = masks.restore.clone().ok_or_else(|| Error::MissingInput {
        context: "MAE loss".into(),
        what: "the masks' restore order".into(),
    })?;
    let kept = masks.keep.dims()[1] as i64;
    Ok(restore.greater_equal_elem(kept).float().to_device(&device))
}

/// The patches of images `[B, C, H, W]` as rows `[B, (H/p) (W/p), p * p * C]`, each patch's
/// values in MAE's order (row, column, channel).
pub fn patchify(images: Tensor<4>, patch: usize) -> Result<Tensor<3>> {
    let [b, c, h, w] = images.dims();
    if patch == 0 || h % patch != 0 || w % patch != 0 {
        return Err(Error::ShapeMismatch {
            context: format!("patchify: sides must be multiples of the patch size {patch}"),
            expected: vec![
                b,
                c,
                h.div_ceil(patch.max(1)) * patch,
                w.div_ceil(patch.max(1)) * patch,
            ],
            found: vec![b, c, h, w],
        });
    }
    let (gh, gw) = (h / patch, w / patch);
    Ok(images
        .reshape([b, c, gh, patch, gw, patch])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([b, gh * gw, patch * patch * c]))
}

/// Images `[B, C, H, W]` from patch rows (the inverse of [`patchify`]) for a `grid x grid`
/// layout.
pub fn unpatchify(patches: Tensor<3>, patch: usize, channels: usize, grid: usize) -> Tensor<4> {
    let b = patches.dims()[0];
    patches
        .reshape([b, grid, grid, patch, patch, channels])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([b, channels, grid * patch, grid * patch])
}

/// MAE's loss of predictions and target patches (`[B, N, P]`) on the patches where `mask`
/// (`[B, N]`) is 1: see the [module docs](self).
pub fn mae_loss(
    pred: Tensor<3>,
    target: Tensor<3>,
    mask: Tensor<2>,
    norm_pix_loss: bool,
) -> Result<Tensor<1>> {
    check::same_shape(|| "MAE loss: target patches".into(), &pred, &target)?;
    let [b, n, _] = pred.dims();
    if mask.dims() != [b, n] {
        return Err(Error::ShapeMismatch {
            context: "MAE loss: mask".into(),
            expected: vec![b, n],
            found: mask.dims().to_vec(),
        });
    }
    let target = if norm_pix_loss {
        normalize_patches(target)
    } else {
        target
    };
    let per_patch = (pred - target.detach())
        .square()
        .mean_dim(2)
        .reshape([b, n]);
    let masked = mask.clone().sum();
    Ok((per_patch * mask).sum() / masked.clamp_min(1.0))
}

/// Each patch (row) minus its mean, over `sqrt(var + 1e-6)` with the unbiased variance.
fn normalize_patches(patches: Tensor<3>) -> Tensor<3> {
    let mean = patches.clone().mean_dim(2);
    let var = patches.clone().var(2);
    (patches - mean) / var.add_scalar(1e-6).sqrt()
}

/// MAE's fixed 2-D sin-cos position embeddings `[1 + grid^2, dim]` (the class token's row is
/// zeros): half the channels encode the row, half the column, each as `[sin, cos]` of the
/// position times `1 / 10000^(i / (dim / 4))`.
pub fn sincos_positions(grid: usize, dim: usize, device: &Device) -> Tensor<2> {
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64))
        .collect();
    let mut values = vec![0f32; (1 + grid * grid) * dim];
    for r in 0..grid {
        for c in 0..grid {
            let row = &mut values[(1 + r * grid + c) * dim..(2 + r * grid + c) * dim];
            // The reference meshgrid puts the column coordinate first.
            for (half, pos) in [(0, c), (1, r)] {
                for (i, w) in omega.iter().enumerate() {
                    let angle = pos as f64 * w;
                    row[half * 2 * quarter + i] = angle.sin() as f32;
                    row[half * 2 * quarter + quarter + i] = angle.cos() as f32;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(values, [1 + grid * grid, dim]), device)
}

/// The kept patches of `masks` as a `[B, N]` 0/1 visibility map on the host, for pictures.
pub fn visible_patches(masks: &Masks) -> Result<Vec<Vec<bool>>> {
    let keep = masks.keep.clone().into_data().convert::<i64>();
    let keep = keep.try_to_vec::<i64>().map_err(|e| Error::TensorRead {
        context: "MAE masks".into(),
        reason: format!("{e:?}"),
    })?;
    let [b, k] = masks.keep.dims();
    let n = masks.grid * masks.grid;
    Ok((0..b)
        .map(|i| {
            let mut row = vec![false; n];
            keep[i * k..(i + 1) * k]
                .iter()
                .for_each(|&p| row[p as usize] = true);
            row
        })
        .collect())
}
