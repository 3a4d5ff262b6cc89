//! Data-parallel training across processes and machines over MPI, with global-batch
//! semantics.
//!
//! Launch the same command on every rank (`mpirun -np 4 selfsup pretrain ...`, or `srun`
//! under Slurm); build with the `mpi` feature. Every rank holds the whole model; with a world
//! of `N` ranks and the configuration's batch `G` (the *global* batch, so a recipe trains the
//! same on any number of ranks), each step:
//!
//! 1. each rank takes its disjoint `G / N` images of the global batch ([`Shard`]): together
//!    exactly the images and views one process with batch `G` sees in that step;
//! 2. forwards them; a method whose loss compares embeddings across the batch
//!    ([`GlobalBatch::Gathered`](crate::method::GlobalBatch)) gathers every rank's embeddings
//!    with [`gather_rows`], whose backward pass sums the gradients of all ranks into each
//!    rank's own rows (PyTorch's `GatherLayer`), so every rank computes the loss of the whole
//!    global batch; a method whose loss is a mean over images
//!    ([`GlobalBatch::Local`](crate::method::GlobalBatch)) computes it on its own images;
//! 3. backpropagates `loss / N` and sums the parameter gradients of all ranks in one
//!    flattened buffer (`gradients::sum_gradients`): each rank then holds the gradient of the
//!    mean of the ranks' losses, which is the single-process loss of the global batch, and
//!    applies the same optimiser step;
//! 4. every few steps compares a checksum of the parameters across ranks and stops with an
//!    error if they drifted apart.
//!
//! Rank 0 alone writes checkpoints, metrics and progress and runs the kNN monitor; the other
//! ranks wait for it. A rank that fails ends the whole job (`MPI_Abort`) after printing its
//! error, so no rank waits forever in a collective.
//!
//! Batch norm normalises with each rank's own batch statistics by default (as PyTorch's
//! `DistributedDataParallel`); [`DistributedConfig::sync_batch_norm`] normalises the heads'
//! batch norm with the statistics of the global batch (`SyncBatchNorm`, as the SimCLR and BYOL
//! papers do).

mod gather;
mod gradients;
#[cfg(feature = "mpi")]
mod mpi_world;
mod shard;
mod stderr_line;

use std::cell::Cell;

use serde::{Deserialize, Serialize};

pub use gather::gather_rows;
pub(crate) use gather::{gather_embeddings, gather_indices, mean_across_ranks};
pub(crate) use gradients::{check_same_parameters, sum_gradients};
pub use shard::Shard;
pub use stderr_line::eprint_line;

use crate::error::{Error, Result};

/// The settings of a data-parallel run (ignored in a world of one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DistributedConfig {
    /// Normalise the heads' batch norm with the statistics of the global batch
    /// (synchronised batch norm) instead of each rank's own.
    pub sync_batch_norm: bool,
    /// Compare a checksum of the parameters across ranks every this many steps (0: never).
    pub check_every_steps: usize,
}

impl DistributedConfig {
    /// Whether every field has its default value.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            sync_batch_norm: false,
            check_every_steps: 100,
        }
    }
}

/// The processes of a run: this process's rank among `size`, and its rank among the ranks on
/// its machine (which GPU it takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    rank: usize,
    size: usize,
    local_rank: usize,
}

impl Default for World {
    fn default() -> Self {
        Self::single()
    }
}

impl World {
    /// A world of one process: no communication at all.
    pub fn single() -> Self {
        Self {
            rank: 0,
            size: 1,
            local_rank: 0,
        }
    }

    /// The world this process was launched into: MPI's world when a launcher (`mpirun`,
    /// `srun`) started it and the crate was built with the `mpi` feature (MPI is initialised
    /// once, on the first call), else a world of one. Launched as one of several ranks
    /// without the `mpi` feature, it is an error: every rank would train alone.
    pub fn init() -> Result<Self> {
        let launched = launched_size();
        #[cfg(feature = "mpi")]
        if launched.is_some() {
            return mpi_world::init();
        }
        match launched {
            Some((size, variable)) if size > 1 => Err(Error::Distributed {
                rank: 0,
                reason: format!(
                    "{variable}={size} says this process is one of {size} ranks, but selfsup \
                     was built without MPI: rebuild with `--features mpi`"
                ),
            }),
            _ => Ok(Self::single()),
        }
    }

    /// This process's rank, `0..size`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// This process's rank among the ranks on its machine.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Rank 0, which writes files and reports.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// More than one rank.
    pub fn is_distributed(&self) -> bool {
        self.size > 1
    }

    /// This rank's part of every global batch.
    pub fn shard(&self) -> Shard {
        Shard {
            rank: self.rank,
            size: self.size,
        }
    }

    /// Sums `values` element-wise over all ranks, in place.
    pub fn all_reduce_sum(&self, values: &mut [f32]) {
        if self.is_distributed() {
            #[cfg(feature = "mpi")]
            mpi_world::all_reduce_sum(values);
        }
        let _ = values;
    }

