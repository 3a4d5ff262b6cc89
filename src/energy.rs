//! The energy head of the joint-embedding architecture.
//!
//! In the energy-based view of self-supervised learning (LeCun & Misra, "Self-supervised
//! learning: the dark matter of intelligence", 2021), a joint-embedding architecture encodes two
//! inputs `x` and `y` with twin networks and scores their compatibility with an energy
//! `E(x, y) = d(f(x), f(y))`: low for two views of one image, high for unrelated images.
//! Collapse is the state in which every energy is low; the [energy gap](Energy::energy_gap)
//! (mean energy of unrelated pairs minus mean energy of matched pairs) measures how far a model
//! is from it.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::check;
use crate::error::Result;
use crate::method::ijepa::smooth_l1;

/// Smallest norm used when L2-normalising, as in PyTorch's `F.normalize`.
pub const NORMALIZE_EPS: f64 = 1e-12;

/// L2-normalises each row of `x` (`[B, D]`): `x / max(||x||, 1e-12)`.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x
        .clone()
        .square()
        .sum_dim(1)
        .sqrt()
        .clamp_min(NORMALIZE_EPS);
    x / norm
}

/// Row-wise cosine similarity of two `[B, D]` tensors, as `[B]`.
pub fn cosine_similarity(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    (l2_normalize(a) * l2_normalize(b))
        .sum_dim(1)
        .squeeze_dim(1)
}

/// A distance between two embeddings, used as the energy `E(x, y)` of a pair.
///
/// The cosine and squared-L2 energies are computed on L2-normalised embeddings, so they are
/// bounded and insensitive to the scale of the encoder output. The prediction error compares a
/// predicted representation with its target as they are (I-JEPA's energy, see
/// [`Ijepa::energy`](crate::method::Ijepa::energy)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Energy {
    /// Cosine distance `1 - cos(a, b)`, in `[0, 2]`.
    #[default]
    Cosine,
    /// Squared Euclidean distance between normalised embeddings,
    /// `||a/|a| - b/|b|||^2 = 2 - 2 cos(a, b)`, in `[0, 4]`. BYOL's loss is this energy.
    SquaredL2,
    /// Mean smooth-L1 distance (beta 1) between a prediction and its target representation,
    /// `mean_j smooth_l1(a_j - b_j)`: the predictive architectures' energy (I-JEPA).
    PredictionError,
}

impl Energy {
    /// Energy of matched pairs: row `i` of `a` against row `i` of `b`. `[B, D] x [B, D] -> [B]`.
    pub fn energy(&self, a: Tensor<2>, b: Tensor<2>) -> Result<Tensor<1>> {
        check::same_shape(|| "energy: second embedding batch".into(), &a, &b)?;
        if *self == Energy::PredictionError {
            return Ok(smooth_l1(a - b).mean_dim(1).squeeze_dim(1));
        }
        let cos = cosine_similarity(a, b);
        Ok(self.of_cosine(cos))
    }

    /// Energy of every pair: entry `(i, j)` is `E(a_i, b_j)`. `[B, D] x [M, D] -> [B, M]`.
    pub fn energy_matrix(&self, a: Tensor<2>, b: Tensor<2>) -> Result<Tensor<2>> {
        let (da, db) = (a.dims()[1], b.dims()[1]);
        if da != db {
            return Err(crate::Error::ShapeMismatch {
                context: "energy matrix: embedding dimension of the second batch".into(),
                expected: vec![b.dims()[0], da],
                found: b.dims().to_vec(),
            });
        }
        if *self == Energy::PredictionError {
            let [n, d] = a.dims();
            let m = b.dims()[0];
            let pairs = a.unsqueeze_dim::<3>(1).expand([n, m, d]) - b.unsqueeze_dim::<3>(0);
            return Ok(smooth_l1(pairs).mean_dim(2).reshape([n, m]));
        }
        let cos = l2_normalize(a).matmul(l2_normalize(b).transpose());
        Ok(self.of_cosine(cos))
    }

    /// Energy gap: mean energy of unrelated pairs (off-diagonal of the energy matrix) minus mean
    /// energy of matched pairs (its diagonal), as a one-element tensor.
    ///
    /// About 0 for a collapsed encoder, positive for a healthy one (about 1 for the cosine
    /// energy of random embeddings in high dimension). Needs a batch of at least 2.
    pub fn energy_gap(&self, a: Tensor<2>, b: Tensor<2>) -> Result<Tensor<1>> {
        check::same_shape(|| "energy gap: second embedding batch".into(), &a, &b)?;
        check::min_batch(|| "energy gap".into(), &a, 2)?;
        let n = a.dims()[0] as f64;
        let matrix = self.energy_matrix(a, b)?;
        let diagonal_sum = diagonal_sum(matrix.clone());
        let total = matrix.sum();
        let matched = diagonal_sum.clone().div_scalar(n);
        let unrelated = (total - diagonal_sum).div_scalar(n * (n - 1.0));
        Ok(unrelated - matched)
    }

    fn of_cosine<const D: usize>(&self, cos: Tensor<D>) -> Tensor<D> {
        match self {
            Energy::Cosine => cos.neg().add_scalar(1.0),
            // The prediction error is not a function of the cosine; `energy` and
            // `energy_matrix` compute it before reaching here.
            Energy::SquaredL2 | Energy::PredictionError => cos.mul_scalar(-2.0).add_scalar(2.0),
        }
    }
}

/// Sum of the diagonal of a square `[N, N]` matrix, as a one-element tensor.
fn diagonal_sum(matrix: Tensor<2>) -> Tensor<1> {
    let [n, _] = matrix.dims();
    let eye = Tensor::<2>::eye(n, &matrix.device());
    (matrix * eye).sum()
}
