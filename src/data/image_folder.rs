//! Images in folders: torchvision's `ImageFolder` layout (`root/<class>/**/<image>`, classes
//! sorted by name), or a flat folder of unlabelled images.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use image::RgbImage;

use super::dataset::{ImageDataset, read_image};
use crate::error::{Error, Result};

/// File extensions read as images (torchvision's `IMG_EXTENSIONS` that the decoder supports).
pub const IMAGE_EXTENSIONS: [&str; 10] = [
    "jpg", "jpeg", "png", "bmp", "gif", "ppm", "pgm", "tif", "tiff", "webp",
];

/// What to do with a file that cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCorrupt {
    /// Stop with an error naming the file (the default).
    #[default]
    Fail,
    /// Leave the file out, count it, and print one warning.
    Skip,
}

/// The outcome of [`ImageFolder::verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Images that decoded.
    pub readable: usize,
    /// Files left out, with the decoder's reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Smallest width and height seen.
    pub min_size: Option<(u32, u32)>,
}

/// A dataset read from image files.
#[derive(Debug)]
pub struct ImageFolder {
    root: PathBuf,
    files: Vec<PathBuf>,
    labels: Option<Vec<usize>>,
    classes: Vec<String>,
    cache: Option<Vec<OnceLock<Arc<RgbImage>>>>,
    min_size: Option<(u32, u32)>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Sorted entries of a folder, without hidden ones.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if !is_hidden(&path) {
            entries.push(path);
        }
    }
    entries.sort();
    Ok(entries)
}

/// Every image file under `dir`, recursively, in sorted order.
fn image_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            image_files(&path, out)?;
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