    /// Every rank's `values` (all of one length), concatenated in rank order.
    pub fn all_gather(&self, values: &[f32]) -> Vec<f32> {
        #[cfg(feature = "mpi")]
        if self.is_distributed() {
            return mpi_world::all_gather(values, self.size);
        }
        values.to_vec()
    }

    /// Every rank's `values` (all of one length), concatenated in rank order.
    pub fn all_gather_u64(&self, values: &[u64]) -> Vec<u64> {
        #[cfg(feature = "mpi")]
        if self.is_distributed() {
            return mpi_world::all_gather_u64(values, self.size);
        }
        values.to_vec()
    }

    /// Rank 0's `values` on every rank.
    pub fn broadcast(&self, values: &mut [f64]) {
        if self.is_distributed() {
            #[cfg(feature = "mpi")]
            mpi_world::broadcast(values);
        }
        let _ = values;
    }

    /// Waits until every rank arrives.
    pub fn barrier(&self) {
        if self.is_distributed() {
            #[cfg(feature = "mpi")]
            mpi_world::barrier();
        }
    }

    /// Prints `error` with this rank's number and ends every rank of the job (`MPI_Abort`);
    /// in a world of one, only prints it and exits with status 1.
    pub fn abort(&self, error: &Error) -> ! {
        eprint_line(&format!(
            "error on rank {} of {}: {error}; stopping every rank",
            self.rank, self.size
        ));
        #[cfg(feature = "mpi")]
        if self.is_distributed() {
            mpi_world::abort(1);
        }
        std::process::exit(1)
    }
}

/// What this rank sent through MPI since the start, and the time its MPI calls took
/// (waiting for slower ranks included): the communication cost of data-parallel training.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Traffic {
    /// Bytes this rank contributed to all-reduces (the gradients, once per step).
    pub all_reduce_bytes: u64,
    /// Bytes this rank contributed to all-gathers (embeddings, their gradients' all-reduce is
    /// counted above, and dataset indices).
    pub all_gather_bytes: u64,
    /// Bytes of broadcasts (parameter checksums, kNN results).
    pub broadcast_bytes: u64,
    /// Seconds spent inside MPI calls.
    pub seconds: f64,
}

impl std::ops::Sub for Traffic {
    type Output = Traffic;

    fn sub(self, earlier: Traffic) -> Traffic {
        Traffic {
            all_reduce_bytes: self.all_reduce_bytes - earlier.all_reduce_bytes,
            all_gather_bytes: self.all_gather_bytes - earlier.all_gather_bytes,
            broadcast_bytes: self.broadcast_bytes - earlier.broadcast_bytes,
            seconds: self.seconds - earlier.seconds,
        }
    }
}

/// This rank's MPI [`Traffic`] so far (zeros without MPI).
pub fn traffic() -> Traffic {
    #[cfg(feature = "mpi")]
    {
        mpi_world::traffic()
    }
    #[cfg(not(feature = "mpi"))]
    {
        Traffic::default()
    }
}

/// Ends MPI (`MPI_Finalize`) if [`World::init`] started it; call once, when the program is
/// done with every collective. Does nothing otherwise.
pub fn finalize() {
    #[cfg(feature = "mpi")]
    mpi_world::finalize();
}

/// The world size a launcher announced in the environment, and the variable that said so:
/// Open MPI's, the PMI standard's (MPICH, Intel MPI), or Slurm's inside `srun`.
fn launched_size() -> Option<(usize, &'static str)> {
    let var = |name: &'static str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map(|n| (n, name))
    };
    var("OMPI_COMM_WORLD_SIZE")
        .or_else(|| var("PMI_SIZE"))
        .or_else(|| var("PMIX_SIZE"))
        .or_else(|| {
            std::env::var("SLURM_STEP_ID")
                .is_ok()
                .then(|| var("SLURM_NTASKS"))
                .flatten()
        })
}

/// The world a training loop runs in on this thread, and its batch-norm setting: what
/// [`gather_rows`] and the heads' batch norm consult during a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Active {
    pub world: World,
    pub sync_batch_norm: bool,
}

thread_local! {
    static ACTIVE: Cell<Active> = Cell::new(Active::default());
}

/// The world of the training loop running on this thread (a world of one outside one).
pub(crate) fn active() -> Active {
    ACTIVE.with(Cell::get)
}

/// Makes `active` the thread's world until the guard drops.
pub(crate) fn activate(active: Active) -> WorldGuard {
    WorldGuard(ACTIVE.with(|a| a.replace(active)))
}

/// Makes `world` the training world of this thread until the guard drops: what
/// [`gather_rows`] gathers over, and (with `sync_batch_norm`) what the heads' batch norm
/// takes its statistics from. The pretraining loop does this itself; call it to use
/// [`gather_rows`] or [`crate::step::train_step`] in a loop of your own.
pub fn enter(world: World, sync_batch_norm: bool) -> WorldGuard {
    activate(Active {
        world,
        sync_batch_norm,
    })
}

/// Restores the thread's previous training world when dropped; see [`enter`].
#[must_use = "the world is the thread's only while the guard lives"]
pub struct WorldGuard(Active);

impl Drop for WorldGuard {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.0));
    }
}
