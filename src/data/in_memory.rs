//! A dataset of images already in memory.

use std::sync::Arc;

use image::RgbImage;

use super::dataset::ImageDataset;
use crate::error::{Error, Result};

/// Images (and optional labels) held in memory, e.g. generated, or decoded by the caller.
#[derive(Debug, Clone)]
pub struct InMemoryDataset {
    images: Vec<Arc<RgbImage>>,
    labels: Option<Vec<usize>>,
    classes: Vec<String>,
    min_size: Option<(u32, u32)>,
}

impl InMemoryDataset {
    /// Unlabelled images.
    pub fn unlabeled(images: Vec<RgbImage>) -> Result<Self> {
        Self::build(images, None, Vec::new())
    }

    /// Labelled images; every label must be below `classes.len()`.
    pub fn labeled(
        images: Vec<RgbImage>,
        labels: Vec<usize>,
        classes: Vec<String>,
    ) -> Result<Self> {
        if labels.len() != images.len() {
            return Err(Error::ShapeMismatch {
                context: "in-memory dataset labels".into(),
                expected: vec![images.len()],
                found: vec![labels.len()],
            });
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l >= classes.len())
        {
            return Err(Error::invalid_config(
                format!("labels[{i}]"),
                l,
                format!("a class index below {}", classes.len()),
            ));
        }
        Self::build(images, Some(labels), classes)
    }

    fn build(
        images: Vec<RgbImage>,
        labels: Option<Vec<usize>>,
        classes: Vec<String>,
    ) -> Result<Self> {
        if images.is_empty() {
            return Err(Error::InvalidDataset {
                path: "in-memory dataset".into(),
                reason: "contains no images".into(),
            });
        }
        if let Some(i) = images
            .iter()
            .position(|im| im.width() == 0 || im.height() == 0)
        {
            return Err(Error::InvalidDataset {
                path: "in-memory dataset".into(),
                reason: format!("image {i} has no pixels"),
            });
        }
        let min_size = images.iter().fold(None, |acc: Option<(u32, u32)>, im| {
            let (w, h) = (im.width(), im.height());
            Some(acc.map_or((w, h), |(aw, ah)| (aw.min(w), ah.min(h))))
        });
        Ok(Self {
            images: images.into_iter().map(Arc::new).collect(),
            labels,
            classes,
            min_size,
        })
    }
}

impl ImageDataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn image(&self, index: usize) -> Result<Arc<RgbImage>> {
        Ok(self.images[index].clone())
    }
    fn label(&self, index: usize) -> Option<usize> {
        self.labels.as_ref().map(|l| l[index])
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn source_name(&self, index: usize) -> String {
        format!("in-memory image {index}")
    }
    fn min_image_size(&self) -> Option<(u32, u32)> {
        self.min_size
    }
}
