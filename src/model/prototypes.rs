//! SwAV prototypes: `K` learnable unit vectors that embeddings are softly assigned to.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use crate::energy::l2_normalize;
use crate::error::{Error, Result};

/// `K` prototype vectors of dimension `D` (the rows of a `[K, D]` weight, SwAV's bias-free
/// `nn.Linear(D, K)`). As in the reference code, the rows are L2-normalised in place before
/// every training step ([`Prototypes::normalized`]); the scores are the dot products
/// `z . c_k` of L2-normalised embeddings with them.
#[derive(Module, Debug)]
pub struct Prototypes {
    /// `[K, D]`, one prototype per row.
    pub weight: Param<Tensor<2>>,
}

impl Prototypes {
    /// `count` random unit prototypes of dimension `dim`.
    pub fn new(dim: usize, count: usize, device: &Device) -> Result<Self> {
        if dim == 0 || count == 0 {
            return Err(Error::invalid_config(
                "prototypes",
                format!("{count} prototypes of dimension {dim}"),
                "at least one prototype of dimension at least 1",
            ));
        }
        let bound = 1.0 / (dim as f64).sqrt();
        let weight = Initializer::Uniform {
            min: -bound,
            max: bound,
        }
        .init([count, dim], device);
        Ok(Self { weight }.normalized())
    }

    /// Number of prototypes `K`.
    pub fn count(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Dimension `D` of each prototype.
    pub fn dim(&self) -> usize {
        self.weight.dims()[1]
    }

    /// The same prototypes with every row scaled to unit norm, outside the autodiff graph
    /// (SwAV normalises `prototypes.weight` under `torch.no_grad()` before each step). The
    /// parameter keeps its id and its trainability.
    pub fn normalized(self) -> Self {
        Self {
            weight: self.weight.map(|w| {
                let trainable = w.is_require_grad();
                let on_autodiff = w.is_autodiff();
                let normalized = l2_normalize(w.without_autodiff());
                let normalized = if on_autodiff {
                    normalized.autodiff()
                } else {
                    normalized
                };
                normalized.set_require_grad(trainable)
            }),
        }
    }

    /// Scores `z . c_k` of embeddings `[B, D]` (normalised here) against each prototype:
    /// `[B, K]`. With `frozen`, no gradient reaches the prototypes (SwAV freezes them during
    /// the first iterations).
    pub fn scores(&self, embeddings: Tensor<2>, frozen: bool) -> Result<Tensor<2>> {
        let [batch, dim] = embeddings.dims();
        if dim != self.dim() {
            return Err(Error::ShapeMismatch {
                context: "prototype scores: embedding dimension".into(),
                expected: vec![batch, self.dim()],
                found: vec![batch, dim],
            });
        }
        let weight = if frozen {
            self.weight.val().detach()
        } else {
            self.weight.val()
        };
        Ok(l2_normalize(embeddings).matmul(weight.transpose()))
    }
}
