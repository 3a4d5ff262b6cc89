//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019), as
//! PyTorch's `torch.optim.AdamW` (DINO's and the vision transformers' optimiser):
//!
//! `w -= lr wd w`; `m = b1 m + (1 - b1) g`; `v = b2 v + (1 - b2) g²`;
//! `w -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)` at step `t = 1, 2, ...`.

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

impl Optimizer for AdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
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
        (
            updated,
            Some(AdamWState {
                first,
                second,
                steps,
            }),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        AdamWState {
            first: state.first.to_device(device),
            second: state.second.to_device(device),
            steps: state.steps,
        }
    }
}
