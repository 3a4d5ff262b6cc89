//! Projection and prediction heads: MLPs built from blocks, with the presets of each method.
//!
//! A head is a list of [`HeadBlockConfig`]s, each `Linear(in, out, bias?) -> BatchNorm? -> ReLU?`,
//! the building block of lightly's `ProjectionHead`. The presets follow the papers' reference
//! code; every dimension is configurable so CPU runs can use small heads.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::norm::{FeatureBatchNorm, FeatureBatchNormConfig};

/// Batch normalisation after a block's linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadNorm {
    /// No normalisation.
    None,
    /// Batch normalisation with learnable scale and shift.
    BatchNorm,
    /// Batch normalisation without scale and shift (`affine=False`), as SimSiam's last layer.
    BatchNormNoAffine,
}

/// One block of a head: `Linear(input_dim, output_dim, bias) -> norm -> ReLU if activation`.
#[derive(Config, Debug)]
pub struct HeadBlockConfig {
    /// Input features.
    pub input_dim: usize,
    /// Output features.
    pub output_dim: usize,
    /// Whether the linear layer has a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Normalisation after the linear layer.
    #[config(default = "HeadNorm::None")]
    pub norm: HeadNorm,
    /// Whether a ReLU follows.
    #[config(default = false)]
    pub activation: bool,
}

impl HeadBlockConfig {
    /// `Linear(input, output) -> BatchNorm -> ReLU` with the given bias.
    pub fn hidden(input_dim: usize, output_dim: usize, bias: bool) -> Self {
        Self::new(input_dim, output_dim)
            .with_bias(bias)
            .with_norm(HeadNorm::BatchNorm)
            .with_activation(true)
    }

    /// A plain `Linear(input, output)` with the given bias.
    pub fn linear(input_dim: usize, output_dim: usize, bias: bool) -> Self {
        Self::new(input_dim, output_dim).with_bias(bias)
    }
}

/// An MLP head: the blocks in order.
#[derive(Config, Debug)]
pub struct ProjectionHeadConfig {
    /// The blocks, applied in order; each block's input must equal the previous one's output.
    pub blocks: Vec<HeadBlockConfig>,
}

impl ProjectionHeadConfig {
    /// BYOL projector (Grill et al., 2020, §3.3): `Linear(in, 4096) BN ReLU Linear(4096, 256)`.
    pub fn byol_projector(input_dim: usize, hidden_dim: usize, output_dim: usize) -> Self {
        Self::new(vec![
            HeadBlockConfig::hidden(input_dim, hidden_dim, true),
            HeadBlockConfig::linear(hidden_dim, output_dim, true),
        ])
    }

    /// BYOL predictor: the same MLP as the projector, `Linear(256, 4096) BN ReLU Linear(4096, 256)`.
    pub fn byol_predictor(dim: usize, hidden_dim: usize) -> Self {
        Self::byol_projector(dim, hidden_dim, dim)
    }

    /// SimSiam projector (Chen & He, 2021, §4.1 and facebookresearch/simsiam): three bias-free
    /// linear layers of width 2048, each followed by BN; ReLU after the first two; the last BN
    /// has no affine parameters.
    pub fn simsiam_projector(input_dim: usize, hidden_dim: usize, output_dim: usize) -> Self {
        Self::new(vec![
            HeadBlockConfig::hidden(input_dim, hidden_dim, false),
            HeadBlockConfig::hidden(hidden_dim, hidden_dim, false),
            HeadBlockConfig::linear(hidden_dim, output_dim, false)
                .with_norm(HeadNorm::BatchNormNoAffine),
        ])
    }

    /// SimSiam predictor, a bottleneck: `Linear(2048, 512) BN ReLU Linear(512, 2048)`.
    pub fn simsiam_predictor(dim: usize, hidden_dim: usize) -> Self {
        Self::new(vec![
            HeadBlockConfig::hidden(dim, hidden_dim, false),
            HeadBlockConfig::linear(hidden_dim, dim, true),
        ])
    }

    /// Barlow Twins projector (Zbontar et al., 2021, facebookresearch/barlowtwins): three
    /// bias-free linear layers of width 8192, BN and ReLU after the first two.
    pub fn barlow_twins_projector(input_dim: usize, hidden_dim: usize, output_dim: usize) -> Self {
        Self::new(vec![
            HeadBlockConfig::hidden(input_dim, hidden_dim, false),
            HeadBlockConfig::hidden(hidden_dim, hidden_dim, false),
            HeadBlockConfig::linear(hidden_dim, output_dim, false),
        ])
    }

