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
    /// Multiplier of the learning rate (layer-wise decay when fine-tuning a ViT; 1 otherwise).
    pub lr_scale: f64,
}

impl GroupRule {
    /// Decay with `weight_decay`, scheduled learning rate.
    pub fn decayed(weight_decay: WeightDecay) -> Self {
        Self {
            weight_decay: Some(weight_decay),
            fixed_lr: None,
            lr_scale: 1.0,
        }
    }

    /// No decay, scheduled learning rate.
    pub fn excluded() -> Self {
        Self {
            weight_decay: None,
            fixed_lr: None,
            lr_scale: 1.0,
        }
    }

    /// The current weight decay, 0 for excluded parameters.
    pub fn decay(&self) -> f64 {
        self.weight_decay.as_ref().map_or(0.0, WeightDecay::get)
    }

    /// The learning rate to use when the schedule says `scheduled`.
    pub fn lr(&self, scheduled: f64) -> f64 {
        self.fixed_lr.unwrap_or(scheduled) * self.lr_scale
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
    /// Learning-rate multipliers other than 1 (layer-wise decay).
    pub lr_scales: Vec<(ParamId, f64)>,
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

/// Token parameters of vision transformers that, like biases and norms, take no weight decay
/// (timm's and MAE's `no_weight_decay()`: position embeddings, class and mask tokens).
pub const TOKEN_PARAMETERS: [&str; 3] = ["pos_embedding", "class_token", "mask_token"];

/// Ids of the trainable parameters that take no weight decay: rank 1, or named in
/// [`TOKEN_PARAMETERS`].
fn no_decay_ids<M: Module>(module: &M) -> Vec<ParamId> {
    struct NoDecay {
        path: Vec<String>,
        ids: Vec<ParamId>,
    }
    impl ModuleVisitor for NoDecay {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let token = self
                .path
                .last()
                .is_some_and(|name| TOKEN_PARAMETERS.contains(&name.as_str()));
            if param.is_require_grad() && (D == 1 || token) {
                self.ids.push(param.id);
            }
        }
    }
    let mut visitor = NoDecay {
        path: Vec::new(),
        ids: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.ids
}

impl ParamGroups {
    /// Every trainable rank-1 parameter of `module` (biases, batch-norm and layer-norm scales
    /// and shifts) and a vision transformer's position embeddings and class and mask tokens in
    /// the no-decay group, as DINO's `get_params_groups`, MAE's and I-JEPA's parameter groups,
    /// BYOL's and Barlow Twins' LARS exclusion and solo-learn's `exclude_bias_n_norm` do.
    pub fn rank_one_excluded<M: Module>(module: &M) -> Self {
        Self {
            no_weight_decay: no_decay_ids(module),
            ..Self::default()
        }
    }

    /// The same with layer-wise learning-rate decay (BEiT, MAE's `param_groups_lrd`): with
    /// `L` transformer blocks (`...layers.i...` in `module`'s paths), the patch embedding,
    /// position embedding and class token are layer 0, block `i` is layer `i + 1`, everything
    /// else (final norm, head) layer `L + 1`; layer `l` trains at `decay^(L + 1 - l)` times
    /// the scheduled rate. A module without blocks is unchanged.
    pub fn with_layer_decay<M: Module>(self, module: &M, decay: f64) -> Self {
        let layers = layer_ids(module);
        let blocks = layers
            .iter()
            .filter_map(|(_, layer)| match layer {
                Layer::Block(i) => Some(i + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        if blocks == 0 {
            return self;
        }
        let lr_scales = layers
            .into_iter()
            .filter_map(|(id, layer)| {
                let depth = match layer {
                    Layer::Embedding => 0,
                    Layer::Block(i) => i + 1,
                    Layer::Top => blocks + 1,
                };
                let scale = decay.powi((blocks + 1 - depth) as i32);
                (scale != 1.0).then_some((id, scale))
            })
            .collect();
        Self { lr_scales, ..self }
    }
}

/// Where a parameter sits in a vision transformer, for layer-wise decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// Patch embedding, position embedding, class token.
    Embedding,
    /// Transformer block `i`.
    Block(usize),
    /// Anything after the blocks (final norm, head), or outside a transformer.
    Top,
}

/// The layer of each trainable parameter of `module`, from its path.
fn layer_ids<M: Module>(module: &M) -> Vec<(ParamId, Layer)> {
    struct Layers {
        path: Vec<String>,
        ids: Vec<(ParamId, Layer)>,
    }
    impl ModuleVisitor for Layers {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.is_require_grad() {
                return;
            }
            let embedding = self
                .path
                .iter()
                .any(|p| matches!(p.as_str(), "conv_proj" | "class_token" | "pos_embedding"));
            let block = self
                .path
                .windows(2)
                .find(|w| w[0] == "layers")
                .and_then(|w| w[1].parse().ok());
            let layer = match (embedding, block) {
                (true, _) => Layer::Embedding,
                (false, Some(i)) => Layer::Block(i),
                (false, None) => Layer::Top,
            };
            self.ids.push((param.id, layer));
        }
    }
    let mut visitor = Layers {
        path: Vec::new(),
        ids: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.ids
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
