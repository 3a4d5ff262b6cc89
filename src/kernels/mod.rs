//! The CPU kernels, and with them every `unsafe` block of the crate. Behind the `flex` feature:
//! fast convolutions (`conv`), fused batch norm (`batch_norm`), the transformer blocks' GELU,
//! layer norm and attention (`transformer`), linear layers (`linear`), SIGReg's statistic
//! (`sigreg`), the fused LARS and AdamW steps and EMA update (`lars`, `adamw`, `ema`),
//! contiguous f32 access to flex tensors, and the allocator setting (`allocator`) that keeps
//! freed activations in the process. Always: the run-time
//! choice of vector instructions (`isa`, `lanes`), which the augmentations use too.
//!
//! Nothing here is needed to use the crate: [`crate::conv::conv2d`], [`crate::batch_norm`],
//! [`crate::optim::Lars`] and [`crate::optim::AdamW`] choose these kernels on `Device::flex()`
//! and burn's own operations everywhere else.

#[cfg(feature = "flex")]
pub(crate) mod adamw;
#[cfg(feature = "flex")]
pub mod allocator;
#[cfg(feature = "flex")]
pub mod batch_norm;
#[cfg(feature = "flex")]
pub mod conv;
#[cfg(feature = "flex")]
pub(crate) mod ema;
#[cfg(feature = "flex")]
pub(crate) mod flex_f32;
#[cfg(feature = "flex")]
pub(crate) mod gemm;
pub(crate) mod isa;
pub(crate) mod lanes;

pub use isa::{InstructionSet, limit_instruction_set};
#[cfg(feature = "flex")]
pub(crate) mod lars;
#[cfg(feature = "flex")]
pub mod linear;
#[cfg(feature = "flex")]
pub mod sigreg;
#[cfg(feature = "flex")]
pub mod transformer;
