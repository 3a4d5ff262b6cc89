//! Self-supervised objectives: one file per method, one arm per method in [`Objective`] and
//! [`ObjectiveConfig`].
//!
//! Every objective receives the [`ViewEmbeddings`] of one batch (online projections, and where
//! the method needs them predictor outputs and EMA-target projections) and returns an
//! [`ObjectiveOutput`]: the loss, its value on the host, and [`CollapseStats`].
//!
//! | method | file | needs |
//! |---|---|---|
//! | BYOL | [`byol`] | predictor, EMA target |
//! | SimSiam | [`simsiam`] | predictor (stop-gradient target) |
//! | Barlow Twins | [`barlow_twins`] | projections |
//! | SwAV | [`swav`] | projections, prototypes (owned by the objective) |
//! | VICReg | [`vicreg`] | projections |
//! | SimCLR (NT-Xent, contrastive baseline) | [`ntxent`] | projections |

pub mod barlow_twins;
pub mod byol;
pub mod ntxent;
pub mod queue;
pub mod simsiam;
pub mod sinkhorn;
pub mod swav;
pub mod vicreg;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use barlow_twins::{BarlowTwinsLoss, barlow_twins_loss};
pub use byol::{ByolLoss, byol_loss};
pub use ntxent::{NtXentLoss, ntxent_loss};
pub use queue::EmbeddingQueue;
pub use simsiam::{SimSiamLoss, simsiam_loss};
pub use sinkhorn::sinkhorn;
pub use swav::{SwavLoss, swav_loss};
pub use vicreg::VicregLoss;

use crate::check;
use crate::collapse::CollapseStats;
use crate::error::Error;
use crate::head::ProjectionHeadConfig;
use crate::prototypes::Prototypes;

/// What a method needs from the joint-embedding architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requirements {
    /// A predictor head on the online branch.
    pub predictor: bool,
    /// An EMA copy of the online encoder and projector as target branch.
    pub ema_target: bool,
}

/// The embeddings of all views of one batch, views in the same order in every list, global
/// (high-resolution) views first.
#[derive(Debug, Clone, Default)]
pub struct ViewEmbeddings {
    /// Online projector outputs, one `[B, D]` per view.
    pub projections: Vec<Tensor<2>>,
    /// Predictor outputs, one per view (empty without a predictor).
    pub predictions: Vec<Tensor<2>>,
    /// Target-branch projections, one per view (empty without an EMA target). Detached.
    pub targets: Vec<Tensor<2>>,
    /// How many views are global crops (SwAV computes codes for these only).
    pub num_global: usize,
}

/// Mutable state an objective carries from step to step.
#[derive(Debug, Clone, Default)]
pub struct ObjectiveState {
    /// Optimiser steps taken so far (SwAV freezes its prototypes while this is small).
    pub step: usize,
    /// SwAV's queue of past embeddings, if enabled.
    pub queue: Option<EmbeddingQueue>,
}

/// The result of an objective on one batch.
#[derive(Debug, Clone)]
pub struct ObjectiveOutput {
    /// The loss, part of the autodiff graph.
    pub loss: Tensor<1>,
    /// The loss value, read back to the host (finite: a non-finite loss is an error).
    pub loss_value: f32,
    /// Collapse statistics of the online embeddings.
    pub stats: CollapseStats,
}

/// A self-supervised objective. Parameters of the objective itself (SwAV's prototypes) are part
/// of the module and trained with the online network.
#[derive(Module, Debug)]
pub enum Objective {
    /// [BYOL](byol).
    Byol(ByolLoss),
    /// [SimSiam](simsiam).
    SimSiam(SimSiamLoss),
    /// [Barlow Twins](barlow_twins).
    BarlowTwins(BarlowTwinsLoss),
    /// [SwAV](swav).
    Swav(SwavLoss),
    /// [VICReg](vicreg).
    Vicreg(VicregLoss),
    /// [SimCLR's NT-Xent](ntxent).
    NtXent(NtXentLoss),
}

