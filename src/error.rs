//! The crate's error type: every problem a user can cause is reported here, never as a panic.

use thiserror::Error;

/// Everything that can go wrong in `selfsup` because of its inputs or configuration.
#[derive(Debug, Error)]
pub enum Error {
    /// Two tensors that must agree in shape do not.
    #[error("{context}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// Where the mismatch was found (e.g. `"BYOL loss: prediction of view 1 vs target of view 0"`).
        context: String,
        /// The shape that was required.
        expected: Vec<usize>,
        /// The shape that was given.
        found: Vec<usize>,
    },
    /// A computation that needs batch statistics got too few samples.
    #[error(
        "{context} needs batch statistics: batch size {batch_size} is below the minimum of {minimum}"
    )]
    BatchTooSmall {
        /// What needed the statistics.
        context: String,
        /// The batch size that was given.
        batch_size: usize,
        /// The smallest batch size that works.
        minimum: usize,
    },
    /// A NaN or an infinity was found.
    #[error("{context}: non-finite value (NaN or Inf)")]
    NonFinite {
        /// Which value was not finite.
        context: String,
    },
    /// A configuration value is outside its valid range.
    #[error("invalid value for `{field}`: {value} (expected {expected})")]
    InvalidConfig {
        /// The configuration field.
        field: String,
        /// The value that was given, formatted.
        value: String,
        /// What would have been valid.
        expected: String,
    },
    /// An input the computation needs is missing.
    #[error("{context}: missing {what}")]
    MissingInput {
        /// What needed the input.
        context: String,
        /// What was missing.
        what: String,
    },
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that failed.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file is not a readable image (corrupt, truncated, or another format).
    #[error("cannot decode image {path}: {reason}")]
    Decode {
        /// The file (or record) that failed.
        path: String,
        /// What the decoder reported.
        reason: String,
    },
    /// A dataset has no usable images, or a file in it is malformed.
    #[error("dataset {path}: {reason}")]
    InvalidDataset {
        /// The dataset's root folder or file.
        path: String,
        /// What is wrong (e.g. "class folder `cat` contains no images").
        reason: String,
    },
    /// An image is smaller than the view that must be cut from it.
    #[error(
        "image {source_name} is {width}x{height}, smaller than the {required}-pixel view cut from it \
         (use a preset for this image size, or allow upscaling in the view transform)"
    )]
    ImageTooSmall {
        /// The file or record the image came from.
        source_name: String,
        /// The image's width.
        width: u32,
        /// The image's height.
        height: u32,
        /// The view's side length.
        required: usize,
    },
    /// A checkpoint cannot be read, or does not fit the model it is loaded into.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Training stopped at a step (non-finite loss, collapse, or a hook's request).
    #[error("training stopped at step {step} (epoch {epoch}): {reason}")]
    TrainingStopped {
        /// 0-based global step.
        step: usize,
        /// 0-based epoch.
        epoch: usize,
        /// Why.
        reason: String,
    },
    /// Two labelled datasets that must share their classes (a kNN bank and its queries, a
    /// probe's training and validation sets) name different classes or order them differently.
    #[error(
        "{first} and {second} have different classes (a label would mean another class in \
         each): {first_classes:?} vs {second_classes:?}"
    )]
    ClassMismatch {
        /// The first dataset's role.
        first: String,
        /// Its class names, in label order.
        first_classes: Vec<String>,
        /// The second dataset's role.
        second: String,
        /// Its class names, in label order.
        second_classes: Vec<String>,
    },
    /// A picture of the report could not be drawn.
    #[error("cannot draw the report: {0}")]
    Plot(String),
    /// A tensor's values could not be read back from its device.
    #[error("{context}: cannot read the values back from the device: {reason}")]
    TensorRead {
        /// Which values.
        context: String,
        /// What the backend reported.
        reason: String,
    },
    /// A training step failed; `source` says why (its variant is kept for callers to match).
    #[error("training step {step} (epoch {epoch}) failed: {source}")]
    Step {
        /// 0-based global step.
        step: usize,
        /// 0-based epoch.
        epoch: usize,
        /// What failed.
        source: Box<Error>,
    },
    /// The ranks of a data-parallel run cannot work together (MPI missing or failing, the
    /// ranks' parameters drifted apart).
    #[error("distributed run, rank {rank}: {reason}")]
    Distributed {
        /// The rank that found the problem.
        rank: usize,
        /// What is wrong.
        reason: String,
    },
    /// A background worker thread stopped unexpectedly.
    #[error("data loader worker failed: {0}")]
    Worker(String),
}

/// `Result` with the crate's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shortcut for [`Error::TensorRead`].
    pub fn tensor_read(context: impl Into<String>, reason: impl std::fmt::Debug) -> Self {
        Self::TensorRead {
            context: context.into(),
            reason: format!("{reason:?}"),
        }
    }

    /// Shortcut for [`Error::InvalidConfig`].
    pub fn invalid_config(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}
