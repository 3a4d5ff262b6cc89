//! Fast f32 convolutions on the flex device: geometry, im2col / im2row unfolding, the gemm
//! kernels, Winograd F(2x2, 3x3) and F(4x4, 3x3), the direct kernels (forward over pixels or over output channels, and weight gradient over pixels or over output channels), the
//! per-shape choice between them, and their burn backend extension. [`crate::conv::conv2d`] routes to them.

mod border_classes;
mod channel_last;
mod channels_weight_grad;
mod direct;
mod direct_channels;
mod direct_weight_grad;
mod extension;
mod geometry;
mod im2col;
mod kernels;
mod plan;
mod winograd;
mod winograd_tiles;

pub use crate::kernels::isa::{InstructionSet, limit_instruction_set};
pub use channels_weight_grad::{channels_weight_grad, supports_channels_weight_grad};
pub use direct::{direct_forward, supports_direct};
pub use direct_channels::{
    direct_channels_forward, direct_channels_input_grad, supports_direct_channels,
    supports_direct_channels_input_grad,
};
pub use direct_weight_grad::{direct_weight_grad, supports_direct_weight_grad};
pub use extension::FastConv2d;
pub use geometry::ConvGeometry;
pub use kernels::{conv2d_forward, conv2d_input_grad, conv2d_weight_grad};
pub use plan::{ConvAlgorithm, ConvPass, chosen_algorithm, set_conv_algorithm};
pub use winograd::{
    supports_winograd, winograd_4x4_forward, winograd_forward, winograd_weight_grad,
};
