//! The dataset interface every loader reads from, and image decoding.

use std::sync::Arc;

use image::RgbImage;

use crate::error::{Error, Result};

/// A finite, indexable set of RGB images, optionally labelled.
///
/// Implementations must be cheap to share between the loader's worker threads.
pub trait ImageDataset: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;

    /// `true` when there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The decoded image at `index` (`index < len()`), as 8-bit RGB.
    fn image(&self, index: usize) -> Result<Arc<RgbImage>>;

    /// The class of image `index`, or `None` for unlabelled data.
    fn label(&self, index: usize) -> Option<usize>;

    /// Class names, in label order; empty for unlabelled data.
    fn classes(&self) -> &[String];

    /// A human-readable name for image `index` (its file, or its record), for error messages.
    fn source_name(&self, index: usize) -> String;

    /// The smallest width and height over all images, when known without decoding (used to
    /// reject views larger than the images before training starts).
    fn min_image_size(&self) -> Option<(u32, u32)> {
        None
    }
}

impl<D: ImageDataset + ?Sized> ImageDataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn image(&self, index: usize) -> Result<Arc<RgbImage>> {
        (**self).image(index)
    }
    fn label(&self, index: usize) -> Option<usize> {
        (**self).label(index)
    }
    fn classes(&self) -> &[String] {
        (**self).classes()
    }
    fn source_name(&self, index: usize) -> String {
        (**self).source_name(index)
    }
    fn min_image_size(&self) -> Option<(u32, u32)> {
        (**self).min_image_size()
    }
}

/// Checks that `first` and `second` (named by their roles, e.g. "the kNN bank") are both
/// labelled and share their class names in the same order.
pub fn check_same_classes(
    first: &dyn ImageDataset,
    first_role: &str,
    second: &dyn ImageDataset,
    second_role: &str,
) -> Result<()> {
    for (set, role) in [(first, first_role), (second, second_role)] {
        if set.classes().is_empty() || (!set.is_empty() && set.label(0).is_none()) {
            return Err(Error::MissingInput {
                context: role.to_string(),
                what: "class labels (use a folder of class folders, CIFAR binaries or a \
                       labelled .pack)"
                    .into(),
            });
        }
    }
    if first.classes() != second.classes() {
        return Err(Error::ClassMismatch {
            first: first_role.to_string(),
            first_classes: first.classes().to_vec(),
            second: second_role.to_string(),
            second_classes: second.classes().to_vec(),
        });
    }
    Ok(())
}

/// Decodes an encoded image (JPEG, PNG, BMP, GIF, PNM, TIFF, WebP; format from the content)
/// to 8-bit RGB. Grayscale is replicated to three channels, alpha is dropped (as PIL's
/// `convert("RGB")`), 16-bit samples are scaled to 8 bits, palettes are expanded.
/// `source` names the file in errors.
pub fn decode_image(bytes: &[u8], source: &str) -> Result<RgbImage> {
    let decode_error = |reason: String| Error::Decode {
        path: source.to_string(),
        reason,
    };
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_error(e.to_string()))?;
    if reader.format().is_none() {
        return Err(decode_error("not a recognised image format".into()));
    }
    let image = reader.decode().map_err(|e| decode_error(e.to_string()))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(decode_error("image has no pixels".into()));
    }
    Ok(image.into_rgb8())
}

/// Reads and decodes one image file.
pub fn read_image(path: &std::path::Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_image(&bytes, &path.display().to_string())
}
