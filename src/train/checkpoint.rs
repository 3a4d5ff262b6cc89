//! Checkpoints: the whole training state in one file, written atomically.
//!
//! Layout: the magic `SSCKPT02`, then three sections, each a little-endian `u64` length and
//! its bytes: JSON metadata (configuration, epoch, step, metrics history), the model (online
//! and target weights, BatchNorm statistics, and the method's parameters and state: SwAV's
//! prototypes and queue, MoCo's queue, DINO's centre, DeepCluster's memory banks; burn's
//! burnpack format, which keeps parameter ids), and the optimiser state (burn's
//! `OptimizerRecord`);
//! then an FNV-1a 64-bit checksum of everything before it. A file is written to a temporary
//! name in the same folder, flushed to disk, then renamed over the old one, so a crash or a
//! killed process leaves the previous checkpoint intact. The data-loading RNG needs no state:
//! views are a pure function of (seed, epoch, image, view).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::config::PretrainConfig;
use super::metrics::EpochMetrics;
use crate::error::{Error, Result};
use crate::method::AnyMethodConfig;

const MAGIC: &[u8; 8] = b"SSCKPT02";

/// Everything in a checkpoint besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "C: Serialize", deserialize = "C: DeserializeOwned"))]
pub struct CheckpointMeta<C = AnyMethodConfig> {
    /// The run's configuration.
    pub config: PretrainConfig<C>,
    /// Epochs fully completed; training resumes at this epoch.
    pub epochs_completed: usize,
    /// Global steps completed.
    pub step: usize,
    /// Images in the training set (the size of DeepCluster's memory bank).
    pub dataset_len: usize,
    /// Dimension of the projector's output (the collapse monitor's `d`).
    pub embedding_dim: usize,
    /// Metrics of the completed epochs.
    pub history: Vec<EpochMetrics>,
    /// A description of the architecture (backbone and heads), checked on load.
    pub architecture: String,
}

/// A checkpoint in memory.
#[derive(Debug, Clone)]
pub struct Checkpoint<C = AnyMethodConfig> {
    /// Metadata.
    pub meta: CheckpointMeta<C>,
    /// The model's burnpack bytes.
    pub model: Vec<u8>,
    /// The optimiser's record bytes.
    pub optimizer: Vec<u8>,
}

/// FNV-1a, 64 bit.
fn checksum(chunks: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for chunk in chunks {
        for &b in *chunk {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn checkpoint_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl<C: Serialize + DeserializeOwned> Checkpoint<C> {
    /// Serialises the checkpoint to bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let meta = serde_json::to_vec(&self.meta)
            .map_err(|e| checkpoint_error(Path::new("<memory>"), e.to_string()))?;
        let mut out =
            Vec::with_capacity(8 + 24 + 8 + meta.len() + self.model.len() + self.optimizer.len());
        out.extend_from_slice(MAGIC);
        for section in [&meta[..], &self.model[..], &self.optimizer[..]] {
            out.extend_from_slice(&(section.len() as u64).to_le_bytes());
            out.extend_from_slice(section);
        }
        let sum = checksum(&[&out]);
        out.extend_from_slice(&sum.to_le_bytes());
        Ok(out)
    }

    /// Parses bytes read from `path` (named in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.starts_with(b"SSCKPT01") {
            return Err(checkpoint_error(
                path,
                "written by an earlier selfsup (format 01, with the SwAV queue in its metadata); \
                 this version reads format 02: start a new run",
            ));
        }
        if bytes.len() < MAGIC.len() + 8 || &bytes[..8] != MAGIC {
            return Err(checkpoint_error(
                path,
                "not a selfsup checkpoint (bad magic)",
            ));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 8);
        let stored = u64::from_le_bytes(tail.try_into().unwrap_or([0; 8]));
        if checksum(&[body]) != stored {
            return Err(checkpoint_error(
                path,
                "checksum mismatch (the file is truncated or corrupt)",
            ));
        }
        let mut sections = Vec::with_capacity(3);
        let mut at = MAGIC.len();
        for name in ["metadata", "model", "optimizer"] {
            let len_bytes: [u8; 8] = body
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| checkpoint_error(path, format!("{name} section missing")))?;
            let len = u64::from_le_bytes(len_bytes) as usize;
            at += 8;
            let section = body
                .get(at..at.saturating_add(len))
                .ok_or_else(|| checkpoint_error(path, format!("{name} section truncated")))?;
            sections.push(section.to_vec());
            at += len;
        }
        let optimizer = sections.pop().unwrap_or_default();
        let model = sections.pop().unwrap_or_default();
        let meta: CheckpointMeta<C> = serde_json::from_slice(&sections[0])
            .map_err(|e| checkpoint_error(path, format!("metadata: {e}")))?;
        Ok(Self {
            meta,
            model,
            optimizer,
        })
    }

    /// Reads a checkpoint file of a run whose method is configured by `C`.
    pub fn read_as(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Writes the checkpoint to `path` atomically (temporary file, flush, rename).
    pub fn write_atomic(&self, path: impl AsRef<Path>) -> Result<()> {
        self.write_atomic_failing_after(path.as_ref(), None)
    }

    /// [`write_atomic`](Self::write_atomic) with an injected failure after `fail_after` bytes,
    /// the way a crash or a full disk interrupts a write (for tests of atomicity).
    #[doc(hidden)]
    pub fn write_atomic_failing_after(&self, path: &Path, fail_after: Option<usize>) -> Result<()> {
        let bytes = self.to_bytes()?;
        let tmp = temporary_path(path);
        if let Err(source) = write_synced(&tmp, &bytes, fail_after) {
            // A full disk must not keep the partial file (it holds the space the next try
            // needs); the previous checkpoint is untouched either way.
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Io { path: tmp, source });
        }
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Writes `bytes` to a new file at `path` and flushes it to the disk; with `fail_after`, the
/// write fails after that many bytes, as a crash or a full disk would.
fn write_synced(path: &Path, bytes: &[u8], fail_after: Option<usize>) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    match fail_after {
        Some(n) if n < bytes.len() => {
            file.write_all(&bytes[..n])?;
            Err(std::io::Error::other(format!(
                "injected failure after {n} of {} bytes",
                bytes.len()
            )))
        }
        _ => {
            file.write_all(bytes)?;
            file.sync_all()
        }
    }
}

impl Checkpoint<AnyMethodConfig> {
    /// Reads a checkpoint file of a run with a built-in method.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        Self::read_as(path)
    }
}

/// `<name>.tmp` next to `path`.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
