//! The convolution with its forward pass as one matrix product and its backward pass burn's own,
//! as a backend extension with a hand-written autodiff step.
//!
//! On a GPU, burn 0.22's float32 convolution runs its forward pass on a direct kernel (one
//! thread per output vector, no shared-memory tiling), which took 76% of the kernel time of a
//! ResNet-18 BYOL step on an H200, while its input and weight gradients run as autotuned
//! im2col + matrix products (BENCHMARKS.md, "GPU"). [`MatmulConv2d`] keeps those gradients
//! (`conv2d_x_backward`, `conv2d_weight_backward` of the inner backend) and computes the
//! forward pass on the inner backend's operations (padding, strided slices, one matrix
//! product): the unfolded matrix is a temporary of the forward pass, not kept for the backward
//! one.
//! `#[backend_extension]` routes flex tensors (for tests on the CPU) and, with the `wgpu`
//! feature, cubecl tensors under burn's fusion; on other backends [`super::conv2d`] does not
//! call it.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{Shape, Slice};

/// A 2-D convolution (`groups = 1`, symmetric zero padding, no bias) whose forward pass is one
/// matrix product over the kernel's shifted views of the input and whose gradients are the
/// backend's own convolution gradients.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(feature = "wgpu"),
    Fusion: cfg(feature = "wgpu"),
    Autodiff
)]
pub trait MatmulConv2d: Backend {
    /// `x [N, C_in, H, W] * weight [C_out, C_in, kh, kw] -> [N, C_out, H_out, W_out]`;
    /// `geometry` is `[stride_h, stride_w, padding_h, padding_w, dilation_h, dilation_w]`.
    #[fusion(default)]
    fn matmul_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: [usize; 6],
    ) -> FloatTensor<Self> {
        unfolded_product::<Self>(x, weight, geometry)
    }
}

#[cfg(feature = "flex")]
impl MatmulConv2d for burn::backend::Flex {}

#[cfg(feature = "wgpu")]
impl MatmulConv2d for burn::backend::wgpu::CubeBackend {}

/// The forward pass on `B`'s operations: `W [C_out, C·kh·kw] · X [C·kh·kw, N·H_out·W_out]`,
/// `X` the stacked strided slices of the zero-padded input laid out `[C, N, H, W]`.
fn unfolded_product<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    geometry: [usize; 6],
) -> FloatTensor<B> {
    let ConvOptions {
        stride: [stride_h, stride_w],
        padding: [(padding_h, _), (padding_w, _)],
        dilation: [dilation_h, dilation_w],
        ..
    } = conv_options(geometry);
    let [batch, channels, height, width] = dims4(&x);
    let [out_channels, _, kernel_h, kernel_w] = dims4(&weight);
    let out_h = (height + 2 * padding_h - dilation_h * (kernel_h - 1) - 1) / stride_h + 1;
    let out_w = (width + 2 * padding_w - dilation_w * (kernel_w - 1) - 1) / stride_w + 1;
    let columns = batch * out_h * out_w;
    let channels_first = B::float_swap_dims(x, 0, 1);
    let padded = if padding_h + padding_w == 0 {
        channels_first
    } else {
        B::float_pad(
            channels_first,
            &[
                (0, 0),
                (0, 0),
                (padding_h, padding_h),
                (padding_w, padding_w),
            ],
            PadMode::Constant(0.0),
        )
    };
    let taps = kernel_h * kernel_w;
    let unfolded = if taps == 1 && stride_h == 1 && stride_w == 1 {
        B::float_reshape(padded, Shape::new([channels, columns]))
    } else {
        let span_h = stride_h * (out_h - 1) + 1;
        let span_w = stride_w * (out_w - 1) + 1;
        let mut shifted = Vec::with_capacity(taps);
        for a in 0..kernel_h {
            for b in 0..kernel_w {
                let (top, left) = ((a * dilation_h) as isize, (b * dilation_w) as isize);
                let slices = [
                    Slice::new(0, None, 1),
                    Slice::new(0, None, 1),
                    Slice::new(top, Some(top + span_h as isize), stride_h as isize),
                    Slice::new(left, Some(left + span_w as isize), stride_w as isize),
                ];
                let tap = B::float_slice(padded.clone(), &slices);
                shifted.push(B::float_reshape(tap, Shape::new([channels, 1, columns])));
            }
        }
        B::float_reshape(
            B::float_cat(shifted, 1),
            Shape::new([channels * taps, columns]),
        )
    };
    let weight = B::float_reshape(weight, Shape::new([out_channels, channels * taps]));
    let product = B::float_matmul(weight, unfolded);
    let product = B::float_reshape(product, Shape::new([out_channels, batch, out_h, out_w]));
    B::float_swap_dims(product, 0, 1)
}

fn dims4<T: TensorMetadata>(tensor: &T) -> [usize; 4] {
    let shape = tensor.shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

/// burn's convolution options of `geometry` (groups 1).
fn conv_options(geometry: [usize; 6]) -> ConvOptions<2> {
    let [
        stride_h,
        stride_w,
        padding_h,
        padding_w,
        dilation_h,
        dilation_w,
    ] = geometry;
    ConvOptions::new(
        [stride_h, stride_w],
        [padding_h, padding_w],
        [dilation_h, dilation_w],
        1,
    )
}

/// The backward step: burn's convolution gradients from the saved input and weight.
#[derive(Debug)]
struct MatmulConv2dBackward;

impl<B: Backend> Backward<B, 2> for MatmulConv2dBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, [usize; 6]);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, geometry) = ops.state;
        let options = conv_options(geometry);
        if let Some(node) = node_x {
            let dx = B::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options.clone());
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, B::conv2d_weight_backward(x, weight, grad, options));
        }
    }
}

impl<B: MatmulConv2d, C: CheckpointStrategy> MatmulConv2d for Autodiff<B, C> {
    fn matmul_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: [usize; 6],
    ) -> FloatTensor<Self> {
        match MatmulConv2dBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.primitive().clone(), weight.primitive().clone());
                let output = B::matmul_conv2d(x.clone(), weight.clone(), geometry);
                prep.finish((x, weight, geometry), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::matmul_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                geometry,
            )),
        }
    }
}
