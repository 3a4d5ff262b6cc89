//! Everything a pretraining run is configured by; serialisable (TOML / JSON) so the CLI reads
//! it from a file and a checkpoint carries it.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::augment::ViewTransform;
use crate::backbone::{BackboneConfig, ConvNetConfig, ResNetConfig, Stem};
use crate::check::ensure;
use crate::data::LoaderConfig;
use crate::distributed::DistributedConfig;
use crate::error::{Error, Result};
use crate::eval::KnnConfig;
use crate::method::{AnyMethodConfig, MethodConfig, Preset, RecipeContext};
use crate::model::BackboneBranch;
pub use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// Collapse monitoring during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Compute the effective rank of the backbone features every this many steps (0: never).
    pub every_steps: usize,
    /// Warn when the std of the normalised embeddings falls below this times `1/sqrt(d)`
    /// (the value of well-spread embeddings).
    pub min_relative_std: f64,
    /// Warn when the effective rank falls below this.
    pub min_effective_rank: f64,
    /// Warn when the energy gap (unrelated minus positive pairs, cosine energy) falls below
    /// this: positives no longer closer than unrelated images.
    pub min_energy_gap: f64,
    /// Stop the run (with an error) instead of warning.
    pub stop_on_collapse: bool,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            every_steps: 50,
            min_relative_std: 0.1,
            min_effective_rank: 2.0,
            min_energy_gap: 0.01,
            stop_on_collapse: false,
        }
    }
}

/// A complete pretraining run of a method configured by `C` (any [`MethodConfig`]; the
/// built-in methods by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(serialize = "C: Serialize", deserialize = "C: DeserializeOwned")
)]
pub struct PretrainConfig<C = AnyMethodConfig> {
    /// The method and its hyper-parameters.
    pub method: C,
    /// The scale the recipe was made for (what `--method` re-applies the method's defaults
    /// for).
    pub preset: Preset,
    /// The encoder.
    pub backbone: BackboneConfig,
    /// Scale of the papers' projector / predictor sizes (1.0 = paper).
    pub head_width: f64,
    /// The views drawn from each image.
    pub views: ViewTransform,
    /// Batching, shuffling, seed, workers.
    pub loader: LoaderConfig,
    /// Passes over the dataset.
    pub epochs: usize,
    /// The optimiser.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub lr: LrConfig,
    /// The momentum of the target network (methods with one).
    pub ema: EmaConfig,
    /// Collapse monitoring.
    pub monitor: MonitorConfig,
    /// kNN settings, used when evaluation data is given.
    pub knn: KnnConfig,
    /// Evaluate kNN every this many epochs when evaluation data is given (0: only at the end).
    pub knn_every_epochs: usize,
    /// The backbone the kNN monitor evaluates: the online one (default), or the momentum
    /// target's, which the I-JEPA and DINO papers evaluate; written only when it is the target.
    #[serde(default, skip_serializing_if = "BackboneBranch::is_online")]
    pub eval_encoder: BackboneBranch,
    /// Write a checkpoint every this many epochs (0: only at the end).
    pub checkpoint_every_epochs: usize,
    /// Folder for `checkpoint.ckpt` and `metrics.jsonl`; none keeps everything in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<PathBuf>,
    /// Show a progress bar (without one, a line per epoch is printed).
    pub progress: bool,
    /// Data-parallel settings, used on more than one rank ([`crate::distributed`]); written
    /// only when they differ from the defaults.
    #[serde(default, skip_serializing_if = "DistributedConfig::is_default")]
    pub distributed: DistributedConfig,
}

