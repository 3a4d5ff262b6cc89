//! ResNet-18/34/50 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), laid
//! out and named as torchvision's `resnet18/34/50` without the classifier, with a CIFAR stem
//! option (3x3 stride-1 convolution, no max-pool) as used by SimCLR / lightly on 32x32 images.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch_norm::{batch_norm_add_relu, batch_norm_relu};
use crate::conv::conv2d;
use crate::error::Error;

/// Depth of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResNetDepth {
    /// ResNet-18: basic blocks `[2, 2, 2, 2]`.
    ResNet18,
    /// ResNet-34: basic blocks `[3, 4, 6, 3]`.
    ResNet34,
    /// ResNet-50: bottleneck blocks `[3, 4, 6, 3]`, expansion 4.
    ResNet50,
}

impl ResNetDepth {
    fn layout(self) -> ([usize; 4], bool) {
        match self {
            ResNetDepth::ResNet18 => ([2, 2, 2, 2], false),
            ResNetDepth::ResNet34 => ([3, 4, 6, 3], false),
            ResNetDepth::ResNet50 => ([3, 4, 6, 3], true),
        }
    }
}

/// The first layers of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stem {
    /// 7x7 stride-2 convolution, BN, ReLU, 3x3 stride-2 max-pool (ImageNet-sized inputs).
    ImageNet,
    /// 3x3 stride-1 convolution, BN, ReLU, no max-pool (CIFAR-sized inputs).
    Cifar,
}

/// Configuration of a [`ResNet`].
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// ResNet-18, -34 or -50.
    pub depth: ResNetDepth,
    /// Stem for the input size.
    #[config(default = "Stem::ImageNet")]
    pub stem: Stem,
    /// Channels of the first stage (64 in the paper); stages use `width x [1, 2, 4, 8]`.
    /// `width / 64` is the width multiplier.
    #[config(default = 64)]
    pub width: usize,
    /// Start each residual block as the identity by zero-initialising the scale of its last
    /// BatchNorm (Goyal et al., 2017; torchvision's `zero_init_residual`).
    #[config(default = false)]
    pub zero_init_residual: bool,
    /// Input channels.
    #[config(default = 3)]
    pub input_channels: usize,
}

impl ResNetConfig {
    /// A ResNet-18.
    pub fn resnet18() -> Self {
        Self::new(ResNetDepth::ResNet18)
    }
    /// A ResNet-34.
    pub fn resnet34() -> Self {
        Self::new(ResNetDepth::ResNet34)
    }
    /// A ResNet-50.
    pub fn resnet50() -> Self {
        Self::new(ResNetDepth::ResNet50)
    }

    /// Width of the first stage from a multiplier of the standard 64 channels.
    pub fn with_width_multiplier(self, multiplier: f64) -> Self {
        let width = (64.0 * multiplier).round().max(1.0) as usize;
        self.with_width(width)
    }

    /// Dimension of the pooled features: `8 x width` (x4 for ResNet-50).
    pub fn feature_dim(&self) -> usize {
        let (_, bottleneck) = self.depth.layout();
        self.width * 8 * if bottleneck { 4 } else { 1 }
    }

