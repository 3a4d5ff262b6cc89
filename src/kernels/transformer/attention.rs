//! Multi-head scaled dot-product attention (Vaswani et al., "Attention Is All You Need", 2017)
//! straight from the packed query / key / value projection, forward and backward.
//!
//! The input is `qkv [B·N, 3D]` as PyTorch's `nn.MultiheadAttention` packs it (queries in
//! columns `0..D`, keys in `D..2D`, values in `2D..3D`; head `j` owns columns `j·d_h..(j+1)·d_h`
//! of each), the output `context [B·N, D]` with head `j` in columns `j·d_h..`. For each image
//! and head, with `s = 1/sqrt(d_h)`:
//!
//! - forward `P = softmax(s · Q Kᵀ)` row by row, `O = P V`;
//! - backward, with `G = ∂L/∂O`: `∂L/∂V = Pᵀ G`, `∂L/∂P = G Vᵀ`,
//!   `∂L/∂S = s · P ⊙ (∂L/∂P - rowsum(∂L/∂P ⊙ P))`, `∂L/∂Q = ∂L/∂S · K`, `∂L/∂K = ∂L/∂Sᵀ Q`.
//!
//! The matrix products read the heads in place through strides: no head is split off, no
//! transposed copy is made, and the softmax is one pass over the scores (burn composes this
//! from `narrow`, `reshape`, `swap_dims` copies, a division and a five-operation softmax, each
//! with its own backward). Images run in parallel, one per task; nothing is summed across
//! tasks, so results do not depend on the number of threads.

use rayon::prelude::*;

use super::exp::{exp, exp_each};
use std::mem::MaybeUninit;

use crate::kernels::flex_f32::assume_written;
use crate::kernels::gemm::{Mat, matmul, matmul_strided_uninit};
use crate::kernels::lanes::{LANES, Lanes, VectorPass, array, dot, run_widest};

/// Sizes of a multi-head attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Sequences (images).
    pub batch: usize,
    /// Tokens per sequence.
    pub tokens: usize,
    /// Heads.
    pub heads: usize,
    /// Values per head, `d_h`.
    pub head_dim: usize,
}

impl AttentionShape {
    /// `D = heads · d_h`.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    fn scores_per_image(&self) -> usize {
        self.heads * self.tokens * self.tokens
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    fn check(&self, qkv: &[f32]) {
        assert!(
            self.heads > 0 && self.head_dim > 0,
            "attention: {} heads of {} values",
            self.heads,
            self.head_dim
        );
        assert_eq!(
            qkv.len(),
            self.batch * self.tokens * 3 * self.width(),
            "attention: packed projections of {self:?}"
        );
    }
}

/// The views of one image's queries, keys and values of head `head`, inside its `[N, 3D]`
/// rows of `qkv`.
struct HeadViews<'a> {
    queries: Mat<'a>,
    keys: Mat<'a>,
    values: Mat<'a>,
}

fn head_views<'a>(shape: &AttentionShape, image_qkv: &'a [f32], head: usize) -> HeadViews<'a> {
    let d = shape.width();
    let view = |part: usize| Mat {
        data: &image_qkv[part * d + head * shape.head_dim..],
        row_stride: 3 * d,
        col_stride: 1,
    };
    HeadViews {
        queries: view(0),
        keys: view(1),
        values: view(2),
    }
}

/// `max` of `a`, in [`LANES`] partial maxima (NaN-ignoring, as `f32::max`).
#[inline(always)]
fn max(a: &[f32]) -> f32 {
    let mut partial: Lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = a.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (p, &v) in partial.iter_mut().zip(chunk) {
            *p = p.max(v);
        }
    }
    for (p, &v) in partial.iter_mut().zip(chunks.remainder()) {
        *p = p.max(v);
    }
    partial.iter().fold(f32::NEG_INFINITY, |m, &p| m.max(p))
}

