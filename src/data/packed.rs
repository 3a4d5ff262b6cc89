//! A compact single-file dataset of encoded images with labels (the bundled CIFAR-10 sample).
//!
//! Layout: the magic `SSPACK01`; a little-endian `u32` class count, then each class name as a
//! `u16` length and UTF-8 bytes; a `u32` image count, then each image as a `u16` label, a `u32`
//! length and the encoded file bytes (JPEG, PNG, ...), unchanged. Images are decoded on
//! first use and kept in memory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use image::RgbImage;

use super::dataset::{ImageDataset, decode_image};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"SSPACK01";

/// Encoded images and labels from one pack file.
#[derive(Debug)]
pub struct PackedImages {
    path: PathBuf,
    classes: Vec<String>,
    labels: Vec<usize>,
    encoded: Vec<Vec<u8>>,
    decoded: Vec<OnceLock<Arc<RgbImage>>>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        let slice = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| Error::InvalidDataset {
                path: self.path.display().to_string(),
                reason: format!("truncated while reading {what} at byte {}", self.at),
            })?;
        self.at += n;
        Ok(slice)
    }
    /// Fails unless `count` records of at least `min_bytes` each fit in the bytes left.
    fn fits(&self, count: usize, min_bytes: usize, what: &str) -> Result<()> {
        let left = self.bytes.len() - self.at.min(self.bytes.len());
        if count.saturating_mul(min_bytes) > left {
            return Err(Error::InvalidDataset {
                path: self.path.display().to_string(),
                reason: format!(
                    "claims {count} {what} at byte {}, but only {left} bytes follow",
                    self.at
                ),
            });
        }
        Ok(())
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl PackedImages {
    /// Reads a pack file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |reason: String| Error::InvalidDataset {
            path: path.display().to_string(),
            reason,
        };
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(invalid("not a selfsup image pack (bad magic)".into()));
        }
        let mut c = Cursor {
            bytes: &bytes,
            at: 8,
            path,
        };
        let num_classes = c.u32("the class count")? as usize;
        // Counts are checked against the bytes left before anything is reserved for them: a
        // corrupt count must be an error, not an allocation the size of the count.
        c.fits(num_classes, 2, "class names")?;
        let mut classes = Vec::with_capacity(num_classes);
        for i in 0..num_classes {
            let len = c.u16("a class name")? as usize;
            let name = c.take(len, "a class name")?;
            classes.push(
                String::from_utf8(name.to_vec())
                    .map_err(|_| invalid(format!("class name {i} is not UTF-8")))?,
            );
        }
        let count = c.u32("the image count")? as usize;
        c.fits(count, 6, "images")?;
        let mut labels = Vec::with_capacity(count);
        let mut encoded = Vec::with_capacity(count);
        for i in 0..count {
            let label = c.u16("a label")? as usize;
            if label >= num_classes.max(1) {
                return Err(invalid(format!(
                    "image {i} has label {label}, expected below {num_classes}"
                )));
            }
            let len = c.u32("an image length")? as usize;
            encoded.push(c.take(len, "image bytes")?.to_vec());
            labels.push(label);
        }
        if count == 0 {
            return Err(invalid("contains no images".into()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            classes,
            labels,
            decoded: (0..count).map(|_| OnceLock::new()).collect(),
            encoded,
        })
    }

    /// Writes a pack of the given encoded images (`(label, bytes)`) and class names.
    pub fn write(
        path: impl AsRef<Path>,
        classes: &[String],
        images: &[(usize, Vec<u8>)],
    ) -> Result<()> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(classes.len() as u32).to_le_bytes());
        for name in classes {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        out.extend_from_slice(&(images.len() as u32).to_le_bytes());
        for (label, bytes) in images {
            out.extend_from_slice(&(*label as u16).to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        let path = path.as_ref();
        std::fs::write(path, out).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl ImageDataset for PackedImages {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn image(&self, index: usize) -> Result<Arc<RgbImage>> {
        if let Some(image) = self.decoded[index].get() {
            return Ok(image.clone());
        }
        let image = Arc::new(decode_image(
            &self.encoded[index],
            &self.source_name(index),
        )?);
        Ok(self.decoded[index].get_or_init(|| image).clone())
    }
    fn label(&self, index: usize) -> Option<usize> {
        (!self.classes.is_empty()).then(|| self.labels[index])
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn source_name(&self, index: usize) -> String {
        format!("{} image {index}", self.path.display())
    }
}
