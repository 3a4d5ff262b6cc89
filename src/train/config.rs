//! Everything a pretraining run is configured by; serialisable (TOML / JSON) so the CLI reads
//! it from a file and a checkpoint carries it.

use std::path::PathBuf;

use burn::config::Config;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use serde::{Deserialize, Serialize};

use crate::augment::{Scale, ViewTransform};
use crate::backbone::{BackboneConfig, ConvNetConfig, ResNetConfig, Stem};
use crate::data::LoaderConfig;
use crate::error::Error;
use crate::eval::KnnConfig;
use crate::objective::ObjectiveConfig;
use crate::optim::LarsConfig;

/// The optimiser of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// SGD with momentum (no dampening) and weight decay (the CIFAR recipes of lightly and
    /// solo-learn).
    Sgd {
        /// Momentum, e.g. 0.9.
        momentum: f64,
        /// Weight decay, e.g. 5e-4.
        weight_decay: f64,
    },
    /// LARS (You et al. 2017), the ImageNet recipe of BYOL, Barlow Twins, VICReg and SwAV.
    Lars(LarsConfig),
    /// AdamW (Loshchilov & Hutter 2019).
    AdamW {
        /// Decoupled weight decay, e.g. 0.05.
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// SGD with momentum 0.9 and weight decay 5e-4.
    pub fn sgd() -> Self {
        Self::Sgd {
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }

    /// LARS with momentum 0.9, weight decay 1e-4 and trust coefficient 0.02, biases and norm
    /// parameters excluded: solo-learn's CIFAR settings for VICReg (with a base learning rate
    /// of 0.3 per 256 images), without its clipping of the trust ratio at 1.
    pub fn vicreg_lars() -> Self {
        Self::Lars(LarsConfig::new().with_weight_decay(1e-4).with_eta(0.02))
    }

    /// Checks the ranges.
    pub fn validate(&self) -> crate::Result<()> {
        let check = crate::check::ensure;
        match self {
            Self::Sgd {
                momentum,
                weight_decay,
            } => {
                check(
                    "optimizer.momentum",
                    *momentum,
                    (0.0..1.0).contains(momentum),
                    "in [0, 1)",
                )?;
                check(
                    "optimizer.weight_decay",
                    *weight_decay,
                    *weight_decay >= 0.0,
                    ">= 0",
                )
            }
            Self::Lars(c) => c.validate(),
            Self::AdamW { weight_decay } => check(
                "optimizer.weight_decay",
                *weight_decay,
                *weight_decay >= 0.0,
                ">= 0",
            ),
        }
    }

    /// Builds the optimiser.
    pub fn init(&self) -> crate::Result<ModuleOptimizer> {
        self.validate()?;
        Ok(match self {
            Self::Sgd {
                momentum,
                weight_decay,
            } => {
                let mut sgd = SgdConfig::new();
                if *momentum > 0.0 {
                    sgd = sgd.with_momentum(Some(
                        MomentumConfig::new()
                            .with_momentum(*momentum)
                            .with_dampening(0.0),
                    ));
                }
                if *weight_decay > 0.0 {
                    sgd = sgd.with_weight_decay(Some(WeightDecayConfig::new(*weight_decay as f32)));
                }
                sgd.init()
            }
            Self::Lars(c) => c.init()?,
            Self::AdamW { weight_decay } => AdamWConfig::new()
                .with_weight_decay(*weight_decay as f32)
                .init(),
        })
    }
}

/// The learning-rate schedule: linear warmup, then cosine decay to `final_lr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrConfig {
    /// Peak learning rate (before batch scaling).
    pub base_lr: f64,
    /// Multiply `base_lr` by `batch_size / 256` (the linear scaling rule of the recipes that
    /// state their rate per 256 images: BYOL, SimCLR, Barlow Twins, VICReg, SwAV).
    pub scale_with_batch: bool,
    /// Epochs of linear warmup from 0.
    pub warmup_epochs: usize,
    /// Learning rate at the end of the cosine.
    pub final_lr: f64,
}

impl LrConfig {
    /// The peak rate for `batch_size`.
    pub fn peak(&self, batch_size: usize) -> f64 {
        if self.scale_with_batch {
            self.base_lr * batch_size as f64 / 256.0
        } else {
            self.base_lr
        }
    }
}

