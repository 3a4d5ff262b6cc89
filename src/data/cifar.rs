//! The CIFAR-10 and CIFAR-100 binary formats (Krizhevsky 2009): fixed-size records of label
//! byte(s) then 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each row-major 32 x 32).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;

use super::dataset::ImageDataset;
use crate::error::{Error, Result};

/// Side length of a CIFAR image.
pub const CIFAR_SIDE: u32 = 32;
const PIXELS: usize = 3 * 32 * 32;

/// CIFAR-10's classes in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which binary format, and for CIFAR-100 which label to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarFormat {
    /// CIFAR-10: one label byte per record (`data_batch_1.bin` .. `data_batch_5.bin`,
    /// `test_batch.bin`).
    Cifar10,
    /// CIFAR-100 with its 100 fine labels (`train.bin`, `test.bin`: coarse byte, fine byte).
    Cifar100Fine,
    /// CIFAR-100 with its 20 coarse labels.
    Cifar100Coarse,
}

impl CifarFormat {
    fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 => 1,
            _ => 2,
        }
    }
    fn num_classes(self) -> usize {
        match self {
            Self::Cifar10 => 10,
            Self::Cifar100Fine => 100,
            Self::Cifar100Coarse => 20,
        }
    }
    fn record_len(self) -> usize {
        self.label_bytes() + PIXELS
    }
}

/// Which split of the official files to read from a CIFAR folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarSplit {
    /// The training files.
    Train,
    /// The test file.
    Test,
}

/// CIFAR images read from the official binary files (all held in memory, 3 KB each).
#[derive(Debug, Clone)]
pub struct CifarBinary {
    pixels: Vec<u8>,
    labels: Vec<usize>,
    classes: Vec<String>,
    sources: Vec<(PathBuf, usize)>,
}

impl CifarBinary {
    /// Reads the split from an extracted `cifar-10-batches-bin` or `cifar-100-binary` folder.
    pub fn open_dir(dir: impl AsRef<Path>, format: CifarFormat, split: CifarSplit) -> Result<Self> {
        let dir = dir.as_ref();
        let names: Vec<String> = match (format, split) {
            (CifarFormat::Cifar10, CifarSplit::Train) => {
                (1..=5).map(|i| format!("data_batch_{i}.bin")).collect()
            }
            (CifarFormat::Cifar10, CifarSplit::Test) => vec!["test_batch.bin".into()],
            (_, CifarSplit::Train) => vec!["train.bin".into()],
            (_, CifarSplit::Test) => vec!["test.bin".into()],
        };
        let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        let mut dataset = Self::open_files(&files, format)?;
        let label_file = match format {
            CifarFormat::Cifar10 => "batches.meta.txt",
            CifarFormat::Cifar100Fine => "fine_label_names.txt",
            CifarFormat::Cifar100Coarse => "coarse_label_names.txt",
        };
        if let Ok(text) = std::fs::read_to_string(dir.join(label_file)) {
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if names.len() == format.num_classes() {
                dataset.classes = names;
            }
        }
        Ok(dataset)
    }

    /// Reads the given binary files, in order.
    pub fn open_files(files: &[PathBuf], format: CifarFormat) -> Result<Self> {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        let mut sources = Vec::new();
        for path in files {
            let bytes = std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let record = format.record_len();
            if bytes.is_empty() || bytes.len() % record != 0 {
                return Err(Error::InvalidDataset {
                    path: path.display().to_string(),
                    reason: format!(
                        "{} bytes is not a whole number of {record}-byte {format:?} records \
                         (truncated, or another format?)",
                        bytes.len()
                    ),
                });
            }
            for (r, rec) in bytes.chunks_exact(record).enumerate() {
                let label = usize::from(match format {
                    CifarFormat::Cifar100Fine => rec[1],
                    _ => rec[0],
                });
                if label >= format.num_classes() {
                    return Err(Error::InvalidDataset {
                        path: path.display().to_string(),
                        reason: format!(
                            "record {r} has label {label}, expected below {}",
                            format.num_classes()
                        ),
                    });
                }
                labels.push(label);
                pixels.extend_from_slice(&rec[format.label_bytes()..]);
                sources.push((path.clone(), r));
            }
        }
        if labels.is_empty() {
            return Err(Error::InvalidDataset {
                path: "CIFAR".into(),
                reason: "no files given".into(),
            });
        }
        let classes = match format {
            CifarFormat::Cifar10 => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            _ => (0..format.num_classes())
                .map(|i| format!("class_{i}"))
                .collect(),
        };
        Ok(Self {
            pixels,
            labels,
            classes,
            sources,
        })
    }
}

impl ImageDataset for CifarBinary {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn image(&self, index: usize) -> Result<Arc<RgbImage>> {
        let planes = &self.pixels[index * PIXELS..(index + 1) * PIXELS];
        let (r, rest) = planes.split_at(1024);
        let (g, b) = rest.split_at(1024);
        let mut raw = Vec::with_capacity(PIXELS);
        for i in 0..1024 {
            raw.extend_from_slice(&[r[i], g[i], b[i]]);
        }
        let image = RgbImage::from_raw(CIFAR_SIDE, CIFAR_SIDE, raw)
            .expect("3072 bytes make a 32x32 RGB image");
        Ok(Arc::new(image))
    }
    fn label(&self, index: usize) -> Option<usize> {
        Some(self.labels[index])
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn source_name(&self, index: usize) -> String {
        let (path, record) = &self.sources[index];
        format!("{} record {record}", path.display())
    }
    fn min_image_size(&self) -> Option<(u32, u32)> {
        Some((CIFAR_SIDE, CIFAR_SIDE))
    }
}
