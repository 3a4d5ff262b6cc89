//! Projection and prediction heads: MLPs built from blocks, with the presets of each method.
//!
//! A head is a list of [`HeadBlockConfig`]s, each
//! `L2-normalise? -> Linear(in, out, bias?, weight-normalised?) -> BatchNorm? -> activation?`,
//! the building block of lightly's `ProjectionHead` (the L2 normalisation and the
//! weight-normalised linear layer are DINO's last layer). The presets follow the papers'
//! reference code; every dimension is configurable so CPU runs can use small heads.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::energy::l2_normalize;
use crate::error::Error;
use crate::model::feature_batch_norm::{FeatureBatchNorm, FeatureBatchNormConfig};
use crate::transformer_ops::{gelu, linear_input_output, linear_layer};

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

/// The non-linearity after a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// None.
    None,
    /// `max(x, 0)`.
    Relu,
    /// The exact (erf) GELU, as PyTorch's `nn.GELU()` (DINO's head).
    Gelu,
}

/// One block of a head: `L2-normalise if normalize_input -> Linear(input_dim, output_dim,
/// bias; weight-normalised if weight_norm) -> norm -> activation`.
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
    /// The non-linearity after the block.
    #[config(default = "Activation::None")]
    pub activation: Activation,
    /// L2-normalise the block's input (DINO's last layer sees unit vectors).
    #[config(default = false)]
    pub normalize_input: bool,
    /// Weight normalisation with the scale fixed at 1: each output unit's weight vector is
    /// divided by its norm in the forward pass (PyTorch's `weight_norm` with `weight_g` frozen
    /// at 1, DINO's `norm_last_layer`).
    #[config(default = false)]
    pub weight_norm: bool,
    /// Initialise the weights from `N(0, std)` and the bias at 0 (DINO's `trunc_normal_(std =
    /// 0.02)`); absent: PyTorch's default `U(-1/sqrt(in), 1/sqrt(in))`.
    #[config(default = "None")]
    pub init_std: Option<f64>,
}

impl HeadBlockConfig {
    /// `Linear(input, output) -> BatchNorm -> ReLU` with the given bias.
    pub fn hidden(input_dim: usize, output_dim: usize, bias: bool) -> Self {
        Self::new(input_dim, output_dim)
            .with_bias(bias)
            .with_norm(HeadNorm::BatchNorm)
            .with_activation(Activation::Relu)
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

    /// MoCo v2's projector (Chen et al. 2020, facebookresearch/moco `--mlp`):
    /// `Linear(in, hidden) ReLU Linear(hidden, out)` without batch norm; the reference ties
    /// `hidden` to the backbone's feature dimension and `out` is 128.
    pub fn moco_projector(input_dim: usize, hidden_dim: usize, output_dim: usize) -> Self {
        Self::new(vec![
            HeadBlockConfig::linear(input_dim, hidden_dim, true).with_activation(Activation::Relu),
            HeadBlockConfig::linear(hidden_dim, output_dim, true),
        ])
    }

    /// DINO's head (Caron et al. 2021, facebookresearch/dino `DINOHead`): `Linear(in, hidden)
    /// GELU Linear(hidden, hidden) GELU Linear(hidden, bottleneck)` with weights from
    /// `N(0, 0.02)` and zero biases (batch norm after the two hidden layers when `batch_norm`),
    /// then L2 normalisation and a bias-free, weight-normalised `Linear(bottleneck, out)` with
    /// PyTorch's default initialisation (the paper's `norm_last_layer`: its scale is fixed at 1).
    pub fn dino_head(
        input_dim: usize,
        hidden_dim: usize,
        bottleneck_dim: usize,
        output_dim: usize,
        batch_norm: bool,
    ) -> Self {
        let norm = if batch_norm {
            HeadNorm::BatchNorm
        } else {
            HeadNorm::None
        };
        let hidden = |i, o| {
            HeadBlockConfig::linear(i, o, true)
                .with_norm(norm)
                .with_activation(Activation::Gelu)
                .with_init_std(Some(0.02))
        };
        Self::new(vec![
            hidden(input_dim, hidden_dim),
            hidden(hidden_dim, hidden_dim),
            HeadBlockConfig::linear(hidden_dim, bottleneck_dim, true).with_init_std(Some(0.02)),
            HeadBlockConfig::linear(bottleneck_dim, output_dim, false)
                .with_normalize_input(true)
                .with_weight_norm(true),
        ])
    }

    /// Input features of the head.
    pub fn input_dim(&self) -> usize {
        self.blocks.first().map_or(0, |b| b.input_dim)
    }

    /// Output features of the head.
    pub fn output_dim(&self) -> usize {
        self.blocks.last().map_or(0, |b| b.output_dim)
    }

    /// No head: the embeddings are the backbone's features (masked-image methods, whose
    /// decoder or predictor works on tokens and belongs to the method).
    pub fn identity() -> Self {
        Self::new(Vec::new())
    }

    /// Whether this is the [`identity`](Self::identity).
    pub fn is_identity(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Checks the chain of dimensions.
    pub fn validate(&self) -> crate::Result<()> {
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
                linear: linear(b, device),
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
                normalize_input: b.normalize_input,
                weight_norm: b.weight_norm,
            })
            .collect();
        Ok(ProjectionHead { blocks })
    }
}

