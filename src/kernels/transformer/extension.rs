//! The transformer kernels as a burn backend extension on `Flex`, with an autodiff backward:
//! on an autodiff flex tensor, [`FastTransformerOps`] records one backward step per operation
//! (instead of burn's composition of element-wise operations). Callers check the device
//! first ([`crate::transformer_ops`]); other devices keep burn's operations.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};

use crate::kernels::flex_f32::{contiguous, f32_slice, f32_tensor};

use super::attention::{AttentionShape, attention_backward, attention_forward};
use super::gelu::{gelu_backward, gelu_forward};
use super::layer_norm::{RowShape, RowStatistics, layer_norm_backward, layer_norm_forward};
use super::residual::residual_add_forward;

/// The element-wise parts of a transformer block computed by this crate's kernels.
#[backend_extension(Flex, Autodiff)]
pub trait FastTransformerOps: Backend {
    /// The exact GELU `x·Φ(x)`, element by element.
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Layer normalisation over the last dimension: `γ ⊙ (x - μ)/sqrt(σ² + ε) + β`, with
    /// `gamma` and `beta` of the last dimension's size.
    fn fast_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;

    /// Multi-head self-attention `softmax(Q Kᵀ/sqrt(d_h)) V` of the packed projections
    /// `qkv [batch·N, 3D]` of `batch` sequences (queries, keys, values; `heads` heads each):
    /// the context `[batch·N, D]`, heads side by side.
    fn fast_attention(qkv: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self>;

    /// The residual connection `x + y` of two tensors of one shape, on all cores.
    fn fast_residual_add(x: FloatTensor<Self>, y: FloatTensor<Self>) -> FloatTensor<Self>;
}

fn shape_of(x: &FlexTensor) -> Vec<usize> {
    x.layout().shape().iter().copied().collect()
}

fn row_shape(x: &FlexTensor) -> RowShape {
    let dims = shape_of(x);
    let width = dims.last().copied().unwrap_or(1);
    RowShape {
        rows: dims.iter().product::<usize>() / width.max(1),
        width,
    }
}

fn gelu(x: &FlexTensor) -> FlexTensor {
    f32_tensor(gelu_forward(f32_slice(x)), shape_of(x))
}

/// `x + y`, both of `x`'s shape.
fn residual_add(x: &FlexTensor, y: &FlexTensor) -> FlexTensor {
    let shape = shape_of(x);
    assert_eq!(shape, shape_of(y), "residual add: the two operands' shapes");
    f32_tensor(residual_add_forward(f32_slice(x), f32_slice(y)), shape)
}

/// The layer norm's output and the row statistics its backward pass needs.
fn layer_norm(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f64,
) -> (FlexTensor, Vec<RowStatistics>) {
    let (y, statistics) = layer_norm_forward(
        row_shape(x),
        f32_slice(x),
        f32_slice(gamma),
        f32_slice(beta),
        epsilon,
    );
    (f32_tensor(y, shape_of(x)), statistics)
}

fn attention_shape(qkv: &FlexTensor, batch: usize, heads: usize) -> AttentionShape {
    let dims = shape_of(qkv);
    assert!(
        dims.len() == 2
            && batch > 0
            && heads > 0
            && dims[0].is_multiple_of(batch)
            && dims[1].is_multiple_of(3 * heads),
        "attention: packed projections {dims:?} for {batch} sequences of {heads} heads"
    );
    AttentionShape {
        batch,
        tokens: dims[0] / batch,
        heads,
        head_dim: dims[1] / (3 * heads),
    }
}

/// The context of [`FastTransformerOps::fast_attention`], and the probabilities when
/// `keep_probabilities`.
fn attention(
    qkv: &FlexTensor,
    shape: AttentionShape,
    keep_probabilities: bool,
) -> (FlexTensor, Vec<f32>) {
    let (context, probabilities) = attention_forward(shape, f32_slice(qkv), keep_probabilities);
    let rows = shape.batch * shape.tokens;
    (
        f32_tensor(context, vec![rows, shape.width()]),
        probabilities,
    )
}

impl FastTransformerOps for Flex {
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu(&contiguous(x))
    }

    fn fast_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        layer_norm(&x, &gamma, &beta, epsilon).0
    }

    fn fast_attention(qkv: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self> {
        let qkv = contiguous(qkv);
        attention(&qkv, attention_shape(&qkv, batch, heads), false).0
    }

    fn fast_residual_add(x: FloatTensor<Self>, y: FloatTensor<Self>) -> FloatTensor<Self> {
        residual_add(&contiguous(x), &contiguous(y))
    }
}

