//! Self-supervised methods: one file per method, each holding everything that is that method.
//!
//! A method is two types, written in its own file:
//! - a configuration implementing [`MethodConfig`] (serde): its hyper-parameters, its paper
//!   heads, its [`Recipe`] per [`Preset`] (views, optimiser, learning rate, target momentum),
//!   and [`init`](MethodConfig::init), which builds
//! - a burn module implementing [`Method`]: what it needs from the architecture
//!   ([`Requirements`]: predictor, momentum target, which views the target sees), its loss, its
//!   per-step state as non-trainable tensors of the module (MoCo's queue, DINO's centre, SwAV's
//!   queue, DeepCluster's memory bank), so checkpoints save and restore it with the weights,
//!   and what happens before and after each step and at the start of each epoch.
//!
//! On several ranks ([`crate::distributed`]) a method's [`Requirements::global_batch`] says
//! whether its loss needs the whole global batch ([`GlobalBatch::Gathered`]: Barlow Twins,
//! VICReg, SimCLR, SwAV, MoCo, DeepCluster-v2, LeJEPA, and any method that does not say) or
//! is a mean over images ([`GlobalBatch::Local`]: BYOL, SimSiam, MAE, I-JEPA, and DINO, whose
//! centre averages the ranks' batch means).
//!
//! The training loop ([`crate::train`]) is generic over [`MethodConfig`]: a method written
//! outside this crate trains through [`crate::train::pretrain()`] like the built-in ones
//! (`tests/custom_method.rs` does it). The built-in methods are the arms of [`AnyMethodConfig`]
//! and [`AnyMethod`], generated from one list in `builtin.rs`: adding a method is its file plus
//! one line there.
//!
//! | method | file | needs |
//! |---|---|---|
//! | BYOL | [`byol`] | predictor, momentum target |
//! | SimSiam | [`simsiam`] | predictor (stop-gradient target) |
//! | Barlow Twins | [`barlow_twins`] | projections |
//! | SwAV | [`swav`] | projections, prototypes (owned by the method), optional queue |
//! | VICReg | [`vicreg`] | projections |
//! | SimCLR | [`simclr`] | projections (negatives: the rest of the batch) |
//! | MoCo v2 | [`moco`] | momentum target, queue of keys |
//! | DINO | [`dino`] | momentum teacher on the global crops, centre |
//! | DeepCluster-v2 | [`deepcluster`] | memory bank, k-means prototypes, an initial pass |
//! | I-JEPA | [`ijepa`] | a ViT's context tokens, the momentum target's tokens, multi-block masks, its own predictor |
//! | MAE | [`mae`] | a ViT's tokens of the visible patches, random masks, its own decoder |
//! | LeJEPA | [`lejepa`] | projections of every crop ([SIGReg](sigreg) on random projections) |

pub mod barlow_twins;
mod builtin;
pub mod byol;
pub mod deepcluster;
pub mod dino;
pub mod gram;
pub mod ijepa;
pub mod kmeans;
pub mod lejepa;
pub mod mae;
pub mod moco;
mod pairs;
pub mod queue;
pub mod sigreg;
pub mod simclr;
pub mod simsiam;
pub mod sinkhorn;
pub mod swav;
pub mod vicreg;

use std::collections::BTreeMap;

use burn::module::{Module, ParamId};
use burn::tensor::{Device, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use barlow_twins::{BarlowTwins, BarlowTwinsConfig, barlow_twins_loss};
pub use builtin::{AnyMethod, AnyMethodConfig};
pub use byol::{Byol, ByolConfig, byol_loss};
pub use deepcluster::{DeepCluster, DeepClusterConfig, deepcluster_loss};
pub use dino::{Dino, DinoConfig, dino_loss};
pub use ijepa::{Ijepa, IjepaConfig, ijepa_loss};
pub use lejepa::{Lejepa, LejepaConfig, lejepa_loss};
pub use mae::{Mae, MaeConfig, mae_loss};
pub use moco::{Moco, MocoConfig, info_nce};
pub(crate) use pairs::{mean_over_view_pairs, require_views, sum_over_ordered_pairs};
pub use queue::EmbeddingQueue;
pub use sigreg::Sigreg;
pub use simclr::{SimClr, SimClrConfig, ntxent_loss};
pub use simsiam::{SimSiam, SimSiamConfig, simsiam_loss};
pub use sinkhorn::sinkhorn;
pub use swav::{Swav, SwavConfig, swav_loss};
pub use vicreg::{Vicreg, VicregConfig};

use crate::augment::{Scale, ViewTransform};
use crate::backbone::Stem;
use crate::error::{Error, Result};
use crate::model::{ProjectionHead, ProjectionHeadConfig};
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// The scale a recipe is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// 32 x 32 images (CIFAR-10/100): the CIFAR stem, 32-pixel views without blur, the
    /// recipes of lightly's and solo-learn's CIFAR benchmarks.
    #[default]
    Cifar,
    /// Photographs (ImageNet): the ImageNet stem, 224-pixel views with blur, the papers'
    /// ImageNet recipes.
    Imagenet,
}

