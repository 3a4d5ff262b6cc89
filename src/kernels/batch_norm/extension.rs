//! The batch-norm kernels as a burn backend extension on `Flex`, with an autodiff backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::FlexTensor;

use crate::kernels::flex_f32::{contiguous, f32_slice, f32_tensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};

use super::kernels::{
    Epilogue, NormShape, channel_moments, normalize, normalize_add_relu_backward,
    normalize_backward,
};

/// Training-mode batch normalisation of `[N, C, ...]` activations computed by this crate's
/// kernels, optionally followed in the same pass by a ReLU, or by a residual add and a ReLU.
#[backend_extension(Flex, Autodiff)]
pub trait FastBatchNorm: Backend {
    /// Per-channel batch mean and biased variance of `x`, as a `[2, C]` tensor (row 0 the
    /// means). Not differentiable: call it on a detached tensor.
    fn fast_channel_moments(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `(x - mean) / sqrt(var + epsilon) * gamma + beta`, then `max(·, 0)` when `relu`, where
    /// `moments` (`[2, C]`) must be [`fast_channel_moments`](FastBatchNorm::fast_channel_moments)
    /// of `x`; the gradient accounts for the statistics' dependence on `x` (training mode).
    fn fast_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// `max((x - mean) / sqrt(var + epsilon) * gamma + beta + residual, 0)`: the end of a
    /// ResNet block, differentiable in `x`, `gamma`, `beta` and `residual`.
    fn fast_batch_norm_add_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
}

fn norm_shape(x: &FlexTensor) -> NormShape {
    let dims = x.layout().shape();
    NormShape {
        batch: dims[0],
        channels: dims[1],
        pixels: (2..dims.num_dims()).map(|d| dims[d]).product(),
    }
}

fn moments(x: FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let shape = norm_shape(&x);
    let (mut mean, var) = channel_moments(shape, f32_slice(&x));
    mean.extend(var);
    f32_tensor(mean, vec![2, shape.channels])
}

/// The normalisation's inputs other than `x`, contiguous.
struct Affine {
    gamma: FlexTensor,
    beta: FlexTensor,
    moments: FlexTensor,
    epsilon: f64,
}

fn forward(x: &FlexTensor, affine: &Affine, epilogue: Epilogue) -> FlexTensor {
    let shape = norm_shape(x);
    let (mean, var) = f32_slice(&affine.moments).split_at(shape.channels);
    let y = normalize(
        shape,
        f32_slice(x),
        f32_slice(&affine.gamma),
        f32_slice(&affine.beta),
        mean,
        var,
        affine.epsilon,
        epilogue,
    );
    f32_tensor(y, x.layout().shape().iter().copied().collect())
}

fn affine(gamma: FlexTensor, beta: FlexTensor, moments: FlexTensor, epsilon: f64) -> Affine {
    Affine {
        gamma: contiguous(gamma),
        beta: contiguous(beta),
        moments: contiguous(moments),
        epsilon,
    }
}

/// The epilogue of [`FastBatchNorm::fast_batch_norm_train`]: a ReLU or nothing.
fn relu_epilogue(relu: bool) -> Epilogue<'static> {
    if relu {
        Epilogue::Relu
    } else {
        Epilogue::Identity
    }
}

impl FastBatchNorm for Flex {
    fn fast_channel_moments(x: FloatTensor<Self>) -> FloatTensor<Self> {
        moments(x)
    }

    fn fast_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self> {
        forward(
            &contiguous(x),
            &affine(gamma, beta, moments, epsilon),
            relu_epilogue(relu),
        )
    }

    fn fast_batch_norm_add_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let residual = contiguous(residual);
        forward(
            &contiguous(x),
            &affine(gamma, beta, moments, epsilon),
            Epilogue::AddRelu(f32_slice(&residual)),
        )
    }
}

/// Statistics carry no gradient: this backward step registers nothing.
#[derive(Debug)]
struct MomentsBackward;

impl Backward<Flex, 1> for MomentsBackward {
    type State = ();

    fn backward(
        self,
        _ops: Ops<Self::State, 1>,
        _grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
    }
}

/// What the backward pass needs from the forward pass.
#[derive(Debug, Clone)]
struct SavedForward {
    x: FlexTensor,
    gamma: FlexTensor,
    /// With `gamma` and the moments, the ReLU's mask (recomputed from `x`).
    beta: FlexTensor,
    moments: FlexTensor,
    epsilon: f64,
    /// Whether a ReLU ended the forward pass.
    relu: bool,
}

/// What the backward pass of normalisation + residual add + ReLU needs: the normalisation's
/// input and statistics, and the output (the ReLU's mask, which depends on the residual).
#[derive(Debug, Clone)]
struct SavedAddRelu {
    x: FlexTensor,
    gamma: FlexTensor,
    moments: FlexTensor,
    epsilon: f64,
    output: FlexTensor,
}

