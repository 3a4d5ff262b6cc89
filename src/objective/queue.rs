//! A first-in-first-out queue of past embeddings, one per global crop (SwAV's queue, used when
//! the batch is small compared with the number of prototypes).

use burn::tensor::Tensor;

use crate::error::{Error, Result};

/// Stores the most recent `capacity` embeddings of each global crop, newest first. The stored
/// embeddings are detached; the queue is only read once it is full, as lightly and the SwAV
/// reference code start using it after it has been filled.
#[derive(Debug, Clone)]
pub struct EmbeddingQueue {
    capacity: usize,
    crops: Vec<Option<Tensor<2>>>,
}

impl EmbeddingQueue {
    /// An empty queue of `capacity` embeddings for each of `crops` global crops.
    pub fn new(capacity: usize, crops: usize) -> Result<Self> {
        if capacity == 0 || crops == 0 {
            return Err(Error::invalid_config(
                "queue",
                format!("capacity {capacity}, crops {crops}"),
                "both at least 1",
            ));
        }
        Ok(Self {
            capacity,
            crops: vec![None; crops],
        })
    }

    /// Embeddings kept per crop.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of global crops the queue serves.
    pub fn crops(&self) -> usize {
        self.crops.len()
    }

    /// Stored embeddings of crop `crop` once the queue holds `capacity` of them.
    pub fn full(&self, crop: usize) -> Option<Tensor<2>> {
        self.crops
            .get(crop)?
            .as_ref()
            .filter(|t| t.dims()[0] == self.capacity)
            .cloned()
    }

    /// Whether every crop's queue is full.
    pub fn is_full(&self) -> bool {
        (0..self.crops.len()).all(|c| self.full(c).is_some())
    }

    /// Pushes a batch `[B, D]` of crop `crop`, dropping the oldest beyond capacity.
    pub fn push(&mut self, crop: usize, embeddings: Tensor<2>) -> Result<()> {
        let crops = self.crops.len();
        let slot = self
            .crops
            .get_mut(crop)
            .ok_or_else(|| Error::invalid_config("queue crop", crop, format!("below {crops}")))?;
        let embeddings = embeddings.without_autodiff();
        let merged = match slot.take() {
            Some(old) => {
                if old.dims()[1] != embeddings.dims()[1] {
                    return Err(Error::ShapeMismatch {
                        context: "queue push: embedding dimension".into(),
                        expected: vec![embeddings.dims()[0], old.dims()[1]],
                        found: embeddings.dims().to_vec(),
                    });
                }
                Tensor::cat(vec![embeddings, old], 0)
            }
            None => embeddings,
        };
        let rows = merged.dims()[0].min(self.capacity);
        *slot = Some(merged.narrow(0, 0, rows));
        Ok(())
    }
}

/// The contents of an [`EmbeddingQueue`] on the host, for checkpoints.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueSnapshot {
    /// Embeddings kept per crop.
    pub capacity: usize,
    /// Per crop, the stored `[n, d]` shape and values (row-major), if any.
    pub crops: Vec<Option<(Vec<usize>, Vec<f32>)>>,
}

impl EmbeddingQueue {
    /// Copies the queue to the host.
    pub fn snapshot(&self) -> Result<QueueSnapshot> {
        let crops = self
            .crops
            .iter()
            .map(|c| {
                c.as_ref()
                    .map(|t| {
                        let shape = t.dims().to_vec();
                        t.clone()
                            .into_data()
                            .try_to_vec::<f32>()
                            .map(|v| (shape, v))
                            .map_err(|e| Error::NonFinite {
                                context: format!("SwAV queue could not be read: {e:?}"),
                            })
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(QueueSnapshot {
            capacity: self.capacity,
            crops,
        })
    }

    /// Rebuilds a queue from a snapshot on `device`.
    pub fn restore(snapshot: &QueueSnapshot, device: &burn::tensor::Device) -> Result<Self> {
        let mut queue = Self::new(snapshot.capacity, snapshot.crops.len())?;
        for (slot, crop) in queue.crops.iter_mut().zip(&snapshot.crops) {
            *slot = match crop {
                Some((shape, values))
                    if shape.len() == 2 && shape[0] * shape[1] == values.len() =>
                {
                    Some(Tensor::from_data(
                        burn::tensor::TensorData::new(values.clone(), [shape[0], shape[1]]),
                        device,
                    ))
                }
                Some((shape, values)) => {
                    return Err(Error::ShapeMismatch {
                        context: "SwAV queue snapshot".into(),
                        expected: shape.clone(),
                        found: vec![values.len()],
                    });
                }
                None => None,
            };
        }
        Ok(queue)
    }
}
