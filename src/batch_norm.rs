//! Fused training-mode batch normalisation for the CPU (`Device::flex()`), used by every
//! backbone in this crate.
//!
//! burn's default `batch_norm_train` (and its backward) reshapes each activation `[N, C, H, W]`
//! to `[C, N·H·W]` through a transposing copy four times per layer, plus about ten element-wise
//! passes. [`batch_norm`] computes the same thing in four passes over the activation: the
//! per-channel moments (two passes), the normalisation (one), and in the backward one pass for
//! the two per-channel sums and one for the input gradient:
//!
//! - forward `y = γ · (x - μ) / sqrt(σ² + ε) + β`, with `μ`, `σ²` the batch mean and biased
//!   variance per channel (Ioffe & Szegedy, 2015);
//! - backward, with `x̂ = (x - μ) / sqrt(σ² + ε)` and `M = N·H·W`:
//!   `∂L/∂β = Σ dy`, `∂L/∂γ = Σ dy·x̂`, `∂L/∂x = γ / sqrt(σ² + ε) · (dy - ∂L/∂β / M - x̂ · ∂L/∂γ / M)`.
//!
//! Running statistics are updated exactly as burn's `BatchNorm` does (`r ← (1 - m) r + m · stat`,
//! biased variance). Only the training path on the flex autodiff device is replaced; inference,
//! frozen layers and every other device run burn's own batch norm. [`set_fast_batch_norm`]
//! turns the fast path off (for comparisons).
//!
//! What follows a batch norm in a ResNet runs in the same pass: [`batch_norm_relu`] computes
//! `max(y, 0)` and [`batch_norm_add_relu`] `max(y + residual, 0)` while writing `y`, and their
//! backward applies the ReLU's mask (`∂L/∂y · [out > 0]`, the convention of PyTorch and burn)
//! inside the batch-norm backward instead of in separate passes. After a plain ReLU the mask is
//! recomputed from the input (`x · scale + shift > 0`, the forward pass's own arithmetic, so
//! exactly `out > 0`) and the output is not read; after the residual add it is read from the
//! output by the pass that sums `Σ dy` and `Σ dy·x̂`, which also writes the masked gradient, the
//! residual's gradient. Those sums run over blocks of images in memory order. The projection heads' feature
//! batch norm (`[N, D]`, [`crate::model::feature_batch_norm::FeatureBatchNorm`]) uses the same kernels, with its ReLU.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::nn::BatchNorm;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

#[cfg(feature = "flex")]
use crate::kernels::batch_norm::{After, fused_batch_norm_train};
#[cfg(feature = "flex")]
pub use crate::kernels::batch_norm::{
    Epilogue, FastBatchNorm, NormShape, channel_moments, normalize, normalize_add_relu_backward,
    normalize_backward, relu_backward,
};

static FAST_BATCH_NORM: AtomicBool = AtomicBool::new(true);

/// Turns the fused CPU batch norm on (the default) or off for the whole process.
pub fn set_fast_batch_norm(enabled: bool) {
    FAST_BATCH_NORM.store(enabled, Ordering::Relaxed);
}

/// Whether [`batch_norm`] may use the fused CPU kernels.
pub fn fast_batch_norm_enabled() -> bool {
    FAST_BATCH_NORM.load(Ordering::Relaxed)
}

/// Applies `bn` to `x` (`[N, C, H, W]`): the same result, gradients and running-statistics
/// update as `bn.forward(x)`, computed by the fused kernels in training mode on the flex
/// device.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if uses_fast_batch_norm(bn, &x) {
        return fast_batch_norm(bn, x, After::Nothing);
    }
    bn.forward(x)
}

/// `relu(batch_norm(bn, x))`, with the ReLU applied in the normalisation's pass (and its mask in
/// the backward pass) when the fused kernels run.
pub fn batch_norm_relu(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if uses_fast_batch_norm(bn, &x) {
        return fast_batch_norm(bn, x, After::Relu);
    }
    relu(bn.forward(x))
}

/// `relu(batch_norm(bn, x) + residual)`, the end of a ResNet block, in one pass when the fused
/// kernels run; `residual` must have the shape of `x`.
pub fn batch_norm_add_relu(bn: &BatchNorm, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if uses_fast_batch_norm(bn, &x)
        && residual.dims() == x.dims()
        && residual.dtype() == x.dtype()
        && residual.device() == x.device()
    {
        return fast_batch_norm(bn, x, After::AddRelu(Box::new(residual)));
    }
    relu(bn.forward(x) + residual)
}

/// Whether [`batch_norm`] runs `bn` on `x` with the fused kernels.
pub fn uses_fast_batch_norm(bn: &BatchNorm, x: &Tensor<4>) -> bool {
    bn.training.is_enabled()
        && x.dims()[1] == bn.gamma.val().dims()[0]
        && fused_kernels_apply(x, &bn.gamma.val())
}

/// Whether the fused training kernels can normalise `x` (`[N, C, ...]`, `N > 0`) with the
/// affine weight `gamma`: enabled, flex autodiff device for both, f32.
pub(crate) fn fused_kernels_apply<const D: usize>(x: &Tensor<D>, gamma: &Tensor<1>) -> bool {
    #[cfg(feature = "flex")]
    {
        use burn::backend::DispatchDevice;
        use burn::tensor::DType;

        let device = x.device();
        fast_batch_norm_enabled()
            && D >= 2
            && device.is_autodiff()
            && gamma.device().is_autodiff()
            && matches!(
                device.as_dispatch().clone().inner(),
                DispatchDevice::Flex(_)
            )
            && x.dtype() == DType::F32
            && gamma.dtype() == DType::F32
            && x.dims()[0] > 0
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, gamma);
        false
    }
}

/// The fused path for a `BatchNorm` layer; the caller checked [`uses_fast_batch_norm`].
#[cfg(feature = "flex")]
fn fast_batch_norm(bn: &BatchNorm, x: Tensor<4>, after: After<4>) -> Tensor<4> {
    let device = x.device();
    let fused = fused_batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon, after);
    // burn's BatchNorm update: r <- (1 - m) r + m stat, with the biased variance.
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - bn.momentum)
        .add(fused.mean.mul_scalar(bn.momentum));
    let running_var = running_var
        .mul_scalar(1.0 - bn.momentum)
        .add(fused.variance.mul_scalar(bn.momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    fused.output
}
