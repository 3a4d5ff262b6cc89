//! A run's metrics as series to plot, read from its `metrics.jsonl`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::train::METRICS_FILE;

/// The step and epoch metrics of one run, as `(x, y)` points per quantity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSeries {
    /// The run's name in legends (its folder's name).
    pub name: String,
    /// Loss per step.
    pub loss: Vec<(f64, f64)>,
    /// Learning rate per step.
    pub lr: Vec<(f64, f64)>,
    /// Std of the normalised embeddings per step.
    pub embedding_std: Vec<(f64, f64)>,
    /// Effective rank (RankMe) on the monitored steps.
    pub effective_rank: Vec<(f64, f64)>,
    /// Energy gap per step.
    pub energy_gap: Vec<(f64, f64)>,
    /// kNN top-1 (%) per epoch (1-based), where measured.
    pub knn_top1: Vec<(f64, f64)>,
}

impl RunSeries {
    /// Reads `run_dir/metrics.jsonl` (a file path is read as the metrics file itself).
    /// Lines that are not metrics records (a line torn by a killed run) are skipped.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let path: PathBuf = if run_dir.is_dir() {
            run_dir.join(METRICS_FILE)
        } else {
            run_dir.to_path_buf()
        };
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let name = run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| run_dir.display().to_string());
        let mut series = Self::parse(&text);
        series.name = name;
        if series.loss.is_empty() {
            return Err(Error::InvalidDataset {
                path: path.display().to_string(),
                reason: "holds no step metrics".into(),
            });
        }
        Ok(series)
    }

    /// The series of the JSON-lines metrics `text`.
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for record in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            let number = |key: &str| record[key].as_f64();
            match record["kind"].as_str() {
                Some("step") => {
                    let Some(step) = number("step") else { continue };
                    let pairs = [
                        (&mut s.loss, "loss"),
                        (&mut s.lr, "lr"),
                        (&mut s.embedding_std, "embedding_std"),
                        (&mut s.effective_rank, "effective_rank"),
                        (&mut s.energy_gap, "energy_gap"),
                    ];
                    for (series, key) in pairs {
                        if let Some(v) = number(key).filter(|v| v.is_finite()) {
                            series.push((step, v));
                        }
                    }
                }
                Some("epoch") => {
                    if let (Some(epoch), Some(top1)) = (number("epoch"), number("knn_top1")) {
                        s.knn_top1.push((epoch + 1.0, 100.0 * top1));
                    }
                }
                _ => {}
            }
        }
        s
    }
}
