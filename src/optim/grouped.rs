//! The optimiser a training run steps: burn's [`ModuleOptimizer`] with one per-parameter
//! optimiser per [parameter group](ParamGroups), a weight decay the loop can change every step,
//! and per-parameter gradient clipping.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{GradientsParams, ModuleOptimizer, Optimizer, OptimizerRecord};
use burn::tensor::Tensor;

use super::config::{OptimizerConfig, OptimizerKind};
use super::group::{GroupRule, ParamGroups, WeightDecay};
use super::{AdamW, Lars, Sgd};
use crate::error::Result;

/// burn's module optimiser over parameter groups, with a scheduled weight decay and gradient
/// clipping; built from an [`OptimizerConfig`].
#[derive(Clone)]
pub struct GroupedOptimizer {
    inner: ModuleOptimizer,
    weight_decay: WeightDecay,
    gradient_clip: Option<f64>,
}

impl std::fmt::Debug for GroupedOptimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedOptimizer")
            .field("weight_decay", &self.weight_decay.get())
            .field("gradient_clip", &self.gradient_clip)
            .finish_non_exhaustive()
    }
}

/// One optimiser per distinct rule (decayed?, fixed learning rate?, learning-rate scale);
/// parameters named in no group take the default rule (decayed, scheduled, scale 1).
fn build<O: Optimizer>(
    make: impl Fn(GroupRule) -> O,
    groups: &ParamGroups,
    weight_decay: &WeightDecay,
    peak_lr: f64,
) -> ModuleOptimizer {
    let listed = groups
        .no_weight_decay
        .iter()
        .chain(&groups.fixed_lr)
        .chain(groups.lr_scales.iter().map(|(id, _)| id));
    // (decayed, fixed, scale bits) -> parameters.
    let mut rules: Vec<((bool, bool, u64), Vec<ParamId>)> = Vec::new();
    for &id in listed {
        if rules.iter().any(|(_, members)| members.contains(&id)) {
            continue;
        }
        let decayed = !groups.no_weight_decay.contains(&id);
        let fixed = groups.fixed_lr.contains(&id);
        let scale = groups
            .lr_scales
            .iter()
            .find(|(p, _)| *p == id)
            .map_or(1.0, |(_, s)| *s);
        let key = (decayed, fixed, scale.to_bits());
        match rules.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(id),
            None => rules.push((key, vec![id])),
        }
    }
    // Groups in rule order, so a checkpoint's optimiser state lines up on resume.
    rules.sort_by_key(|(key, _)| *key);
    let rule = |decayed: bool, fixed: bool, scale: f64| GroupRule {
        weight_decay: decayed.then(|| weight_decay.clone()),
        fixed_lr: fixed.then_some(peak_lr),
        lr_scale: scale,
    };
    let mut optimizer = ModuleOptimizer::from(make(rule(true, false, 1.0)));
    for ((decayed, fixed, scale), members) in rules {
        let group = ParamGroup::from_ids(members);
        let optimiser = make(rule(decayed, fixed, f64::from_bits(scale)));
        optimizer = optimizer.with_group(group, optimiser, None);
    }
    optimizer
}

impl GroupedOptimizer {
    /// The optimiser of `config` over `groups`; `peak_lr` is the rate of fixed-rate groups.
    pub fn new(config: &OptimizerConfig, groups: &ParamGroups, peak_lr: f64) -> Result<Self> {
        config.validate()?;
        let weight_decay = WeightDecay::new(config.weight_decay);
        let c = config.clone();
        let inner = match config.kind {
            OptimizerKind::Sgd => build(
                |rule| Sgd {
                    momentum: c.momentum,
                    rule,
                },
                groups,
                &weight_decay,
                peak_lr,
            ),
            OptimizerKind::Lars => build(
                |rule| Lars {
                    momentum: c.momentum,
                    eta: c.lars_eta,
                    eps: c.eps,
                    exclude_bias_and_norm: false,
                    rule,
                },
                groups,
                &weight_decay,
                peak_lr,
            ),
            OptimizerKind::Adamw => build(
                |rule| AdamW {
                    beta1: c.adam_betas[0],
                    beta2: c.adam_betas[1],
                    eps: c.eps,
                    rule,
                },
                groups,
                &weight_decay,
                peak_lr,
            ),
        };
        Ok(Self {
            inner,
            weight_decay,
            gradient_clip: config.gradient_clip,
        })
    }

    /// One step of `module` with learning rate `lr` and weight decay `weight_decay` (for the
    /// decayed groups), after clipping the gradients if configured.
    pub fn step<M: Module>(
        &mut self,
        lr: f64,
        weight_decay: f64,
        module: M,
        mut grads: GradientsParams,
    ) -> M {
        self.weight_decay.set(weight_decay);
        if let Some(max_norm) = self.gradient_clip {
            clip_per_parameter(&module, &mut grads, max_norm);
        }
        self.inner.step(lr, module, grads)
    }

    /// The optimiser state (momentum buffers, moments) for a checkpoint.
    pub fn to_record(&self) -> OptimizerRecord {
        self.inner.to_record()
    }

    /// Restores the state of a checkpoint.
    pub fn load_record(self, record: OptimizerRecord) -> Self {
        Self {
            inner: self.inner.load_record(record),
            ..self
        }
    }
}

/// Scales each parameter's gradient `g` by `min(1, max_norm / (||g|| + 1e-6))`, DINO's
/// `clip_gradients` (per parameter, not a global norm). Computed on the device, without
/// reading the norms back.
pub fn clip_per_parameter<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) {
    struct Clip<'a> {
        grads: &'a mut GradientsParams,
        max_norm: f64,
    }
    impl ModuleVisitor for Clip<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let Some(grad) = self.grads.remove::<D>(param.id) else {
                return;
            };
            let norm = grad.clone().square().sum().sqrt();
            let coefficient = norm
                .add_scalar(1e-6)
                .recip()
                .mul_scalar(self.max_norm)
                .clamp_max(1.0);
            let clipped = grad * coefficient.reshape([1; D]);
            self.grads.register(param.id, clipped);
        }
    }
    module.visit(&mut Clip { grads, max_norm });
}
