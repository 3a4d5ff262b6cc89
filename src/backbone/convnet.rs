//! A tiny convolutional encoder for fast CPU runs and tests.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::resnet::global_average_pool;
use crate::error::Error;

/// Configuration of a [`ConvNet`]: `stages` blocks of `3x3 conv -> BN -> ReLU`, the first with
/// stride 1 and `width` channels, each later one with stride 2 and twice the channels, then
/// global average pooling.
#[derive(Config, Debug)]
pub struct ConvNetConfig {
    /// Channels of the first block.
    #[config(default = 16)]
    pub width: usize,
    /// Number of blocks.
    #[config(default = 3)]
    pub stages: usize,
    /// Input channels.
    #[config(default = 3)]
    pub input_channels: usize,
}

impl ConvNetConfig {
    /// Dimension of the pooled features: `width x 2^(stages - 1)`.
    pub fn feature_dim(&self) -> usize {
        self.width << self.stages.saturating_sub(1)
    }

    /// Creates the network on `device`.
    pub fn init(&self, device: &Device) -> crate::Result<ConvNet> {
        if self.width == 0 || self.stages == 0 || self.input_channels == 0 {
            return Err(Error::invalid_config(
                "convnet",
                format!(
                    "width {}, stages {}, input_channels {}",
                    self.width, self.stages, self.input_channels
                ),
                "all at least 1",
            ));
        }
        let mut blocks = Vec::with_capacity(self.stages);
        let mut channels = self.input_channels;
        for stage in 0..self.stages {
            let out = self.width << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            blocks.push(ConvBlock {
                conv: Conv2dConfig::new([channels, out], [3, 3])
                    .with_stride([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false)
                    .with_initializer(Initializer::KaimingNormal {
                        gain: std::f64::consts::SQRT_2,
                        fan_out_only: true,
                    })
                    .init(device),
                bn: BatchNormConfig::new(out).init(device),
            });
            channels = out;
        }
        Ok(ConvNet {
            blocks,
            feature_dim: channels,
        })
    }
}

/// `3x3 conv -> BN -> ReLU`.
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// The convolution.
    pub conv: Conv2d,
    /// Its BatchNorm.
    pub bn: BatchNorm,
}

/// A small stack of convolutions: `[B, C, H, W] -> [B, D]`.
#[derive(Module, Debug)]
pub struct ConvNet {
    /// The blocks.
    pub blocks: Vec<ConvBlock>,
    /// Output features.
    pub feature_dim: usize,
}

impl ConvNet {
    /// Pooled features of `images`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = images;
        for block in &self.blocks {
            x = crate::batch_norm::batch_norm_relu(&block.bn, crate::conv::conv2d(&block.conv, x));
        }
        global_average_pool(x)
    }
}