/// GELU's backward step, from the saved input.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let x = ops.state;
        if let [Some(node)] = ops.parents {
            let dx = gelu_backward(f32_slice(&x), f32_slice(&grad));
            grads.register::<Flex>(node.id, f32_tensor(dx, shape_of(&x)));
        }
    }
}

/// What the layer norm's backward step keeps from the forward pass.
#[derive(Debug, Clone)]
struct SavedLayerNorm {
    x: FlexTensor,
    gamma: FlexTensor,
    /// Per row.
    statistics: Vec<RowStatistics>,
}

/// The layer norm's backward step: gradients of `x`, `γ` and `β`.
#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = SavedLayerNorm;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let SavedLayerNorm {
            x,
            gamma,
            statistics,
        } = ops.state;
        let shape = row_shape(&x);
        let (dx, dgamma, dbeta) = layer_norm_backward(
            shape,
            f32_slice(&x),
            f32_slice(&gamma),
            &statistics,
            f32_slice(&grad),
        );
        let [node_x, node_gamma, node_beta] = ops.parents;
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, f32_tensor(dx, shape_of(&x)));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, f32_tensor(dgamma, vec![shape.width]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, f32_tensor(dbeta, vec![shape.width]));
        }
    }
}

/// What the attention's backward step keeps from the forward pass.
#[derive(Debug, Clone)]
struct SavedAttention {
    qkv: FlexTensor,
    /// `[batch, heads, N, N]`.
    probabilities: Vec<f32>,
    shape: AttentionShape,
}

/// The attention's backward step: the gradient of the packed projections.
#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    type State = SavedAttention;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let SavedAttention {
            qkv,
            probabilities,
            shape,
        } = ops.state;
        if let [Some(node)] = ops.parents {
            let dqkv = attention_backward(shape, f32_slice(&qkv), &probabilities, f32_slice(&grad));
            grads.register::<Flex>(node.id, f32_tensor(dqkv, shape_of(&qkv)));
        }
    }
}

/// The residual connection's backward step: the upstream gradient, to both operands.
#[derive(Debug)]
struct ResidualAddBackward;

impl Backward<Flex, 2> for ResidualAddBackward {
    type State = ();

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<Flex>(&ops.node);
        match ops.parents {
            [Some(x), Some(y)] => {
                grads.register::<Flex>(x.id, grad.clone());
                grads.register::<Flex>(y.id, grad);
            }
            [Some(node), None] | [None, Some(node)] => grads.register::<Flex>(node.id, grad),
            [None, None] => {}
        }
    }
}

impl<C: CheckpointStrategy> FastTransformerOps for Autodiff<Flex, C> {
    fn fast_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = contiguous(x.primitive().clone());
                let y = gelu(&x);
                prep.finish(x, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(gelu(&contiguous(x.into_primitive()))),
        }
    }

    fn fast_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let x = contiguous(x.into_primitive());
        let gamma = contiguous(gamma.into_primitive());
        let beta = contiguous(beta.into_primitive());
        let (y, statistics) = layer_norm(&x, &gamma, &beta, epsilon);
        match LayerNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                SavedLayerNorm {
                    x,
                    gamma,
                    statistics,
                },
                y,
            ),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fast_attention(qkv: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self> {
        match AttentionBackward
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let qkv = contiguous(qkv.primitive().clone());
                let shape = attention_shape(&qkv, batch, heads);
                let (context, probabilities) = attention(&qkv, shape, true);
                let saved = SavedAttention {
                    qkv,
                    probabilities,
                    shape,
                };
                prep.finish(saved, context)
            }
            OpsKind::UnTracked(prep) => {
                let qkv = contiguous(qkv.into_primitive());
                let shape = attention_shape(&qkv, batch, heads);
                prep.finish(attention(&qkv, shape, false).0)
            }
        }
    }

    fn fast_residual_add(x: FloatTensor<Self>, y: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node(), y.node()];
        let sum = residual_add(
            &contiguous(x.into_primitive()),
            &contiguous(y.into_primitive()),
        );
        // Marked compute-bound: there is no retro-forward to recompute the sum under
        // checkpointing, and the sum is kept anyway as the next layer's input.
        ResidualAddBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateless(sum)
    }
}