impl Preset {
    /// Both presets.
    pub const ALL: [Preset; 2] = [Preset::Cifar, Preset::Imagenet];

    /// The preset's name (`cifar`, `imagenet`).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Cifar => "cifar",
            Preset::Imagenet => "imagenet",
        }
    }

    /// The preset called `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::invalid_config("preset", name, "cifar or imagenet"))
    }

    /// The view scale of the preset's augmentations.
    pub fn scale(self) -> Scale {
        match self {
            Preset::Cifar => Scale::Cifar,
            Preset::Imagenet => Scale::Full(224),
        }
    }

    /// The ResNet stem for the preset's image size.
    pub fn stem(self) -> Stem {
        match self {
            Preset::Cifar => Stem::Cifar,
            Preset::Imagenet => Stem::ImageNet,
        }
    }
}

/// Which views the momentum target encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetViews {
    /// Every view (BYOL, MoCo).
    #[default]
    All,
    /// The global crops only (DINO's teacher).
    Global,
}

/// The tokens a masked-image method needs from a vision transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenInput {
    /// None: the method compares pooled embeddings of views.
    #[default]
    None,
    /// The online encoder's tokens of the first view's kept patches only (MAE).
    Kept,
    /// The online encoder's tokens of the context patches and the momentum target's tokens of
    /// every patch (I-JEPA).
    ContextAndTarget,
}

/// How a method's loss uses the batch when training on several ranks
/// ([`crate::distributed`]): what makes `N` ranks with `B` images each train exactly as one
/// process with `N B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GlobalBatch {
    /// The loss compares embeddings across the batch (negatives, cross-correlation, variance
    /// and covariance, Sinkhorn, SIGReg, a queue or memory bank filled from the batch): the
    /// projections, predictions and targets of every rank are gathered (the local rows keep
    /// their gradient) and every rank computes the loss, and the state update, of the whole
    /// global batch. The safe choice, and the default.
    #[default]
    Gathered,
    /// The loss is a mean over images (BYOL, SimSiam, MAE, I-JEPA; DINO, whose centre alone
    /// needs the global batch and averages it over ranks itself): each rank computes it on its
    /// own images, and averaging over ranks gives the global batch's.
    Local,
}

/// What a method needs from the joint-embedding architecture and the training loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requirements {
    /// A predictor head on the online branch.
    pub predictor: bool,
    /// An EMA copy of the online backbone and projector (BYOL's target, MoCo's key encoder,
    /// DINO's teacher).
    pub momentum_target: bool,
    /// Which views the momentum target encodes.
    pub target_views: TargetViews,
    /// One pass over the data before training, through [`Method::after_step`] without an
    /// optimiser step (DeepCluster-v2 fills its memory bank so the first epoch has clusters).
    pub initial_pass: bool,
    /// Tokens and masks instead of (or beside) pooled embeddings (MAE, I-JEPA).
    pub tokens: TokenInput,
    /// What the loss needs of the batch on several ranks.
    pub global_batch: GlobalBatch,
}

/// The heads of a method: projector, and predictor when the method has one.
#[derive(Debug, Clone)]
pub struct Heads {
    /// Backbone features to embeddings.
    pub projector: ProjectionHeadConfig,
    /// Embeddings to predictions (BYOL, SimSiam).
    pub predictor: Option<ProjectionHeadConfig>,
}

/// What a recipe is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipeContext {
    /// The scale.
    pub preset: Preset,
    /// Local crops for multi-crop methods (`None`: the method's default for the preset).
    pub local_crops: Option<usize>,
}

/// The parts of a run's configuration a method decides, for one preset.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// The views drawn from each image.
    pub views: ViewTransform,
    /// The optimiser.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub lr: LrConfig,
    /// The momentum of the target network (ignored without one).
    pub ema: EmaConfig,
}

