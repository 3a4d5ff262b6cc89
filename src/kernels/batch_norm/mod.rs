//! Fused training-mode batch normalisation on the flex device: the kernels, their burn backend
//! extension, and the fused forward that [`crate::batch_norm`] and
//! [`crate::model::FeatureBatchNorm`] route to.

mod extension;
mod features;
mod kernels;

use burn::tensor::Tensor;

pub use extension::FastBatchNorm;
pub use kernels::{
    Epilogue, NormShape, channel_moments, normalize, normalize_add_relu_backward,
    normalize_backward, relu_backward,
};

/// What the fused pass applies after the normalisation.
pub(crate) enum After<const D: usize> {
    /// Nothing.
    Nothing,
    /// A ReLU.
    Relu,
    /// A residual add (shaped like the input), then a ReLU.
    AddRelu(Box<Tensor<D>>),
}

/// The output of [`fused_batch_norm_train`].
pub(crate) struct FusedOutput<const D: usize> {
    /// The normalised (and activated) activations.
    pub output: Tensor<D>,
    /// Batch mean per channel (detached).
    pub mean: Tensor<1>,
    /// Biased batch variance per channel (detached).
    pub variance: Tensor<1>,
}

/// Training-mode batch normalisation of `x` (`[N, C, ...]`) by the fused kernels, with `after`
/// in the same pass; the caller checked [`fused_kernels_apply`] and updates its running
/// statistics from the returned moments.
pub(crate) fn fused_batch_norm_train<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    after: After<D>,
) -> FusedOutput<D> {
    use burn::backend::Dispatch;

    let channels = x.dims()[1];
    let moments = Tensor::<2>::from_dispatch(<Dispatch as FastBatchNorm>::fast_channel_moments(
        x.clone().detach().into_dispatch(),
    ));
    let (x, gamma, beta) = (
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
    );
    let stats = moments.clone().into_dispatch();
    let output = Tensor::<D>::from_dispatch(match after {
        After::Nothing => <Dispatch as FastBatchNorm>::fast_batch_norm_train(
            x, gamma, beta, stats, epsilon, false,
        ),
        After::Relu => {
            <Dispatch as FastBatchNorm>::fast_batch_norm_train(x, gamma, beta, stats, epsilon, true)
        }
        After::AddRelu(residual) => <Dispatch as FastBatchNorm>::fast_batch_norm_add_relu_train(
            x,
            gamma,
            beta,
            stats,
            residual.into_dispatch(),
            epsilon,
        ),
    });
    let mean = moments
        .clone()
        .slice([0..1, 0..channels])
        .reshape([channels])
        .detach();
    let variance = moments
        .slice([1..2, 0..channels])
        .reshape([channels])
        .detach();
    FusedOutput {
        output,
        mean,
        variance,
    }
}
