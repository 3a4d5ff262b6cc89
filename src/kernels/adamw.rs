//! [`AdamW`](crate::optim::AdamW)'s update for one parameter in one pass over f32 memory on the
//! CPU (`Device::flex()`), as a burn backend extension.
//!
//! The tensor form of the update (decay, both moments, their bias corrections, the step) is
//! about twelve element-wise passes, each one thread's loop allocating a temporary the size of
//! the parameter: a vision transformer's whole optimiser step ran on one core while the others
//! waited. Here one parallel pass reads `w`, `g`, `m`, `v` and writes `w'`, `m'`, `v'`, with
//! the same f32 operations in the same order as the tensor form (Loshchilov & Hutter, ICLR
//! 2019; PyTorch's `torch.optim.AdamW`):
//!
//! `w ← w (1 - lr wd)`; `m' = b1 m + (1 - b1) g`; `v' = b2 v + (1 - b2) g²` (`m = v = 0` on the
//! first step); `w' = w - (lr / (1 - b1^t)) m' / (sqrt(v') / sqrt(1 - b2^t) + eps)`.

use std::mem::MaybeUninit;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};
use rayon::prelude::*;

use crate::kernels::flex_f32::{contiguous, f32_slice, f32_tensor};

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// The scalars of one AdamW step.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// Learning rate `lr` (the group's, after its rule).
    pub lr: f64,
    /// Weight decay `wd` (the group's, after its rule).
    pub weight_decay: f64,
    /// The first moment's decay `b1`.
    pub beta1: f64,
    /// The second moment's decay `b2`.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// The step `t = 1, 2, ...` of the bias corrections.
    pub t: u64,
    /// Whether the previous moments count (false on the first step: `m = v = 0`).
    pub with_history: bool,
}

/// The step's scalars in f32, as the tensor form's scalar operations round them.
#[derive(Clone, Copy)]
struct Scalars {
    keep: f32,
    decay: bool,
    beta1: f32,
    rest1: f32,
    beta2: f32,
    rest2: f32,
    sqrt_correction2: f32,
    eps: f32,
    step_size: f32,
}

impl Scalars {
    fn new(step: &AdamWStep) -> Self {
        let t = step.t as i32;
        Self {
            keep: (1.0 - step.lr * step.weight_decay) as f32,
            decay: step.weight_decay != 0.0,
            beta1: step.beta1 as f32,
            rest1: (1.0 - step.beta1) as f32,
            beta2: step.beta2 as f32,
            rest2: (1.0 - step.beta2) as f32,
            sqrt_correction2: (1.0 - step.beta2.powi(t)).sqrt() as f32,
            eps: step.eps as f32,
            step_size: (step.lr / (1.0 - step.beta1.powi(t))) as f32,
        }
    }
}

/// Output chunks of `w'`, `m'` and `v'`.
type OutChunks<'a> = (
    &'a mut [MaybeUninit<f32>],
    &'a mut [MaybeUninit<f32>],
    &'a mut [MaybeUninit<f32>],
);

/// One chunk's update; `moments` are the previous `(m, v)`, `None` on the first step.
fn update_chunk(
    s: Scalars,
    w: &[f32],
    g: &[f32],
    moments: Option<(&[f32], &[f32])>,
    out: OutChunks,
) {
    let (out_w, out_m, out_v) = out;
    for i in 0..w.len() {
        let weight = if s.decay { w[i] * s.keep } else { w[i] };
        let (m, v) = match moments {
            Some((m, v)) => (
                m[i] * s.beta1 + g[i] * s.rest1,
                v[i] * s.beta2 + (g[i] * g[i]) * s.rest2,
            ),
            None => (g[i] * s.rest1, (g[i] * g[i]) * s.rest2),
        };
        let denominator = v.sqrt() / s.sqrt_correction2 + s.eps;
        out_m[i].write(m);
        out_v[i].write(v);
        out_w[i].write(weight - (m / denominator) * s.step_size);
    }
}

/// The new weights and moments `(w', m', v')` for weights `w`, gradient `g` and the previous
/// moments (`None` on the first step).
pub(crate) fn adamw_update(
    step: &AdamWStep,
    w: &[f32],
    g: &[f32],
    moments: Option<(&[f32], &[f32])>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let len = w.len();
    let scalars = Scalars::new(step);
    let mut outputs: [Vec<f32>; 3] = std::array::from_fn(|_| Vec::with_capacity(len));
    let [new_w, new_m, new_v] = &mut outputs;
    new_w.spare_capacity_mut()[..len]
        .par_chunks_mut(CHUNK)
        .zip(new_m.spare_capacity_mut()[..len].par_chunks_mut(CHUNK))
        .zip(new_v.spare_capacity_mut()[..len].par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(index, ((out_w, out_m), out_v))| {
            let range = index * CHUNK..index * CHUNK + out_w.len();
            let previous = moments.map(|(m, v)| (&m[range.clone()], &v[range.clone()]));
            let (w, g) = (&w[range.clone()], &g[range]);
            update_chunk(scalars, w, g, previous, (out_w, out_m, out_v));
        });
    for output in &mut outputs {
        // SAFETY: the chunks above cover `0..len` of every output and write each value.
        unsafe { output.set_len(len) };
    }
    let [new_w, new_m, new_v] = outputs;
    (new_w, new_m, new_v)
}