    /// Creates the network on `device`.
    pub fn init(&self, device: &Device) -> crate::Result<ResNet> {
        if self.width == 0 {
            return Err(Error::invalid_config("resnet.width", 0, "at least 1"));
        }
        if self.input_channels == 0 {
            return Err(Error::invalid_config(
                "resnet.input_channels",
                0,
                "at least 1",
            ));
        }
        let w = self.width;
        let (stem_kernel, stem_stride, stem_pad) = match self.stem {
            Stem::ImageNet => (7, 2, 3),
            Stem::Cifar => (3, 1, 1),
        };
        let conv1 = conv(
            self.input_channels,
            w,
            stem_kernel,
            stem_stride,
            stem_pad,
            device,
        );
        let bn1 = BatchNormConfig::new(w).init(device);
        let maxpool = match self.stem {
            Stem::ImageNet => Some(
                MaxPool2dConfig::new([3, 3])
                    .with_strides([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(),
            ),
            Stem::Cifar => None,
        };
        let (blocks, bottleneck) = self.depth.layout();
        let expansion = if bottleneck { 4 } else { 1 };
        let mut in_channels = w;
        let mut stages: Vec<Vec<ResidualBlock>> = Vec::with_capacity(4);
        for (stage, &count) in blocks.iter().enumerate() {
            let planes = w << stage;
            let mut layer = Vec::with_capacity(count);
            for i in 0..count {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let block = ResidualBlock::new(
                    in_channels,
                    planes,
                    stride,
                    bottleneck,
                    self.zero_init_residual,
                    device,
                );
                in_channels = planes * expansion;
                layer.push(block);
            }
            stages.push(layer);
        }
        let mut stages = stages.into_iter();
        Ok(ResNet {
            conv1,
            bn1,
            maxpool,
            layer1: stages.next().unwrap_or_default(),
            layer2: stages.next().unwrap_or_default(),
            layer3: stages.next().unwrap_or_default(),
            layer4: stages.next().unwrap_or_default(),
            feature_dim: in_channels,
        })
    }
}

fn conv(
    input: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(false)
        // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

fn batch_norm(channels: usize, zero_init: bool, device: &Device) -> BatchNorm {
    let bn = BatchNormConfig::new(channels).init(device);
    if zero_init {
        // A new parameter: `Param::map` would leave a value without autodiff, untrained.
        BatchNorm {
            gamma: Param::from_tensor(Tensor::zeros([channels], device)),
            ..bn
        }
    } else {
        bn
    }
}

/// The 1x1 projection shortcut of a block that changes shape (torchvision's `downsample`).
#[derive(Module, Debug)]
pub struct Downsample {
    /// 1x1 convolution with the block's stride.
    pub conv: Conv2d,
    /// Its BatchNorm.
    pub bn: BatchNorm,
}

/// A residual block: basic (two 3x3 convolutions) or bottleneck (1x1, 3x3, 1x1 with the stride
/// on the 3x3, torchvision's "ResNet v1.5").
#[derive(Module, Debug)]
pub struct ResidualBlock {
    /// First convolution.
    pub conv1: Conv2d,
    /// First BatchNorm.
    pub bn1: BatchNorm,
    /// Second convolution.
    pub conv2: Conv2d,
    /// Second BatchNorm.
    pub bn2: BatchNorm,
    /// Third convolution (bottleneck only).
    pub conv3: Option<Conv2d>,
    /// Third BatchNorm (bottleneck only).
    pub bn3: Option<BatchNorm>,
    /// Projection shortcut when the shape changes.
    pub downsample: Option<Downsample>,
}

impl ResidualBlock {
    fn new(
        in_channels: usize,
        planes: usize,
        stride: usize,
        bottleneck: bool,
        zero_init_residual: bool,
        device: &Device,
    ) -> Self {
        let expansion = if bottleneck { 4 } else { 1 };
        let out_channels = planes * expansion;
        let downsample = (stride != 1 || in_channels != out_channels).then(|| Downsample {
            conv: conv(in_channels, out_channels, 1, stride, 0, device),
            bn: BatchNormConfig::new(out_channels).init(device),
        });
        if bottleneck {
            Self {
                conv1: conv(in_channels, planes, 1, 1, 0, device),
                bn1: batch_norm(planes, false, device),
                conv2: conv(planes, planes, 3, stride, 1, device),
                bn2: batch_norm(planes, false, device),
                conv3: Some(conv(planes, out_channels, 1, 1, 0, device)),
                bn3: Some(batch_norm(out_channels, zero_init_residual, device)),
                downsample,
            }
        } else {
            Self {
                conv1: conv(in_channels, planes, 3, stride, 1, device),
                bn1: batch_norm(planes, false, device),
                conv2: conv(planes, planes, 3, 1, 1, device),
                bn2: batch_norm(planes, zero_init_residual, device),
                conv3: None,
                bn3: None,
                downsample,
            }
        }
    }

    /// Applies the block to `[B, C, H, W]`.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => crate::batch_norm::batch_norm(&d.bn, conv2d(&d.conv, input.clone())),
            None => input.clone(),
        };
        let x = batch_norm_relu(&self.bn1, conv2d(&self.conv1, input));
        match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => {
                let x = batch_norm_relu(&self.bn2, conv2d(&self.conv2, x));
                batch_norm_add_relu(bn3, conv2d(conv3, x), identity)
            }
            _ => batch_norm_add_relu(&self.bn2, conv2d(&self.conv2, x), identity),
        }
    }
}

/// A ResNet trunk: stem, four stages, global average pooling. `[B, C, H, W] -> [B, D]`.
#[derive(Module, Debug)]
pub struct ResNet {
    /// Stem convolution.
    pub conv1: Conv2d,
    /// Stem BatchNorm.
    pub bn1: BatchNorm,
    /// Stem max-pool (ImageNet stem only).
    pub maxpool: Option<MaxPool2d>,
    /// Stage 1.
    pub layer1: Vec<ResidualBlock>,
    /// Stage 2.
    pub layer2: Vec<ResidualBlock>,
    /// Stage 3.
    pub layer3: Vec<ResidualBlock>,
    /// Stage 4.
    pub layer4: Vec<ResidualBlock>,
    /// Output features after pooling.
    pub feature_dim: usize,
}

impl ResNet {
    /// Pooled features `[B, feature_dim]` of images `[B, C, H, W]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = batch_norm_relu(&self.bn1, conv2d(&self.conv1, images));
        if let Some(pool) = &self.maxpool {
            x = pool.forward(x);
        }
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        global_average_pool(x)
    }
}

/// Mean over the spatial dimensions: `[B, C, H, W] -> [B, C]`.
pub fn global_average_pool(x: Tensor<4>) -> Tensor<2> {
    let [b, c, _, _] = x.dims();
    x.mean_dim(3).mean_dim(2).reshape([b, c])
}
