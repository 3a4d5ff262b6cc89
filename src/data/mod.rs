//! Datasets and the loader: image folders (torchvision's `ImageFolder` layout), the CIFAR-10 /
//! CIFAR-100 binary formats, in-memory images, subsets and the hold-out split, and a parallel,
//! prefetching, seeded [`ViewLoader`] that turns them into batches of augmented views.

pub mod cifar;
pub mod dataset;
pub mod image_folder;
pub mod in_memory;
pub mod loader;
pub mod open;
pub mod packed;
pub mod subset;

pub use cifar::{CifarBinary, CifarFormat, CifarSplit};
pub use dataset::{ImageDataset, check_same_classes, decode_image, read_image};
pub use image_folder::{ImageFolder, OnCorrupt, VerifyReport};
pub use in_memory::InMemoryDataset;
pub use loader::{Batches, HostBatch, LoaderConfig, ViewBatch, ViewLoader};
pub use open::open_dataset;
pub use packed::PackedImages;
pub use subset::{Subset, holdout_last_per_class};