impl<C: MethodConfig> PretrainConfig<C> {
    /// The method's own recipe for `preset` (views, optimiser, learning rate, target
    /// momentum) on `backbone`, for `epochs` epochs, with the default loader (batch 256, seed
    /// 0), monitors and kNN settings.
    pub fn recipe(method: C, backbone: BackboneConfig, preset: Preset, epochs: usize) -> Self {
        let recipe = method.recipe(&RecipeContext {
            preset,
            local_crops: None,
        });
        Self {
            method,
            preset,
            backbone,
            head_width: 1.0,
            views: recipe.views,
            loader: LoaderConfig::default(),
            epochs,
            optimizer: recipe.optimizer,
            lr: recipe.lr,
            ema: recipe.ema,
            monitor: MonitorConfig::default(),
            knn: KnnConfig::default(),
            knn_every_epochs: 1,
            eval_encoder: BackboneBranch::Online,
            checkpoint_every_epochs: 1,
            output_dir: None,
            progress: true,
            distributed: DistributedConfig::default(),
        }
    }

    /// [`recipe`](Self::recipe) for 32 x 32 images ([`Preset::Cifar`]).
    pub fn cifar(method: C, backbone: BackboneConfig, epochs: usize) -> Self {
        Self::recipe(method, backbone, Preset::Cifar, epochs)
    }

    /// [`recipe`](Self::recipe) for photographs ([`Preset::Imagenet`]).
    pub fn imagenet(method: C, backbone: BackboneConfig, epochs: usize) -> Self {
        Self::recipe(method, backbone, Preset::Imagenet, epochs)
    }

    /// Replaces the method and everything it owns (views, optimiser, learning rate, target
    /// momentum) with `method`'s recipe for this configuration's preset, `local_crops` local
    /// crops for multi-crop methods (`None`: the method's default). The rest (backbone,
    /// loader, epochs, monitors, output) stays.
    pub fn with_method(self, method: C, local_crops: Option<usize>) -> Self {
        let recipe = method.recipe(&RecipeContext {
            preset: self.preset,
            local_crops,
        });
        Self {
            method,
            views: recipe.views,
            optimizer: recipe.optimizer,
            lr: recipe.lr,
            ema: recipe.ema,
            ..self
        }
    }

    /// Checks every field that can be checked without data, naming the field.
    pub fn check(&self) -> Result<()> {
        self.method.validate()?;
        self.views.validate()?;
        self.optimizer.validate()?;
        self.lr.validate()?;
        self.ema.validate()?;
        check_backbone(&self.backbone)?;
        // The method first: its recipe draws the masks at its patch size.
        if let (Some(patch), BackboneConfig::Vit(vit)) = (self.method.patch_size(), &self.backbone)
            && patch != vit.patch_size
        {
            return Err(Error::invalid_config(
                "method.patch_size",
                patch,
                format!("the ViT's patch size {}", vit.patch_size),
            ));
        }
        check_masking(&self.views, &self.backbone)?;
        self.check_loop()
    }

    /// The loop's own fields: epochs, head width, loader, monitor, kNN.
    fn check_loop(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid_config("epochs", 0, ">= 1"));
        }
        let w = self.head_width;
        ensure("head_width", w, w > 0.0 && w <= 64.0, "in (0, 64]")?;
        let loader = &self.loader;
        if !(2..=MAX_BATCH).contains(&loader.batch_size) {
            return Err(Error::invalid_config(
                "loader.batch_size",
                loader.batch_size,
                format!(
                    "in 2..={MAX_BATCH} (batch statistics and the losses compare images of a batch)"
                ),
            ));
        }
        for (field, value) in [
            ("loader.workers", loader.workers),
            ("loader.prefetch", loader.prefetch),
        ] {
            at_most(field, value, MAX_THREADS)?;
        }
        at_most("epochs", self.epochs, MAX_EPOCHS)?;
        at_most("knn.k", self.knn.k, MAX_KNN_K)?;
        let m = &self.monitor;
        for (field, v) in [
            ("monitor.min_relative_std", m.min_relative_std),
            ("monitor.min_effective_rank", m.min_effective_rank),
        ] {
            ensure(field, v, v >= 0.0, "a finite value >= 0")?;
        }
        ensure(
            "monitor.min_energy_gap",
            m.min_energy_gap,
            true,
            "a finite value",
        )?;
        if self.knn.k == 0 {
            return Err(Error::invalid_config("knn.k", 0, ">= 1"));
        }
        let t = self.knn.temperature;
        ensure("knn.temperature", t, t > 0.0, "a finite value > 0")
    }
}

