//! Squared Frobenius norms of feature cross-products, `||A^T B||_F^2` for `[N, D]` batches,
//! computed through whichever side of the product is smaller.
//!
//! VICReg's covariance term and Barlow Twins' redundancy term are sums of squares of the
//! entries of a `D x D` matrix `A^T B` (the covariance or the cross-correlation of the
//! features), but only the sum is needed, and the trace identity
//!
//! `||A^T B||_F^2 = tr(B^T A A^T B) = tr((A A^T)(B B^T)) = <A A^T, B B^T>_F`
//!
//! gives it from the `N x N` Gram matrices of the batch instead, and no `D x D` matrix is ever
//! stored (268 MB per matrix at `D` = 8,192). The reference code (facebookresearch/vicreg,
//! facebookresearch/barlowtwins, lightly) forms the `D x D` matrix; the value is the same up to
//! float rounding.
//!
//! Counting the forward product and the two products of its gradient:
//! - `A = B` (a covariance): `3 N^2 D` through the batch against `3 N D^2` through the
//!   features, `D / N` times fewer;
//! - `A != B` (a cross-correlation): two Gram matrices, `6 N^2 D` against `3 N D^2`, `D / 2N`
//!   times fewer.
//!
//! With the heads of the papers (`D` = 2,048 to 8,192 features) and the batches that fit on one
//! CPU or GPU (`N` = 128 to 512), that is 4 to 64 times fewer multiply-adds for VICReg and 2 to
//! 32 for Barlow Twins. The batch side is taken when `2 N <= D` for a covariance and `2 N < D`
//! for a cross-correlation (the covariance could switch at `N < D` on the counts alone; the
//! margin keeps the subtraction below accurate).
//!
//! Both losses want the off-diagonal entries only. Through the features, the diagonal is masked
//! out exactly. Through the batch, the diagonal `P_ii = (A^T B)_ii = sum_b a_bi b_bi` costs
//! `N D` and its squares are subtracted from the full norm, which amplifies rounding by
//! `1 + sum_i P_ii^2 / sum_{i != j} P_ij^2`. The product has rank at most `N`, so when the
//! `|P_ii|` are even, `sum_{i != j} P_ij^2 >= (D / N - 1) sum_i P_ii^2` (from
//! `sum_i |P_ii| <= sqrt(N) ||P||_F`), and the amplification is at most `D / (D - N)`: at most
//! 2 (one bit) where the batch side is taken. A very uneven diagonal has no such bound: the
//! error is then a float rounding of the diagonal's sum of squares, as it is wherever a loss is
//! written `sum(C^2) - sum(diag(C)^2)` (the PyTorch reference of `benches/`).

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
    /// The side the losses take for an `[n, d]` batch: the batch when `2 n <= d` for `A^T A`
    /// (`same_operands`) and when `2 n < d` for `A^T B` (see the module's counts and bound).
    pub fn cheaper(n: usize, d: usize, same_operands: bool) -> Self {
        let batch_side = if same_operands { 2 * n <= d } else { 2 * n < d };
        if batch_side {
            Self::Batch
        } else {
            Self::Features
        }
    }
}

/// `sum_{i != j} (A^T A)_ij^2` of an `[N, D]` batch, through the cheaper side.
pub fn off_diagonal_self_squares(a: Tensor<2>) -> Tensor<1> {
    let [n, d] = a.dims();
    off_diagonal_self_squares_through(a, ProductSide::cheaper(n, d, true))
}

/// `sum_{i != j} (A^T A)_ij^2` of an `[N, D]` batch through the given side.
pub fn off_diagonal_self_squares_through(a: Tensor<2>, side: ProductSide) -> Tensor<1> {
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