impl Objective {
    /// The method's name.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Byol(_) => "BYOL",
            Objective::SimSiam(_) => "SimSiam",
            Objective::BarlowTwins(_) => "Barlow Twins",
            Objective::Swav(_) => "SwAV",
            Objective::Vicreg(_) => "VICReg",
            Objective::NtXent(_) => "SimCLR",
        }
    }

    /// What the method needs from the architecture.
    pub fn requirements(&self) -> Requirements {
        match self {
            Objective::Byol(o) => o.requirements(),
            Objective::SimSiam(o) => o.requirements(),
            Objective::BarlowTwins(o) => o.requirements(),
            Objective::Swav(o) => o.requirements(),
            Objective::Vicreg(o) => o.requirements(),
            Objective::NtXent(o) => o.requirements(),
        }
    }

    /// The loss alone.
    pub fn loss(
        &self,
        views: &ViewEmbeddings,
        state: &mut ObjectiveState,
    ) -> crate::Result<Tensor<1>> {
        match self {
            Objective::Byol(o) => o.forward(views),
            Objective::SimSiam(o) => o.forward(views),
            Objective::BarlowTwins(o) => o.forward(views),
            Objective::Swav(o) => o.forward(views, state),
            Objective::Vicreg(o) => o.forward(views),
            Objective::NtXent(o) => o.forward(views),
        }
    }

    /// The loss, its value and the collapse statistics. A NaN or infinite loss is an error
    /// naming the first non-finite input, or the loss itself.
    pub fn compute(
        &self,
        views: &ViewEmbeddings,
        state: &mut ObjectiveState,
    ) -> crate::Result<ObjectiveOutput> {
        let loss = self.loss(views, state)?;
        let loss_value = check::scalar(&loss);
        if !loss_value.is_finite() {
            let named = [
                ("projection", &views.projections),
                ("prediction", &views.predictions),
                ("target projection", &views.targets),
            ];
            for (what, list) in named {
                for (v, t) in list.iter().enumerate() {
                    check::finite(|| format!("{} input: {what} of view {v}", self.name()), t)?;
                }
            }
            return Err(Error::NonFinite {
                context: format!("{} loss (value {loss_value})", self.name()),
            });
        }
        let stats =
            CollapseStats::from_views(views.projections[0].clone(), views.projections[1].clone())?;
        Ok(ObjectiveOutput {
            loss,
            loss_value,
            stats,
        })
    }

    /// Prepares the objective's own parameters for the next step: SwAV L2-normalises its
    /// prototypes, as its reference code does before every iteration.
    pub fn before_step(self) -> Self {
        match self {
            Objective::Swav(o) => Objective::Swav(SwavLoss {
                prototypes: o.prototypes.normalized(),
                ..o
            }),
            other => other,
        }
    }
}

/// Hyper-parameters of a method; [`ObjectiveConfig::init`] builds the [`Objective`].
#[derive(Config, Debug)]
pub enum ObjectiveConfig {
    /// BYOL.
    Byol,
    /// SimSiam.
    SimSiam,
    /// Barlow Twins.
    BarlowTwins(BarlowTwinsConfig),
    /// SwAV.
    Swav(SwavConfig),
    /// VICReg.
    Vicreg(VicregConfig),
    /// SimCLR's NT-Xent.
    NtXent(NtXentConfig),
}

/// NT-Xent (SimCLR) hyper-parameters.
#[derive(Config, Debug)]
pub struct NtXentConfig {
    /// Temperature (lightly's CIFAR benchmark: 0.5; the paper on ImageNet: 0.1).
    #[config(default = 0.5)]
    pub temperature: f64,
}

/// Barlow Twins hyper-parameters.
#[derive(Config, Debug)]
pub struct BarlowTwinsConfig {
    /// Weight of the off-diagonal term.
    #[config(default = 0.0051)]
    pub lambda: f64,
}

/// SwAV hyper-parameters.
#[derive(Config, Debug)]
pub struct SwavConfig {
    /// Number of prototypes `K` (3000 for ImageNet, lightly's CIFAR benchmark uses 512).
    #[config(default = 3000)]
    pub num_prototypes: usize,
    /// Softmax temperature.
    #[config(default = 0.1)]
    pub temperature: f64,
    /// Sinkhorn-Knopp iterations.
    #[config(default = 3)]
    pub sinkhorn_iterations: usize,
    /// Sinkhorn-Knopp `eps`.
    #[config(default = 0.05)]
    pub sinkhorn_epsilon: f64,
    /// Steps with frozen prototypes (about one epoch in the reference code).
    #[config(default = 0)]
    pub freeze_prototypes_steps: usize,
    /// Embeddings kept per global crop in the queue; 0 disables the queue.
    #[config(default = 0)]
    pub queue_length: usize,
}

/// VICReg hyper-parameters.
#[derive(Config, Debug)]
pub struct VicregConfig {
    /// Invariance weight `lambda`.
    #[config(default = 25.0)]
    pub lambda_invariance: f64,
    /// Variance weight `mu`.
    #[config(default = 25.0)]
    pub mu_variance: f64,
    /// Covariance weight `nu`.
    #[config(default = 1.0)]
    pub nu_covariance: f64,
    /// `eps` under the square root of the variance.
    #[config(default = 1e-4)]
    pub eps: f64,
}