/// What [`MethodConfig::init`] builds the method for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSetup {
    /// Dimension of the projector's output (the features' without a projector).
    pub embedding_dim: usize,
    /// Dimension of the backbone's features (tokens' width for a ViT).
    pub feature_dim: usize,
    /// Views per image.
    pub num_views: usize,
    /// Leading global views.
    pub num_global: usize,
    /// Images in the training set (DeepCluster's memory bank has a row per image).
    pub dataset_len: usize,
    /// The run's seed (LeJEPA draws each step's random projections from it).
    pub seed: u64,
}

/// Where training stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Global step (0-based): optimiser steps taken so far.
    pub step: usize,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Epochs of the run.
    pub epochs: usize,
}

impl Progress {
    /// Steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.steps_per_epoch * self.epochs
    }
}

/// The scheduled values of one step. The loop fills them from its schedules and the method's
/// [`Method::schedule`]; a [`crate::train::ScheduleHook`] may change any of them before the
/// step uses them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ScheduleValues {
    /// Learning rate.
    pub lr: f64,
    /// Weight decay of the decayed parameter groups.
    pub weight_decay: f64,
    /// Momentum of the EMA target update after the step (none without a target).
    pub ema_momentum: Option<f64>,
    /// The method's own scheduled values, by name (DINO: `teacher_temperature`).
    pub method: BTreeMap<String, f64>,
}

impl ScheduleValues {
    /// The values of a step at `progress`: `lr`, `weight_decay` and `ema_momentum` from the
    /// run's schedules, and `method`'s own ([`Method::schedule`]).
    pub fn at<M: Method>(
        progress: &Progress,
        method: &M,
        lr: f64,
        weight_decay: f64,
        ema_momentum: Option<f64>,
    ) -> Self {
        Self {
            lr,
            weight_decay,
            ema_momentum,
            method: method
                .schedule(progress)
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
        }
    }

    /// The method's value `name`, or an error naming it.
    pub fn method_value(&self, name: &str) -> Result<f64> {
        self.method
            .get(name)
            .copied()
            .ok_or_else(|| Error::MissingInput {
                context: "schedule values".into(),
                what: format!("the method's value `{name}`"),
            })
    }
}

/// What a method sees of the step it takes part in.
#[derive(Debug, Clone, Copy)]
pub struct StepContext<'a> {
    /// Where training stands.
    pub progress: Progress,
    /// This step's scheduled values.
    pub values: &'a ScheduleValues,
    /// Dataset indices of the batch's images, in batch order.
    pub indices: &'a [usize],
}

/// The embeddings of all views of one batch, views in the same order in every list, global
/// (high-resolution) views first.
#[derive(Debug, Clone, Default)]
pub struct ViewEmbeddings {
    /// Online projector outputs, one `[B, D]` per view.
    pub projections: Vec<Tensor<2>>,
    /// Predictor outputs, one per view (empty without a predictor).
    pub predictions: Vec<Tensor<2>>,
    /// Momentum-target projections, detached: one per view, or one per global view when the
    /// method asks for [`TargetViews::Global`] (empty without a target).
    pub targets: Vec<Tensor<2>>,
    /// How many views are global crops.
    pub num_global: usize,
    /// Masked-image methods: the online encoder's tokens of the kept (MAE) or context (I-JEPA)
    /// patches of the first view, `[B, 1 + K, D]`, class token first.
    pub tokens: Option<Tensor<3>>,
    /// I-JEPA: the momentum target's tokens of every patch, `[B, 1 + N, D]`, detached.
    pub target_tokens: Option<Tensor<3>>,
    /// Masked-image methods: the first view's images (MAE's pixel targets).
    pub images: Option<Tensor<4>>,
    /// Masked-image methods: the batch's masks.
    pub masks: Option<crate::augment::Masks>,
}

/// The configuration side of a method: hyper-parameters (serde), heads, recipes, and the
/// construction of its [`Method`] module. See the [module docs](self).
pub trait MethodConfig:
    Clone + std::fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The module this configuration builds.
    type Method: Method;

    /// The method's name, as papers write it (`"DINO"`).
    fn name(&self) -> &'static str;

    /// Checks every hyper-parameter's range, naming the field.
    fn validate(&self) -> Result<()>;

    /// The paper's heads for a backbone of `feature_dim` features, every width scaled by
    /// `width` (1.0 = paper).
    fn heads(&self, feature_dim: usize, width: f64) -> Heads;

    /// The method's views, optimiser and schedules for a preset.
    fn recipe(&self, context: &RecipeContext) -> Recipe;

    /// Builds the method's module (loss parameters and state) on `device`.
    fn init(&self, setup: &MethodSetup, device: &Device) -> Result<Self::Method>;

    /// The side of the patches the method works on (MAE's pixel targets, I-JEPA's masks),
    /// which must be the ViT's; `None` for methods that see only pooled features.
    fn patch_size(&self) -> Option<usize> {
        None
    }
}

