//! The built-in methods as two enums, [`AnyMethodConfig`] and [`AnyMethod`], generated from
//! the list at the bottom of this file: every arm of every dispatch delegates to the method's
//! own file. Adding a method is its file plus one line in that list.

use burn::module::{Module, ParamId};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{
    BarlowTwins, BarlowTwinsConfig, Byol, ByolConfig, DeepCluster, DeepClusterConfig, Dino,
    DinoConfig, Heads, Ijepa, IjepaConfig, Lejepa, LejepaConfig, Mae, MaeConfig, Method,
    MethodConfig, MethodSetup, Moco, MocoConfig, Preset, Progress, Recipe, RecipeContext,
    Requirements, SimClr, SimClrConfig, SimSiam, SimSiamConfig, StepContext, Swav, SwavConfig,
    Vicreg, VicregConfig, ViewEmbeddings,
};
use crate::error::{Error, Result};
use crate::model::ProjectionHead;

macro_rules! builtin_methods {
    ($($(#[doc = $doc:literal])* $variant:ident($config:ty, $method:ty) = $cli:literal, $ctor:ident;)*) => {
        /// The configuration of one of the built-in methods: the `[method]` table of a
        /// configuration file, whose `name` is the command line's `--method`.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(tag = "name")]
        pub enum AnyMethodConfig {
            $($(#[doc = $doc])* #[serde(rename = $cli)] $variant($config),)*
        }

        /// The module of one of the built-in methods.
        #[derive(Module, Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum AnyMethod {
            $($(#[doc = $doc])* $variant($method),)*
        }

        impl AnyMethodConfig {
            /// The command-line names of the built-in methods.
            pub const NAMES: &'static [&'static str] = &[$($cli),*];

            /// The method called `name` (one of [`Self::NAMES`]) with its defaults for `preset`.
            pub fn preset(name: &str, preset: Preset) -> Result<Self> {
                match name {
                    $($cli => Ok(Self::$variant(<$config>::preset(preset))),)*
                    other => Err(Error::invalid_config(
                        "method",
                        other,
                        format!("one of {}", Self::NAMES.join(", ")),
                    )),
                }
            }

            $(
                #[doc = concat!("The method `", $cli, "` with its defaults for `preset`.")]
                pub fn $ctor(preset: Preset) -> Self {
                    Self::$variant(<$config>::preset(preset))
                }
            )*

            /// The method's command-line name.
            pub fn cli_name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $cli,)*
                }
            }
        }

        impl MethodConfig for AnyMethodConfig {
            type Method = AnyMethod;

            fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(c) => c.name(),)*
                }
            }

            fn validate(&self) -> Result<()> {
                match self {
                    $(Self::$variant(c) => c.validate(),)*
                }
            }

            fn heads(&self, feature_dim: usize, width: f64) -> Heads {
                match self {
                    $(Self::$variant(c) => c.heads(feature_dim, width),)*
                }
            }

            fn recipe(&self, context: &RecipeContext) -> Recipe {
                match self {
                    $(Self::$variant(c) => c.recipe(context),)*
                }
            }

            fn init(&self, setup: &MethodSetup, device: &Device) -> Result<AnyMethod> {
                match self {
                    $(Self::$variant(c) => c.init(setup, device).map(AnyMethod::$variant),)*
                }
            }

            fn patch_size(&self) -> Option<usize> {
                match self {
                    $(Self::$variant(c) => c.patch_size(),)*
                }
            }
        }

        impl Method for AnyMethod {
            fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(m) => m.name(),)*
                }
            }

            fn requirements(&self) -> Requirements {
                match self {
                    $(Self::$variant(m) => m.requirements(),)*
                }
            }

            fn schedule(&self, progress: &Progress) -> Vec<(&'static str, f64)> {
                match self {
                    $(Self::$variant(m) => m.schedule(progress),)*
                }
            }

            fn before_step(self, context: &StepContext) -> Result<Self> {
                match self {
                    $(Self::$variant(m) => m.before_step(context).map(Self::$variant),)*
                }
            }

            fn loss(&self, views: &ViewEmbeddings, context: &StepContext) -> Result<Tensor<1>> {
                match self {
                    $(Self::$variant(m) => m.loss(views, context),)*
                }
            }

            fn frozen_parameters(
                &self,
                projector: &ProjectionHead,
                context: &StepContext,
            ) -> Vec<ParamId> {
                match self {
                    $(Self::$variant(m) => m.frozen_parameters(projector, context),)*
                }
            }

            fn after_step(self, views: &ViewEmbeddings, context: &StepContext) -> Result<Self> {
                match self {
                    $(Self::$variant(m) => m.after_step(views, context).map(Self::$variant),)*
                }
            }

            fn start_epoch(self, epoch: usize, seed: u64) -> Result<Self> {
                match self {
                    $(Self::$variant(m) => m.start_epoch(epoch, seed).map(Self::$variant),)*
                }
            }
        }
    };
}

builtin_methods! {
    /// BYOL (Grill et al. 2020).
    Byol(ByolConfig, Byol) = "byol", byol;
    /// SimSiam (Chen & He 2021).
    SimSiam(SimSiamConfig, SimSiam) = "simsiam", simsiam;
    /// Barlow Twins (Zbontar et al. 2021).
    BarlowTwins(BarlowTwinsConfig, BarlowTwins) = "barlow-twins", barlow_twins;
    /// SwAV (Caron et al. 2020).
    Swav(SwavConfig, Swav) = "swav", swav;
    /// VICReg (Bardes, Ponce & LeCun 2022).
    Vicreg(VicregConfig, Vicreg) = "vicreg", vicreg;
    /// SimCLR (Chen et al. 2020).
    SimClr(SimClrConfig, SimClr) = "simclr", simclr;
    /// MoCo v2 (He et al. 2020; Chen et al. 2020).
    Moco(MocoConfig, Moco) = "moco", moco;
    /// DINO (Caron et al. 2021).
    Dino(DinoConfig, Dino) = "dino", dino;
    /// DeepCluster-v2 (Caron et al. 2020).
    DeepCluster(DeepClusterConfig, DeepCluster) = "deepcluster", deepcluster;
    /// I-JEPA (Assran et al. 2023).
    Ijepa(IjepaConfig, Ijepa) = "ijepa", ijepa;
    /// MAE (He et al. 2022).
    Mae(MaeConfig, Mae) = "mae", mae;
    /// LeJEPA (Balestriero & LeCun 2025).
    Lejepa(LejepaConfig, Lejepa) = "lejepa", lejepa;
}