/// The linear layer of a block, initialised as the block asks.
fn linear(block: &HeadBlockConfig, device: &Device) -> Linear {
    let config = LinearConfig::new(block.input_dim, block.output_dim).with_bias(block.bias);
    match block.init_std {
        Some(std) => {
            let linear = config
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device);
            Linear {
                bias: block
                    .bias
                    .then(|| Initializer::Zeros.init([block.output_dim], device)),
                ..linear
            }
        }
        None => config.init(device),
    }
}

/// One block of a [`ProjectionHead`].
#[derive(Module, Debug)]
pub struct HeadBlock {
    /// The linear layer.
    pub linear: Linear,
    /// Optional batch normalisation.
    pub norm: Option<FeatureBatchNorm>,
    /// The non-linearity after the block.
    #[module(skip)]
    pub activation: Activation,
    /// Whether the input is L2-normalised first.
    pub normalize_input: bool,
    /// Whether the weight is normalised per output unit in the forward pass.
    pub weight_norm: bool,
}

impl HeadBlock {
    /// The block applied to `[B, in]`.
    fn forward(&self, input: Tensor<2>) -> crate::Result<Tensor<2>> {
        let x = if self.normalize_input {
            l2_normalize(input)
        } else {
            input
        };
        let x = if self.weight_norm {
            let v = self.linear.weight.val();
            let norms = v.clone().square().sum_dim(0).sqrt();
            let bias = self.linear.bias.as_ref().map(|bias| bias.val());
            linear_input_output(x, v / norms, bias)
        } else {
            linear_layer(&self.linear, x)
        };
        Ok(match (&self.norm, self.activation) {
            (Some(norm), Activation::Relu) => norm.forward_activated(x, true)?,
            (Some(norm), Activation::None) => norm.forward(x)?,
            (Some(norm), Activation::Gelu) => gelu(norm.forward(x)?),
            (None, Activation::Relu) => relu(x),
            (None, Activation::Gelu) => gelu(x),
            (None, Activation::None) => x,
        })
    }
}

/// An MLP projection or prediction head, `[B, in] -> [B, out]`.
#[derive(Module, Debug)]
pub struct ProjectionHead {
    /// The blocks in order.
    pub blocks: Vec<HeadBlock>,
}

impl ProjectionHead {
    /// Input features (`None` for the identity, which takes any).
    pub fn input_dim(&self) -> Option<usize> {
        self.blocks.first().map(|b| b.linear.weight.dims()[0])
    }

    /// Output features (`None` for the identity).
    pub fn output_dim(&self) -> Option<usize> {
        self.blocks.last().map(|b| b.linear.weight.dims()[1])
    }

    /// Whether any block normalises with batch statistics (then batches need 2+ samples).
    pub fn has_batch_norm(&self) -> bool {
        self.blocks.iter().any(|b| b.norm.is_some())
    }

    /// Applies the head to `[B, in]`.
    pub fn forward(&self, input: Tensor<2>) -> crate::Result<Tensor<2>> {
        let Some(expected) = self.input_dim() else {
            return Ok(input);
        };
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
            x = block.forward(x)?;
        }
        Ok(x)
    }
}
