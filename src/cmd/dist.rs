//! `mpirun -np N tigel train ...` (the `mpi` feature): MPI's start and end, the followers' run, and the
//! errors that must end every rank. Without the feature, or outside an MPI launcher, every function
//! here leaves a single process as it was.

use std::path::Path;

use tigel::run::{self, Cadence, Observer, Regime, RunDir};
use tigel::{Error, Result};

/// MPI, while a run uses it: dropping it finalises MPI (at the end of `main`).
pub struct Session {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

/// Whether an MPI launcher started this process (Open MPI, MPICH/Hydra, PMIx, Slurm's PMI).
#[cfg(feature = "mpi")]
fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"].iter().any(|k| std::env::var_os(k).is_some())
}

/// Starts MPI when an MPI launcher started this process and tigel was built with the `mpi` feature;
/// refuses a launch by `mpirun` without the feature (N copies would each train the whole run).
pub fn start() -> Result<Session> {
    #[cfg(feature = "mpi")]
    {
        if !launched_by_mpi() {
            return Ok(Session { _universe: None });
        }
        let (universe, world) = tigel::dist::mpi::init()?;
        tigel::dist::set_world(Box::new(world))?;
        Ok(Session { _universe: Some(universe) })
    }
    #[cfg(not(feature = "mpi"))]
    {
        let size = std::env::var("OMPI_COMM_WORLD_SIZE").or_else(|_| std::env::var("PMI_SIZE"));
        if size.is_ok_and(|s| s.trim() != "1") {
            return Err(Error::invalid(
                "mpirun",
                "this tigel was built without MPI: build it with `cargo build --release --features mpi` to train on \
                 several ranks",
            ));
        }
        Ok(Session {})
    }
}

/// Reports a command's error on this rank; on several ranks it then ends them all (`MPI_Abort`), since
/// the others would wait for this one at their next allreduce.
pub fn fail(e: &Error) {
    eprintln!("{}error: {e}", tigel::dist::prefix());
    if let Some(w) = tigel::dist::world() {
        w.abort(1);
    }
}

/// On a rank other than 0, runs `regime` as a follower ([`run::follow`]: the same steps and guard
/// checks, nothing written or shown) and returns true; on rank 0 or in a single process returns false
/// at once, and the caller runs `run::train`.
pub fn follow<R: Regime + ?Sized>(
    dev: &tigel::Device,
    regime: &mut R,
    dir: &RunDir,
    cadence: Cadence,
    resumed_from: Option<&Path>,
) -> Result<bool> {
    if tigel::dist::is_leader() {
        return Ok(false);
    }
    let steps = run::follow(dev, regime, dir, cadence, resumed_from, &mut run::Agreed(&mut Signals))?;
    eprintln!("{}{steps} steps; {}", tigel::dist::prefix(), tigel::dist::Timing::now().line());
    if steps < cadence.steps {
        super::signal::exit_interrupted();
    }
    Ok(true)
}

/// Wraps rank 0's observer so that a stop asked for on any rank stops all (see [`run::Agreed`]).
pub fn agreed(observer: &mut dyn Observer) -> run::Agreed<'_> {
    run::Agreed(observer)
}

/// Rank 0's closing line on several ranks: where the time of the allreduced steps went.
pub fn done() {
    if tigel::dist::world().is_some() {
        eprintln!("{}{}", tigel::dist::prefix(), tigel::dist::Timing::now().line());
    }
}

/// A follower's observer: shows nothing, stops when this process got Ctrl-C or SIGTERM.
struct Signals;

impl Observer for Signals {
    fn should_stop(&mut self) -> bool {
        super::signal::requested()
    }
}