impl ObjectiveConfig {
    /// Barlow Twins with the paper's `lambda = 0.0051`.
    pub fn barlow_twins() -> Self {
        ObjectiveConfig::BarlowTwins(BarlowTwinsConfig::new())
    }

    /// SwAV with the paper's hyper-parameters.
    pub fn swav() -> Self {
        ObjectiveConfig::Swav(SwavConfig::new())
    }

    /// VICReg with the paper's hyper-parameters.
    pub fn vicreg() -> Self {
        ObjectiveConfig::Vicreg(VicregConfig::new())
    }

    /// SimCLR's NT-Xent with temperature 0.5.
    pub fn ntxent() -> Self {
        ObjectiveConfig::NtXent(NtXentConfig::new())
    }

    /// The method's name.
    pub fn name(&self) -> &'static str {
        match self {
            ObjectiveConfig::Byol => "BYOL",
            ObjectiveConfig::SimSiam => "SimSiam",
            ObjectiveConfig::BarlowTwins(_) => "Barlow Twins",
            ObjectiveConfig::Swav(_) => "SwAV",
            ObjectiveConfig::Vicreg(_) => "VICReg",
            ObjectiveConfig::NtXent(_) => "SimCLR",
        }
    }

    /// Checks every hyper-parameter's range.
    pub fn validate(&self) -> crate::Result<()> {
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid_config(field, v, "a finite value > 0"))
            }
        };
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::invalid_config(field, v, "a finite value >= 0"))
            }
        };
        match self {
            ObjectiveConfig::Byol | ObjectiveConfig::SimSiam => Ok(()),
            ObjectiveConfig::BarlowTwins(c) => non_negative("barlow_twins.lambda", c.lambda),
            ObjectiveConfig::Swav(c) => {
                positive("swav.temperature", c.temperature)?;
                positive("swav.sinkhorn_epsilon", c.sinkhorn_epsilon)?;
                if c.num_prototypes == 0 {
                    return Err(Error::invalid_config(
                        "swav.num_prototypes",
                        0,
                        "at least 1",
                    ));
                }
                Ok(())
            }
            ObjectiveConfig::Vicreg(c) => {
                non_negative("vicreg.lambda_invariance", c.lambda_invariance)?;
                non_negative("vicreg.mu_variance", c.mu_variance)?;
                non_negative("vicreg.nu_covariance", c.nu_covariance)?;
                positive("vicreg.eps", c.eps)
            }
            ObjectiveConfig::NtXent(c) => positive("ntxent.temperature", c.temperature),
        }
    }

    /// Builds the objective for embeddings of dimension `embedding_dim`.
    pub fn init(&self, embedding_dim: usize, device: &Device) -> crate::Result<Objective> {
        self.validate()?;
        Ok(match self {
            ObjectiveConfig::Byol => Objective::Byol(ByolLoss::default()),
            ObjectiveConfig::SimSiam => Objective::SimSiam(SimSiamLoss::default()),
            ObjectiveConfig::BarlowTwins(c) => {
                Objective::BarlowTwins(BarlowTwinsLoss { lambda: c.lambda })
            }
            ObjectiveConfig::Swav(c) => Objective::Swav(SwavLoss {
                prototypes: Prototypes::new(embedding_dim, c.num_prototypes, device)?,
                temperature: c.temperature,
                sinkhorn_iterations: c.sinkhorn_iterations,
                sinkhorn_epsilon: c.sinkhorn_epsilon,
                freeze_prototypes_steps: c.freeze_prototypes_steps,
            }),
            ObjectiveConfig::Vicreg(c) => Objective::Vicreg(VicregLoss {
                lambda_invariance: c.lambda_invariance,
                mu_variance: c.mu_variance,
                nu_covariance: c.nu_covariance,
                eps: c.eps,
            }),
            ObjectiveConfig::NtXent(c) => Objective::NtXent(NtXentLoss {
                temperature: c.temperature,
            }),
        })
    }

    /// The initial [`ObjectiveState`] for `num_global` global crops (SwAV's queue if enabled).
    pub fn initial_state(&self, num_global: usize) -> crate::Result<ObjectiveState> {
        let queue = match self {
            ObjectiveConfig::Swav(c) if c.queue_length > 0 => {
                Some(EmbeddingQueue::new(c.queue_length, num_global)?)
            }
            _ => None,
        };
        Ok(ObjectiveState { step: 0, queue })
    }

    /// The method's heads at the paper's sizes, scaled by `width` (1.0 = paper): projector and,
    /// for BYOL and SimSiam, predictor, for a backbone of `feature_dim` features.
    pub fn paper_heads(
        &self,
        feature_dim: usize,
        width: f64,
    ) -> (ProjectionHeadConfig, Option<ProjectionHeadConfig>) {
        let s = |d: usize| ((d as f64 * width).round() as usize).max(1);
        match self {
            ObjectiveConfig::Byol => (
                ProjectionHeadConfig::byol_projector(feature_dim, s(4096), s(256)),
                Some(ProjectionHeadConfig::byol_predictor(s(256), s(4096))),
            ),
            ObjectiveConfig::SimSiam => (
                ProjectionHeadConfig::simsiam_projector(feature_dim, s(2048), s(2048)),
                Some(ProjectionHeadConfig::simsiam_predictor(s(2048), s(512))),
            ),
            ObjectiveConfig::BarlowTwins(_) => (
                ProjectionHeadConfig::barlow_twins_projector(feature_dim, s(8192), s(8192)),
                None,
            ),
            ObjectiveConfig::Swav(_) => (
                ProjectionHeadConfig::swav_projector(feature_dim, s(2048), s(128)),
                None,
            ),
            ObjectiveConfig::Vicreg(_) => (
                ProjectionHeadConfig::vicreg_projector(feature_dim, s(8192), s(8192)),
                None,
            ),
            ObjectiveConfig::NtXent(_) => (
                ProjectionHeadConfig::simclr_projector(feature_dim, s(2048), s(128)),
                None,
            ),
        }
    }
}

