//! [`Lars`](super::Lars)'s update for one parameter in two passes over f32 memory on the CPU
//! (`Device::flex()`), as a burn backend extension.
//!
//! The tensor form of the update (norms, trust ratio, decay, momentum, step) is about ten
//! element-wise passes, each allocating a temporary the size of the parameter, which matters
//! for the wide projectors of VICReg and Barlow Twins (33 million weights at half the paper's
//! width). Here one parallel pass computes `||w||²` and `||g||²` (f64 sums), and one writes the
//! new momentum buffer and the new weights:
//!
//! `d = (g + wd w) · r` with `r = eta ||w|| / (||g|| + wd ||w|| + eps)` (1 when either norm is
//! 0) for adapted parameters, `d = g` for excluded ones; `buf' = m buf + d` (`d` on the first
//! step); `w' = w - lr buf'`.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};
use rayon::prelude::*;

use crate::kernels::flex_f32::{contiguous, f32_slice, f32_tensor};

/// Values per parallel task.
const CHUNK: usize = 1 << 15;

/// The scalars of one LARS step.
#[derive(Debug, Clone, Copy)]
pub struct LarsStep {
    /// Learning rate.
    pub lr: f64,
    /// Momentum `m`; 0 keeps no history.
    pub momentum: f64,
    /// Weight decay `wd` (adapted parameters only).
    pub weight_decay: f64,
    /// Trust coefficient `eta`.
    pub eta: f64,
    /// Added to the trust ratio's denominator.
    pub eps: f64,
    /// Whether the parameter takes decay and the trust ratio (false: a bias or norm parameter
    /// excluded from both).
    pub adapt: bool,
    /// Whether the previous momentum buffer counts (false on the first step).
    pub with_history: bool,
}

/// `Σ x²` in f64: f32 lanes of 8 over runs of 4,096 values, each run flushed to f64.
fn sum_squares(x: &[f32]) -> f64 {
    x.chunks(4096)
        .map(|run| {
            let mut lanes = [0.0f32; 8];
            let eights = run.chunks_exact(8);
            let rest: f64 = eights
                .remainder()
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum();
            for eight in eights {
                for (lane, &v) in lanes.iter_mut().zip(eight) {
                    *lane += v * v;
                }
            }
            rest + lanes.iter().map(|&l| f64::from(l)).sum::<f64>()
        })
        .sum()
}

