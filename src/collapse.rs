//! Collapse statistics of an embedding batch.
//!
//! A collapsed encoder maps every input to (nearly) the same point. Two cheap signals detect it:
//! - the standard deviation of the L2-normalised embeddings, averaged over dimensions, which is
//!   about `1/sqrt(d)` for embeddings spread over the sphere and 0 after collapse (BYOL / SimSiam
//!   papers; lightly's `std_of_l2_normalized`);
//! - the [energy gap](crate::energy::Energy::energy_gap) between matched and unrelated pairs,
//!   which drops to 0 after collapse.

use burn::tensor::Tensor;

use crate::check;
use crate::energy::{Energy, l2_normalize};
use crate::error::Result;

/// Standard deviation over the batch of the L2-normalised embeddings, averaged over the
/// embedding dimensions: `mean_j std_i(z_ij / ||z_i||)` (unbiased std), as a one-element tensor.
/// Needs a batch of at least 2.
pub fn embedding_std(embeddings: Tensor<2>) -> Result<Tensor<1>> {
    check::min_batch(|| "embedding std".into(), &embeddings, 2)?;
    let normalized = l2_normalize(embeddings.detach());
    Ok(normalized.var(0).sqrt().mean())
}

/// Collapse statistics returned by every objective beside its loss. Both are detached
/// one-element tensors, so reading them is the caller's choice (it synchronises the device).
#[derive(Debug, Clone)]
pub struct CollapseStats {
    /// [`embedding_std`] of the online embeddings of the first view.
    pub embedding_std: Tensor<1>,
    /// Cosine [energy gap](Energy::energy_gap) between the online embeddings of the first two
    /// views.
    pub energy_gap: Tensor<1>,
}

impl CollapseStats {
    /// Computes the statistics from the online embeddings of two views of one batch.
    pub fn from_views(view_a: Tensor<2>, view_b: Tensor<2>) -> Result<Self> {
        let (a, b) = (view_a.detach(), view_b.detach());
        Ok(Self {
            embedding_std: embedding_std(a.clone())?,
            energy_gap: Energy::Cosine.energy_gap(a, b)?,
        })
    }

    /// Reads both values back to the host: `(embedding_std, energy_gap)`.
    pub fn values(&self) -> CollapseValues {
        CollapseValues {
            embedding_std: check::scalar(&self.embedding_std),
            energy_gap: check::scalar(&self.energy_gap),
        }
    }
}

/// [`CollapseStats`] read back to the host.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CollapseValues {
    /// Std of the normalised embeddings: healthy about `1/sqrt(d)`, collapsed about 0.
    pub embedding_std: f32,
    /// Energy gap: healthy > 0, collapsed about 0.
    pub energy_gap: f32,
}
