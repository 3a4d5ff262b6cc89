//! Whether the fused CPU updates run: [`Lars`](super::Lars) and [`AdamW`](super::AdamW)
//! update each f32 parameter on `Device::flex()` in one or two parallel passes over its memory
//! (`crate::kernels::lars`, `crate::kernels::adamw`), and the EMA target
//! ([`crate::model::ema`]) blends in one (`crate::kernels::ema`), instead of three to a dozen
//! single-threaded tensor operations. Other devices, other element types and
//! [`set_fused_cpu_step`]`(false)` compose the update from tensor operations.

use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(feature = "flex")]
use burn::tensor::Tensor;

static FUSED_CPU_STEP: AtomicBool = AtomicBool::new(true);

/// Turns the fused CPU updates of LARS, AdamW and the EMA target on (the default) or off for the whole
/// process; off, every device composes the update from tensor operations (for comparisons).
pub fn set_fused_cpu_step(enabled: bool) {
    FUSED_CPU_STEP.store(enabled, Ordering::Relaxed);
}

/// Whether `param` and every one of `others` are f32 tensors of one shape on the flex device
/// without autodiff, and the fused updates are on.
#[cfg(feature = "flex")]
pub(crate) fn takes_fused_cpu_step<const D: usize>(
    param: &Tensor<D>,
    others: &[Option<&Tensor<D>>],
) -> bool {
    use burn::backend::DispatchDevice;
    use burn::tensor::DType;

    let device = param.device();
    let on_cpu = FUSED_CPU_STEP.load(Ordering::Relaxed)
        && !device.is_autodiff()
        && matches!(
            device.as_dispatch().clone().inner(),
            DispatchDevice::Flex(_)
        );
    let like_param =
        |t: &Tensor<D>| t.dtype() == DType::F32 && t.device() == device && t.dims() == param.dims();
    on_cpu && like_param(param) && others.iter().flatten().all(|t| like_param(t))
}
