//! SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021,
//! arXiv:2011.10566; reference code: facebookresearch/simsiam).
//!
//! One network, no negatives, no momentum encoder: the prediction of one view regresses the
//! projection of the other under stop-gradient, which is what prevents collapse:
//!
//! `L = -(1 / (V (V - 1))) sum_{i != j} mean_b cos(p_i, sg(z_j))`
//!
//! For two views: `L = -(cos(p1, sg z2) + cos(p2, sg z1)) / 2`.

use burn::module::Module;
use burn::tensor::Tensor;

use super::{Requirements, ViewEmbeddings, require_views};
use crate::energy::cosine_similarity;
use crate::error::Result;

/// The SimSiam objective. Needs a predictor; the target is the online projection under
/// stop-gradient.
#[derive(Module, Debug, Default)]
pub struct SimSiamLoss {}

impl SimSiamLoss {
    /// What the joint embedding must provide.
    pub fn requirements(&self) -> Requirements {
        Requirements {
            predictor: true,
            ema_target: false,
        }
    }

    /// Loss of one batch of views.
    pub fn forward(&self, views: &ViewEmbeddings) -> Result<Tensor<1>> {
        let predictions = require_views("SimSiam", "predictions", &views.predictions, 2)?;
        let projections = require_views("SimSiam", "projections", &views.projections, 2)?;
        simsiam_loss(predictions, projections)
    }
}

/// SimSiam loss of predictions `p_v` and projections `z_v` (detached here):
/// `-(1 / (V (V - 1))) sum_{i != j} mean cos(p_i, sg z_j)`.
pub fn simsiam_loss(predictions: &[Tensor<2>], projections: &[Tensor<2>]) -> Result<Tensor<1>> {
    let (total, pairs) =
        super::sum_over_ordered_pairs("SimSiam", predictions, projections, |p, z| {
            cosine_similarity(p, z.detach()).mean()
        })?;
    Ok(total.div_scalar(-(pairs as f64)))
}
