//! A view of some images of another dataset, and the hold-out split used for evaluation.

use std::sync::Arc;

use image::RgbImage;

use super::dataset::ImageDataset;
use crate::error::{Error, Result};

/// The images of `inner` at `indices`, in that order.
#[derive(Clone)]
pub struct Subset {
    inner: Arc<dyn ImageDataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// Selects `indices` of `inner`; every index must be in range and the selection non-empty.
    pub fn new(inner: Arc<dyn ImageDataset>, indices: Vec<usize>) -> Result<Self> {
        if indices.is_empty() {
            return Err(Error::InvalidDataset {
                path: "subset".into(),
                reason: "selects no images".into(),
            });
        }
        if let Some(&i) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(Error::invalid_config(
                "subset index",
                i,
                format!("below the dataset size {}", inner.len()),
            ));
        }
        Ok(Self { inner, indices })
    }

    /// The indices into the inner dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl ImageDataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn image(&self, index: usize) -> Result<Arc<RgbImage>> {
        self.inner.image(self.indices[index])
    }
    fn label(&self, index: usize) -> Option<usize> {
        self.inner.label(self.indices[index])
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn source_name(&self, index: usize) -> String {
        self.inner.source_name(self.indices[index])
    }
    fn min_image_size(&self) -> Option<(u32, u32)> {
        self.inner.min_image_size()
    }
}

/// Splits a labelled dataset into (train, validation) index lists: the last `per_class`
/// images of every class (in dataset order) are held out, the rest train. This is the
/// validation protocol of the benchmarks (the last 500 images of each CIFAR-10 class).
pub fn holdout_last_per_class(
    dataset: &dyn ImageDataset,
    per_class: usize,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let num_classes = dataset.classes().len();
    if num_classes == 0 {
        return Err(Error::InvalidDataset {
            path: "hold-out split".into(),
            reason: "the dataset has no labels to split by class".into(),
        });
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for i in 0..dataset.len() {
        if let Some(l) = dataset.label(i) {
            by_class[l].push(i);
        }
    }
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (c, members) in by_class.iter().enumerate() {
        if members.len() <= per_class {
            return Err(Error::InvalidDataset {
                path: "hold-out split".into(),
                reason: format!(
                    "class `{}` has {} images; holding out {per_class} leaves none to train on",
                    dataset.classes()[c],
                    members.len()
                ),
            });
        }
        let cut = members.len() - per_class;
        train.extend_from_slice(&members[..cut]);
        val.extend_from_slice(&members[cut..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    Ok((train, val))
}
