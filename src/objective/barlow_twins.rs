//! Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar et al., ICML 2021,
//! arXiv:2103.03230; reference code: facebookresearch/barlowtwins `main.py`).
//!
//! The cross-correlation matrix of the two views' embeddings, each normalised per feature over
//! the batch, is driven to the identity:
//!
//! `C = BN(z1)^T BN(z2) / N`,
//! `L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2`, with `lambda = 0.0051`.
//!
//! `BN` is a batch normalisation without affine parameters (biased variance, eps 1e-5), as the
//! reference code's `nn.BatchNorm1d(affine=False)`. With more than two views the loss is averaged
//! over all pairs of views.

use burn::module::Module;
use burn::tensor::Tensor;

use super::{Requirements, ViewEmbeddings, require_views};
use crate::check;
use crate::error::Result;

/// Default weight of the redundancy-reduction term.
pub const BARLOW_TWINS_LAMBDA: f64 = 0.0051;

/// Variance epsilon of the per-feature normalisation (PyTorch BatchNorm's default).
pub const BARLOW_TWINS_BN_EPS: f64 = 1e-5;

/// The Barlow Twins objective.
#[derive(Module, Debug)]
pub struct BarlowTwinsLoss {
    /// Weight of the off-diagonal (redundancy-reduction) term.
    pub lambda: f64,
}

impl Default for BarlowTwinsLoss {
    fn default() -> Self {
        Self {
            lambda: BARLOW_TWINS_LAMBDA,
        }
    }
}

impl BarlowTwinsLoss {
    /// What the joint embedding must provide.
    pub fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    /// Loss of one batch of views.
    pub fn forward(&self, views: &ViewEmbeddings) -> Result<Tensor<1>> {
        let projections = require_views("Barlow Twins", "projections", &views.projections, 2)?;
        super::mean_over_view_pairs(projections, |a, b| barlow_twins_loss(a, b, self.lambda))
    }
}

/// Normalises each feature (column) of `[N, D]` over the batch: zero mean, unit (biased)
/// variance, `eps` added to the variance.
pub fn normalize_features(z: Tensor<2>, eps: f64) -> Tensor<2> {
    let centered = z.clone() - z.mean_dim(0);
    let var = centered.clone().square().mean_dim(0);
    centered / var.add_scalar(eps).sqrt()
}

/// Barlow Twins loss of two `[N, D]` embedding batches.
pub fn barlow_twins_loss(z1: Tensor<2>, z2: Tensor<2>, lambda: f64) -> Result<Tensor<1>> {
    check::same_shape(|| "Barlow Twins loss: second view".into(), &z1, &z2)?;
    check::min_batch(|| "Barlow Twins loss".into(), &z1, 2)?;
    let [n, d] = z1.dims();
    let device = z1.device();
    let c = normalize_features(z1, BARLOW_TWINS_BN_EPS)
        .transpose()
        .matmul(normalize_features(z2, BARLOW_TWINS_BN_EPS))
        .div_scalar(n as f64);
    let eye = Tensor::<2>::eye(d, &device);
    let on_diagonal = (c.clone() * eye.clone())
        .sum_dim(1)
        .sub_scalar(1.0)
        .square()
        .sum();
    let off_diagonal = (c * eye.neg().add_scalar(1.0)).square().sum();
    Ok(on_diagonal + off_diagonal.mul_scalar(lambda))
}
