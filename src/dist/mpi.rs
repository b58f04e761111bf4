//! The [`Collective`] of `mpirun`: MPI's world communicator (the `mpi` crate over the system's MPI).
//!
//! Every collective is started non-blocking and polled with short sleeps: a rank waiting for a slower
//! one does not spin a core away from it, and a wait longer than the timeout (`TIGEL_DIST_TIMEOUT`
//! seconds, default [`DEFAULT_TIMEOUT_S`]) means a rank has died or hangs: the rank that notices says
//! so and aborts the run (`MPI_Abort`), which ends every rank. A rank that dies outright is noticed by
//! `mpirun` itself, which ends the others at once.

use std::thread::ThreadId;
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::Collective;
use crate::error::{Error, Result};

/// Seconds a rank waits for the others in one collective before it gives up and aborts the run. Long
/// enough for rank 0's evaluation and checkpoint between steps, which the others wait through.
pub const DEFAULT_TIMEOUT_S: f64 = 600.0;

/// MPI's world as tigel's [`Collective`].
pub struct MpiWorld {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    timeout: Duration,
    /// MPI is initialised for calls from one thread (funneled): this one.
    thread: ThreadId,
}

// SAFETY: the communicator is a handle that MPI owns; MPI was initialised with funneled threading, and
// every call through it checks that it runs on the thread that initialised MPI (`on_main`), so the
// handle is never used from two threads.
unsafe impl Send for MpiWorld {}
unsafe impl Sync for MpiWorld {}

/// Initialises MPI. Keep the returned universe alive until the end of `main` (dropping it finalises
/// MPI); the world goes to [`super::set_world`]. An error when MPI cannot start or was started already.
pub fn init() -> Result<(Universe, MpiWorld)> {
    let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
        .ok_or_else(|| Error::invalid("mpi", "MPI could not be initialised (or was initialised already)"))?;
    let comm = universe.world();
    let timeout = match std::env::var("TIGEL_DIST_TIMEOUT") {
        Ok(s) if !s.is_empty() => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => v,
            _ => {
                return Err(Error::invalid(
                    "mpi",
                    format!("TIGEL_DIST_TIMEOUT must be a positive number of seconds, got `{s}`"),
                ))
            }
        },
        _ => DEFAULT_TIMEOUT_S,
    };
    let world = MpiWorld {
        rank: comm.rank() as usize,
        size: comm.size() as usize,
        comm,
        timeout: Duration::from_secs_f64(timeout),
        thread: std::thread::current().id(),
    };
    Ok((universe, world))
}

impl MpiWorld {
    fn on_main(&self, what: &str) -> Result<()> {
        if std::thread::current().id() != self.thread {
            return Err(Error::invalid(
                "mpi",
                format!("{what} called from a thread other than the one that started MPI"),
            ));
        }
        Ok(())
    }

    /// Allreduces `send` into `recv` with `op`, polling until done or the timeout, then aborting.
    fn all_reduce<T: Equivalence>(&self, what: &str, send: &[T], recv: &mut [T], op: SystemOperation) {
        let started = Instant::now();
        let mut pause = Duration::from_micros(20);
        mpi::request::scope(|scope| {
            let mut req = self.comm.immediate_all_reduce_into(scope, send, recv, op);
            loop {
                match req.test() {
                    Ok(_) => break,
                    Err(r) => req = r,
                }
                if started.elapsed() > self.timeout {
                    eprintln!(
                        "rank {}/{}: no answer from the other ranks for {:.0} s during {what}: a rank has died or hangs; \
                         stopping every rank (TIGEL_DIST_TIMEOUT sets the limit)",
                        self.rank,
                        self.size,
                        self.timeout.as_secs_f64()
                    );
                    self.abort(3);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(2));
            }
        });
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum(&self, data: &mut [f32]) -> Result<()> {
        self.on_main("the gradient allreduce")?;
        let send = data.to_vec();
        self.all_reduce("the gradient allreduce", &send, data, SystemOperation::sum());
        Ok(())
    }

    fn any(&self, flag: bool) -> Result<bool> {
        self.on_main("the stop vote")?;
        let mut out = [0i32];
        self.all_reduce("the stop vote", &[flag as i32], &mut out, SystemOperation::max());
        Ok(out[0] != 0)
    }

    fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }
}
