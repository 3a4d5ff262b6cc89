//! Opening a dataset from a path, whatever its format.

use std::path::Path;
use std::sync::Arc;

use super::{CifarBinary, CifarFormat, CifarSplit, ImageDataset, ImageFolder, PackedImages};
use crate::error::{Error, Result};

/// Opens `path` as a dataset, recognising:
/// - a `.pack` file: [`PackedImages`];
/// - a folder with `data_batch_1.bin` (CIFAR-10 training files) or only `test_batch.bin`
///   (CIFAR-10 test file), or with `train.bin` / `test.bin` (CIFAR-100, fine labels);
/// - any other folder: an [`ImageFolder`] (class sub-folders, or a flat unlabelled folder),
///   with decoded images cached in memory when `cache` is set.
pub fn open_dataset(path: impl AsRef<Path>, cache: bool) -> Result<Arc<dyn ImageDataset>> {
    let path = path.as_ref();
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "pack") {
            return Ok(Arc::new(PackedImages::open(path)?));
        }
        return Err(Error::InvalidDataset {
            path: path.display().to_string(),
            reason: "is a file; expected a folder of images, a CIFAR binary folder or a .pack file"
                .into(),
        });
    }
    if !path.exists() {
        return Err(Error::InvalidDataset {
            path: path.display().to_string(),
            reason: "does not exist".into(),
        });
    }
    let has = |name: &str| path.join(name).is_file();
    if has("data_batch_1.bin") {
        return Ok(Arc::new(CifarBinary::open_dir(
            path,
            CifarFormat::Cifar10,
            CifarSplit::Train,
        )?));
    }
    if has("test_batch.bin") {
        return Ok(Arc::new(CifarBinary::open_dir(
            path,
            CifarFormat::Cifar10,
            CifarSplit::Test,
        )?));
    }
    if has("train.bin") {
        return Ok(Arc::new(CifarBinary::open_dir(
            path,
            CifarFormat::Cifar100Fine,
            CifarSplit::Train,
        )?));
    }
    if has("test.bin") {
        return Ok(Arc::new(CifarBinary::open_dir(
            path,
            CifarFormat::Cifar100Fine,
            CifarSplit::Test,
        )?));
    }
    Ok(Arc::new(ImageFolder::open(path)?.with_cache(cache)))
}
