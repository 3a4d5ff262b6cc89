//! Evaluation of a pretrained encoder: kNN on frozen features, the linear probe, fine-tuning,
//! and the collapse monitors.

pub mod knn;
pub mod report;

pub use knn::{KnnClassifier, KnnConfig};
pub use report::ClassificationReport;
