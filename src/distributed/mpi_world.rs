//! The collectives over MPI's world communicator (rsmpi over the system's MPI library).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use super::World;
use crate::error::{Error, Result};

/// The MPI session, kept until [`finalize`].
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);

/// Bytes each rank sent into all-reduces, all-gathers and broadcasts, and nanoseconds spent
/// in MPI calls (waiting for other ranks included), since the start.
static REDUCED: AtomicU64 = AtomicU64::new(0);
static GATHERED: AtomicU64 = AtomicU64::new(0);
static BROADCAST: AtomicU64 = AtomicU64::new(0);
static NANOS: AtomicU64 = AtomicU64::new(0);

/// Runs one MPI call, counting `bytes` into `counter` and its time.
fn counted<T>(counter: &AtomicU64, bytes: usize, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = call();
    NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    counter.fetch_add(bytes as u64, Ordering::Relaxed);
    out
}

pub(super) fn traffic() -> super::Traffic {
    super::Traffic {
        all_reduce_bytes: REDUCED.load(Ordering::Relaxed),
        all_gather_bytes: GATHERED.load(Ordering::Relaxed),
        broadcast_bytes: BROADCAST.load(Ordering::Relaxed),
        seconds: NANOS.load(Ordering::Relaxed) as f64 * 1e-9,
    }
}

fn world() -> SimpleCommunicator {
    SimpleCommunicator::world()
}

/// Initialises MPI (once per process) and reads this process's place in the world.
pub(super) fn init() -> Result<World> {
    let failed = |reason: String| Error::Distributed { rank: 0, reason };
    if !mpi::environment::is_initialized() {
        // The loss's collectives run on the training thread, but burn may run a backward
        // pass elsewhere: ask for full thread support.
        let (universe, _threading) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or_else(|| {
                failed("MPI could not be initialised (MPI_Init_thread failed)".into())
            })?;
        *UNIVERSE.lock().map_err(|e| failed(e.to_string()))? = Some(universe);
    }
    let comm = world();
    let rank = usize::try_from(comm.rank()).map_err(|e| failed(e.to_string()))?;
    let size = usize::try_from(comm.size()).map_err(|e| failed(e.to_string()))?;
    let node = comm.split_shared(comm.rank());
    let local_rank = usize::try_from(node.rank()).map_err(|e| failed(e.to_string()))?;
    Ok(World {
        rank,
        size,
        local_rank,
    })
}

pub(super) fn finalize() {
    if let Ok(mut universe) = UNIVERSE.lock() {
        // Dropping the universe calls MPI_Finalize.
        universe.take();
    }
}

pub(super) fn all_reduce_sum(values: &mut [f32]) {
    let send = values.to_vec();
    counted(&REDUCED, 4 * values.len(), || {
        world().all_reduce_into(&send[..], values, SystemOperation::sum());
    });
}

/// Sums `values` (`size` equal blocks) over all ranks and returns this rank's block of the
/// sum: half an all-reduce's traffic when each rank needs only its own rows.
pub(super) fn reduce_scatter_sum(values: &[f32], size: usize) -> Vec<f32> {
    let mut own = vec![0.0f32; values.len() / size];
    counted(&REDUCED, 4 * values.len(), || {
        world().reduce_scatter_block_into(values, &mut own[..], SystemOperation::sum());
    });
    own
}

pub(super) fn all_gather(values: &[f32], size: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; values.len() * size];
    counted(&GATHERED, 4 * values.len(), || {
        world().all_gather_into(values, &mut out[..]);
    });
    out
}

pub(super) fn all_gather_u64(values: &[u64], size: usize) -> Vec<u64> {
    let mut out = vec![0u64; values.len() * size];
    counted(&GATHERED, 8 * values.len(), || {
        world().all_gather_into(values, &mut out[..]);
    });
    out
}

pub(super) fn broadcast(values: &mut [f64]) {
    counted(&BROADCAST, 8 * values.len(), || {
        world().process_at_rank(0).broadcast_into(values);
    });
}

pub(super) fn barrier() {
    counted(&BROADCAST, 0, || world().barrier());
}

pub(super) fn abort(code: i32) -> ! {
    world().abort(code)
}
