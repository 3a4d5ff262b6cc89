//! Pretraining: configuration, the training loop with monitors and hooks, metrics, and
//! atomic checkpoints with exact resume.

pub mod checkpoint;
pub mod config;
pub mod metrics;
pub mod pretrain;

pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use config::{LrConfig, MonitorConfig, OptimizerConfig, PretrainConfig};
pub use metrics::{EpochMetrics, MetricsWriter, StepMetrics};
pub use pretrain::{
    CHECKPOINT_FILE, Control, KnnEvaluation, METRICS_FILE, PretrainOptions, Pretrained,
    build_model, init_backbone, knn_accuracy, load_checkpoint, pretrain, pretrain_encoder,
    pretrain_with,
};
