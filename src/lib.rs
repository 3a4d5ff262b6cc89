#![warn(missing_docs)]
//! # selfsup
//!
//! Self-supervised pretraining of image encoders with joint-embedding (Siamese) architectures,
//! on [burn](https://burn.dev) 0.22. The backend is the [`Device`](burn::tensor::Device)
//! (`Device::flex()` on the CPU, `Device::wgpu(..)`, `Device::cuda(0)`): no code here names a
//! backend type.
//!
//! ## The idea
//! An energy-based model scores how compatible two inputs are (LeCun & Misra, "Self-supervised
//! learning: the dark matter of intelligence", 2021). A joint-embedding architecture encodes two
//! augmented views of an image with twin networks; the [energy](energy::Energy) of the pair is a
//! distance between their embeddings. Training lowers the energy of views of the same image.
//! The danger is collapse (every input mapped to one point, every energy low); each
//! [objective] prevents it differently: BYOL (EMA target + predictor), SimSiam (stop-gradient +
//! predictor), Barlow Twins (cross-correlation to the identity), SwAV (balanced clustering with
//! Sinkhorn-Knopp), VICReg (variance and covariance terms).
//!
//! ## Data flow
//! ```text
//! images (ImageFolder / CifarBinary / InMemoryDataset)
//!   -> decode (image crate, any colour type -> RGB8) -> ViewTransform (crop, flip, jitter,
//!      grayscale, blur, solarise, normalise; seeded per image and view) on worker threads
//!   -> ViewLoader batches, prefetched, in order
//! views [B,3,H,W] x V -> backbone -> projector (-> predictor)   online branch
//!                     -> EMA backbone -> EMA projector            target branch (BYOL)
//!   -> ViewEmbeddings -> Objective -> loss + collapse stats
//!   -> backward -> optimiser (LARS / SGD / AdamW) -> EMA update of the target
//! ```
//!
//! ## Crate map
//! - [`data`]: datasets (image folders, CIFAR binaries, in memory), the hold-out split, and the
//!   parallel prefetching [`ViewLoader`](data::ViewLoader).
//! - [`augment`]: the papers' view augmentations, per-method presets, multi-crop.
//! - [`backbone`]: ResNet-18/34/50 (CIFAR or ImageNet stem), a tiny convnet, the [`Encoder`](backbone::Encoder) trait.
//! - [`head`]: projection / prediction MLPs with per-method presets; [`prototypes`] for SwAV.
//! - [`siamese`]: the [`JointEmbedding`](siamese::JointEmbedding) (online + target branches).
//! - [`objective`]: BYOL, SimSiam, Barlow Twins, SwAV, VICReg; one file each.
//! - [`energy`], [`collapse`]: energies, energy gap, embedding std.
//! - [`optim`]: LARS, warmup + cosine learning rate, BYOL's EMA schedule; [`ema`]: the EMA update.
//! - [`step`]: one training step; [`train`]: the pretraining loop (schedules, monitors,
//!   metrics, hooks, atomic checkpoints, exact resume).
//! - [`eval`]: kNN, linear probe, fine-tuning, effective rank; [`export`]: safetensors with
//!   torchvision names, burnpack; [`device`]: choosing the CPU, wgpu or CUDA.
//! - [`error`]: the error type; bad input is an [`Error`], never a panic.
//! - [`allocator`]: keeping freed tensor memory in the process (glibc), called by the
//!   pretraining loop on the CPU.

pub mod augment;
pub mod backbone;
pub mod batch_norm;
mod check;
pub mod collapse;
pub mod conv;
pub mod data;
pub mod device;
pub mod energy;
pub mod error;
pub mod eval;
pub mod export;
#[cfg(feature = "flex")]
pub mod kernels;
pub mod method;
pub mod model;
pub mod optim;
mod seeded;
pub mod step;
pub mod train;

pub use error::{Error, Result};

/// The types most programs import.
pub mod prelude {
    pub use crate::augment::{Scale, ViewRecipe, ViewTransform};
    pub use crate::backbone::{
        Backbone, BackboneConfig, ConvNetConfig, Encoder, ResNetConfig, ResNetDepth, Stem,
    };
    pub use crate::collapse::{CollapseStats, CollapseValues};
    pub use crate::data::{
        CifarBinary, CifarFormat, CifarSplit, ImageDataset, ImageFolder, InMemoryDataset,
        LoaderConfig, OnCorrupt, ViewBatch, ViewLoader,
    };
    pub use crate::energy::Energy;
    pub use crate::error::{Error, Result};
    pub use crate::method::{
        AnyMethod, AnyMethodConfig, Method, MethodConfig, Preset, ViewEmbeddings,
    };
    pub use crate::model::{
        HeadBlockConfig, HeadNorm, JointEmbedding, JointEmbeddingConfig, ProjectionHeadConfig,
    };
    pub use crate::optim::{EmaSchedule, LarsConfig, OptimizerConfig, WarmupCosine};
    pub use crate::step::{SelfSupervised, StepReport, train_step};
    pub use crate::train::{PretrainConfig, pretrain};
    pub use burn::module::Module;
    pub use burn::tensor::{Device, Tensor};
}
