//! The batch-norm kernels as a burn backend extension on `Flex`, with an autodiff backward.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;

use crate::flex_f32::{contiguous, f32_slice, f32_tensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};

use super::kernels::{NormShape, channel_moments, normalize, normalize_backward};

/// Training-mode batch normalisation of `[N, C, ...]` activations computed by this crate's
/// kernels.
#[backend_extension(Flex, Autodiff)]
pub trait FastBatchNorm: Backend {
    /// Per-channel batch mean and biased variance of `x`, as a `[2, C]` tensor (row 0 the
    /// means). Not differentiable: call it on a detached tensor.
    fn fast_channel_moments(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `(x - mean) / sqrt(var + epsilon) * gamma + beta` where `moments` (`[2, C]`) must be
    /// [`fast_channel_moments`](FastBatchNorm::fast_channel_moments) of `x`; the gradient
    /// accounts for the statistics' dependence on `x` (training mode).
    fn fast_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        moments: FloatTensor<Self>,
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

fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    moments: &FlexTensor,
    epsilon: f64,
) -> FlexTensor {
    let shape = norm_shape(x);
    let (mean, var) = f32_slice(moments).split_at(shape.channels);
    let mut y = vec![0.0f32; shape.batch * shape.channels * shape.pixels];
    normalize(
        shape,
        f32_slice(x),
        f32_slice(gamma),
        f32_slice(beta),
        mean,
        var,
        epsilon,
        &mut y,
    );
    f32_tensor(y, x.layout().shape().iter().copied().collect())
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
    ) -> FloatTensor<Self> {
        forward(
            &contiguous(x),
            &contiguous(gamma),
            &contiguous(beta),
            &contiguous(moments),
            epsilon,
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

/// The backward step of the normalisation: gradients of `x`, `gamma` and `beta`.
#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = (FlexTensor, FlexTensor, FlexTensor, f64);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (x, gamma, moments, epsilon) = ops.state;
        let shape = norm_shape(&x);
        let (mean, var) = f32_slice(&moments).split_at(shape.channels);
        let (dx, dgamma, dbeta) = normalize_backward(
            shape,
            f32_slice(&x),
            f32_slice(&gamma),
            mean,
            var,
            epsilon,
            f32_slice(&grad),
        );
        if let Some(node) = node_x {
            grads.register::<Flex>(
                node.id,
                f32_tensor(dx, x.layout().shape().iter().copied().collect()),
            );
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, f32_tensor(dgamma, vec![shape.channels]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, f32_tensor(dbeta, vec![shape.channels]));
        }
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
    ) -> FloatTensor<Self> {
        let stats = contiguous(moments.into_primitive());
        match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = contiguous(x.primitive().clone());
                let gamma = contiguous(gamma.primitive().clone());
                let output = forward(
                    &x,
                    &gamma,
                    &contiguous(beta.into_primitive()),
                    &stats,
                    epsilon,
                );
                prep.finish((x, gamma, stats, epsilon), output)
            }
            OpsKind::UnTracked(prep) => {
                let output = forward(
                    &contiguous(x.into_primitive()),
                    &contiguous(gamma.into_primitive()),
                    &contiguous(beta.into_primitive()),
                    &stats,
                    epsilon,
                );
                prep.finish(output)
            }
        }
    }
}
