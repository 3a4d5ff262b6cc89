//! Optimisers and schedules: SGD, [LARS](lars) and AdamW over parameter groups (no weight
//! decay on biases and normalisation parameters, an optional fixed-rate predictor), scheduled
//! weight decay, per-parameter gradient clipping, warmup + cosine learning rate, and the
//! momentum schedule of EMA targets. burn's own schedulers reject learning rates above 1,
//! which LARS recipes use; these do not.

pub mod adamw;
pub mod config;
pub mod fused;
pub mod group;
pub mod grouped;
pub mod lars;
pub mod schedule;
pub mod sgd;

pub use adamw::{AdamW, AdamWState};
pub use config::{OptimizerConfig, OptimizerKind};
pub use fused::set_fused_cpu_step;
pub use group::{GroupRule, MomentumState, ParamGroups, WeightDecay, trainable_ids};
pub use grouped::{GroupedOptimizer, clip_per_parameter};
pub use lars::{Lars, LarsConfig};
pub use schedule::{CosineSchedule, EmaConfig, EmaSchedule, LrConfig, WarmupCosine};
pub use sgd::Sgd;
