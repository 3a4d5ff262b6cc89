//! SGD with heavy-ball momentum and coupled weight decay, as PyTorch's `torch.optim.SGD` with
//! `dampening = 0` and `nesterov = False` (the CIFAR recipes of lightly and solo-learn, SimSiam,
//! MoCo):
//!
//! `d = g + wd w`, `buf = m buf + d` (`buf = d` on the first step), `w -= lr buf`.

use burn::optim::Optimizer;
use burn::tensor::{Device, Tensor};

use super::group::{GroupRule, MomentumState};

/// SGD for one parameter group; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Sgd {
    /// Momentum `m` (0: plain SGD).
    pub momentum: f64,
    /// Weight decay and learning-rate rule of the group.
    pub rule: GroupRule,
}

impl Optimizer for Sgd {
    type State<const D: usize> = MomentumState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let decay = self.rule.decay();
        let direction = if decay != 0.0 {
            grad + tensor.clone().mul_scalar(decay)
        } else {
            grad
        };
        let buffer = match state {
            Some(state) if self.momentum != 0.0 => {
                state.momentum.mul_scalar(self.momentum) + direction
            }
            _ => direction,
        };
        let updated = tensor - buffer.clone().mul_scalar(self.rule.lr(lr));
        let state = (self.momentum != 0.0).then_some(MomentumState { momentum: buffer });
        (updated, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.to_device(device)
    }
}