/// Each value `v` of `row` replaced by `exp(argument(v))`, a vector of [`LANES`] at a time;
/// returns their sum, accumulated as [`sum`](crate::kernels::lanes::sum) accumulates (the same
/// value `sum(row)` gives afterwards).
#[inline(always)]
fn exp_in_place(row: &mut [f32], argument: impl Fn(f32) -> f32) -> f32 {
    let mut partial: Lanes = [0.0; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        let values: Lanes = exp_each(array(|l| argument(chunk[l])));
        chunk.copy_from_slice(&values);
        for (p, &v) in partial.iter_mut().zip(&values) {
            *p += v;
        }
    }
    for (p, v) in partial.iter_mut().zip(chunks.into_remainder()) {
        *v = exp(argument(*v));
        *p += *v;
    }
    partial.iter().sum()
}

/// Each row of `scores` (`width` values) replaced by `softmax(scale · row)`.
struct SoftmaxRows<'a> {
    scores: &'a mut [f32],
    width: usize,
    scale: f32,
}

impl VectorPass for SoftmaxRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for row in self.scores.chunks_exact_mut(self.width) {
            let shift = max(row);
            let inverse = 1.0 / exp_in_place(row, |v| self.scale * (v - shift));
            for v in row.iter_mut() {
                *v *= inverse;
            }
        }
    }
}

/// `∂L/∂P` (each row of `grad`) replaced by `∂L/∂S = scale · P ⊙ (∂L/∂P - rowsum(∂L/∂P ⊙ P))`.
struct SoftmaxBackwardRows<'a> {
    probabilities: &'a [f32],
    grad: &'a mut [f32],
    width: usize,
    scale: f32,
}

impl VectorPass for SoftmaxBackwardRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let rows = self
            .grad
            .chunks_exact_mut(self.width)
            .zip(self.probabilities.chunks_exact(self.width));
        for (grad, probabilities) in rows {
            let projection = dot(grad, probabilities);
            for (g, &p) in grad.iter_mut().zip(probabilities) {
                *g = self.scale * p * (*g - projection);
            }
        }
    }
}

/// One image: every head's probabilities into `probabilities` (`[heads, N, N]`) and context
/// into `context` (`[N, D]`), both written whole (the products write their outputs without
/// reading them, so nothing is zeroed first).
fn attend_image(
    shape: &AttentionShape,
    qkv: &[f32],
    probabilities: &mut [MaybeUninit<f32>],
    context: &mut [MaybeUninit<f32>],
) {
    let (n, dh, d) = (shape.tokens, shape.head_dim, shape.width());
    for (head, scores) in probabilities.chunks_exact_mut(n * n).enumerate() {
        let views = head_views(shape, qkv, head);
        let keys = views.keys.transposed();
        matmul_strided_uninit(scores, n, 1, n, n, dh, views.queries, keys);
        // SAFETY: the product wrote all `n · n` scores.
        let scores = unsafe { assume_written(scores) };
        run_widest(SoftmaxRows {
            scores,
            width: n,
            scale: shape.scale(),
        });
        let probabilities = Mat::row_major(scores, n);
        // Head `head` writes columns `head·d_h..(head + 1)·d_h` of every row: the heads
        // together write all of `context`.
        let context = &mut context[head * dh..];
        matmul_strided_uninit(context, d, 1, n, dh, n, probabilities, views.values);
    }
}

/// `context [B·N, D]` of the packed projections `qkv [B·N, 3D]`, and, when
/// `keep_probabilities`, the attention probabilities `[B, heads, N, N]` that
/// [`attention_backward`] needs (else an empty vector).
///
/// # Panics
/// If `qkv` is not `B·N·3D` values, or a head is empty.
pub fn attention_forward(
    shape: AttentionShape,
    qkv: &[f32],
    keep_probabilities: bool,
) -> (Vec<f32>, Vec<f32>) {
    shape.check(qkv);
    let (n, d) = (shape.tokens, shape.width());
    if shape.batch * n == 0 {
        return (Vec::new(), Vec::new());
    }
    let image_qkv = |image: usize| &qkv[image * n * 3 * d..][..n * 3 * d];
    let per_image = shape.scores_per_image();
    let context_len = shape.batch * n * d;
    let mut context = Vec::with_capacity(context_len);
    let contexts = context.spare_capacity_mut()[..context_len].par_chunks_mut(n * d);
    let mut probabilities = Vec::new();
    if keep_probabilities {
        let probabilities_len = shape.batch * per_image;
        probabilities.reserve_exact(probabilities_len);
        contexts
            .zip(probabilities.spare_capacity_mut()[..probabilities_len].par_chunks_mut(per_image))
            .enumerate()
            .for_each(|(image, (context, probabilities))| {
                attend_image(&shape, image_qkv(image), probabilities, context)
            });
        // SAFETY: `attend_image` wrote every image's probabilities whole.
        unsafe { probabilities.set_len(probabilities_len) };
    } else {
        contexts.enumerate().for_each_init(
            || vec![MaybeUninit::uninit(); per_image],
            |scratch, (image, context)| attend_image(&shape, image_qkv(image), scratch, context),
        );
    }
    // SAFETY: `attend_image` wrote every image's context whole.
    unsafe { context.set_len(context_len) };
    (context, probabilities)
}

