//! A convolution as one large matrix product over the kernel's shifted views of the input,
//! written in tensor operations, for devices without this crate's CPU kernels (wgpu, CUDA).
//!
//! burn's GPU convolution runs the forward pass of a 3x3 layer in float32 on its direct kernel
//! (one thread per output vector, no shared-memory tiling: BENCHMARKS.md, "GPU"), while its
//! matrix products are tiled and chosen by autotune. This lowering turns every convolution into
//! one product whose dimensions are all large, so it runs on those:
//!
//! - `x [N, C, H, W]` is laid out as `[C, N, H, W]` and zero-padded;
//! - each kernel tap `(a, b)` is a strided slice of it, `x_p[c, n, a·d_h + s_h·i, b·d_w + s_w·j]`
//!   (`d` the dilation, `s` the stride), and the `kh·kw` slices are stacked into the unfolded
//!   matrix `X [C·kh·kw, N·H_out·W_out]` (im2col with the batch in the columns);
//! - `Y = W [C_out, C·kh·kw] · X`, reshaped to `[C_out, N, H_out, W_out]` and viewed as
//!   `[N, C_out, H_out, W_out]`.
//!
//! burn's autodiff then gives the gradients as the two products of the matrix-product rule,
//! `∂L/∂W = ∂L/∂Y · Xᵀ` and `∂L/∂X = Wᵀ · ∂L/∂Y`, the second folded back onto the input by the
//! slices' adjoints (col2im). The price is memory: `X` holds `kh·kw` copies of the input for
//! the backward pass.

use burn::tensor::Tensor;
use burn::tensor::ops::PadMode;
use burn::tensor::s;

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

/// `conv2d(x, weight) + bias` (groups 1) as one matrix product over the kernel's shifted views
/// of `x` (module docs). `x` is `[N, C, H, W]`, `weight` `[C_out, C, kh, kw]`, `bias` `[C_out]`.
///
/// Fails when the channels disagree or the kernel does not fit the padded input.
pub fn conv2d_taps_matmul(
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
    let out_h = output_size(height, kernel_h, stride[0], padding[0], dilation[0])?;
    let out_w = output_size(width, kernel_w, stride[1], padding[1], dilation[1])?;
    let channels_first = x.swap_dims(0, 1);
    let padded = if padding == [0, 0] {
        channels_first
    } else {
        channels_first.pad(
            [(padding[0], padding[0]), (padding[1], padding[1])],
            PadMode::Constant(0.0),
        )
    };
    let taps = kernel_h * kernel_w;
    let columns = batch * out_h * out_w;
    let unfolded = if taps == 1 && stride == [1, 1] {
        padded.reshape([channels, columns])
    } else {
        let span_h = stride[0] * (out_h - 1) + 1;
        let span_w = stride[1] * (out_w - 1) + 1;
        let mut shifted = Vec::with_capacity(taps);
        for a in 0..kernel_h {
            for b in 0..kernel_w {
                let (top, left) = (a * dilation[0], b * dilation[1]);
                shifted.push(padded.clone().slice(s![
                    ..,
                    ..,
                    top..top + span_h;stride[0] as isize,
                    left..left + span_w;stride[1] as isize
                ]));
            }
        }
        Tensor::<4>::stack::<5>(shifted, 1).reshape([channels * taps, columns])
    };
    let product = weight
        .reshape([out_channels, channels * taps])
        .matmul(unfolded);
    let y = product
        .reshape([out_channels, batch, out_h, out_w])
        .swap_dims(0, 1);
    Ok(match bias {
        Some(bias) => y + bias.reshape([1, out_channels, 1, 1]),
        None => y,
    })
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
