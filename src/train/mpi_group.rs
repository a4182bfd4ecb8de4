//! The [`Group`] of a job started by `mpirun`: MPI's world communicator (rsmpi over
//! Open MPI). Built only with the `mpi` cargo feature.
//!
//! Faults: the world communicator keeps MPI's default error handler,
//! `MPI_ERRORS_ARE_FATAL`, so a failed collective ends the job rather than returning;
//! a rank that dies is noticed by `mpirun`, which names it and ends the others; a
//! rank whose training fails with an error calls [`Group::abort`] after printing it,
//! so the others do not wait in their next collective; a rank that hangs without
//! dying is caught by the [`Watchdog`] around each collective (`--collective-timeout`).

use super::distributed::Group;
use super::watchdog::{Guard, Watchdog};
use crate::runtime::RunError;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

pub struct MpiGroup {
    world: SimpleCommunicator,
    local: usize,
    watchdog: Option<Watchdog>,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl MpiGroup {
    /// Initialises MPI; only the main thread calls it (the data prefetch thread never
    /// does), so `Funneled` is all that is asked for.
    /// With `timeout`, a collective that waits longer ends the job (see [`Watchdog`]).
    pub fn init(timeout: Option<std::time::Duration>) -> Result<MpiGroup, RunError> {
        let Some((universe, _)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
            return Err(RunError::new(
                "MPI could not be initialised (MPI_Init failed or ran before)",
            )
            .hint("start fnetc under mpirun, e.g. `mpirun -np 2 fnetc train FILE`"));
        };
        let world = universe.world();
        // The index among this host's ranks: Open MPI says it; otherwise (another
        // launcher) split the world by shared-memory node.
        let local = match std::env::var("OMPI_COMM_WORLD_LOCAL_RANK")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            Some(l) => l,
            None => world
                .split_shared(world.rank())
                .rank()
                .try_into()
                .unwrap_or(0),
        };
        let (rank, size) = (world.rank(), world.size());
        let watchdog = timeout.map(|t| {
            Watchdog::start(t, move |waited| {
                eprintln!(
                    "fnetc train: rank {rank} of {size} has waited {:.0} s in a collective (--collective-timeout {}): another rank stopped responding; ending the job",
                    waited.as_secs_f64(),
                    t.as_secs()
                );
                // mpirun sees the abort, names this rank and ends the others (MPI
                // itself may not be called from this thread).
                std::process::abort()
            })
        });
        Ok(MpiGroup {
            world,
            local,
            watchdog,
            _universe: universe,
        })
    }
}

impl MpiGroup {
    fn watch(&self) -> Option<Guard<'_>> {
        self.watchdog.as_ref().map(Watchdog::guard)
    }
}

impl Group for MpiGroup {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn local_rank(&self) -> usize {
        self.local
    }
    fn sum_f32(&self, buf: &mut [f32]) {
        let _w = self.watch();
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
    }
    fn sum_f64(&self, buf: &mut [f64]) {
        let _w = self.watch();
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
    }
    fn broadcast_f32(&self, buf: &mut [f32]) {
        let _w = self.watch();
        self.world.process_at_rank(0).broadcast_into(buf);
    }
    fn gather_u64(&self, v: u64) -> Vec<u64> {
        let _w = self.watch();
        let mut all = vec![0u64; self.size()];
        self.world.all_gather_into(&v, &mut all[..]);
        all
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
