//! Data-parallel training across processes: one rank per device, gradients summed across ranks.
//!
//! A run on N ranks computes the step one process would compute for the same global batch: every rank
//! draws the whole batch from the same random streams (the same windows, rows and noise) and keeps its
//! contiguous share of the rows ([`Share`]); each rank's loss is the mean over its share, so the sum of
//! the ranks' gradients divided by N is the gradient of the global mean, up to the order of the sums.
//! The recorded step is split in two ([`Reduce`]): forward and backward, which end by packing the loss
//! and every gradient into one buffer; then, on the host, that buffer is summed across ranks
//! ([`Collective::sum`]) and written back; then the update (clipping, optimizer, finiteness guard, EMA),
//! identical on every rank because it reads identical numbers. Nothing else crosses between host and
//! device, and the weights never travel.
//!
//! The ranks meet through a [`Collective`], set once per process ([`set_world`]): the `mpi` feature's
//! [`mpi::MpiWorld`] under `mpirun`. Without one (the default build, or a single rank) nothing here
//! changes a step. docs/distributed.md shows the commands and the costs.

#[cfg(feature = "mpi")]
pub mod mpi;
pub mod reduce;
pub mod share;
pub mod timing;

use std::sync::OnceLock;

use crate::error::{Error, Result};

pub use reduce::Reduce;
pub use share::Share;
pub use timing::Timing;

/// How the ranks of a run talk to each other. Every rank makes the same calls in the same order.
pub trait Collective: Send + Sync {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Sums `data` element-wise across the ranks, in place: every rank gets the same sums. An error
    /// when the other ranks do not answer in time (one has died or hangs).
    fn sum(&self, data: &mut [f32]) -> Result<()>;
    /// Whether any rank passes true (a stop asked for on one rank stops them all at the same step).
    fn any(&self, flag: bool) -> Result<bool>;
    /// Ends every rank of the run at once with exit code `code` (after an error on one rank).
    fn abort(&self, code: i32) -> !;
}

static WORLD: OnceLock<Box<dyn Collective>> = OnceLock::new();

/// Makes `world` this process's collective; a single-rank world is ignored (the run is one process).
/// Call it once, before building any trainer.
pub fn set_world(world: Box<dyn Collective>) -> Result<()> {
    if world.size() <= 1 {
        return Ok(());
    }
    WORLD.set(world).map_err(|_| Error::invalid("dist", "the ranks' collective is already set"))
}

/// The collective of a run on several ranks; None in a single process.
pub fn world() -> Option<&'static dyn Collective> {
    WORLD.get().map(|w| w.as_ref())
}

/// This process's rank (0 in a single process).
pub fn rank() -> usize {
    world().map_or(0, |w| w.rank())
}

/// The number of ranks (1 in a single process).
pub fn size() -> usize {
    world().map_or(1, |w| w.size())
}

/// Whether this process writes the run directory and shows the run: rank 0, or a single process.
pub fn is_leader() -> bool {
    rank() == 0
}

/// "rank R/N: " on several ranks, else "": the prefix of a line every rank prints.
pub fn prefix() -> String {
    match world() {
        Some(w) => format!("rank {}/{}: ", w.rank(), w.size()),
        None => String::new(),
    }
}

/// The adapter a rank takes on a machine with several GPUs: its rank on this machine (`local_rank`, as
/// the MPI launcher tells it), as a `TIGEL_ADAPTER` index filter (`#i`, counted among the adapters the
/// backend would choose from, best first). None in a single process or when `TIGEL_ADAPTER` is set (the
/// user's choice wins).
pub fn adapter_filter(local_rank: Option<usize>) -> Option<String> {
    world()?;
    if std::env::var("TIGEL_ADAPTER").is_ok_and(|s| !s.is_empty()) {
        return None;
    }
    Some(format!("#{}", local_rank.unwrap_or_else(rank)))
}

/// The rank on this machine that common MPI launchers give (Open MPI, MPICH, Slurm), if any.
pub fn local_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
}