/// One image's `∂L/∂qkv` (`[N, 3D]`) from its context gradient (`[N, D]`).
fn attend_image_backward(
    shape: &AttentionShape,
    qkv: &[f32],
    probabilities: &[f32],
    grad: &[f32],
    grad_scores: &mut [f32],
    dqkv: &mut [MaybeUninit<f32>],
) {
    let (n, dh, d) = (shape.tokens, shape.head_dim, shape.width());
    for (head, probabilities) in probabilities.chunks_exact(n * n).enumerate() {
        let views = head_views(shape, qkv, head);
        let p = Mat::row_major(probabilities, n);
        let g = Mat {
            data: &grad[head * dh..],
            row_stride: d,
            col_stride: 1,
        };
        // Head `head` writes columns `head·d_h..(head + 1)·d_h` of each of the three parts of
        // every row: the heads together write all of `dqkv`.
        let dv = &mut dqkv[2 * d + head * dh..];
        matmul_strided_uninit(dv, 3 * d, 1, n, dh, n, p.transposed(), g);
        matmul(grad_scores, n, n, dh, g, views.values.transposed(), false);
        run_widest(SoftmaxBackwardRows {
            probabilities,
            grad: grad_scores,
            width: n,
            scale: shape.scale(),
        });
        let ds = Mat::row_major(grad_scores, n);
        let dq = &mut dqkv[head * dh..];
        matmul_strided_uninit(dq, 3 * d, 1, n, dh, n, ds, views.keys);
        let dk = &mut dqkv[d + head * dh..];
        let queries = views.queries;
        matmul_strided_uninit(dk, 3 * d, 1, n, dh, n, ds.transposed(), queries);
    }
}

/// `∂L/∂qkv [B·N, 3D]` of [`attention_forward`] for the context gradient `grad [B·N, D]`, from
/// the probabilities it kept.
///
/// # Panics
/// If the lengths do not match `shape`.
pub fn attention_backward(
    shape: AttentionShape,
    qkv: &[f32],
    probabilities: &[f32],
    grad: &[f32],
) -> Vec<f32> {
    shape.check(qkv);
    let (n, d) = (shape.tokens, shape.width());
    assert_eq!(
        (probabilities.len(), grad.len()),
        (shape.batch * shape.scores_per_image(), shape.batch * n * d),
        "attention backward: probabilities and gradient of {shape:?}"
    );
    if shape.batch * n == 0 {
        return Vec::new();
    }
    let per_image = shape.scores_per_image();
    let mut dqkv = Vec::with_capacity(qkv.len());
    dqkv.spare_capacity_mut()[..qkv.len()]
        .par_chunks_mut(n * 3 * d)
        .enumerate()
        .for_each_init(
            || vec![0.0; n * n],
            |grad_scores, (image, dqkv)| {
                attend_image_backward(
                    &shape,
                    &qkv[image * n * 3 * d..][..n * 3 * d],
                    &probabilities[image * per_image..][..per_image],
                    &grad[image * n * d..][..n * d],
                    grad_scores,
                    dqkv,
                )
            },
        );
    // SAFETY: `attend_image_backward` wrote every image's gradient whole.
    unsafe { dqkv.set_len(qkv.len()) };
    dqkv
}
