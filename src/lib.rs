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
//! [method] prevents it differently: contrastively (SimCLR, MoCo v2: unrelated images pushed
//! apart), by architecture (BYOL: momentum target + predictor; SimSiam: stop-gradient +
//! predictor; DINO: momentum teacher with centring and sharpening), by regularisation (Barlow
//! Twins: cross-correlation to the identity; VICReg: variance and covariance terms) or by
//! clustering (SwAV: balanced online clustering; DeepCluster-v2: k-means on a memory bank).
//! LeJEPA needs none of these heuristics: its SIGReg term drives the embeddings towards an
//! isotropic Gaussian, provably the best-behaved distribution for downstream tasks.
//!
//! ## Data flow
//! ```text
//! images (ImageFolder / CifarBinary / InMemoryDataset / .pack)
//!   -> decode (image crate, any colour type -> RGB8) -> ViewTransform (crop, flip, jitter,
//!      grayscale, blur, solarise, normalise; seeded per image and view) on worker threads
//!   -> ViewLoader batches, prefetched, in order
//! views [B,3,H,W] x V -> backbone -> projector (-> predictor)      online branch
//!                     -> EMA backbone -> EMA projector               momentum target
//!   -> ViewEmbeddings -> Method::loss (+ its state: queue, centre, memory bank) -> loss
//!   -> backward -> optimiser (SGD / LARS / AdamW over parameter groups) -> EMA update
//!   -> Method::after_step (enqueue keys, move the centre, write the bank)
//! ```
//!
//! ## Crate map
//! - [`data`]: datasets (image folders, CIFAR binaries, in memory, `.pack`), the hold-out
//!   split, and the parallel prefetching [`ViewLoader`](data::ViewLoader).
//! - [`augment`]: the papers' view augmentations, per-method presets, multi-crop.
//! - [`backbone`]: ResNet-18/34/50 (CIFAR or ImageNet stem), Vision Transformers
//!   (ViT-Tiny/Small/Base, torchvision's layout), a tiny convnet, the
//!   [`Encoder`](backbone::Encoder) trait (pooled features, and tokens for ViTs).
//! - [`method`]: one file per method (BYOL, SimSiam, Barlow Twins, SwAV, VICReg, SimCLR,
//!   MoCo v2, DINO, DeepCluster-v2, LeJEPA with SIGReg): its configuration, heads, recipes per
//!   [`Preset`](method::Preset), loss and state, behind the [`Method`](method::Method) and
//!   [`MethodConfig`](method::MethodConfig) traits.
//! - [`model`]: the [`JointEmbedding`](model::JointEmbedding) (online branch and momentum
//!   target), projection heads with each paper's presets, the heads' batch norm, the EMA
//!   update, prototypes.
//! - [`energy`], [`collapse`]: energies, energy gap, embedding std.
//! - [`optim`]: SGD, LARS and AdamW over parameter groups, scheduled weight decay, gradient
//!   clipping, warmup + cosine learning rate, the EMA momentum schedule.
//! - [`step`]: one training step; [`train`]: the pretraining loop (presets, schedules and
//!   their hook, monitors, metrics, atomic checkpoints, exact resume).
//! - [`eval`]: kNN, linear probe, fine-tuning, effective rank; [`export`]: safetensors with
//!   torchvision names, burnpack; [`import`]: torchvision-named weights (safetensors) into a
//!   backbone; [`device`]: choosing the CPU, wgpu or CUDA.
//! - [`conv`], [`batch_norm`], [`transformer_ops`]: convolution, batch norm, and the
//!   transformer blocks' GELU, layer norm and attention, which take the fast CPU kernels on
//!   `Device::flex()` and burn's operations elsewhere; [`kernels`]: those kernels (feature
//!   `flex`), the fused LARS step, the allocator setting and the run-time choice of vector
//!   instructions (also used by the augmentations), with every `unsafe` block of the crate.
//! - [`report`]: the training curves, a retrieval sheet and a PCA scatter as PNG files.
//! - [`error`]: the error type; bad input is an [`Error`], never a panic.

pub mod augment;
pub mod backbone;
pub mod batch_norm;
mod check;
pub mod collapse;
pub mod conv;
pub mod data;
pub mod device;
pub mod distributed;
pub mod energy;
pub mod error;
pub mod eval;
pub mod export;
pub mod import;
pub mod kernels;
pub mod method;
pub mod model;
pub mod optim;
pub mod report;
mod seeded;
pub mod step;
pub mod train;
pub mod transformer_ops;

pub use error::{Error, Result};

/// The types most programs import.
pub mod prelude {
    pub use crate::augment::{Scale, ViewRecipe, ViewTransform};
    pub use crate::backbone::{
        Backbone, BackboneConfig, ConvNetConfig, Encoder, ResNetConfig, ResNetDepth, Stem,
        VitConfig,
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
