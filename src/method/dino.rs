//! DINO: self-DIstillation with NO labels (Caron et al., "Emerging Properties in
//! Self-Supervised Vision Transformers", ICCV 2021, arXiv:2104.14294; reference code:
//! facebookresearch/dino `main_dino.py`, `vision_transformer.py` `DINOHead`).
//!
//! A student and a momentum teacher (an EMA of the student's backbone and head, the momentum
//! rising from 0.996 to 1 along a cosine) share the DINO head: a 3-layer MLP with GELUs into a
//! bottleneck, L2 normalisation, and a weight-normalised last layer of `out_dim` units whose
//! scale is frozen. The teacher sees only the global crops, the student every crop. With the
//! teacher's outputs `t_i` of global crop `i`, the student's `s_v` of crop `v` and a centre `c`:
//!
//! `L = (1 / P) sum_i sum_{v != i} mean_b -softmax((t_i - c) / T_t) . log_softmax(s_v / T_s)`
//!
//! over the `P` pairs, `T_s = 0.1`, the teacher temperature `T_t` rising linearly from 0.04 to
//! 0.07 over the first epochs (`np.linspace` per epoch), then constant. After each step the
//! centre follows the teacher's batch mean, `c <- 0.9 c + 0.1 mean(t)`. The last layer gets no
//! gradient during the first epoch, and each parameter's gradient is clipped to norm 3.
//!
//! Recipes: CIFAR, solo-learn's (LARS eta 0.02, lr 0.3 x batch / 256, weight decay 1e-6,
//! 4,096 output units, two 32-pixel crops by default) with the paper's clipping and teacher
//! schedule; ImageNet, the README's ResNet-50 recipe (SGD lr 0.03 x batch / 256, 10 warmup
//! epochs, weight decay 1e-4, 65,536 units) with 2 global and 6 local crops. The paper's
//! vision-transformer recipe is AdamW with weight decay 0.04 -> 0.4
//! ([`DinoConfig::transformer_optimizer`]).

use burn::module::{Module, Param, ParamId};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{
    GlobalBatch, Heads, Method, MethodConfig, MethodSetup, Preset, Progress, Recipe, RecipeContext,
    Requirements, StepContext, TargetViews, ViewEmbeddings, at_least_one, buffer, non_negative,
    positive, require_views, scaled, set_buffer,
};
use crate::augment::ViewTransform;
use crate::check;
use crate::error::{Error, Result};
use crate::model::{ProjectionHead, ProjectionHeadConfig};
use crate::optim::{EmaConfig, LrConfig, OptimizerConfig};

/// The name of DINO's scheduled teacher temperature in [`super::ScheduleValues::method`].
pub const TEACHER_TEMPERATURE: &str = "teacher_temperature";

/// DINO's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DinoConfig {
    /// Output units of the head's last layer (65,536 in the paper).
    pub out_dim: usize,
    /// Width of the head's hidden layers (2,048).
    pub hidden_dim: usize,
    /// Width of the bottleneck before the last layer (256).
    pub bottleneck_dim: usize,
    /// Batch norm after the head's hidden layers (off in the paper).
    pub batch_norm_in_head: bool,
    /// Student temperature `T_s` (0.1).
    pub student_temperature: f64,
    /// Teacher temperature after the warm-up (0.07).
    pub teacher_temperature: f64,
    /// Teacher temperature at the first epoch (0.04).
    pub warmup_teacher_temperature: f64,
    /// Epochs of the linear teacher-temperature warm-up (30).
    pub warmup_teacher_temperature_epochs: usize,
    /// Momentum of the centre (0.9).
    pub center_momentum: f64,
    /// Epochs during which the last layer gets no gradient (1).
    pub freeze_last_layer_epochs: usize,
}

impl DinoConfig {
    /// The defaults of `preset`.
    pub fn preset(preset: Preset) -> Self {
        Self {
            out_dim: match preset {
                Preset::Cifar => 4096,
                Preset::Imagenet => 65536,
            },
            hidden_dim: 2048,
            bottleneck_dim: 256,
            batch_norm_in_head: false,
            student_temperature: 0.1,
            teacher_temperature: 0.07,
            warmup_teacher_temperature: 0.04,
            warmup_teacher_temperature_epochs: 30,
            center_momentum: 0.9,
            freeze_last_layer_epochs: 1,
        }
    }

