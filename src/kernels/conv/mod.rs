//! Fast f32 convolutions on the flex device: geometry, im2col / im2row unfolding, the gemm
//! kernels, and their burn backend extension. [`crate::conv::conv2d`] routes to them.

mod extension;
mod geometry;
mod im2col;
mod kernels;

pub use extension::FastConv2d;
pub use geometry::ConvGeometry;
pub use kernels::{conv2d_forward, conv2d_input_grad, conv2d_weight_grad};
