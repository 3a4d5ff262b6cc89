//! One training step of a self-supervised model: forward all views, compute the objective,
//! backward, optimiser step, EMA update of the target.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use crate::backbone::Encoder;
use crate::collapse::CollapseValues;
use crate::error::{Error, Result};
use crate::objective::{Objective, ObjectiveState};
use crate::optim::EmaSchedule;
use crate::siamese::JointEmbedding;

/// Everything that is trained: the joint-embedding architecture and the objective's own
/// parameters (SwAV's prototypes).
#[derive(Module, Debug)]
pub struct SelfSupervised<E> {
    /// Online and target branches.
    pub embedding: JointEmbedding<E>,
    /// The objective.
    pub objective: Objective,
}

impl<E: Encoder> SelfSupervised<E> {
    /// Pairs an architecture with an objective, checking the architecture provides what the
    /// objective needs (a predictor, an EMA target).
    pub fn new(embedding: JointEmbedding<E>, objective: Objective) -> Result<Self> {
        let needs = objective.requirements();
        let has_predictor = embedding.online.predictor.is_some();
        let has_target = embedding.target.is_some();
        if needs.predictor && !has_predictor {
            return Err(Error::invalid_config(
                "predictor",
                "none",
                format!("a predictor head: {} needs one", objective.name()),
            ));
        }
        if needs.ema_target != has_target {
            return Err(Error::invalid_config(
                "ema_target",
                has_target,
                format!("{} for {}", needs.ema_target, objective.name()),
            ));
        }
        Ok(Self {
            embedding,
            objective,
        })
    }
}

/// Optimiser and schedules carried from step to step.
pub struct StepState {
    /// The optimiser of the online network and the objective.
    pub optimizer: ModuleOptimizer,
    /// The objective's own state (step counter, SwAV queue).
    pub objective: ObjectiveState,
    /// BYOL's EMA schedule, for models with a target.
    pub ema: Option<EmaSchedule>,
}

/// What one step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Index of the step (0-based).
    pub step: usize,
    /// Loss before the update.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// EMA decay used for the target update, if any.
    pub tau: Option<f64>,
    /// Collapse statistics of the batch.
    pub collapse: CollapseValues,
}

/// Runs one optimisation step on `views` (global crops first, `num_global` of them) with
/// learning rate `lr`, and returns the updated model and a report.
///
/// The model must live on an autodiff device; the views are moved to autodiff if needed.
pub fn train_step<E: Encoder>(
    model: SelfSupervised<E>,
    views: &[Tensor<4>],
    num_global: usize,
    lr: f64,
    state: &mut StepState,
) -> Result<(SelfSupervised<E>, StepReport)> {
    if !(lr.is_finite() && lr > 0.0) {
        return Err(Error::invalid_config("lr", lr, "a finite value > 0"));
    }
    let step = state.objective.step;
    let views: Vec<Tensor<4>> = views.iter().map(|v| v.clone().autodiff()).collect();
    let model = SelfSupervised {
        objective: model.objective.before_step(),
        ..model
    };
    let embeddings = model.embedding.embed_views(&views, num_global)?;
    let output = model.objective.compute(&embeddings, &mut state.objective)?;
    let collapse = output.stats.values();
    let grads = output.loss.backward();
    let grads = GradientsParams::from_grads(grads, &model);
    let mut model = state.optimizer.step(lr, model, grads);
    let tau = match (&model.embedding.target, &state.ema) {
        (Some(_), Some(schedule)) => Some(schedule.tau(step)),
        (Some(_), None) => {
            return Err(Error::MissingInput {
                context: "training step".into(),
                what: "an EMA schedule for the target network".into(),
            });
        }
        _ => None,
    };
    if let Some(tau) = tau {
        model.embedding = model.embedding.update_target(tau)?;
    }
    state.objective.step += 1;
    Ok((
        model,
        StepReport {
            step,
            loss: output.loss_value,
            lr,
            tau,
            collapse,
        },
    ))
}