    /// The paper's vision-transformer optimiser: AdamW, weight decay from 0.04 to 0.4 along a
    /// cosine, gradients clipped to norm 3 (use with lr 0.0005 x batch / 256, 10 warmup epochs).
    pub fn transformer_optimizer() -> OptimizerConfig {
        OptimizerConfig::adamw(0.04)
            .with_weight_decay_end(0.4)
            .with_gradient_clip(3.0)
    }
}

impl MethodConfig for DinoConfig {
    type Method = Dino;

    fn name(&self) -> &'static str {
        "DINO"
    }

    fn validate(&self) -> Result<()> {
        positive(&[
            ("method.student_temperature", self.student_temperature),
            ("method.teacher_temperature", self.teacher_temperature),
            (
                "method.warmup_teacher_temperature",
                self.warmup_teacher_temperature,
            ),
        ])?;
        non_negative(&[("method.center_momentum", self.center_momentum)])?;
        check::ensure(
            "method.center_momentum",
            self.center_momentum,
            self.center_momentum <= 1.0,
            "in [0, 1]",
        )?;
        at_least_one(&[
            ("method.out_dim", self.out_dim),
            ("method.hidden_dim", self.hidden_dim),
            ("method.bottleneck_dim", self.bottleneck_dim),
        ])
    }

    fn heads(&self, feature_dim: usize, width: f64) -> Heads {
        Heads {
            projector: ProjectionHeadConfig::dino_head(
                feature_dim,
                scaled(self.hidden_dim, width),
                scaled(self.bottleneck_dim, width),
                scaled(self.out_dim, width),
                self.batch_norm_in_head,
            ),
            predictor: None,
        }
    }

    fn recipe(&self, context: &RecipeContext) -> Recipe {
        let scale = context.preset.scale();
        match context.preset {
            Preset::Cifar => Recipe {
                views: ViewTransform::dino(scale, context.local_crops.unwrap_or(0)),
                optimizer: OptimizerConfig::lars(0.02, 1e-6).with_gradient_clip(3.0),
                lr: LrConfig::per_256(0.3),
                ema: EmaConfig::to_one(0.996),
            },
            Preset::Imagenet => Recipe {
                views: ViewTransform::dino(scale, context.local_crops.unwrap_or(6)),
                optimizer: OptimizerConfig::sgd(1e-4).with_gradient_clip(3.0),
                lr: LrConfig::per_256(0.03).with_warmup(10),
                ema: EmaConfig::to_one(0.996),
            },
        }
    }

    fn init(&self, setup: &MethodSetup, device: &Device) -> Result<Dino> {
        Ok(Dino {
            center: buffer(Tensor::zeros([1, setup.embedding_dim], device)),
            config: self.clone(),
        })
    }
}

/// The DINO module: the centre (a buffer, saved in checkpoints) and the configuration.
#[derive(Module, Debug)]
pub struct Dino {
    /// The running centre of the teacher's outputs, `[1, out_dim]`.
    pub center: Param<Tensor<2>>,
    /// Temperatures, centre momentum and last-layer freezing.
    #[module(skip)]
    pub config: DinoConfig,
}

impl Dino {
    /// The teacher temperature of `epoch`: `np.linspace(warmup, final, warmup_epochs)[epoch]`
    /// during the warm-up, then `final`.
    pub fn teacher_temperature_at(&self, epoch: usize) -> f64 {
        let c = &self.config;
        let warmup = c.warmup_teacher_temperature_epochs;
        if epoch >= warmup {
            return c.teacher_temperature;
        }
        if warmup == 1 {
            return c.warmup_teacher_temperature;
        }
        let fraction = epoch as f64 / (warmup - 1) as f64;
        c.warmup_teacher_temperature
            + (c.teacher_temperature - c.warmup_teacher_temperature) * fraction
    }
}