impl ImageFolder {
    /// Opens `root`. If it has sub-folders, each is a class (sorted by name, labels `0..`) and
    /// its images are found recursively, as torchvision's `ImageFolder`; otherwise the images
    /// directly in `root` form an unlabelled dataset. Nothing is decoded yet.
    ///
    /// Errors: a missing or unreadable root, a folder without images, a class folder without
    /// images.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(Error::InvalidDataset {
                path: root.display().to_string(),
                reason: "is not a folder (expected root/<class>/<image> or a folder of images)"
                    .into(),
            });
        }
        let class_dirs: Vec<PathBuf> = sorted_entries(&root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if class_dirs.is_empty() {
            return Self::unlabeled(root);
        }
        let mut files = Vec::new();
        let mut labels = Vec::new();
        let mut classes = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let before = files.len();
            image_files(dir, &mut files)?;
            if files.len() == before {
                return Err(Error::InvalidDataset {
                    path: root.display().to_string(),
                    reason: format!(
                        "class folder `{name}` contains no images (looked for {})",
                        IMAGE_EXTENSIONS.join(", ")
                    ),
                });
            }
            labels.resize(files.len(), label);
            classes.push(name);
        }
        Ok(Self {
            root,
            files,
            labels: Some(labels),
            classes,
            cache: None,
            min_size: None,
        })
    }

    /// Opens every image under `root`, recursively, without labels.
    pub fn unlabeled(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut files = Vec::new();
        image_files(&root, &mut files)?;
        if files.is_empty() {
            return Err(Error::InvalidDataset {
                path: root.display().to_string(),
                reason: format!(
                    "contains no images (looked for {})",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            });
        }
        Ok(Self {
            root,
            files,
            labels: None,
            classes: Vec::new(),
            cache: None,
            min_size: None,
        })
    }

    /// Keeps every decoded image in memory after its first use (about `3 * w * h` bytes
    /// each), so later epochs skip decoding.
    pub fn with_cache(mut self, cache: bool) -> Self {
        self.cache = cache.then(|| (0..self.files.len()).map(|_| OnceLock::new()).collect());
        self
    }

    /// The dataset's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image files, in index order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Decodes every image once on `threads` threads (0: all cores) before training, so that
    /// a corrupt file is found now rather than mid-run, and image sizes are known. With
    /// [`OnCorrupt::Skip`], unreadable files are removed from the dataset, counted in the
    /// report and in one warning on stderr; with [`OnCorrupt::Fail`] the first one is an error
    /// naming the file. Decoded images fill the cache if it is enabled.
    pub fn verify(&mut self, on_corrupt: OnCorrupt, threads: usize) -> Result<VerifyReport> {
        let threads = super::loader::resolve_threads(threads).min(self.files.len());
        let n = self.files.len();
        let results: Vec<std::result::Result<(u32, u32), String>> = {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let slots: Vec<OnceLock<std::result::Result<(u32, u32), String>>> =
                (0..n).map(|_| OnceLock::new()).collect();
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= n {
                                break;
                            }
                            let result = match read_image(&self.files[i]) {
                                Ok(image) => {
                                    let size = (image.width(), image.height());
                                    if let Some(cache) = &self.cache {
                                        let _ = cache[i].set(Arc::new(image));
                                    }
                                    Ok(size)
                                }
                                Err(e) => Err(e.to_string()),
                            };
                            let _ = slots[i].set(result);
                        }
                    });
                }
            });
            slots
                .into_iter()
                .map(|s| s.into_inner().unwrap_or_else(|| Err("not visited".into())))
                .collect()
        };
        let mut report = VerifyReport::default();
        let mut keep = vec![true; n];
        for (i, result) in results.iter().enumerate() {
            match result {
                Ok((w, h)) => {
                    report.readable += 1;
                    report.min_size = Some(
                        report
                            .min_size
                            .map_or((*w, *h), |(mw, mh)| (mw.min(*w), mh.min(*h))),
                    );
                }
                Err(reason) => {
                    if on_corrupt == OnCorrupt::Fail {
                        return Err(Error::Decode {
                            path: self.files[i].display().to_string(),
                            reason: reason.clone(),
                        });
                    }
                    keep[i] = false;
                    report.skipped.push((self.files[i].clone(), reason.clone()));
                }
            }
        }
        if !report.skipped.is_empty() {
            crate::distributed::eprint_line(&format!(
                "warning: skipped {} unreadable image(s) of {} under {} (first: {})",
                report.skipped.len(),
                n,
                self.root.display(),
                report.skipped[0].1
            ));
            self.retain(&keep)?;
        }
        self.min_size = report.min_size;
        Ok(report)
    }

    /// Keeps the files whose flag is set, and checks that no class became empty.
    fn retain(&mut self, keep: &[bool]) -> Result<()> {
        let mut it = keep.iter();
        self.files.retain(|_| *it.next().unwrap_or(&true));
        if let Some(labels) = &mut self.labels {
            let mut it = keep.iter();
            labels.retain(|_| *it.next().unwrap_or(&true));
            for (c, name) in self.classes.iter().enumerate() {
                if !labels.contains(&c) {
                    return Err(Error::InvalidDataset {
                        path: self.root.display().to_string(),
                        reason: format!("class folder `{name}` has no readable images"),
                    });
                }
            }
        }
        if let Some(cache) = &mut self.cache {
            let mut it = keep.iter();
            cache.retain(|_| *it.next().unwrap_or(&true));
        }
        if self.files.is_empty() {
            return Err(Error::InvalidDataset {
                path: self.root.display().to_string(),
                reason: "no readable images".into(),
            });
        }
        Ok(())
    }
}

impl ImageDataset for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn image(&self, index: usize) -> Result<Arc<RgbImage>> {
        match &self.cache {
            Some(cache) => {
                if let Some(image) = cache[index].get() {
                    return Ok(image.clone());
                }
                let image = Arc::new(read_image(&self.files[index])?);
                Ok(cache[index].get_or_init(|| image).clone())
            }
            None => Ok(Arc::new(read_image(&self.files[index])?)),
        }
    }
    fn label(&self, index: usize) -> Option<usize> {
        self.labels.as_ref().map(|l| l[index])
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn source_name(&self, index: usize) -> String {
        self.files[index].display().to_string()
    }
    fn min_image_size(&self) -> Option<(u32, u32)> {
        self.min_size
    }
}
