//! Evaluation of a pretrained encoder: kNN on frozen features, the linear probe, fine-tuning,
//! and the collapse monitors.

pub mod features;
pub mod fine_tune;
pub mod knn;
pub mod linear_probe;
pub mod rank;
pub mod report;

pub use features::{Features, extract_features};
pub use fine_tune::{Classifier, FineTuneConfig, fine_tune};
pub use knn::{KnnClassifier, KnnConfig};
pub use linear_probe::{LinearProbeConfig, linear_probe, linear_probe_on_features};
pub use rank::effective_rank;
pub use report::ClassificationReport;