/// The update direction's scale: the trust ratio, or 1 for an excluded parameter.
fn trust_ratio(step: &LarsStep, w: &[f32], g: &[f32]) -> f64 {
    if !step.adapt {
        return 1.0;
    }
    // Partial sums per chunk, added in chunk order: the result does not depend on how rayon
    // split the work, so runs stay bit-for-bit reproducible.
    let partial: Vec<(f64, f64)> = w
        .par_chunks(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .map(|(w, g)| (sum_squares(w), sum_squares(g)))
        .collect();
    let (w_sq, g_sq) = partial
        .iter()
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let (w_norm, g_norm) = (w_sq.sqrt(), g_sq.sqrt());
    if w_norm > 0.0 && g_norm > 0.0 {
        step.eta * w_norm / (g_norm + step.weight_decay * w_norm + step.eps)
    } else {
        1.0
    }
}

/// The new weights and momentum buffer for weights `w`, gradient `g` and the previous buffer
/// (`None` on the first step, or when `momentum` is 0).
pub(crate) fn lars_update(
    step: &LarsStep,
    w: &[f32],
    g: &[f32],
    buffer: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let len = w.len();
    let ratio = trust_ratio(step, w, g);
    let decay = if step.adapt { step.weight_decay } else { 0.0 } as f32;
    let (ratio, lr, momentum) = (ratio as f32, step.lr as f32, step.momentum as f32);
    let mut new_w: Vec<f32> = Vec::with_capacity(len);
    let mut new_buf: Vec<f32> = Vec::with_capacity(len);
    new_w.spare_capacity_mut()[..len]
        .par_chunks_mut(CHUNK)
        .zip(new_buf.spare_capacity_mut()[..len].par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(index, (out_w, out_buf))| {
            let start = index * CHUNK;
            let range = start..start + out_w.len();
            let (w, g) = (&w[range.clone()], &g[range.clone()]);
            let previous = buffer.map(|b| &b[range]);
            for i in 0..w.len() {
                let d = (g[i] + decay * w[i]) * ratio;
                let b = match previous {
                    Some(p) => momentum * p[i] + d,
                    None => d,
                };
                out_buf[i].write(b);
                out_w[i].write(w[i] - lr * b);
            }
        });
    // SAFETY: the chunks above cover `0..len` of both vectors and write every value.
    unsafe {
        new_w.set_len(len);
        new_buf.set_len(len);
    }
    (new_w, new_buf)
}

/// The LARS step as a backend operation on the flex CPU backend.
#[backend_extension(Flex)]
pub trait FastLars: Backend {
    /// `(w', buf')` for weights `param`, gradient `grad` and the previous momentum buffer
    /// `buffer` (ignored unless `step.with_history` and the momentum is non-zero), all of one
    /// shape.
    fn fast_lars_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        buffer: FloatTensor<Self>,
        step: LarsStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl FastLars for Flex {
    fn fast_lars_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        buffer: FloatTensor<Self>,
        step: LarsStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let shape: Vec<usize> = param.layout().shape().iter().copied().collect();
        let (param, grad) = (contiguous(param), contiguous(grad));
        let buffer = (step.with_history && step.momentum != 0.0).then(|| contiguous(buffer));
        let (w, b) = lars_update(
            &step,
            f32_slice(&param),
            f32_slice(&grad),
            buffer.as_ref().map(f32_slice),
        );
        (f32_tensor(w, shape.clone()), f32_tensor(b, shape))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use crate::optim::{Lars, LarsConfig, MomentumState};

    fn assert_close<const D: usize>(what: &str, a: Tensor<D>, b: Tensor<D>) {
        let a: Vec<f32> = a.into_data().try_to_vec().unwrap();
        let b: Vec<f32> = b.into_data().try_to_vec().unwrap();
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-6 + 1e-5 * y.abs(),
                "{what}[{i}]: fused {x}, tensor ops {y}"
            );
        }
    }

    /// Three steps of the fused kernel against the tensor-op update, from the same start.
    fn check<const D: usize>(lars: &Lars, shape: [usize; D], zero_weights: bool) {
        let device = Device::flex();
        let normal = Distribution::Normal(0.0, 1.0);
        let mut w = Tensor::<D>::random(shape, normal, &device);
        if zero_weights {
            w = w.zeros_like();
        }
        let (mut w_fused, mut w_ops) = (w.clone(), w);
        let (mut s_fused, mut s_ops): (Option<MomentumState<D>>, Option<MomentumState<D>>) =
            (None, None);
        for (step, lr) in [0.3, 0.25, 0.1].into_iter().enumerate() {
            let g = Tensor::<D>::random(shape, normal, &device).mul_scalar(0.01);
            let (w_next, buffer) = lars
                .step_on_cpu(lr, &w_fused, &g, s_fused.as_ref())
                .expect("flex f32 tensors take the fused path");
            let (w_ops_next, s_ops_next) = lars.step_with_tensor_ops(lr, w_ops, g, s_ops);
            let s_ops_next = s_ops_next.expect("a state");
            assert_close(
                &format!("weights after step {step}"),
                w_next.clone(),
                w_ops_next.clone(),
            );
            assert_close(
                &format!("buffer after step {step}"),
                buffer.clone(),
                s_ops_next.momentum.clone(),
            );
            (w_fused, w_ops) = (w_next, w_ops_next);
            (s_fused, s_ops) = (Some(MomentumState { momentum: buffer }), Some(s_ops_next));
        }
    }

    #[test]
    fn fused_step_matches_tensor_ops() {
        let lars = LarsConfig::new()
            .with_weight_decay(1e-4)
            .with_eta(0.02)
            .build()
            .unwrap();
        check(&lars, [300, 7], false);
        check(&lars, [40_000, 3], false);
        check(&lars, [8, 3, 3, 3], false);
        check(&lars, [7], false);
        check(&lars, [5, 4], true);
        let no_momentum = LarsConfig::new().with_momentum(0.0).build().unwrap();
        check(&no_momentum, [33, 9], false);
        let adapt_all = LarsConfig::new()
            .with_exclude_bias_and_norm(false)
            .build()
            .unwrap();
        check(&adapt_all, [13], false);
    }
}
