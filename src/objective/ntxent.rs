//! SimCLR's NT-Xent, the normalised-temperature cross-entropy (Chen et al., "A Simple Framework
//! for Contrastive Learning of Visual Representations", ICML 2020, arXiv:2002.05709; lightly's
//! `NTXentLoss` without memory bank).
//!
//! The contrastive baseline: for the `2N` embeddings of `N` images in two views, each one must
//! pick out its partner among the other `2N - 1` by cosine similarity:
//!
//! `L = -(1 / 2N) sum_i log( exp(s(i, p(i)) / T) / sum_{k != i} exp(s(i, k) / T) )`
//!
//! with `s` the cosine similarity, `p(i)` the other view of image `i` and temperature `T`
//! (0.5 in lightly's CIFAR benchmark, 0.1 in the paper's ImageNet runs). Unrelated images are
//! pushed apart explicitly, which is how contrastive methods avoid collapse.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

use super::{Requirements, ViewEmbeddings, require_views};
use crate::check;
use crate::energy::l2_normalize;
use crate::error::Result;

/// The NT-Xent (SimCLR) objective.
#[derive(Module, Debug)]
pub struct NtXentLoss {
    /// Temperature `T`.
    pub temperature: f64,
}

impl NtXentLoss {
    /// What the joint embedding must provide.
    pub fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    /// Loss of one batch of views (averaged over all pairs of views).
    pub fn forward(&self, views: &ViewEmbeddings) -> Result<Tensor<1>> {
        let projections = require_views("NT-Xent", "projections", &views.projections, 2)?;
        super::mean_over_view_pairs(projections, |a, b| ntxent_loss(a, b, self.temperature))
    }
}

/// NT-Xent loss of two `[N, D]` embedding batches, row `i` of each a view of image `i`.
pub fn ntxent_loss(z1: Tensor<2>, z2: Tensor<2>, temperature: f64) -> Result<Tensor<1>> {
    check::same_shape(|| "NT-Xent loss: second view".into(), &z1, &z2)?;
    check::min_batch(|| "NT-Xent loss".into(), &z1, 2)?;
    let n = z1.dims()[0];
    let device = z1.device();
    let z = l2_normalize(Tensor::cat(vec![z1, z2], 0)); // [2N, D]
    let similarity = z.clone().matmul(z.transpose()).div_scalar(temperature);
    // Exclude each embedding's similarity with itself from its softmax.
    let self_pairs = Tensor::<2>::eye(2 * n, &device).equal_elem(1.0);
    let log_p = log_softmax(similarity.mask_fill(self_pairs, f32::NEG_INFINITY), 1);
    // Partner of row i: i + N for the first view, i - N for the second.
    let partners = Tensor::<1, Int>::arange(0..(2 * n) as i64, &device)
        .add_scalar(n as i64)
        .remainder_scalar((2 * n) as i64)
        .reshape([2 * n, 1]);
    Ok(log_p.gather(1, partners).mean().neg())
}
