//! Pretraining: configuration, the training loop with schedules, monitors and hooks, metrics,
//! and atomic checkpoints with exact resume.

pub mod checkpoint;
pub mod config;
pub mod metrics;
mod monitor;
pub mod pretrain;
mod progress;
mod run;
mod schedules;

pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use config::{EmaConfig, LrConfig, MonitorConfig, OptimizerConfig, PretrainConfig};
pub use metrics::{EpochMetrics, MetricsWriter, StepMetrics};
pub use pretrain::{
    CHECKPOINT_FILE, Control, EpochHook, FrozenScores, KnnEvaluation, METRICS_FILE,
    PretrainOptions, Pretrained, ScheduleHook, StepHook, build_model, frozen_evaluation,
    init_backbone, knn_accuracy, load_backbone, load_checkpoint, pretrain, pretrain_encoder,
    pretrain_with,
};
