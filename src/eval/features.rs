//! Frozen features of a dataset under an encoder, for kNN and the linear probe.

use std::sync::Arc;

use burn::tensor::{Device, Tensor};

use crate::augment::ViewTransform;
use crate::backbone::Encoder;
use crate::data::{ImageDataset, LoaderConfig, ViewLoader};
use crate::error::{Error, Result};

/// Features `[n, d]` of every image of a dataset, in dataset order, with their labels.
#[derive(Debug, Clone)]
pub struct Features {
    /// `[n, d]` features.
    pub features: Tensor<2>,
    /// Labels, when the dataset has them.
    pub labels: Option<Vec<usize>>,
}

/// Encodes every image of `dataset` with the deterministic `transform` (e.g.
/// [`ViewTransform::eval`]) in batches of `batch_size`, with the encoder in evaluation mode
/// (BatchNorm running statistics, no gradient). `device` is a plain (non-autodiff) device.
pub fn extract_features<E: Encoder>(
    encoder: &E,
    dataset: Arc<dyn ImageDataset>,
    transform: &ViewTransform,
    batch_size: usize,
    device: &Device,
) -> Result<Features> {
    if transform.num_views() != 1 {
        return Err(Error::invalid_config(
            "evaluation transform",
            format!("{} views", transform.num_views()),
            "exactly one view",
        ));
    }
    let encoder = encoder.valid();
    let config = LoaderConfig::in_order(batch_size.min(dataset.len()).max(1));
    let loader = ViewLoader::new(dataset.clone(), transform.clone(), config, device)?;
    let mut parts = Vec::new();
    let mut labels = Vec::with_capacity(dataset.len());
    let mut all_labelled = true;
    for batch in loader.epoch(0) {
        let batch = batch?;
        let images = batch
            .views
            .into_iter()
            .next()
            .ok_or_else(|| Error::MissingInput {
                context: "feature extraction".into(),
                what: "a view".into(),
            })?;
        parts.push(encoder.encode(images));
        match batch.labels {
            Some(l) => labels.extend(l),
            None => all_labelled = false,
        }
    }
    Ok(Features {
        features: Tensor::cat(parts, 0),
        labels: all_labelled.then_some(labels),
    })
}
