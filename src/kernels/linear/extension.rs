//! The linear layer as a burn backend extension on `Flex`, with an autodiff backward: on an
//! autodiff flex tensor, [`FastLinearOps::fast_linear`] records one backward step (instead of
//! burn's transpose, product and broadcast addition) which computes only the gradients its
//! inputs need. Callers check the device first ([`crate::transformer_ops::linear`]).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};

use crate::kernels::flex_f32::{contiguous, f32_slice, f32_tensor};

use super::{
    LinearShape, WeightLayout, linear_bias_grad, linear_forward, linear_input_grad,
    linear_weight_grad,
};

/// A linear layer computed by this crate's kernels.
#[backend_extension(Flex, Autodiff)]
pub trait FastLinearOps: Backend {
    /// `x Wᵀ + b` for `x [rows, input]`, the weight `W` stored as `layout` says
    /// (`[output, input]` or `[input, output]`) and `bias [output]`: `[rows, output]`.
    fn fast_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        layout: WeightLayout,
    ) -> FloatTensor<Self>;
}

fn linear_shape(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
    layout: WeightLayout,
) -> LinearShape {
    let dims = |t: &FlexTensor| -> Vec<usize> { t.layout().shape().iter().copied().collect() };
    let (x_dims, w_dims, b_dims) = (dims(x), dims(weight), dims(bias));
    let fits = x_dims.len() == 2 && w_dims.len() == 2 && b_dims.len() == 1;
    let shape = LinearShape {
        rows: x_dims.first().copied().unwrap_or(0),
        input: x_dims.get(1).copied().unwrap_or(0),
        output: b_dims.first().copied().unwrap_or(0),
        layout,
    };
    assert!(
        fits && w_dims == shape.weight_dims(),
        "linear layer: x {x_dims:?}, weight {w_dims:?} ({layout:?}) and bias {b_dims:?} do not fit"
    );
    shape
}

/// The output and the shape, from contiguous operands.
fn linear(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: &FlexTensor,
    layout: WeightLayout,
) -> (FlexTensor, LinearShape) {
    let shape = linear_shape(x, weight, bias, layout);
    let y = linear_forward(shape, f32_slice(x), f32_slice(weight), f32_slice(bias));
    (f32_tensor(y, vec![shape.rows, shape.output]), shape)
}

impl FastLinearOps for Flex {
    fn fast_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        layout: WeightLayout,
    ) -> FloatTensor<Self> {
        linear(
            &contiguous(x),
            &contiguous(weight),
            &contiguous(bias),
            layout,
        )
        .0
    }
}

/// What the linear layer's backward step keeps: the input (for the weight's gradient) and the
/// weight (for the input's), both contiguous.
#[derive(Debug, Clone)]
struct SavedLinear {
    x: FlexTensor,
    weight: FlexTensor,
    shape: LinearShape,
}

/// The linear layer's backward step: the gradients of `x`, the weight and the bias, each only
/// where its node is tracked.
#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = SavedLinear;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let SavedLinear { x, weight, shape } = ops.state;
        let grad = f32_slice(&grad);
        let [node_x, node_weight, node_bias] = ops.parents;
        if let Some(node) = node_x {
            let dx = linear_input_grad(shape, grad, f32_slice(&weight));
            grads.register::<Flex>(node.id, f32_tensor(dx, vec![shape.rows, shape.input]));
        }
        if let Some(node) = node_weight {
            let dw = linear_weight_grad(shape, grad, f32_slice(&x));
            grads.register::<Flex>(node.id, f32_tensor(dw, shape.weight_dims().to_vec()));
        }
        if let Some(node) = node_bias {
            let db = linear_bias_grad(shape, grad);
            grads.register::<Flex>(node.id, f32_tensor(db, vec![shape.output]));
        }
    }
}

impl<C: CheckpointStrategy> FastLinearOps for Autodiff<Flex, C> {
    fn fast_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        layout: WeightLayout,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node(), bias.node()];
        let x = contiguous(x.into_primitive());
        let weight = contiguous(weight.into_primitive());
        let bias = contiguous(bias.into_primitive());
        let (y, shape) = linear(&x, &weight, &bias, layout);
        match LinearBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(SavedLinear { x, weight, shape }, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}
