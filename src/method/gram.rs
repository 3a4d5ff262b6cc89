//! Squared Frobenius norms of feature cross-products, `||A^T B||_F^2` for `[N, D]` batches,
//! computed through whichever side of the product is smaller.
//!
//! VICReg's covariance term and Barlow Twins' redundancy term are sums of squares of the
//! entries of a `D x D` matrix `A^T B` (the covariance or the cross-correlation of the
//! features), but only the sum is needed, and the trace identity
//!
//! `||A^T B||_F^2 = tr(B^T A A^T B) = tr((A A^T)(B B^T)) = <A A^T, B B^T>_F`
//!
//! gives it from the `N x N` Gram matrices of the batch instead. With the heads of the papers
//! (`D` = 2,048 to 8,192 features) and the batches that fit on one CPU or GPU (`N` = 128 to
//! 512), that is 4 to 64 times fewer multiply-adds, and no `D x D` matrix is ever stored
//! (268 MB per matrix at `D` = 8,192). The reference code (facebookresearch/vicreg,
//! facebookresearch/barlowtwins, lightly) forms the `D x D` matrix; the value is the same up to
//! float rounding.
//!
//! Counting the forward product and the two products of its gradient:
//! - `A = B` (a covariance): `3 N^2 D` through the batch against `3 N D^2` through the
//!   features, so the batch side is taken when `N < D`;
//! - `A != B` (a cross-correlation): two Gram matrices, `6 N^2 D` against `3 N D^2`, so the
//!   batch side is taken when `2 N < D`.
//!
//! Both losses want the off-diagonal entries only. Through the features, the diagonal is masked
//! out exactly. Through the batch, the diagonal `(A^T B)_ii = sum_b a_bi b_bi` costs `N D` and
//! its squares are subtracted from the full norm; there the product has rank at most `N < D`,
//! so its off-diagonal part cannot be small next to its diagonal (for `A = B`,
//! `sum_{i != j} P_ij^2 >= (D / N - 1) sum_i P_ii^2` when the diagonal is even), and the
//! subtraction loses no more than a few bits.

use burn::tensor::Tensor;

/// Which side of `A^T B` the squared norm is computed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductSide {
    /// The `D x D` product itself, as the reference code computes it.
    Features,
    /// The `N x N` Gram matrices of the batch.
    Batch,
}

impl ProductSide {
    /// The side with fewer multiply-adds for an `[n, d]` batch (see the module's counts).
    pub fn cheaper(n: usize, d: usize, same_operands: bool) -> Self {
        let batch_side_rows = if same_operands { n } else { 2 * n };
        if batch_side_rows < d {
            Self::Batch
        } else {
            Self::Features
        }
    }
}

/// `sum_{i != j} (A^T A)_ij^2` of an `[N, D]` batch, through the cheaper side.
pub fn off_diagonal_gram_squares(a: Tensor<2>) -> Tensor<1> {
    let [n, d] = a.dims();
    off_diagonal_gram_squares_through(a, ProductSide::cheaper(n, d, true))
}

/// `sum_{i != j} (A^T A)_ij^2` of an `[N, D]` batch through the given side.
pub fn off_diagonal_gram_squares_through(a: Tensor<2>, side: ProductSide) -> Tensor<1> {
    match side {
        ProductSide::Features => off_diagonal_squares(a.clone().transpose().matmul(a)),
        ProductSide::Batch => {
            let diagonal = a.clone().square().sum_dim(0);
            let gram = a.clone().matmul(a.transpose());
            gram.square().sum() - diagonal.square().sum()
        }
    }
}

/// `sum_{i != j} (A^T B)_ij^2` of two `[N, D]` batches, through the cheaper side.
pub fn off_diagonal_cross_squares(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let [n, d] = a.dims();
    off_diagonal_cross_squares_through(a, b, ProductSide::cheaper(n, d, false))
}

/// `sum_{i != j} (A^T B)_ij^2` of two `[N, D]` batches through the given side.
pub fn off_diagonal_cross_squares_through(
    a: Tensor<2>,
    b: Tensor<2>,
    side: ProductSide,
) -> Tensor<1> {
    match side {
        ProductSide::Features => off_diagonal_squares(a.transpose().matmul(b)),
        ProductSide::Batch => {
            let diagonal = (a.clone() * b.clone()).sum_dim(0);
            let gram_a = a.clone().matmul(a.transpose());
            let gram_b = b.clone().matmul(b.transpose());
            (gram_a * gram_b).sum() - diagonal.square().sum()
        }
    }
}

/// The sum of squares of a square matrix's off-diagonal entries, exactly (no subtraction).
fn off_diagonal_squares(product: Tensor<2>) -> Tensor<1> {
    let [d, _] = product.dims();
    let off_diagonal_mask = Tensor::<2>::eye(d, &product.device()).neg().add_scalar(1.0);
    (product * off_diagonal_mask).square().sum()
}
