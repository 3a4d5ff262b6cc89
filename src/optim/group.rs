//! Parameter groups: how one set of parameters is optimised (its weight decay, which a
//! schedule may change every step, and an optional fixed learning rate).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor};

/// A weight-decay coefficient shared between the training loop, which sets it from its
/// schedule before each step, and the per-parameter optimisers of a group, which read it.
#[derive(Debug, Clone)]
pub struct WeightDecay(Arc<AtomicU64>);

impl WeightDecay {
    /// A coefficient starting at `value`.
    pub fn new(value: f64) -> Self {
        Self(Arc::new(AtomicU64::new(value.to_bits())))
    }

    /// The current coefficient.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    /// Changes the coefficient for the next steps.
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// How the parameters of one group are treated by a per-parameter optimiser.
#[derive(Debug, Clone)]
pub struct GroupRule {
    /// Weight decay (and, for LARS, the trust-ratio adaptation); `None` for parameters excluded
    /// from both, as biases and normalisation parameters are in every recipe here.
    pub weight_decay: Option<WeightDecay>,
    /// A learning rate that ignores the schedule (SimSiam's predictor: `--fix-pred-lr`).
    pub fixed_lr: Option<f64>,
}

impl GroupRule {
    /// Decay with `weight_decay`, scheduled learning rate.
    pub fn decayed(weight_decay: WeightDecay) -> Self {
        Self {
            weight_decay: Some(weight_decay),
            fixed_lr: None,
        }
    }

    /// No decay, scheduled learning rate.
    pub fn excluded() -> Self {
        Self {
            weight_decay: None,
            fixed_lr: None,
        }
    }

    /// The current weight decay, 0 for excluded parameters.
    pub fn decay(&self) -> f64 {
        self.weight_decay.as_ref().map_or(0.0, WeightDecay::get)
    }

    /// The learning rate to use when the schedule says `scheduled`.
    pub fn lr(&self, scheduled: f64) -> f64 {
        self.fixed_lr.unwrap_or(scheduled)
    }
}

/// The parameters that leave the default group: excluded from weight decay, or trained at a
/// fixed learning rate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamGroups {
    /// No weight decay (and no LARS adaptation): biases and normalisation parameters.
    pub no_weight_decay: Vec<ParamId>,
    /// Trained at the peak learning rate throughout.
    pub fixed_lr: Vec<ParamId>,
}

/// Ids of the trainable parameters of a module, with their rank.
pub fn trainable_ids<M: Module>(module: &M) -> Vec<(ParamId, usize)> {
    struct Ids(Vec<(ParamId, usize)>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.0.push((param.id, D));
            }
        }
    }
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    ids.0
}

impl ParamGroups {
    /// Every trainable rank-1 parameter of `module` (biases, batch-norm and layer-norm scales
    /// and shifts) in the no-decay group, as DINO's `get_params_groups`, BYOL's and Barlow
    /// Twins' LARS exclusion and solo-learn's `exclude_bias_n_norm` do.
    pub fn rank_one_excluded<M: Module>(module: &M) -> Self {
        Self {
            no_weight_decay: trainable_ids(module)
                .into_iter()
                .filter(|(_, rank)| *rank == 1)
                .map(|(id, _)| id)
                .collect(),
            fixed_lr: Vec::new(),
        }
    }
}

/// The per-parameter state of the heavy-ball optimisers ([`super::Sgd`], [`super::Lars`]): the
/// momentum buffer.
#[derive(Debug, Clone)]
pub struct MomentumState<const D: usize> {
    /// The momentum buffer `buf`.
    pub momentum: Tensor<D>,
}

impl<const D: usize> MomentumState<D> {
    /// The same buffer on `device`.
    pub fn to_device(self, device: &Device) -> Self {
        Self {
            momentum: self.momentum.to_device(device),
        }
    }
}

impl<const D: usize> RecordState for MomentumState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "momentum", self.momentum.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let data = src.take_tensor(prefix, "momentum")?;
        Some(Self {
            momentum: Tensor::from_data(data, device),
        })
    }
}
