//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019), as
//! PyTorch's `torch.optim.AdamW` (DINO's and the vision transformers' optimiser):
//!
//! `w -= lr wd w`; `m = b1 m + (1 - b1) g`; `v = b2 v + (1 - b2) g²`;
//! `w -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)` at step `t = 1, 2, ...`.
//!
//! On `Device::flex()` each f32 parameter's update runs fused, in one parallel pass over its
//! memory, with the same f32 operations as the tensor form (`crate::kernels::adamw`);
//! [`set_fused_cpu_step`](super::fused::set_fused_cpu_step) turns that off for comparisons.
//! Other devices compose the update from tensor operations.

use burn::optim::{Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor, TensorData};

use super::group::GroupRule;

/// AdamW for one parameter group; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct AdamW {
    /// `b1`, the first moment's decay (0.9).
    pub beta1: f64,
    /// `b2`, the second moment's decay (0.999).
    pub beta2: f64,
    /// `eps` added to the denominator (1e-8, PyTorch's default).
    pub eps: f64,
    /// Weight decay and learning-rate rule of the group.
    pub rule: GroupRule,
}

/// Per-parameter state of [`AdamW`].
#[derive(Debug, Clone)]
pub struct AdamWState<const D: usize> {
    /// First moment `m`.
    pub first: Tensor<D>,
    /// Second moment `v`.
    pub second: Tensor<D>,
    /// Steps taken `t`.
    pub steps: u64,
}

impl<const D: usize> RecordState for AdamWState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "first", self.first.to_data());
        out.push_tensor(prefix, "second", self.second.to_data());
        out.push_tensor(
            prefix,
            "steps",
            TensorData::new(vec![self.steps as i64], [1]),
        );
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let first = src.take_tensor(prefix, "first")?;
        let second = src.take_tensor(prefix, "second")?;
        let steps = src
            .take_tensor(prefix, "steps")?
            .convert::<i64>()
            .try_into_vec::<i64>()
            .ok()?
            .first()
            .copied()? as u64;
        Some(Self {
            first: Tensor::from_data(first, device),
            second: Tensor::from_data(second, device),
            steps,
        })
    }
}

impl AdamW {
    /// The update composed from tensor operations (any device).
    pub(crate) fn step_with_tensor_ops<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamWState<D>>,
    ) -> (Tensor<D>, AdamWState<D>) {
        let lr = self.rule.lr(lr);
        let decay = self.rule.decay();
        let tensor = if decay != 0.0 {
            tensor.mul_scalar(1.0 - lr * decay)
        } else {
            tensor
        };
        let (first, second, steps) = match state {
            Some(s) => (
                s.first.mul_scalar(self.beta1) + grad.clone().mul_scalar(1.0 - self.beta1),
                s.second.mul_scalar(self.beta2) + grad.square().mul_scalar(1.0 - self.beta2),
                s.steps + 1,
            ),
            None => (
                grad.clone().mul_scalar(1.0 - self.beta1),
                grad.square().mul_scalar(1.0 - self.beta2),
                1,
            ),
        };
        let t = steps as i32;
        let correction1 = 1.0 - self.beta1.powi(t);
        let correction2 = 1.0 - self.beta2.powi(t);
        let denominator = second
            .clone()
            .sqrt()
            .div_scalar(correction2.sqrt())
            .add_scalar(self.eps);
        let updated = tensor - (first.clone() / denominator).mul_scalar(lr / correction1);
        let state = AdamWState {
            first,
            second,
            steps,
        };
        (updated, state)
    }

    /// The update by [`FastAdamW`](crate::kernels::adamw::FastAdamW) in one pass when the
    /// weights, gradient and moments are f32 on the flex device (`None` otherwise).
    #[cfg(feature = "flex")]
    pub(crate) fn step_on_cpu<const D: usize>(
        &self,
        lr: f64,
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<&AdamWState<D>>,
    ) -> Option<(Tensor<D>, AdamWState<D>)> {
        use burn::backend::Dispatch;

        use crate::kernels::adamw::{AdamWStep, FastAdamW};

        let moments = state.map(|s| (&s.first, &s.second));
        let others = [Some(grad), moments.map(|m| m.0), moments.map(|m| m.1)];
        if !super::fused::takes_fused_cpu_step(tensor, &others) {
            return None;
        }
        let steps = state.map_or(0, |s| s.steps) + 1;
        let step = AdamWStep {
            lr: self.rule.lr(lr),
            weight_decay: self.rule.decay(),
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            t: steps,
            with_history: state.is_some(),
        };
        let (first, second) = moments.unwrap_or((grad, grad));
        let (updated, first, second) = <Dispatch as FastAdamW>::fast_adamw_step(
            tensor.clone().into_dispatch(),
            grad.clone().into_dispatch(),
            first.clone().into_dispatch(),
            second.clone().into_dispatch(),
            step,
        );
        let state = AdamWState {
            first: Tensor::from_dispatch(first),
            second: Tensor::from_dispatch(second),
            steps,
        };
        Some((Tensor::from_dispatch(updated), state))
    }
}

impl Optimizer for AdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        #[cfg(feature = "flex")]
        if let Some((updated, state)) = self.step_on_cpu(lr, &tensor, &grad, state.as_ref()) {
            return (updated, Some(state));
        }
        let (updated, state) = self.step_with_tensor_ops(lr, tensor, grad, state);
        (updated, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdamWState {
            first: state.first.to_device(device),
            second: state.second.to_device(device),
            steps: state.steps,
        }
    }
}
