//! Fast f32 convolutions for the CPU (`Device::flex()`), used by every backbone in this crate.
//!
//! burn's flex backend computes a convolution's gradients through a transposed convolution and
//! a convolution whose "kernel" is the whole output-gradient map, which leaves most of the CPU
//! idle. [`conv2d`] routes the convolutions of [`Conv2d`] modules on the flex device to this
//! crate's kernels instead: unfolded patches multiplied by the `gemm` crate, whose
//! micro-kernel is chosen at run time (AVX-512 when the CPU has it, enabled through gemm's
//! `x86-v4` feature; AVX2 + FMA otherwise; NEON on aarch64; a portable fallback elsewhere).
//! Images are grouped so every product is large, groups run in parallel on rayon, scratch
//! buffers are reused, and every product runs in the micro-kernel's native orientation (see
//! [`conv2d_weight_grad`] and [`conv2d_input_grad`]).
//! 3x3 stride-1 layers can also run by Winograd's minimal filtering (F(2x2, 3x3) for the
//! forward pass and the input gradient, F(3x3, 2x2) for the weight gradient: 2.25x fewer
//! multiplications); for each shape and pass, the faster of the two on this machine is measured
//! on first use and then kept (see [`ConvAlgorithm`] and [`set_conv_algorithm`]). Stride-1
//! forward passes (and so the input gradients of stride-1 layers) can also run by a direct
//! kernel ([`direct_forward`]), which skips the unfolding, and 3x3 stride-1 weight gradients by
//! its counterpart ([`direct_weight_grad`]); both join the same measurement.
//! The backward pass is registered with burn's autodiff through a backend extension
//! (`#[backend_extension(Flex, Autodiff)]`), so `loss.backward()` works unchanged.
//!
//! Covered: `groups = 1`, `dilation = 1`, symmetric explicit (or no) padding, any kernel size
//! and stride, any batch, f32. Everything else, and every other device (wgpu, CUDA), runs
//! burn's own convolution. [`set_fast_conv`] turns the fast path off (for comparisons).
//!
//! The math, for input `x [N, C_in, H, W]` and weight `w [C_out, C_in, kh, kw]`:
//! - forward `y[n, o, i, j] = Σ_{c, a, b} w[o, c, a, b] · x[n, c, i·s_h + a - p_h, j·s_w + b - p_w]`;
//! - `∂L/∂x = col2im(wᵀ · ∂L/∂y)`; for stride 1 this is the forward convolution of `∂L/∂y`
//!   with the kernel flipped and transposed, padding `k - 1 - p`;
//! - `∂L/∂w = Σ_n ∂L/∂y_n · im2col(x_n)ᵀ`.
//!
//! Speed (`benches/conv.sh`, side by side with PyTorch's oneDNN, BENCHMARKS.md): on a 2-core
//! AVX-512 EPYC, forward + backward of the ResNet-18/50 CIFAR layer shapes at batch 128 runs
//! at a median 1.2x PyTorch's GFLOP/s and 2.4x burn flex's.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

#[cfg(feature = "flex")]
pub use crate::kernels::conv::{
    ConvAlgorithm, ConvGeometry, ConvPass, FastConv2d, InstructionSet, channels_weight_grad,
    chosen_algorithm, conv2d_forward, conv2d_input_grad, conv2d_weight_grad,
    direct_channels_forward, direct_channels_input_grad, direct_forward, direct_weight_grad,
    limit_instruction_set, set_conv_algorithm, supports_channels_weight_grad, supports_direct,
    supports_direct_channels, supports_direct_channels_input_grad, supports_direct_weight_grad,
    supports_winograd, winograd_4x4_forward, winograd_forward, winograd_weight_grad,
};

mod by_matmul;
mod matmul_forward;

pub use by_matmul::{TapsGeometry, conv2d_by_matmul};
pub use matmul_forward::MatmulConv2d;

static FAST_CONV: AtomicBool = AtomicBool::new(true);
static CONV_BY_MATMUL: AtomicBool = AtomicBool::new(false);

/// Runs the convolutions that this crate's CPU kernels do not take (every convolution on wgpu;
/// on the CPU, those outside their coverage or with [`set_fast_conv`] off) with the forward
/// pass as one matrix product over the kernel's shifted views of the input and burn's own
/// gradients ([`conv2d_by_matmul`]) instead of burn's convolution. Other backends keep burn's.
pub fn set_conv_by_matmul(enabled: bool) {
    CONV_BY_MATMUL.store(enabled, Ordering::Relaxed);
}

