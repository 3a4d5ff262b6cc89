//! A first-in-first-out queue of past embeddings, kept as buffers of a method's module so
//! checkpoints carry it: SwAV's queue (one slot per global crop, used once full) and MoCo's
//! queue of keys (one slot, random unit vectors at the start, as the reference code does).

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};

use super::{buffer, set_buffer};
use crate::check;
use crate::energy::l2_normalize;
use crate::error::{Error, Result};

/// `slots` queues of the `capacity` most recent `dim`-dimensional embeddings, newest first.
#[derive(Module, Debug)]
pub struct EmbeddingQueue {
    /// `[slots, capacity, dim]`.
    pub values: Param<Tensor<3>>,
    /// `[1]`: how many rows of each slot hold pushed (or initial) embeddings.
    pub filled: Param<Tensor<1>>,
}

fn check_sizes(slots: usize, capacity: usize, dim: usize) -> Result<()> {
    if slots == 0 || capacity == 0 || dim == 0 {
        return Err(Error::invalid_config(
            "queue",
            format!("{slots} slots of {capacity} x {dim}"),
            "at least one slot, one row and one dimension",
        ));
    }
    Ok(())
}

impl EmbeddingQueue {
    /// An empty queue (zeros; used only once full).
    pub fn empty(slots: usize, capacity: usize, dim: usize, device: &Device) -> Result<Self> {
        check_sizes(slots, capacity, dim)?;
        Ok(Self {
            values: buffer(Tensor::zeros([slots, capacity, dim], device)),
            filled: buffer(Tensor::zeros([1], device)),
        })
    }

    /// A full queue of random unit vectors (MoCo's initial queue).
    pub fn random_unit(slots: usize, capacity: usize, dim: usize, device: &Device) -> Result<Self> {
        check_sizes(slots, capacity, dim)?;
        let normal = Tensor::<2>::random(
            [slots * capacity, dim],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let values = l2_normalize(normal).reshape([slots, capacity, dim]);
        Ok(Self {
            values: buffer(values),
            filled: buffer(Tensor::full([1], capacity as f64, device)),
        })
    }

    /// `[slots, capacity, dim]`.
    pub fn shape(&self) -> [usize; 3] {
        self.values.val().dims()
    }

    /// Rows of each slot that hold embeddings (read from the device).
    pub fn filled(&self) -> usize {
        check::scalar(&self.filled.val()) as usize
    }

    /// Whether every row holds an embedding.
    pub fn is_full(&self) -> bool {
        self.filled() >= self.shape()[1]
    }

    /// The embeddings of slot `slot`, `[capacity, dim]`, outside the autodiff graph.
    pub fn slot(&self, slot: usize) -> Result<Tensor<2>> {
        let [slots, capacity, dim] = self.shape();
        if slot >= slots {
            return Err(Error::invalid_config(
                "queue slot",
                slot,
                format!("below {slots}"),
            ));
        }
        Ok(self
            .values
            .val()
            .narrow(0, slot, 1)
            .reshape([capacity, dim])
            .detach())
    }

    /// Pushes one batch `[B, dim]` into every slot (`batches[s]` into slot `s`), dropping the
    /// oldest rows beyond capacity.
    pub fn push(self, batches: &[Tensor<2>]) -> Result<Self> {
        let [slots, capacity, dim] = self.shape();
        if batches.len() != slots {
            return Err(Error::ShapeMismatch {
                context: "queue push: one batch per slot".into(),
                expected: vec![slots],
                found: vec![batches.len()],
            });
        }
        let rows = batches[0].dims()[0];
        for (s, b) in batches.iter().enumerate() {
            if b.dims() != [rows, dim] {
                return Err(Error::ShapeMismatch {
                    context: format!("queue push: batch of slot {s}"),
                    expected: vec![rows, dim],
                    found: b.dims().to_vec(),
                });
            }
        }
        let old = self.values.val().detach();
        let merged: Vec<Tensor<3>> = batches
            .iter()
            .map(|b| b.clone().detach().reshape([1, rows, dim]))
            .collect();
        let newest = Tensor::cat(merged, 0);
        let values = Tensor::cat(vec![newest, old], 1).narrow(1, 0, capacity);
        let filled = (self.filled() + rows).min(capacity);
        let device = values.device();
        Ok(Self {
            values: set_buffer(self.values, values),
            filled: set_buffer(self.filled, Tensor::full([1], filled as f64, &device)),
        })
    }
}
