//! SwAV: Swapping Assignments between Views (Caron et al., NeurIPS 2020, arXiv:2006.09882;
//! reference code: facebookresearch/swav `main_swav.py`; lightly's `SwaVLoss`).
//!
//! Embeddings are scored against `K` prototypes, `s = z . C` (unit-norm `z` and prototypes).
//! The codes of each global (high-resolution) crop are a balanced soft assignment computed with
//! Sinkhorn-Knopp ([`sinkhorn`], 3 iterations, `eps = 0.05`); every other crop predicts them:
//!
//! `L = (1 / G) sum_{i < G} (1 / (V - 1)) sum_{v != i} -mean_b sum_k q_i log softmax(s_v / T)`,
//!
//! with `G` global crops of `V` crops in all and temperature `T = 0.1`. The prototypes are
//! frozen (no gradient) for the first iterations, and a queue of past embeddings
//! ([`EmbeddingQueue`]) can enlarge the batch the codes are balanced over.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

use super::queue::EmbeddingQueue;
use super::sinkhorn::sinkhorn;
use super::{ObjectiveState, Requirements, ViewEmbeddings, require_views};
use crate::check;
use crate::error::{Error, Result};
use crate::prototypes::Prototypes;

/// The SwAV objective: prototypes plus the loss hyper-parameters.
#[derive(Module, Debug)]
pub struct SwavLoss {
    /// The learnable prototypes.
    pub prototypes: Prototypes,
    /// Softmax temperature `T` of the predictions.
    pub temperature: f64,
    /// Sinkhorn-Knopp iterations.
    pub sinkhorn_iterations: usize,
    /// Sinkhorn-Knopp entropic regularisation `eps`.
    pub sinkhorn_epsilon: f64,
    /// Optimiser steps during which the prototypes get no gradient.
    pub freeze_prototypes_steps: usize,
}

impl SwavLoss {
    /// What the joint embedding must provide.
    pub fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    /// Loss of one batch of views. Reads the queue of `state` when it is full and pushes the
    /// current global crops into it afterwards.
    pub fn forward(&self, views: &ViewEmbeddings, state: &mut ObjectiveState) -> Result<Tensor<1>> {
        let projections = require_views("SwAV", "projections", &views.projections, 2)?;
        let globals = views.num_global;
        if globals == 0 || globals > projections.len() {
            return Err(Error::invalid_config(
                "SwAV num_global",
                globals,
                format!("between 1 and the number of views ({})", projections.len()),
            ));
        }
        let frozen = state.step < self.freeze_prototypes_steps;
        let scores = projections
            .iter()
            .map(|z| self.prototypes.scores(z.clone(), frozen))
            .collect::<Result<Vec<_>>>()?;
        let (high, low) = scores.split_at(globals);
        let queue_scores = match &state.queue {
            Some(queue) if queue.is_full() => Some(
                (0..globals)
                    .map(|c| {
                        let stored = queue.full(c).expect("queue is full");
                        self.prototypes.scores(stored, true)
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            _ => None,
        };
        let loss = swav_loss(
            high,
            low,
            queue_scores.as_deref(),
            self.temperature,
            self.sinkhorn_iterations,
            self.sinkhorn_epsilon,
        )?;
        if let Some(queue) = state.queue.as_mut() {
            push_globals(queue, &projections[..globals])?;
        }
        Ok(loss)
    }
}

fn push_globals(queue: &mut EmbeddingQueue, globals: &[Tensor<2>]) -> Result<()> {
    for (crop, z) in globals.iter().enumerate().take(queue.crops()) {
        queue.push(crop, crate::energy::l2_normalize(z.clone().detach()))?;
    }
    Ok(())
}

/// Cross-entropy between codes `q` and the softmax of `scores / T`:
/// `-mean_b sum_k q_bk log softmax(scores_b / T)_k`.
fn swapped_prediction(scores: Tensor<2>, codes: Tensor<2>, temperature: f64) -> Tensor<1> {
    let log_p = log_softmax(scores.div_scalar(temperature), 1);
    (log_p * codes).sum_dim(1).mean().neg()
}

/// SwAV loss of prototype scores (`[B, K]` per crop): `high` are the global crops whose codes
/// are computed, `low` the other crops. `queue`, if given, holds scores of past embeddings of
/// each global crop, appended before Sinkhorn and dropped after it.
pub fn swav_loss(
    high: &[Tensor<2>],
    low: &[Tensor<2>],
    queue: Option<&[Tensor<2>]>,
    temperature: f64,
    sinkhorn_iterations: usize,
    sinkhorn_epsilon: f64,
) -> Result<Tensor<1>> {
    let crops = high.len() + low.len();
    if high.is_empty() || crops < 2 {
        return Err(Error::MissingInput {
            context: "SwAV loss".into(),
            what: format!(
                "crops: needs one global crop and two crops in all, got {} global and {} other",
                high.len(),
                low.len()
            ),
        });
    }
    for (v, s) in high.iter().chain(low).enumerate().skip(1) {
        check::same_shape(|| format!("SwAV loss: scores of crop {v}"), &high[0], s)?;
    }
    let batch = high[0].dims()[0];
    let mut total: Option<Tensor<1>> = None;
    for (i, scores_i) in high.iter().enumerate() {
        let mut to_balance = scores_i.clone().detach();
        if let Some(queue) = queue {
            let stored = queue.get(i).ok_or_else(|| Error::MissingInput {
                context: "SwAV loss".into(),
                what: format!("queue scores of global crop {i}"),
            })?;
            to_balance = Tensor::cat(vec![to_balance, stored.clone().detach()], 0);
        }
        let mut codes = sinkhorn(to_balance, sinkhorn_iterations, sinkhorn_epsilon);
        if queue.is_some() {
            codes = codes.narrow(0, 0, batch);
        }
        let mut sub: Option<Tensor<1>> = None;
        for (v, scores_v) in high
            .iter()
            .enumerate()
            .chain(low.iter().enumerate().map(|(v, s)| (v + high.len(), s)))
        {
            if v == i {
                continue;
            }
            let term = swapped_prediction(scores_v.clone(), codes.clone(), temperature);
            sub = Some(match sub {
                Some(s) => s + term,
                None => term,
            });
        }
        let sub = sub
            .expect("at least two crops")
            .div_scalar((crops - 1) as f64);
        total = Some(match total {
            Some(t) => t + sub,
            None => sub,
        });
    }
    Ok(total
        .expect("at least one global crop")
        .div_scalar(high.len() as f64))
}
