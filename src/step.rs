//! One training step of a self-supervised model: forward all views, the method's loss,
//! backward, the optimiser step, the EMA update of the target, the method's state update.

use std::collections::HashSet;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::augment::Masks;
use crate::backbone::Encoder;
use crate::check;
use crate::collapse::{CollapseStats, CollapseValues};
use crate::error::{Error, Result};
use crate::method::{
    AnyMethod, GlobalBatch, Method, Requirements, ScheduleValues, StepContext, ViewEmbeddings,
};
use crate::model::JointEmbedding;
use crate::optim::GroupedOptimizer;

/// Everything that is trained: the joint-embedding architecture and the method's module (its
/// own parameters, such as SwAV's prototypes, and its state).
#[derive(Module, Debug)]
pub struct SelfSupervised<E, M = AnyMethod> {
    /// Online and target branches.
    pub embedding: JointEmbedding<E>,
    /// The method.
    pub method: M,
}

impl<E: Encoder, M: Method> SelfSupervised<E, M> {
    /// Pairs an architecture with a method, checking the architecture provides what the
    /// method needs (a predictor, a momentum target).
    pub fn new(embedding: JointEmbedding<E>, method: M) -> Result<Self> {
        let needs = method.requirements();
        let has_predictor = embedding.online.predictor.is_some();
        let has_target = embedding.target.is_some();
        if needs.predictor && !has_predictor {
            return Err(Error::invalid_config(
                "predictor",
                "none",
                format!("a predictor head: {} needs one", method.name()),
            ));
        }
        if needs.momentum_target != has_target {
            return Err(Error::invalid_config(
                "momentum_target",
                has_target,
                format!("{} for {}", needs.momentum_target, method.name()),
            ));
        }
        Ok(Self { embedding, method })
    }
}

/// What one step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Index of the step (0-based).
    pub step: usize,
    /// Loss before the update.
    pub loss: f32,
    /// The scheduled values the step used.
    pub values: ScheduleValues,
    /// Collapse statistics of the batch.
    pub collapse: CollapseValues,
}

/// Runs one optimisation step on `views` (global crops first, `num_global` of them) with the
/// scheduled values of `context`, and returns the updated model and a report.
///
/// The model must live on an autodiff device; the views are moved to autodiff if needed.
pub fn train_step<E: Encoder, M: Method>(
    model: SelfSupervised<E, M>,
    views: &[Tensor<4>],
    num_global: usize,
    context: &StepContext,
    optimizer: &mut GroupedOptimizer,
) -> Result<(SelfSupervised<E, M>, StepReport)> {
    train_step_masked(model, views, num_global, None, context, optimizer)
}

/// [`train_step`] with the batch's patch `masks` (masked-image methods).
pub fn train_step_masked<E: Encoder, M: Method>(
    model: SelfSupervised<E, M>,
    views: &[Tensor<4>],
    num_global: usize,
    masks: Option<&Masks>,
    context: &StepContext,
    optimizer: &mut GroupedOptimizer,
) -> Result<(SelfSupervised<E, M>, StepReport)> {
    let values = context.values;
    if !(values.lr.is_finite() && values.lr > 0.0) {
        return Err(Error::invalid_config("lr", values.lr, "a finite value > 0"));
    }
    let views: Vec<Tensor<4>> = views.iter().map(|v| v.clone().autodiff()).collect();
    let requirements = model.method.requirements();
    let model = SelfSupervised {
        method: model.method.before_step(context)?,
        ..model
    };
    let world = crate::distributed::active().world;
    let local = model
        .embedding
        .embed_batch(&views, num_global, &requirements, masks)?;
    let (embeddings, indices) = global_embeddings(local, &requirements, context.indices)?;
    let context = &StepContext {
        indices: &indices,
        ..*context
    };
    let loss = model.method.loss(&embeddings, context)?;
    let stats = collapse_stats(&embeddings)?;
    // Each rank backpropagates its share of the mean of the ranks' losses; summing the
    // ranks' gradients then gives the gradient of that mean (crate::distributed).
    let scaled_loss = if world.is_distributed() {
        loss.clone().div_scalar(world.size() as f64)
    } else {
        loss.clone()
    };
    // The backward pass is queued before anything is read back: on a GPU the host builds and
    // launches it while the device still runs the forward pass, and the loss and the collapse
    // statistics then come back in one transfer. A non-finite loss still stops the step
    // before the optimiser sees its gradients.
    let gradients = scaled_loss.backward();
    let (mut loss_value, collapse) = read_step_values(&loss, &stats);
    finite_loss(model.method.name(), loss_value, &embeddings)?;
    let mut grads = GradientsParams::from_grads(gradients, &model);
    if world.is_distributed() {
        let mut reported = [loss_value];
        crate::distributed::sum_gradients(&model, &mut grads, &mut reported, &world)?;
        loss_value = reported[0] / world.size() as f32;
    }
    let frozen = model
        .method
        .frozen_parameters(&model.embedding.online.projector, context);
    drop_gradients(&model, &mut grads, &frozen);
    let SelfSupervised { embedding, method } =
        optimizer.step(values.lr, values.weight_decay, model, grads);
    let embedding = match (&embedding.target, values.ema_momentum) {
        (Some(_), Some(tau)) => embedding.update_target(tau)?,
        (Some(_), None) => {
            return Err(Error::MissingInput {
                context: "training step".into(),
                what: "a momentum for the EMA target (ScheduleValues::ema_momentum)".into(),
            });
        }
        (None, _) => embedding,
    };
    let method = method.after_step(&embeddings, context)?;
    Ok((
        SelfSupervised { embedding, method },
        StepReport {
            step: context.progress.step,
            loss: loss_value,
            values: values.clone(),
            collapse,
        },
    ))
}

