//! Image encoders (backbones): `[B, C, H, W]` images to `[B, D]` features, and for vision
//! transformers also to tokens `[B, N, D]`.
//!
//! [`Backbone`] covers the built-in networks; any burn module implementing [`Encoder`] can take
//! its place in a [`JointEmbedding`](crate::model::joint_embedding::JointEmbedding).

pub mod bicubic;
pub mod convnet;
pub mod resnet;
pub mod vit;

use burn::config::Config;
use burn::module::{Module, ModuleDisplay};
use burn::tensor::{Device, Tensor};

pub use convnet::{ConvNet, ConvNetConfig};
pub use resnet::{ResNet, ResNetConfig, ResNetDepth, Stem};
pub use vit::{BlockInit, Vit, VitConfig, VitPool};

/// An image encoder usable as the trunk of a joint-embedding architecture.
pub trait Encoder: Module + ModuleDisplay {
    /// Features `[B, feature_dim]` of images `[B, C, H, W]`.
    fn encode(&self, images: Tensor<4>) -> Tensor<2>;

    /// Dimension of the features.
    fn feature_dim(&self) -> usize;

    /// Channels the encoder expects, when it knows (checked before the forward pass so a
    /// mismatch is an error, not a panic).
    fn input_channels(&self) -> Option<usize> {
        None
    }

    /// The output tokens `[B, 1 + N, D]` (class token first, then the patches), for encoders
    /// that have tokens (vision transformers); `None` for the others.
    fn encode_tokens(&self, images: Tensor<4>) -> Option<Tensor<3>> {
        let _ = images;
        None
    }

    /// The output tokens `[B, 1 + K, D]` of only the patches `keep` (`[B, K]` indices), the
    /// class token first: the other patches never enter the encoder (MAE's encoder,
    /// I-JEPA's context encoder). `None` for encoders without tokens.
    fn encode_kept(
        &self,
        images: Tensor<4>,
        keep: Tensor<2, burn::tensor::Int>,
    ) -> Option<crate::Result<Tensor<3>>> {
        let _ = (images, keep);
        None
    }

    /// Checks a batch's shape `[B, C, H, W]` before the forward pass (channels, and a ViT's
    /// minimum side), so a mismatch is an error, not a panic.
    fn check_images(&self, dims: [usize; 4]) -> crate::Result<()> {
        check_channels(self.input_channels(), dims)
    }
}

/// An error when `expected` channels are known and `dims` (`[B, C, H, W]`) has others.
pub fn check_channels(expected: Option<usize>, dims: [usize; 4]) -> crate::Result<()> {
    match expected {
        Some(c) if c != dims[1] => Err(crate::Error::ShapeMismatch {
            context: "encoder input: channels".into(),
            expected: vec![dims[0], c, dims[2], dims[3]],
            found: dims.to_vec(),
        }),
        _ => Ok(()),
    }
}

/// Configuration of a built-in [`Backbone`].
#[derive(Config, Debug)]
pub enum BackboneConfig {
    /// A ResNet-18/34/50.
    ResNet(ResNetConfig),
    /// The tiny [`ConvNet`].
    ConvNet(ConvNetConfig),
    /// A Vision Transformer.
    Vit(VitConfig),
}

impl BackboneConfig {
    /// Dimension of the features the backbone will produce.
    pub fn feature_dim(&self) -> usize {
        match self {
            BackboneConfig::ResNet(c) => c.feature_dim(),
            BackboneConfig::ConvNet(c) => c.feature_dim(),
            BackboneConfig::Vit(c) => c.feature_dim(),
        }
    }

    /// Creates the backbone on `device`.
    pub fn init(&self, device: &Device) -> crate::Result<Backbone> {
        Ok(match self {
            BackboneConfig::ResNet(c) => Backbone::ResNet(c.init(device)?),
            BackboneConfig::ConvNet(c) => Backbone::ConvNet(c.init(device)?),
            BackboneConfig::Vit(c) => Backbone::Vit(c.init(device)?),
        })
    }
}

/// A built-in backbone.
// A ResNet's struct is large, but modules move by value and burn's derive has no boxed fields.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    /// A ResNet.
    ResNet(ResNet),
    /// The tiny convnet.
    ConvNet(ConvNet),
    /// A Vision Transformer.
    Vit(Vit),
}

impl Encoder for Backbone {
    fn encode(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Backbone::ResNet(m) => m.forward(images),
            Backbone::ConvNet(m) => m.forward(images),
            Backbone::Vit(m) => m.forward(images),
        }
    }

    fn feature_dim(&self) -> usize {
        match self {
            Backbone::ResNet(m) => m.feature_dim,
            Backbone::ConvNet(m) => m.feature_dim,
            Backbone::Vit(m) => m.hidden_dim(),
        }
    }

    fn input_channels(&self) -> Option<usize> {
        match self {
            Backbone::ResNet(m) => m.input_channels(),
            Backbone::ConvNet(m) => m.input_channels(),
            Backbone::Vit(m) => Some(m.input_channels()),
        }
    }

    fn encode_tokens(&self, images: Tensor<4>) -> Option<Tensor<3>> {
        match self {
            Backbone::Vit(m) => Some(m.forward_tokens(images)),
            _ => None,
        }
    }

    fn encode_kept(
        &self,
        images: Tensor<4>,
        keep: Tensor<2, burn::tensor::Int>,
    ) -> Option<crate::Result<Tensor<3>>> {
        match self {
            Backbone::Vit(m) => Some(m.forward_kept(images, keep)),
            _ => None,
        }
    }

    fn check_images(&self, dims: [usize; 4]) -> crate::Result<()> {
        match self {
            Backbone::Vit(m) => m.check_images(dims),
            other => check_channels(other.input_channels(), dims),
        }
    }
}

impl Encoder for Vit {
    fn encode(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
    fn feature_dim(&self) -> usize {
        self.hidden_dim()
    }
    fn input_channels(&self) -> Option<usize> {
        Some(Vit::input_channels(self))
    }
    fn encode_tokens(&self, images: Tensor<4>) -> Option<Tensor<3>> {
        Some(self.forward_tokens(images))
    }
    fn encode_kept(
        &self,
        images: Tensor<4>,
        keep: Tensor<2, burn::tensor::Int>,
    ) -> Option<crate::Result<Tensor<3>>> {
        Some(self.forward_kept(images, keep))
    }
    fn check_images(&self, dims: [usize; 4]) -> crate::Result<()> {
        Vit::check_images(self, dims)
    }
}

impl Encoder for ResNet {
    fn encode(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
    fn feature_dim(&self) -> usize {
        self.feature_dim
    }
    fn input_channels(&self) -> Option<usize> {
        Some(self.conv1.weight.dims()[1])
    }
}

impl Encoder for ConvNet {
    fn encode(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
    fn feature_dim(&self) -> usize {
        self.feature_dim
    }
    fn input_channels(&self) -> Option<usize> {
        Some(self.blocks[0].conv.weight.dims()[1])
    }
}

/// Number of trainable parameters of a module (what PyTorch's `parameters()` counts):
/// BatchNorm running statistics and frozen tensors are excluded. The module must live on an
/// autodiff device, where trainability is known.
pub fn trainable_parameters<M: Module>(module: &M) -> usize {
    struct Count(usize);
    impl burn::module::ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.0 += param.lazy_shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    module.visit(&mut count);
    count.0
}