/// Collapse monitoring during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A complete pretraining run.
#[derive(Config, Debug)]
pub struct PretrainConfig {
    /// The method and its hyper-parameters.
    pub objective: ObjectiveConfig,
    /// The encoder.
    pub backbone: BackboneConfig,
    /// Scale of the papers' projector / predictor sizes (1.0 = paper).
    #[config(default = 1.0)]
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
    /// BYOL's base EMA decay (cosine to 1 over training).
    #[config(default = 0.99)]
    pub ema_tau: f64,
    /// Collapse monitoring.
    pub monitor: MonitorConfig,
    /// kNN settings, used when evaluation data is given.
    pub knn: KnnConfig,
    /// Evaluate kNN every this many epochs when evaluation data is given (0: only at the end).
    #[config(default = 1)]
    pub knn_every_epochs: usize,
    /// Write a checkpoint every this many epochs (0: only at the end).
    #[config(default = 1)]
    pub checkpoint_every_epochs: usize,
    /// Folder for `checkpoint.ckpt` and `metrics.jsonl`; none keeps everything in memory.
    pub output_dir: Option<PathBuf>,
    /// Show a progress bar.
    #[config(default = true)]
    pub progress: bool,
}

impl PretrainConfig {
    /// A recipe for 32 x 32 images (CIFAR-10 scale) with the method's views and lightly's
    /// CIFAR-10 benchmark optimisation: SGD, momentum 0.9, weight decay 5e-4, learning rate
    /// 0.06 per 128 images (0.12 x batch / 256), cosine; `backbone` picks the encoder.
    ///
    /// VICReg instead gets [`OptimizerConfig::vicreg_lars`] at 0.3 x batch / 256 (solo-learn's
    /// CIFAR settings): with the SGD recipe its loss diverges at 0.12, and at the 0.01 it needs
    /// there it learns far slower (kNN top-1 after one CIFAR-10 epoch on ResNet-18 at width 16:
    /// 40.4% with SGD 0.01, 47.6% with LARS 0.3; `BENCHMARKS.md`).
    pub fn cifar(objective: ObjectiveConfig, backbone: BackboneConfig, epochs: usize) -> Self {
        let views = match &objective {
            ObjectiveConfig::Byol | ObjectiveConfig::BarlowTwins(_) => {
                ViewTransform::byol(Scale::Cifar)
            }
            ObjectiveConfig::SimSiam => ViewTransform::simsiam(Scale::Cifar),
            ObjectiveConfig::Vicreg(_) => ViewTransform::vicreg(Scale::Cifar),
            ObjectiveConfig::Swav(_) => ViewTransform::swav(Scale::Cifar, 0),
            ObjectiveConfig::NtXent(_) => ViewTransform::simclr(Scale::Cifar),
        };
        let (optimizer, base_lr) = match &objective {
            ObjectiveConfig::Vicreg(_) => (OptimizerConfig::vicreg_lars(), 0.3),
            _ => (OptimizerConfig::sgd(), 0.12),
        };
        Self {
            objective,
            backbone,
            head_width: 1.0,
            views,
            loader: LoaderConfig::default(),
            epochs,
            optimizer,
            lr: LrConfig {
                base_lr,
                scale_with_batch: true,
                warmup_epochs: 0,
                final_lr: 0.0,
            },
            ema_tau: 0.99,
            monitor: MonitorConfig::default(),
            knn: KnnConfig::default(),
            knn_every_epochs: 1,
            checkpoint_every_epochs: 1,
            output_dir: None,
            progress: true,
        }
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

    /// Checks every field that can be checked without data.
    pub fn check(&self) -> crate::Result<()> {
        self.objective.validate()?;
        self.views.validate()?;
        self.optimizer.validate()?;
        if self.epochs == 0 {
            return Err(Error::invalid_config("epochs", 0, ">= 1"));
        }
        let lr = &self.lr;
        if !(lr.base_lr.is_finite() && lr.base_lr > 0.0) {
            return Err(Error::invalid_config(
                "lr.base_lr",
                lr.base_lr,
                "a finite value > 0",
            ));
        }
        if !(lr.final_lr.is_finite() && lr.final_lr >= 0.0 && lr.final_lr <= lr.base_lr) {
            return Err(Error::invalid_config(
                "lr.final_lr",
                lr.final_lr,
                "in [0, base_lr]",
            ));
        }
        if !(self.head_width.is_finite() && self.head_width > 0.0) {
            return Err(Error::invalid_config("head_width", self.head_width, "> 0"));
        }
        if !(0.0..=1.0).contains(&self.ema_tau) {
            return Err(Error::invalid_config("ema_tau", self.ema_tau, "in [0, 1]"));
        }
        Ok(())
    }
}
