//! Sinkhorn-Knopp balanced assignment, as in SwAV (Caron et al., NeurIPS 2020, Algorithm 1 and
//! facebookresearch/swav `distributed_sinkhorn`; lightly's `sinkhorn`).

use burn::tensor::Tensor;

/// Soft codes `Q` (`[B, K]`, each row sums to 1) for prototype scores `[B, K]`, with the
/// prototypes used equally often across the batch:
///
/// `Q = exp(scores / eps)^T`, `Q /= sum(Q)`, then `iterations` times: divide each of the `K`
/// rows by its sum and by `K`, each of the `B` columns by its sum and by `B`; finally `Q *= B`.
///
/// Computed without autodiff (the codes are targets). The scores are shifted by their maximum
/// before the exponential, which the first normalisation cancels exactly, so large
/// `scores / eps` cannot overflow.
pub fn sinkhorn(scores: Tensor<2>, iterations: usize, epsilon: f64) -> Tensor<2> {
    let scores = scores.without_autodiff();
    let [b, k] = scores.dims();
    let scaled = scores.div_scalar(epsilon);
    let max = scaled.clone().max();
    let mut q = (scaled - max.unsqueeze()).exp().transpose(); // [K, B]
    q = q.clone() / q.clone().sum().unsqueeze();
    for _ in 0..iterations {
        q = q.clone() / q.clone().sum_dim(1).mul_scalar(k as f64);
        q = q.clone() / q.clone().sum_dim(0).mul_scalar(b as f64);
    }
    q.mul_scalar(b as f64).transpose()
}
