//! The fast kernels as a burn backend extension on `Flex`, with an autodiff backward.
//!
//! `#[backend_extension(Flex, Autodiff)]` generates the dispatch glue: a call on a tensor of the
//! flex device runs [`FastConv2d`] for `Flex`; on an autodiff flex tensor it runs the
//! `Autodiff<Flex>` implementation below, which records a backward step built from
//! [`conv2d_input_grad`] and [`conv2d_weight_grad`]. Callers check the device first
//! ([`super::conv2d`]); other devices keep burn's own convolution.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;

use crate::kernels::flex_f32::{contiguous, f32_slice, f32_tensor, zeroed};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};

use super::geometry::ConvGeometry;
use super::kernels::{conv2d_forward, conv2d_input_grad, conv2d_weight_grad};

/// A 2-D convolution (`groups = 1`, `dilation = 1`, symmetric padding, no bias) computed by
/// this crate's kernels.
#[backend_extension(Flex, Autodiff)]
pub trait FastConv2d: Backend {
    /// `x [N, C_in, H, W] * weight [C_out, C_in, kh, kw] -> [N, C_out, H_out, W_out]`.
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride_h: usize,
        stride_w: usize,
        padding_h: usize,
        padding_w: usize,
    ) -> FloatTensor<Self>;
}

fn geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    stride: [usize; 2],
    padding: [usize; 2],
) -> ConvGeometry {
    let xs = x.layout().shape();
    let ws = weight.layout().shape();
    ConvGeometry {
        batch: xs[0],
        in_channels: xs[1],
        in_height: xs[2],
        in_width: xs[3],
        out_channels: ws[0],
        kernel_height: ws[2],
        kernel_width: ws[3],
        stride,
        padding,
    }
}

fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    stride: [usize; 2],
    padding: [usize; 2],
) -> FlexTensor {
    let x = contiguous(x);
    let weight = contiguous(weight);
    let g = geometry(&x, &weight, stride, padding);
    let mut out = zeroed(g.output_len());
    conv2d_forward(&g, f32_slice(&x), f32_slice(&weight), &mut out);
    f32_tensor(
        out,
        vec![g.batch, g.out_channels, g.out_height(), g.out_width()],
    )
}

impl FastConv2d for Flex {
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride_h: usize,
        stride_w: usize,
        padding_h: usize,
        padding_w: usize,
    ) -> FloatTensor<Self> {
        forward(x, weight, [stride_h, stride_w], [padding_h, padding_w])
    }
}

/// The backward step: both gradients from the saved input and weight.
#[derive(Debug)]
struct FastConv2dBackward;

impl Backward<Flex, 2> for FastConv2dBackward {
    type State = (FlexTensor, FlexTensor, [usize; 2], [usize; 2]);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (x, weight, stride, padding) = ops.state;
        let g = geometry(&x, &weight, stride, padding);
        if let Some(node) = node_x {
            let mut dx = zeroed(g.input_len());
            conv2d_input_grad(&g, f32_slice(&grad), f32_slice(&weight), &mut dx);
            let shape = vec![g.batch, g.in_channels, g.in_height, g.in_width];
            grads.register::<Flex>(node.id, f32_tensor(dx, shape));
        }
        if let Some(node) = node_weight {
            let mut dw = vec![0.0f32; g.weight_len()];
            conv2d_weight_grad(&g, f32_slice(&x), f32_slice(&grad), &mut dw);
            let shape = vec![
                g.out_channels,
                g.in_channels,
                g.kernel_height,
                g.kernel_width,
            ];
            grads.register::<Flex>(node.id, f32_tensor(dw, shape));
        }
    }
}

impl<C: CheckpointStrategy> FastConv2d for Autodiff<Flex, C> {
    fn fast_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride_h: usize,
        stride_w: usize,
        padding_h: usize,
        padding_w: usize,
    ) -> FloatTensor<Self> {
        let stride = [stride_h, stride_w];
        let padding = [padding_h, padding_w];
        match FastConv2dBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = contiguous(x.primitive().clone());
                let weight = contiguous(weight.primitive().clone());
                let output = forward(x.clone(), weight.clone(), stride, padding);
                prep.finish((x, weight, stride, padding), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(
                x.into_primitive(),
                weight.into_primitive(),
                stride,
                padding,
            )),
        }
    }
}