impl Method for Dino {
    fn name(&self) -> &'static str {
        "DINO"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            momentum_target: true,
            target_views: TargetViews::Global,
            global_batch: GlobalBatch::Local,
            ..Requirements::default()
        }
    }

    fn schedule(&self, progress: &Progress) -> Vec<(&'static str, f64)> {
        vec![(
            TEACHER_TEMPERATURE,
            self.teacher_temperature_at(progress.epoch),
        )]
    }

    fn loss(&self, views: &ViewEmbeddings, context: &StepContext) -> Result<Tensor<1>> {
        let student = require_views("DINO", "student outputs", &views.projections, 2)?;
        let teacher = require_views("DINO", "teacher outputs", &views.targets, 1)?;
        let teacher_temperature = context.values.method_value(TEACHER_TEMPERATURE)?;
        dino_loss(
            teacher,
            student,
            self.center.val(),
            teacher_temperature,
            self.config.student_temperature,
        )
    }

    /// The last layer (the head's last block) during the first `freeze_last_layer_epochs`.
    fn frozen_parameters(&self, projector: &ProjectionHead, context: &StepContext) -> Vec<ParamId> {
        if context.progress.epoch >= self.config.freeze_last_layer_epochs {
            return Vec::new();
        }
        let Some(last) = projector.blocks.last() else {
            return Vec::new();
        };
        let mut ids = vec![last.linear.weight.id];
        ids.extend(last.linear.bias.as_ref().map(|b| b.id));
        ids
    }

    fn after_step(self, views: &ViewEmbeddings, _context: &StepContext) -> Result<Self> {
        let teacher = require_views("DINO", "teacher outputs", &views.targets, 1)?;
        let momentum = self.config.center_momentum;
        let center = dino_center_update(self.center.val(), teacher, momentum)?;
        Ok(Self {
            center: set_buffer(self.center, center),
            ..self
        })
    }
}

/// DINO's loss of the teacher's outputs on the global crops (`teacher[i]`, `[B, K]`, the same
/// images as `student[i]`) and the student's on every crop, with centre `[1, K]`: see the
/// [module docs](self). The teacher's side is detached.
pub fn dino_loss(
    teacher: &[Tensor<2>],
    student: &[Tensor<2>],
    center: Tensor<2>,
    teacher_temperature: f64,
    student_temperature: f64,
) -> Result<Tensor<1>> {
    if teacher.is_empty() || student.len() < 2 || teacher.len() > student.len() {
        return Err(Error::MissingInput {
            context: "DINO loss".into(),
            what: format!(
                "crops: needs 1 or more teacher views and 2 or more student views, no fewer \
                 than the teacher's; got {} and {}",
                teacher.len(),
                student.len()
            ),
        });
    }
    for (v, s) in student.iter().enumerate().skip(1) {
        check::same_shape(|| format!("DINO loss: student view {v}"), &student[0], s)?;
    }
    let targets = teacher
        .iter()
        .map(|t| {
            check::same_shape(|| "DINO loss: teacher view".into(), &student[0], t)?;
            Ok(softmax(
                (t.clone().detach() - center.clone()).div_scalar(teacher_temperature),
                1,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let log_probs: Vec<Tensor<2>> = student
        .iter()
        .map(|s| log_softmax(s.clone().div_scalar(student_temperature), 1))
        .collect();
    let mut total: Option<Tensor<1>> = None;
    let mut pairs = 0usize;
    for (i, target) in targets.iter().enumerate() {
        for (v, log_p) in log_probs.iter().enumerate() {
            if v == i {
                continue;
            }
            let term = (target.clone() * log_p.clone()).sum_dim(1).mean().neg();
            pairs += 1;
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
    }
    let total = total.ok_or_else(|| Error::MissingInput {
        context: "DINO loss".into(),
        what: "a pair of distinct crops".into(),
    })?;
    Ok(total.div_scalar(pairs as f64))
}

/// The new centre `m c + (1 - m) mean(teacher)`, the mean over every teacher view and image.
pub fn dino_center_update(
    center: Tensor<2>,
    teacher: &[Tensor<2>],
    momentum: f64,
) -> Result<Tensor<2>> {
    let all = Tensor::cat(teacher.iter().map(|t| t.clone().detach()).collect(), 0);
    let [_, dim] = center.dims();
    if all.dims()[1] != dim {
        return Err(Error::ShapeMismatch {
            context: "DINO centre update: teacher outputs".into(),
            expected: vec![all.dims()[0], dim],
            found: all.dims().to_vec(),
        });
    }
    // The mean over the global batch: each rank's mean, averaged over ranks.
    let batch_center = crate::distributed::mean_across_ranks(all.mean_dim(0))?;
    Ok(center.mul_scalar(momentum) + batch_center.mul_scalar(1.0 - momentum))
}
