//! The CPU kernels behind the `flex` feature, and with them every `unsafe` block of the crate:
//! fast convolutions ([`conv`]), fused batch norm ([`batch_norm`]), the fused LARS step
//! (`lars`), contiguous f32 access to flex tensors, and the allocator setting
//! ([`allocator`]) that keeps freed activations in the process.
//!
//! Nothing here is needed to use the crate: [`crate::conv::conv2d`], [`crate::batch_norm`] and
//! [`crate::optim::Lars`] choose these kernels on `Device::flex()` and burn's own operations
//! everywhere else.

pub mod allocator;
pub mod batch_norm;
pub mod conv;
pub(crate) mod flex_f32;
pub(crate) mod gemm;
pub(crate) mod isa;
pub(crate) mod lanes;
pub(crate) mod lars;
pub mod transformer;