/// Returns `list` if it has at least `minimum` views, else a [`Error::MissingInput`].
pub(crate) fn require_views<'a>(
    method: &str,
    what: &str,
    list: &'a [Tensor<2>],
    minimum: usize,
) -> crate::Result<&'a [Tensor<2>]> {
    if list.len() >= minimum {
        Ok(list)
    } else {
        Err(Error::MissingInput {
            context: format!("{method} loss"),
            what: format!("{what}: needs {minimum} views, got {}", list.len()),
        })
    }
}

/// Sum of `term(left_i, right_j)` over all ordered pairs of distinct views `i != j`, with the
/// number of pairs. Both lists must have the same length (at least 2) and matching shapes.
pub(crate) fn sum_over_ordered_pairs(
    method: &str,
    left: &[Tensor<2>],
    right: &[Tensor<2>],
    term: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<1>,
) -> crate::Result<(Tensor<1>, usize)> {
    let pairs = check_pairs(method, left, right)?;
    let mut total: Option<Tensor<1>> = None;
    for (i, l) in left.iter().enumerate() {
        for (j, r) in right.iter().enumerate() {
            if i == j {
                continue;
            }
            check::same_shape(
                || format!("{method} loss: view {j} of the second input against view {i}"),
                l,
                r,
            )?;
            let value = term(l.clone(), r.clone());
            total = Some(match total {
                Some(t) => t + value,
                None => value,
            });
        }
    }
    let total = total.ok_or_else(|| Error::MissingInput {
        context: format!("{method} loss"),
        what: "two views".into(),
    })?;
    Ok((total, pairs))
}

/// Checks two per-view lists have the same length (at least 2) and returns the number of
/// ordered pairs of distinct views.
fn check_pairs(method: &str, a: &[Tensor<2>], b: &[Tensor<2>]) -> crate::Result<usize> {
    if a.len() != b.len() || a.len() < 2 {
        return Err(Error::MissingInput {
            context: format!("{method} loss"),
            what: format!(
                "matching views: needs the same number (2 or more) on both sides, got {} and {}",
                a.len(),
                b.len()
            ),
        });
    }
    Ok(a.len() * (a.len() - 1))
}

/// Mean of `loss(z_i, z_j)` over all pairs `i < j` of views.
pub(crate) fn mean_over_view_pairs(
    views: &[Tensor<2>],
    loss: impl Fn(Tensor<2>, Tensor<2>) -> crate::Result<Tensor<1>>,
) -> crate::Result<Tensor<1>> {
    let mut total: Option<Tensor<1>> = None;
    let mut pairs = 0usize;
    for i in 0..views.len() {
        for j in i + 1..views.len() {
            let term = loss(views[i].clone(), views[j].clone())?;
            pairs += 1;
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
    }
    match total {
        Some(t) if pairs > 1 => Ok(t.div_scalar(pairs as f64)),
        Some(t) => Ok(t),
        None => Err(Error::MissingInput {
            context: "loss".into(),
            what: "two views".into(),
        }),
    }
}
