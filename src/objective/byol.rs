//! BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020, arXiv:2006.07733;
//! reference code: deepmind-research/byol).
//!
//! The online network's prediction of one view regresses the EMA target network's projection
//! of the other view:
//!
//! `L = sum_{i != j} mean_b (2 - 2 cos(q_online(v_i), sg(z_target(v_j)))) / (V - 1)`
//!
//! For two views this is the paper's symmetrised loss
//! `mean(2 - 2 cos(p1, sg z2)) + mean(2 - 2 cos(p2, sg z1))`.

use burn::module::Module;
use burn::tensor::Tensor;

use super::{Requirements, ViewEmbeddings, require_views};
use crate::energy::cosine_similarity;
use crate::error::Result;

/// The BYOL objective. Needs a predictor and an EMA target network.
#[derive(Module, Debug, Default)]
pub struct ByolLoss {}

impl ByolLoss {
    /// What the joint embedding must provide.
    pub fn requirements(&self) -> Requirements {
        Requirements {
            predictor: true,
            ema_target: true,
        }
    }

    /// Loss of one batch of views.
    pub fn forward(&self, views: &ViewEmbeddings) -> Result<Tensor<1>> {
        let predictions = require_views("BYOL", "predictions", &views.predictions, 2)?;
        let targets = require_views("BYOL", "target projections", &views.targets, 2)?;
        byol_loss(predictions, targets)
    }
}

/// BYOL loss of predictions `p_v` and target projections `z_v` (one `[B, D]` per view, targets
/// detached here): `sum_{i != j} mean(2 - 2 cos(p_i, sg z_j)) / (V - 1)`.
pub fn byol_loss(predictions: &[Tensor<2>], targets: &[Tensor<2>]) -> Result<Tensor<1>> {
    let (total, _) = super::sum_over_ordered_pairs("BYOL", predictions, targets, |p, z| {
        cosine_similarity(p, z.detach())
            .mul_scalar(-2.0)
            .add_scalar(2.0)
            .mean()
    })?;
    Ok(total.div_scalar((predictions.len() - 1) as f64))
}
