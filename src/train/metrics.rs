//! Per-step and per-epoch metrics, appended as JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What one training step reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Always `"step"` (to tell the lines apart in the JSONL file).
    pub kind: String,
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based global step.
    pub step: usize,
    /// Loss before the update.
    pub loss: f64,
    /// Learning rate of the step.
    pub lr: f64,
    /// EMA decay of the target update (BYOL).
    pub tau: Option<f64>,
    /// Std of the L2-normalised projections (well spread: about `1/sqrt(d)`).
    pub embedding_std: f64,
    /// Energy gap: mean energy of unrelated pairs minus that of positive pairs.
    pub energy_gap: f64,
    /// Effective rank (RankMe) of the backbone features, on monitored steps.
    pub effective_rank: Option<f64>,
    /// Training images per second over this step, loading included.
    pub images_per_second: f64,
}

/// What one epoch reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Always `"epoch"`.
    pub kind: String,
    /// 0-based epoch.
    pub epoch: usize,
    /// Global steps completed at the end of the epoch.
    pub steps: usize,
    /// Mean loss over the epoch's steps.
    pub loss: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean embedding std over the epoch.
    pub embedding_std: f64,
    /// Mean energy gap over the epoch.
    pub energy_gap: f64,
    /// Last effective rank measured in the epoch.
    pub effective_rank: Option<f64>,
    /// kNN top-1 on the evaluation split, when evaluated.
    pub knn_top1: Option<f64>,
    /// Training images per second over the epoch.
    pub images_per_second: f64,
    /// Wall-clock seconds of the epoch (evaluation excluded).
    pub seconds: f64,
}

/// Appends metrics to a JSON-lines file.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsWriter {
    /// Opens `path` for appending (created if missing).
    pub fn append(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self { path, file })
    }

    /// Writes one record as a line.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_string(record).map_err(|e| Error::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })
    }
}
