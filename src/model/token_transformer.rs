//! The light transformer that masked-image methods put after their encoder: MAE's decoder
//! (He et al. 2022) and I-JEPA's predictor (Assran et al. 2023) have the same parts: a linear
//! embedding of the encoder's tokens into a narrower width, a learned mask token for the
//! positions to fill, pre-norm transformer blocks, a final LayerNorm and a linear output layer
//! (pixels for MAE, the encoder's width for I-JEPA). Each method arranges the tokens (which
//! positions, which order) itself.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Distribution, Tensor};

use crate::backbone::vit::{BlockInit, EncoderBlock, TorchLinear};
use crate::error::{Error, Result};
use crate::transformer_ops::layer_norm;

/// The LayerNorms' epsilon (MAE's and I-JEPA's `partial(nn.LayerNorm, eps=1e-6)`).
const NORM_EPS: f64 = 1e-6;

/// Widths and depth of a [`TokenTransformer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTransformerShape {
    /// Width of the encoder tokens it takes.
    pub input_dim: usize,
    /// Its own token width.
    pub width: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of its outputs.
    pub output_dim: usize,
}

impl TokenTransformerShape {
    /// Checks that `width` is a multiple of 4 (the 2-D sin-cos positions) and of `heads`,
    /// naming the fields `{prefix}_dim` and `{prefix}_heads`.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        let w = self.width;
        if self.heads == 0 || !w.is_multiple_of(self.heads) || !w.is_multiple_of(4) {
            return Err(Error::invalid_config(
                format!("{prefix}_dim"),
                w,
                format!("a multiple of 4 and of {prefix}_heads ({})", self.heads),
            ));
        }
        Ok(())
    }

    /// The transformer with its reference initialisation (Xavier-uniform linear layers with
    /// zero biases, the mask token from `N(0, 0.02)`), on `device`.
    pub fn init(&self, device: &Device) -> TokenTransformer {
        let w = self.width;
        TokenTransformer {
            embed: TorchLinear::xavier(self.input_dim, w, 0.0, device),
            mask_token: Param::from_tensor(Tensor::random(
                [1, 1, w],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            blocks: (0..self.depth)
                .map(|_| {
                    EncoderBlock::new(w, self.heads, 4 * w, NORM_EPS, BlockInit::Xavier, device)
                })
                .collect(),
            norm: LayerNormConfig::new(w).with_epsilon(NORM_EPS).init(device),
            head: TorchLinear::xavier(w, self.output_dim, 0.0, device),
        }
    }
}

/// MAE's decoder, I-JEPA's predictor: see the [module docs](self).
#[derive(Module, Debug)]
pub struct TokenTransformer {
    /// Encoder width to this transformer's width.
    pub embed: TorchLinear,
    /// The learned token put at every position to fill, `[1, 1, width]`.
    pub mask_token: Param<Tensor<3>>,
    /// Transformer blocks.
    pub blocks: Vec<EncoderBlock>,
    /// Final LayerNorm.
    pub norm: LayerNorm,
    /// This transformer's width to the output width.
    pub head: TorchLinear,
}

impl TokenTransformer {
    /// Its token width.
    pub fn width(&self) -> usize {
        self.mask_token.dims()[2]
    }

    /// `[B, N, input_dim]` encoder tokens embedded to `[B, N, width]`.
    pub fn embed(&self, tokens: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = tokens.dims();
        self.embed
            .forward(tokens.reshape([b * n, d]))
            .reshape([b, n, self.width()])
    }

    /// `count` mask tokens per image, `[batch, count, width]`.
    pub fn mask_tokens(&self, batch: usize, count: usize) -> Tensor<3> {
        self.mask_token.val().expand([batch, count, self.width()])
    }

    /// The blocks, the final norm, and the output layer applied to the last `keep` tokens of
    /// each sequence: `[B, N, width]` to `[B, keep, output_dim]`.
    pub fn predict_last(&self, tokens: Tensor<3>, keep: usize) -> Tensor<3> {
        let [b, n, w] = tokens.dims();
        let x = self.blocks.iter().fold(tokens, |x, block| block.forward(x));
        let x = layer_norm(&self.norm, x, NORM_EPS).narrow(1, n - keep, keep);
        let out = self.head.weight.dims()[0];
        self.head
            .forward(x.reshape([b * keep, w]))
            .reshape([b, keep, out])
    }
}
