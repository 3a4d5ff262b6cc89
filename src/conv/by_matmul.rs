//! A convolution whose forward pass is one large matrix product over the kernel's shifted views
//! of the input, and whose gradients are burn's own: the GPU alternative to burn's float32
//! forward kernel (module [`matmul_forward`](super::matmul_forward) holds the backend side).
//!
//! - `x [N, C, H, W]` is laid out as `[C, N, H, W]` and zero-padded;
//! - each kernel tap `(a, b)` is a strided slice of it, `x_p[c, n, a·d_h + s_h·i, b·d_w + s_w·j]`
//!   (`d` the dilation, `s` the stride), and the `kh·kw` slices are stacked into the unfolded
//!   matrix `X [C·kh·kw, N·H_out·W_out]` (im2col with the batch in the columns);
//! - `Y = W [C_out, C·kh·kw] · X`, reshaped to `[C_out, N, H_out, W_out]` and viewed as
//!   `[N, C_out, H_out, W_out]`.
//!
//! The gradients are the backend's `conv2d_x_backward` and `conv2d_weight_backward` (on a GPU,
//! autotuned im2col + matrix products), so `X` lives only during the forward pass.

use burn::backend::{Dispatch, DispatchDevice};
use burn::tensor::Tensor;

use super::matmul_forward::MatmulConv2d;
use crate::error::{Error, Result};

/// The geometry of a convolution lowered to a matrix product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapsGeometry {
    /// Stride `[height, width]`.
    pub stride: [usize; 2],
    /// Symmetric zero padding `[height, width]`.
    pub padding: [usize; 2],
    /// Dilation `[height, width]`.
    pub dilation: [usize; 2],
}

/// `conv2d(x, weight) + bias` (groups 1) with the forward pass as one matrix product over the
/// kernel's shifted views of `x` and burn's own gradients (module docs). `x` is `[N, C, H, W]`,
/// `weight` `[C_out, C, kh, kw]`, `bias` `[C_out]`.
///
/// Fails when the channels disagree, the kernel does not fit the padded input, or the device is
/// neither the CPU (flex) nor, with the `wgpu` feature, a cubecl device.
pub fn conv2d_by_matmul(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    geometry: TapsGeometry,
) -> Result<Tensor<4>> {
    let [batch, channels, height, width] = x.dims();
    let [out_channels, weight_channels, kernel_h, kernel_w] = weight.dims();
    let TapsGeometry {
        stride,
        padding,
        dilation,
    } = geometry;
    if channels != weight_channels {
        return Err(Error::ShapeMismatch {
            context: format!(
                "convolution as a matrix product: input channels vs the weight's \
                 {weight_channels} (weight {:?})",
                weight.dims()
            ),
            expected: vec![batch, weight_channels, height, width],
            found: x.dims().to_vec(),
        });
    }
    output_size(height, kernel_h, stride[0], padding[0], dilation[0])?;
    output_size(width, kernel_w, stride[1], padding[1], dilation[1])?;
    if !runs_on(&x.device()) {
        return Err(Error::invalid_config(
            "convolution as a matrix product: device",
            format!("{:?}", x.device()),
            "the CPU (flex) or, with the `wgpu` feature, a wgpu device",
        ));
    }
    let y = Tensor::<4>::from_dispatch(<Dispatch as MatmulConv2d>::matmul_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        [
            stride[0],
            stride[1],
            padding[0],
            padding[1],
            dilation[0],
            dilation[1],
        ],
    ));
    Ok(match bias {
        Some(bias) => y + bias.reshape([1, out_channels, 1, 1]),
        None => y,
    })
}

/// Whether the extension has an implementation for `device`'s backend.
pub(super) fn runs_on(device: &burn::tensor::Device) -> bool {
    match device.as_dispatch().clone().inner() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "wgpu")]
        DispatchDevice::Cube(_) => true,
        _ => false,
    }
}

/// `⌊(size + 2·padding - dilation·(kernel - 1) - 1) / stride⌋ + 1`, or an error when the kernel
/// does not fit.
fn output_size(
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Result<usize> {
    let reach = dilation * (kernel.max(1) - 1) + 1;
    let padded = size + 2 * padding;
    if stride == 0 || kernel == 0 || padded < reach {
        return Err(Error::invalid_config(
            "convolution geometry",
            format!(
                "input {size}, kernel {kernel}, stride {stride}, padding {padding}, dilation {dilation}"
            ),
            "a stride >= 1 and a kernel that fits the padded input",
        ));
    }
    Ok((padded - reach) / stride + 1)
}
