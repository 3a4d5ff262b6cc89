//! Which images of each global batch a rank takes.

use std::ops::Range;

use crate::error::{Error, Result};

/// Rank `rank`'s part of every global batch in a world of `size`: global batch `k` of an
/// epoch is positions `k G .. (k + 1) G` of the epoch's seeded permutation (the same on every
/// rank), and the rank takes the `rank`-th of its `size` equal slices. So the shards of an
/// epoch are disjoint, cover every batch, and together hold exactly what one process with
/// batch `G` would see, in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This rank, `0..size`.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self { rank: 0, size: 1 }
    }
}

impl Shard {
    /// Images per rank in a global batch of `global_batch`, which the world size must divide.
    pub fn local_batch(&self, global_batch: usize) -> Result<usize> {
        if self.size == 0 || self.rank >= self.size {
            return Err(Error::invalid_config(
                "shard",
                format!("rank {} of {}", self.rank, self.size),
                "a rank below a world size of at least 1",
            ));
        }
        if global_batch == 0 || !global_batch.is_multiple_of(self.size) {
            return Err(Error::invalid_config(
                "batch_size",
                global_batch,
                format!(
                    "a multiple of the {} ranks (the batch size is the global batch, split \
                     evenly over the ranks)",
                    self.size
                ),
            ));
        }
        Ok(global_batch / self.size)
    }

    /// Positions in the epoch's order of this rank's images of global batch `batch`.
    pub fn positions(&self, batch: usize, global_batch: usize) -> Range<usize> {
        let local = global_batch / self.size.max(1);
        let start = batch * global_batch + self.rank * local;
        start..start + local
    }

    /// This rank's rows of a gathered `[size * local, ...]` tensor.
    pub fn rows(&self, local: usize) -> Range<usize> {
        self.rank * local..(self.rank + 1) * local
    }
}
