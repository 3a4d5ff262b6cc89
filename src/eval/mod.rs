//! Evaluation of a pretrained encoder: kNN on frozen features, the linear probe, fine-tuning,
//! and the collapse monitors.

pub mod features;
pub mod knn;
pub mod rank;
pub mod report;

pub use features::{Features, extract_features};
pub use knn::{KnnClassifier, KnnConfig};
pub use rank::effective_rank;
pub use report::ClassificationReport;