    /// VICReg expander (Bardes et al., 2022, facebookresearch/vicreg): `8192-8192-8192`, BN and
    /// ReLU after the first two layers, last layer bias-free.
    pub fn vicreg_projector(input_dim: usize, hidden_dim: usize, output_dim: usize) -> Self {
        Self::new(vec![
            HeadBlockConfig::hidden(input_dim, hidden_dim, true),
            HeadBlockConfig::hidden(hidden_dim, hidden_dim, true),
            HeadBlockConfig::linear(hidden_dim, output_dim, false),
        ])
    }

    /// SwAV projector (Caron et al., 2020, facebookresearch/swav):
    /// `Linear(in, 2048) BN ReLU Linear(2048, 128)`; the prototypes follow separately.
    pub fn swav_projector(input_dim: usize, hidden_dim: usize, output_dim: usize) -> Self {
        Self::byol_projector(input_dim, hidden_dim, output_dim)
    }

    /// SimCLR projector (Chen et al., 2020; lightly's `SimCLRProjectionHead`):
    /// `Linear(in, 2048) BN ReLU Linear(2048, 128)`.
    pub fn simclr_projector(input_dim: usize, hidden_dim: usize, output_dim: usize) -> Self {
        Self::byol_projector(input_dim, hidden_dim, output_dim)
    }

    /// Input features of the head.
    pub fn input_dim(&self) -> usize {
        self.blocks.first().map_or(0, |b| b.input_dim)
    }

    /// Output features of the head.
    pub fn output_dim(&self) -> usize {
        self.blocks.last().map_or(0, |b| b.output_dim)
    }

    /// Checks the chain of dimensions.
    pub fn validate(&self) -> crate::Result<()> {
        if self.blocks.is_empty() {
            return Err(Error::invalid_config(
                "head.blocks",
                "[]",
                "at least one block",
            ));
        }
        for (i, block) in self.blocks.iter().enumerate() {
            if block.input_dim == 0 || block.output_dim == 0 {
                return Err(Error::invalid_config(
                    format!("head.blocks[{i}] dimensions"),
                    format!("{} -> {}", block.input_dim, block.output_dim),
                    "positive dimensions",
                ));
            }
            if i > 0 && self.blocks[i - 1].output_dim != block.input_dim {
                return Err(Error::invalid_config(
                    format!("head.blocks[{i}].input_dim"),
                    block.input_dim,
                    format!(
                        "{} (the previous block's output)",
                        self.blocks[i - 1].output_dim
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Creates the head on `device`.
    pub fn init(&self, device: &Device) -> crate::Result<ProjectionHead> {
        self.validate()?;
        let blocks = self
            .blocks
            .iter()
            .map(|b| HeadBlock {
                linear: LinearConfig::new(b.input_dim, b.output_dim)
                    .with_bias(b.bias)
                    .init(device),
                norm: match b.norm {
                    HeadNorm::None => None,
                    HeadNorm::BatchNorm => {
                        Some(FeatureBatchNormConfig::new(b.output_dim).init(device))
                    }
                    HeadNorm::BatchNormNoAffine => Some(
                        FeatureBatchNormConfig::new(b.output_dim)
                            .with_affine(false)
                            .init(device),
                    ),
                },
                activation: b.activation,
            })
            .collect();
        Ok(ProjectionHead { blocks })
    }
}

/// One block of a [`ProjectionHead`].
#[derive(Module, Debug)]
pub struct HeadBlock {
    /// The linear layer.
    pub linear: Linear,
    /// Optional batch normalisation.
    pub norm: Option<FeatureBatchNorm>,
    /// Whether a ReLU follows.
    pub activation: bool,
}

/// An MLP projection or prediction head, `[B, in] -> [B, out]`.
#[derive(Module, Debug)]
pub struct ProjectionHead {
    /// The blocks in order.
    pub blocks: Vec<HeadBlock>,
}

impl ProjectionHead {
    /// Input features.
    pub fn input_dim(&self) -> usize {
        self.blocks[0].linear.weight.dims()[0]
    }

    /// Output features.
    pub fn output_dim(&self) -> usize {
        self.blocks[self.blocks.len() - 1].linear.weight.dims()[1]
    }

    /// Whether any block normalises with batch statistics (then batches need 2+ samples).
    pub fn has_batch_norm(&self) -> bool {
        self.blocks.iter().any(|b| b.norm.is_some())
    }

    /// Applies the head to `[B, in]`.
    pub fn forward(&self, input: Tensor<2>) -> crate::Result<Tensor<2>> {
        let expected = self.input_dim();
        let [batch, features] = input.dims();
        if features != expected {
            return Err(Error::ShapeMismatch {
                context: "projection head input".into(),
                expected: vec![batch, expected],
                found: vec![batch, features],
            });
        }
        let mut x = input;
        for block in &self.blocks {
            x = block.linear.forward(x);
            x = match &block.norm {
                Some(norm) => norm.forward_activated(x, block.activation)?,
                None if block.activation => relu(x),
                None => x,
            };
        }
        Ok(x)
    }
}