/// The embeddings and dataset indices the method sees: on several ranks, those of the whole
/// global batch when its loss compares embeddings across the batch
/// ([`GlobalBatch::Gathered`]), else this rank's own.
pub(crate) fn global_embeddings(
    local: ViewEmbeddings,
    requirements: &Requirements,
    indices: &[usize],
) -> Result<(ViewEmbeddings, Vec<usize>)> {
    let world = crate::distributed::active().world;
    if world.is_distributed() && requirements.global_batch == GlobalBatch::Gathered {
        Ok((
            crate::distributed::gather_embeddings(local)?,
            crate::distributed::gather_indices(indices),
        ))
    } else {
        Ok((local, indices.to_vec()))
    }
}

/// The loss and the collapse statistics on the host, read in one transfer.
fn read_step_values(loss: &Tensor<1>, stats: &CollapseStats) -> (f32, CollapseValues) {
    let values = Tensor::cat(
        vec![
            loss.clone().detach(),
            stats.embedding_std.clone(),
            stats.energy_gap.clone(),
        ],
        0,
    );
    let [loss, embedding_std, energy_gap] = check::scalars(&values);
    (
        loss,
        CollapseValues {
            embedding_std,
            energy_gap,
        },
    )
}

/// Fails on a non-finite loss `value`, naming the first non-finite input, or the loss itself.
fn finite_loss(method: &str, value: f32, views: &ViewEmbeddings) -> Result<()> {
    if value.is_finite() {
        return Ok(());
    }
    let named = [
        ("projection", &views.projections),
        ("prediction", &views.predictions),
        ("target projection", &views.targets),
    ];
    for (what, list) in named {
        for (v, t) in list.iter().enumerate() {
            check::finite(|| format!("{method} input: {what} of view {v}"), t)?;
        }
    }
    Err(Error::NonFinite {
        context: format!("{method} loss (value {value})"),
    })
}

/// Collapse statistics of the first two views' projections, on the device.
fn collapse_stats(views: &ViewEmbeddings) -> Result<CollapseStats> {
    let [a, b, ..] = views.projections.as_slice() else {
        return Err(Error::MissingInput {
            context: "collapse statistics".into(),
            what: "two views".into(),
        });
    };
    CollapseStats::from_views(a.clone(), b.clone())
}

/// Removes the gradients of the parameters `ids` of `module`, so the optimiser skips them.
fn drop_gradients<M: Module>(module: &M, grads: &mut GradientsParams, ids: &[ParamId]) {
    struct Drop<'a> {
        grads: &'a mut GradientsParams,
        ids: HashSet<ParamId>,
    }
    impl ModuleVisitor for Drop<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.ids.contains(&param.id) {
                self.grads.remove::<D>(param.id);
            }
        }
    }
    if !ids.is_empty() {
        module.visit(&mut Drop {
            grads,
            ids: ids.iter().copied().collect(),
        });
    }
}