/// The AdamW step as a backend operation on the flex CPU backend.
#[backend_extension(Flex)]
pub trait FastAdamW: Backend {
    /// `(w', m', v')` for weights `param`, gradient `grad` and the previous moments `first`
    /// and `second` (not read unless `step.with_history`), all of one shape.
    fn fast_adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        first: FloatTensor<Self>,
        second: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl FastAdamW for Flex {
    fn fast_adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        first: FloatTensor<Self>,
        second: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let shape: Vec<usize> = param.layout().shape().iter().copied().collect();
        let (param, grad) = (contiguous(param), contiguous(grad));
        let moments = step
            .with_history
            .then(|| (contiguous(first), contiguous(second)));
        let (w, m, v) = adamw_update(
            &step,
            f32_slice(&param),
            f32_slice(&grad),
            moments.as_ref().map(|(m, v)| (f32_slice(m), f32_slice(v))),
        );
        (
            f32_tensor(w, shape.clone()),
            f32_tensor(m, shape.clone()),
            f32_tensor(v, shape),
        )
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use crate::optim::{AdamW, AdamWState, GroupRule, WeightDecay};

    /// Three steps of the fused kernel against the tensor-op update from the same start: the
    /// same f32 operations in the same order give the same bits.
    fn check<const D: usize>(adamw: &AdamW, shape: [usize; D]) {
        let device = Device::flex();
        let normal = Distribution::Normal(0.0, 1.0);
        let w = Tensor::<D>::random(shape, normal, &device);
        let (mut w_fused, mut w_ops) = (w.clone(), w);
        let (mut s_fused, mut s_ops): (Option<AdamWState<D>>, Option<AdamWState<D>>) = (None, None);
        for (step, lr) in [3e-3, 2e-3, 1e-3].into_iter().enumerate() {
            let g = Tensor::<D>::random(shape, normal, &device).mul_scalar(0.01);
            let (w_next, state) = adamw
                .step_on_cpu(lr, &w_fused, &g, s_fused.as_ref())
                .expect("flex f32 tensors take the fused path");
            let (w_ops_next, state_ops) = adamw.step_with_tensor_ops(lr, w_ops, g, s_ops);
            assert_eq!(state.steps, state_ops.steps, "steps after step {step}");
            for (what, fused, ops) in [
                ("weights", &w_next, &w_ops_next),
                ("first moment", &state.first, &state_ops.first),
                ("second moment", &state.second, &state_ops.second),
            ] {
                assert_eq!(
                    fused.to_data().try_to_vec::<f32>().unwrap(),
                    ops.to_data().try_to_vec::<f32>().unwrap(),
                    "{what} after step {step} of {shape:?}"
                );
            }
            (w_fused, w_ops) = (w_next, w_ops_next);
            (s_fused, s_ops) = (Some(state), Some(state_ops));
        }
    }

    /// PyTorch's AdamW defaults with DINO's weight decay.
    fn decayed_adamw() -> AdamW {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            rule: GroupRule::decayed(WeightDecay::new(0.05)),
        }
    }

    #[test]
    fn fused_step_matches_tensor_ops_bit_for_bit() {
        let decayed = decayed_adamw();
        check(&decayed, [300, 7]);
        check(&decayed, [40_000, 3]);
        check(&decayed, [8, 3, 3, 3]);
        check(&decayed, [7]);
        let undecayed = AdamW {
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            rule: GroupRule::decayed(WeightDecay::new(0.0)),
        };
        check(&undecayed, [33, 9]);
    }

    #[test]
    fn autodiff_tensors_and_other_shapes_take_the_tensor_form() {
        let adamw = decayed_adamw();
        let autodiff = Device::flex().autodiff();
        let w = Tensor::<1>::ones([4], &autodiff);
        assert!(adamw.step_on_cpu(1e-3, &w, &w.clone(), None).is_none());
        let plain = Device::flex();
        let (w, g) = (
            Tensor::<1>::ones([4], &plain),
            Tensor::<1>::ones([5], &plain),
        );
        assert!(
            adamw.step_on_cpu(1e-3, &w, &g, None).is_none(),
            "shapes differ"
        );
    }
}
