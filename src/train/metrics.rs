//! Per-step and per-epoch metrics, appended as JSON lines.

use std::collections::BTreeMap;
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
    /// Weight decay of the step's decayed parameters.
    pub weight_decay: f64,
    /// EMA decay of the target update (methods with a momentum target).
    pub tau: Option<f64>,
    /// The method's scheduled values (DINO's teacher temperature).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub method_values: BTreeMap<String, f64>,
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
    /// Opens the metrics of a run resumed from a checkpoint after `steps` steps and `epochs`
    /// epochs: records the checkpoint does not cover (the steps of an interrupted epoch, a line
    /// torn by a kill) are dropped first, so the file reads as one run.
    pub fn resume(path: impl AsRef<Path>, steps: usize, epochs: usize) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let kept: String = text
            .lines()
            .filter(|line| covered(line, steps, epochs))
            .flat_map(|line| [line, "\n"])
            .collect();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, kept).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Self::append(path)
    }

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

/// Whether a metrics line belongs to the first `steps` steps and `epochs` epochs.
fn covered(line: &str, steps: usize, epochs: usize) -> bool {
    let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    let index = |key: &str| record[key].as_u64().map(|v| v as usize);
    match record["kind"].as_str() {
        Some("step") => index("step").is_some_and(|s| s < steps),
        Some("epoch") => index("epoch").is_some_and(|e| e < epochs),
        _ => false,
    }
}