/// Registers the gradients of `x`, `gamma` and `beta` for the output gradient `grad` (taken
/// through the ReLU's mask when one ended the forward pass).
fn normalization_backward(
    saved: SavedForward,
    grad: &FlexTensor,
    nodes: [Option<NodeId>; 3],
    grads: &mut Gradients,
) {
    let SavedForward {
        x,
        gamma,
        beta,
        moments,
        epsilon,
        relu,
    } = saved;
    let shape = norm_shape(&x);
    let (mean, var) = f32_slice(&moments).split_at(shape.channels);
    let (dx, dgamma, dbeta) = normalize_backward(
        shape,
        f32_slice(&x),
        f32_slice(&gamma),
        f32_slice(&beta),
        mean,
        var,
        epsilon,
        f32_slice(grad),
        relu,
    );
    let dims = x.layout().shape().iter().copied().collect();
    register_gradients(grads, nodes, (dx, dgamma, dbeta), dims, shape.channels);
}

/// Registers `(dx, dgamma, dbeta)` for the nodes of `x` (shaped `dims`), gamma and beta (of
/// `channels` values) that take gradients.
fn register_gradients(
    grads: &mut Gradients,
    [node_x, node_gamma, node_beta]: [Option<NodeId>; 3],
    (dx, dgamma, dbeta): (Vec<f32>, Vec<f32>, Vec<f32>),
    dims: Vec<usize>,
    channels: usize,
) {
    if let Some(node) = node_x {
        grads.register::<Flex>(node, f32_tensor(dx, dims));
    }
    if let Some(node) = node_gamma {
        grads.register::<Flex>(node, f32_tensor(dgamma, vec![channels]));
    }
    if let Some(node) = node_beta {
        grads.register::<Flex>(node, f32_tensor(dbeta, vec![channels]));
    }
}

/// The backward step of the normalisation (and its ReLU): gradients of `x`, `gamma`, `beta`.
#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = SavedForward;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let nodes = ops.parents.map(|node| node.map(|node| node.id));
        normalization_backward(ops.state, &grad, nodes, grads);
    }
}

/// The backward step of normalisation + residual add + ReLU: gradients of `x`, `gamma`,
/// `beta` and the residual.
#[derive(Debug)]
struct BatchNormAddReluBackward;

impl Backward<Flex, 4> for BatchNormAddReluBackward {
    type State = SavedAddRelu;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let [node_x, node_gamma, node_beta, node_residual] =
            ops.parents.map(|node| node.map(|node| node.id));
        let saved = ops.state;
        let shape = norm_shape(&saved.x);
        let (mean, var) = f32_slice(&saved.moments).split_at(shape.channels);
        // The residual's gradient is the masked gradient itself, written by the same pass.
        let (dx, dgamma, dbeta, masked) = normalize_add_relu_backward(
            shape,
            f32_slice(&saved.x),
            f32_slice(&saved.gamma),
            mean,
            var,
            saved.epsilon,
            f32_slice(&grad),
            f32_slice(&saved.output),
        );
        let dims: Vec<usize> = saved.x.layout().shape().iter().copied().collect();
        if let Some(node) = node_residual {
            grads.register::<Flex>(node, f32_tensor(masked, dims.clone()));
        }
        register_gradients(
            grads,
            [node_x, node_gamma, node_beta],
            (dx, dgamma, dbeta),
            dims,
            shape.channels,
        );
    }
}

impl<C: CheckpointStrategy> FastBatchNorm for Autodiff<Flex, C> {
    fn fast_channel_moments(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match MomentsBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((), moments(x.primitive().clone())),
            OpsKind::UnTracked(prep) => prep.finish(moments(x.into_primitive())),
        }
    }

    fn fast_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let x = contiguous(x.into_primitive());
        let affine = affine(
            gamma.into_primitive(),
            beta.into_primitive(),
            moments.into_primitive(),
            epsilon,
        );
        let output = forward(&x, &affine, relu_epilogue(relu));
        match BatchNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = SavedForward {
                    x,
                    gamma: affine.gamma,
                    beta: affine.beta,
                    moments: affine.moments,
                    epsilon,
                    relu,
                };
                prep.finish(saved, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn fast_batch_norm_add_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), gamma.node(), beta.node(), residual.node()];
        let x = contiguous(x.into_primitive());
        let residual = contiguous(residual.into_primitive());
        let affine = affine(
            gamma.into_primitive(),
            beta.into_primitive(),
            moments.into_primitive(),
            epsilon,
        );
        let output = forward(&x, &affine, Epilogue::AddRelu(f32_slice(&residual)));
        drop(residual);
        match BatchNormAddReluBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let saved = SavedAddRelu {
                    x,
                    gamma: affine.gamma,
                    moments: affine.moments,
                    epsilon,
                    output: output.clone(),
                };
                prep.finish(saved, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}
