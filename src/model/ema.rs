//! Exponential moving average of network weights (BYOL's target network; MoCo's key encoder).
//!
//! `xi <- tau xi + (1 - tau) theta` for every trainable parameter, after each optimiser step.
//! BatchNorm running statistics are not blended: like lightly's `update_momentum` (which walks
//! `parameters()`, not buffers) and BYOL's reference code, the target keeps the running
//! statistics of its own forward passes. On `Device::flex()` each f32 parameter blends in one
//! parallel pass (`crate::kernels::ema`).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// A copy of `online` for use as an EMA target: separate BatchNorm running statistics (a plain
/// `clone()` would share them), fresh parameter ids (so an optimiser never confuses the two
/// networks), and no gradient.
pub fn ema_copy<M: Module>(online: &M) -> M {
    online.valid().train().map(&mut FreshIds).no_grad()
}

struct FreshIds;

impl ModuleMapper for FreshIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(ParamId::new(), tensor, mapper)
    }
}

/// One float tensor of a module, flattened, with whether it is a trainable parameter (as
/// opposed to a running statistic).
struct Leaf {
    values: Tensor<1>,
    shape: Vec<usize>,
    trainable: bool,
}

#[derive(Default)]
struct CollectLeaves {
    leaves: Vec<Leaf>,
}

impl ModuleVisitor for CollectLeaves {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let n: usize = shape.iter().product();
        self.leaves.push(Leaf {
            values: tensor.detach().reshape([n]),
            shape,
            trainable: param.is_require_grad(),
        });
    }
}

struct Blend {
    online: std::vec::IntoIter<Leaf>,
    tau: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(leaf) = self.online.next() else {
            return param;
        };
        if !leaf.trainable {
            return param;
        }
        let tau = self.tau;
        param.map(|target| {
            let online = leaf.values.reshape(target.shape());
            blend(target.detach(), online, tau).set_require_grad(false)
        })
    }
}

/// `tau target + (1 - tau) online`: in one parallel pass on the flex CPU device
/// (`crate::kernels::ema`, the same f32 operations), else from tensor operations.
fn blend<const D: usize>(target: Tensor<D>, online: Tensor<D>, tau: f64) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        use burn::backend::Dispatch;

        use crate::kernels::ema::FastEma;

        let autodiff = target.is_autodiff();
        let (plain_target, plain_online) = (
            target.clone().without_autodiff(),
            online.clone().without_autodiff(),
        );
        if crate::optim::fused::takes_fused_cpu_step(&plain_target, &[Some(&plain_online)]) {
            let blended = Tensor::<D>::from_dispatch(<Dispatch as FastEma>::fast_ema_blend(
                plain_target.into_dispatch(),
                plain_online.into_dispatch(),
                tau,
            ));
            return if autodiff {
                blended.autodiff()
            } else {
                blended
            };
        }
    }
    target.mul_scalar(tau) + online.mul_scalar(1.0 - tau)
}

/// Blends `target` towards `online`: `xi <- tau xi + (1 - tau) theta` for each parameter that is
/// trainable in `online`; running statistics are left alone. Both modules must have the same
/// structure (the target made by [`ema_copy`] of the online network).
pub fn ema_update<M: Module>(target: M, online: &M, tau: f64) -> Result<M> {
    if !(tau.is_finite() && (0.0..=1.0).contains(&tau)) {
        return Err(Error::invalid_config("tau", tau, "in [0, 1]"));
    }
    let mut online_leaves = CollectLeaves::default();
    online.visit(&mut online_leaves);
    let mut target_leaves = CollectLeaves::default();
    target.visit(&mut target_leaves);
    let online_shapes: Vec<_> = online_leaves.leaves.iter().map(|l| &l.shape).collect();
    let target_shapes: Vec<_> = target_leaves.leaves.iter().map(|l| &l.shape).collect();
    if online_shapes != target_shapes {
        return Err(Error::ShapeMismatch {
            context: "EMA update: target and online networks differ in structure".into(),
            expected: online_shapes.iter().map(|s| s.iter().product()).collect(),
            found: target_shapes.iter().map(|s| s.iter().product()).collect(),
        });
    }
    Ok(target.map(&mut Blend {
        online: online_leaves.leaves.into_iter(),
        tau,
    }))
}