impl<C> PretrainConfig<C> {
    /// The deterministic view evaluations use at this run's resolution: the shorter side
    /// resized to the first view's size (to 8/7 of it at the ImageNet preset, 256 for 224),
    /// then a centre crop of that size.
    pub fn eval_view(&self) -> ViewTransform {
        let size = self.views.view_sizes().first().copied().unwrap_or(32);
        let resize = match self.preset {
            Preset::Imagenet => size * 8 / 7,
            Preset::Cifar => size,
        };
        ViewTransform::eval(Some(resize), size)
    }
}

/// The largest batch a configuration may ask for.
pub const MAX_BATCH: usize = 1 << 16;
/// The most loader threads (and prefetched batches) a configuration may ask for.
pub const MAX_THREADS: usize = 1024;
/// The most epochs a configuration may ask for.
pub const MAX_EPOCHS: usize = 1_000_000;
/// The most kNN neighbours a configuration may ask for.
pub const MAX_KNN_K: usize = 1 << 20;

/// Fails unless `value <= max`, naming `field`.
fn at_most(field: &str, value: usize, max: usize) -> Result<()> {
    if value > max {
        return Err(Error::invalid_config(
            field,
            value,
            format!("at most {max}"),
        ));
    }
    Ok(())
}

/// Patch masks need a vision transformer with the masks' patch size.
fn check_masking(views: &ViewTransform, backbone: &BackboneConfig) -> Result<()> {
    let Some(masking) = &views.masking else {
        return Ok(());
    };
    match backbone {
        BackboneConfig::Vit(v) if v.patch_size == masking.patch_size() => Ok(()),
        BackboneConfig::Vit(v) => Err(Error::invalid_config(
            "views.masking.patch_size",
            masking.patch_size(),
            format!("the ViT's patch size {}", v.patch_size),
        )),
        _ => Err(Error::invalid_config(
            "backbone",
            "a convolutional network",
            "a vision transformer (patch masks need patch tokens: --backbone vit-tiny)",
        )),
    }
}

/// Checks the built-in backbones' sizes, naming the field.
fn check_backbone(backbone: &BackboneConfig) -> Result<()> {
    let (field, width, channels) = match backbone {
        BackboneConfig::ResNet(r) => ("backbone.width", r.width, r.input_channels),
        BackboneConfig::ConvNet(c) => ("backbone.width", c.width, c.input_channels),
        BackboneConfig::Vit(v) => return v.validate(),
    };
    if width == 0 || width > 4096 {
        return Err(Error::invalid_config(field, width, "in 1..=4096"));
    }
    if let BackboneConfig::ConvNet(c) = backbone
        && !(1..=8).contains(&c.stages)
    {
        return Err(Error::invalid_config(
            "backbone.stages",
            c.stages,
            "in 1..=8",
        ));
    }
    if channels == 0 || channels > 64 {
        return Err(Error::invalid_config(
            "backbone.input_channels",
            channels,
            "in 1..=64",
        ));
    }
    Ok(())
}

impl PretrainConfig<AnyMethodConfig> {
    /// The built-in method `name` (`byol`, `dino`, ...; [`AnyMethodConfig::NAMES`]) with its
    /// recipe for `preset`.
    pub fn builtin(
        name: &str,
        backbone: BackboneConfig,
        preset: Preset,
        epochs: usize,
    ) -> Result<Self> {
        Ok(Self::recipe(
            AnyMethodConfig::preset(name, preset)?,
            backbone,
            preset,
            epochs,
        ))
    }

    /// A ResNet-18 with the CIFAR stem at `width` first-stage channels (64 = full width).
    pub fn resnet18_cifar(width: usize) -> BackboneConfig {
        BackboneConfig::ResNet(
            ResNetConfig::resnet18()
                .with_stem(Stem::Cifar)
                .with_width(width),
        )
    }

    /// The tiny convnet.
    pub fn convnet() -> BackboneConfig {
        BackboneConfig::ConvNet(ConvNetConfig::new())
    }
}