/// Whether [`conv2d`] lowers convolutions it does not run on the fast CPU kernels to a matrix
/// product ([`set_conv_by_matmul`]).
pub fn conv_by_matmul_enabled() -> bool {
    CONV_BY_MATMUL.load(Ordering::Relaxed)
}

/// Turns the fast CPU convolution on (the default) or off for the whole process; off, every
/// convolution runs burn's own kernels. Meant for benchmarks and comparisons.
pub fn set_fast_conv(enabled: bool) {
    FAST_CONV.store(enabled, Ordering::Relaxed);
}

/// Whether [`conv2d`] may use the fast CPU kernels.
pub fn fast_conv_enabled() -> bool {
    FAST_CONV.load(Ordering::Relaxed)
}

/// Symmetric padding `[height, width]` of `conv`, or `None` for padding the kernels do not cover.
fn symmetric_padding(padding: &PaddingConfig2d) -> Option<[usize; 2]> {
    match *padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    }
}

/// Applies `conv` to `x` (`[N, C_in, H, W]`): the same result as `conv.forward(x)`, computed by
/// the fast kernels on the flex device when the convolution is one they cover.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(y) = fast_conv2d(conv, &x) {
        return y;
    }
    if conv_by_matmul_enabled()
        && conv.groups == 1
        && by_matmul::runs_on(&x.device())
        && let Some(padding) = symmetric_padding(&conv.padding)
    {
        let geometry = TapsGeometry {
            stride: conv.stride,
            padding,
            dilation: conv.dilation,
        };
        let bias = conv.bias.as_ref().map(|b| b.val());
        // A geometry the lowering rejects is one burn's own convolution reports on too.
        if let Ok(y) = conv2d_by_matmul(x.clone(), conv.weight.val(), bias, geometry) {
            return y;
        }
    }
    conv.forward(x)
}

/// Whether [`conv2d`] runs `conv` on `x` with this crate's fast kernels (flex device, f32,
/// covered geometry, fast path enabled) rather than burn's own convolution.
pub fn uses_fast_kernels(conv: &Conv2d, x: &Tensor<4>) -> bool {
    fast_padding(conv, x).is_some()
}

/// The padding to run `conv` on `x` with, when the fast kernels cover it.
#[cfg(feature = "flex")]
fn fast_padding(conv: &Conv2d, x: &Tensor<4>) -> Option<[usize; 2]> {
    use burn::backend::DispatchDevice;
    use burn::tensor::DType;

    if !fast_conv_enabled() || conv.groups != 1 || conv.dilation != [1, 1] {
        return None;
    }
    let padding = symmetric_padding(&conv.padding)?;
    let device = x.device();
    if !matches!(
        device.as_dispatch().clone().inner(),
        DispatchDevice::Flex(_)
    ) {
        return None;
    }
    let weight = conv.weight.val();
    if device.is_autodiff() != weight.device().is_autodiff()
        || x.dtype() != DType::F32
        || weight.dtype() != DType::F32
    {
        return None;
    }
    let [_, channels, height, width] = x.dims();
    let [_, weight_channels, kernel_h, kernel_w] = weight.dims();
    let covers = channels == weight_channels
        && height + 2 * padding[0] >= kernel_h
        && width + 2 * padding[1] >= kernel_w;
    covers.then_some(padding)
}

#[cfg(not(feature = "flex"))]
fn fast_padding(_conv: &Conv2d, _x: &Tensor<4>) -> Option<[usize; 2]> {
    None
}

#[cfg(feature = "flex")]
fn fast_conv2d(conv: &Conv2d, x: &Tensor<4>) -> Option<Tensor<4>> {
    use burn::backend::Dispatch;

    let padding = fast_padding(conv, x)?;
    let y = <Dispatch as FastConv2d>::fast_conv2d(
        x.clone().into_dispatch(),
        conv.weight.val().into_dispatch(),
        conv.stride[0],
        conv.stride[1],
        padding[0],
        padding[1],
    );
    let y = Tensor::<4>::from_dispatch(y);
    Some(match &conv.bias {
        Some(bias) => {
            let channels = bias.dims()[0];
            y + bias.val().reshape([1, channels, 1, 1])
        }
        None => y,
    })
}
