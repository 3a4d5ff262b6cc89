//! LARS: Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg, 2017, arXiv:1708.03888), as
//! used by BYOL, Barlow Twins and SwAV (deepmind-research/byol `optimizers.py`,
//! facebookresearch/barlowtwins `LARS`, lightly's `LARS`).
//!
//! For each parameter `w` with gradient `g`:
//!
//! `d = g + wd w`, then `d *= eta ||w|| / (||g|| + wd ||w|| + eps)` when `||w||` and `||g||` are
//! both non-zero (the trust ratio), then heavy-ball momentum `buf = m buf + d` (`buf = d` on the
//! first step) and `w -= lr buf`.
//!
//! Biases and normalisation parameters (every rank-1 parameter) are excluded from both weight
//! decay and adaptation, `d = g`, as in BYOL and Barlow Twins. burn's own schedulers reject
//! learning rates above 1, which LARS recipes use: pair it with
//! [`WarmupCosine`](crate::optim::WarmupCosine).
//!
//! On `Device::flex()` each f32 parameter's update runs fused, in two passes over its memory
//! (the two norms, then the new buffer and weights) instead of about ten tensor operations;
//! [`set_fused_cpu_step`] turns that off for comparisons. Other devices compose the update
//! from tensor operations.

use burn::config::Config;
use burn::optim::{ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor};

pub use super::fused::set_fused_cpu_step;
use super::group::{GroupRule, MomentumState, WeightDecay};

/// Configuration of [`Lars`].
#[derive(Config, Debug)]
pub struct LarsConfig {
    /// Momentum `m` (no dampening).
    #[config(default = 0.9)]
    pub momentum: f64,
    /// Weight decay `wd`.
    #[config(default = 1e-6)]
    pub weight_decay: f64,
    /// Trust coefficient `eta`.
    #[config(default = 1e-3)]
    pub eta: f64,
    /// Added to the denominator of the trust ratio.
    #[config(default = 1e-8)]
    pub eps: f64,
    /// Exclude rank-1 parameters (biases, BatchNorm scales and shifts) from weight decay and
    /// adaptation.
    #[config(default = true)]
    pub exclude_bias_and_norm: bool,
}

impl LarsConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> crate::Result<()> {
        let check = crate::check::ensure;
        check(
            "lars.momentum",
            self.momentum,
            (0.0..1.0).contains(&self.momentum),
            "in [0, 1)",
        )?;
        check(
            "lars.weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            ">= 0",
        )?;
        check("lars.eta", self.eta, self.eta > 0.0, "> 0")?;
        check("lars.eps", self.eps, self.eps >= 0.0, ">= 0")
    }

    /// The bare per-parameter optimiser (one group, constant weight decay).
    pub fn build(&self) -> crate::Result<Lars> {
        self.validate()?;
        Ok(Lars {
            momentum: self.momentum,
            eta: self.eta,
            eps: self.eps,
            exclude_bias_and_norm: self.exclude_bias_and_norm,
            rule: GroupRule::decayed(WeightDecay::new(self.weight_decay)),
        })
    }

    /// A whole-module optimiser.
    pub fn init(&self) -> crate::Result<ModuleOptimizer> {
        Ok(ModuleOptimizer::from(self.build()?))
    }
}

/// The LARS optimiser for one parameter group; see the [module docs](self) for the update.
#[derive(Debug, Clone)]
pub struct Lars {
    /// Momentum `m` (no dampening).
    pub momentum: f64,
    /// Trust coefficient `eta`.
    pub eta: f64,
    /// Added to the denominator of the trust ratio.
    pub eps: f64,
    /// Treat every rank-1 parameter as excluded (for use outside parameter groups; the
    /// training loop puts those parameters in an excluded group instead).
    pub exclude_bias_and_norm: bool,
    /// The group's weight decay (`None`: neither decay nor adaptation) and learning rate.
    pub rule: GroupRule,
}

impl Lars {
    /// Whether a rank-`D` parameter of this group takes decay and the trust ratio.
    fn adapts<const D: usize>(&self) -> bool {
        self.rule.weight_decay.is_some() && !(D == 1 && self.exclude_bias_and_norm)
    }

    /// The update direction `d` before momentum.
    fn direction<const D: usize>(&self, param: Tensor<D>, grad: Tensor<D>) -> Tensor<D> {
        if !self.adapts::<D>() {
            return grad;
        }
        let weight_decay = self.rule.decay();
        let param_norm = param.clone().square().sum().sqrt();
        let grad_norm = grad.clone().square().sum().sqrt();
        let ratio = param_norm.clone().mul_scalar(self.eta)
            / (grad_norm.clone() + param_norm.clone().mul_scalar(weight_decay))
                .add_scalar(self.eps);
        let both_non_zero = param_norm
            .greater_elem(0.0)
            .bool_and(grad_norm.greater_elem(0.0));
        let ratio = ratio.ones_like().mask_where(both_non_zero, ratio);
        let decayed = if weight_decay != 0.0 {
            grad + param.mul_scalar(weight_decay)
        } else {
            grad
        };
        decayed * ratio.reshape([1; D])
    }

    /// The update composed of tensor operations (any device).
    pub(crate) fn step_with_tensor_ops<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<MomentumState<D>>,
    ) -> (Tensor<D>, Option<MomentumState<D>>) {
        let direction = self.direction(tensor.clone(), grad);
        let buffer = match state {
            Some(state) if self.momentum != 0.0 => {
                state.momentum.mul_scalar(self.momentum) + direction
            }
            _ => direction,
        };
        let updated = tensor - buffer.clone().mul_scalar(self.rule.lr(lr));
        (updated, Some(MomentumState { momentum: buffer }))
    }

    /// The update by [`FastLars`](crate::kernels::lars::FastLars) in two passes when the weights,
    /// gradient and buffer are f32 on the flex device (`None` otherwise).
    #[cfg(feature = "flex")]
    pub(crate) fn step_on_cpu<const D: usize>(
        &self,
        lr: f64,
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<&MomentumState<D>>,
    ) -> Option<(Tensor<D>, Tensor<D>)> {
        use burn::backend::Dispatch;

        use crate::kernels::lars::{FastLars, LarsStep};

        let buffer = state.map(|s| &s.momentum);
        if !super::fused::takes_fused_cpu_step(tensor, &[Some(grad), buffer]) {
            return None;
        }
        let step = LarsStep {
            lr: self.rule.lr(lr),
            momentum: self.momentum,
            weight_decay: self.rule.decay(),
            eta: self.eta,
            eps: self.eps,
            adapt: self.adapts::<D>(),
            with_history: buffer.is_some(),
        };
        let (updated, buffer) = <Dispatch as FastLars>::fast_lars_step(
            tensor.clone().into_dispatch(),
            grad.clone().into_dispatch(),
            buffer.unwrap_or(grad).clone().into_dispatch(),
            step,
        );
        Some((
            Tensor::from_dispatch(updated),
            Tensor::from_dispatch(buffer),
        ))
    }
}

impl Optimizer for Lars {
    type State<const D: usize> = MomentumState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        #[cfg(feature = "flex")]
        if let Some((updated, buffer)) = self.step_on_cpu(lr, &tensor, &grad, state.as_ref()) {
            return (updated, Some(MomentumState { momentum: buffer }));
        }
        self.step_with_tensor_ops(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.to_device(device)
    }
}