/// The module side of a method: its loss and its state. See the [module docs](self).
pub trait Method: Module + burn::module::ModuleDisplay + Sized {
    /// The method's name.
    fn name(&self) -> &'static str;

    /// What the method needs from the architecture.
    fn requirements(&self) -> Requirements;

    /// The method's own scheduled values at `progress` (DINO's teacher temperature), added to
    /// [`ScheduleValues::method`] before hooks see them.
    fn schedule(&self, progress: &Progress) -> Vec<(&'static str, f64)> {
        let _ = progress;
        Vec::new()
    }

    /// Prepares the method's parameters for the next step (SwAV normalises its prototypes).
    fn before_step(self, context: &StepContext) -> Result<Self> {
        let _ = context;
        Ok(self)
    }

    /// The loss of one batch, part of the autodiff graph.
    fn loss(&self, views: &ViewEmbeddings, context: &StepContext) -> Result<Tensor<1>>;

    /// Parameters of the online projector whose gradients are dropped this step, so the
    /// optimiser leaves them alone (DINO freezes its last layer during the first epoch).
    fn frozen_parameters(&self, projector: &ProjectionHead, context: &StepContext) -> Vec<ParamId> {
        let _ = (projector, context);
        Vec::new()
    }

    /// Updates the method's state after the optimiser step from the batch's embeddings
    /// (MoCo enqueues keys, DINO moves its centre, DeepCluster writes its memory bank).
    fn after_step(self, views: &ViewEmbeddings, context: &StepContext) -> Result<Self> {
        let _ = (views, context);
        Ok(self)
    }

    /// Runs at the start of every epoch, before its first step (DeepCluster clusters its
    /// memory bank). `seed` is the run's seed.
    fn start_epoch(self, epoch: usize, seed: u64) -> Result<Self> {
        let _ = (epoch, seed);
        Ok(self)
    }
}

/// Scales a paper dimension by `width`, at least 1.
pub(crate) fn scaled(dim: usize, width: f64) -> usize {
    ((dim as f64 * width).round() as usize).max(1)
}

/// A non-trainable tensor of a method's state (a PyTorch buffer): stored in the module so
/// checkpoints save it, never given a gradient or an optimiser update.
pub fn buffer<const D: usize>(value: Tensor<D>) -> burn::module::Param<Tensor<D>> {
    burn::module::Param::from_tensor(value).set_require_grad(false)
}

/// Replaces the value of a buffer made by [`buffer`], keeping its id.
pub fn set_buffer<const D: usize>(
    param: burn::module::Param<Tensor<D>>,
    value: Tensor<D>,
) -> burn::module::Param<Tensor<D>> {
    let value = value.detach();
    param.map(|_| value).set_require_grad(false)
}

/// Checks a method's scalar hyper-parameters: each `(field, value)` must be finite and > 0.
pub(crate) fn positive(fields: &[(&str, f64)]) -> Result<()> {
    for &(field, v) in fields {
        crate::check::ensure(field, v, v > 0.0, "a finite value > 0")?;
    }
    Ok(())
}

/// Checks each `(field, value)` is finite and >= 0.
pub(crate) fn non_negative(fields: &[(&str, f64)]) -> Result<()> {
    for &(field, v) in fields {
        crate::check::ensure(field, v, v >= 0.0, "a finite value >= 0")?;
    }
    Ok(())
}

/// The largest width a head, queue or prototype count may have: larger ones are configuration
/// mistakes that would only fail as an allocation of many gigabytes.
pub(crate) const MAX_DIM: usize = 1 << 20;

/// Checks each `(field, count)` is in `1..=MAX_DIM`.
pub(crate) fn at_least_one(fields: &[(&str, usize)]) -> Result<()> {
    for &(field, n) in fields {
        if !(1..=MAX_DIM).contains(&n) {
            return Err(Error::invalid_config(field, n, format!("in 1..={MAX_DIM}")));
        }
    }
    Ok(())
}

/// Checks each `(field, count)` is at most `max` (iteration counts).
pub(crate) fn at_most(fields: &[(&str, usize, usize)]) -> Result<()> {
    for &(field, n, max) in fields {
        if n > max {
            return Err(Error::invalid_config(field, n, format!("at most {max}")));
        }
    }
    Ok(())
}
