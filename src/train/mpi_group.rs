//! The [`Group`] of a job started by `mpirun`: MPI's world communicator (rsmpi over
//! Open MPI). Built only with the `mpi` cargo feature.
//!
//! Faults: the world communicator keeps MPI's default error handler,
//! `MPI_ERRORS_ARE_FATAL`, so a failed collective ends the job rather than returning;
//! a rank that dies is noticed by `mpirun`, which names it and ends the others; a
//! rank whose training fails with an error calls [`Group::abort`] after printing it,
//! so the others do not wait in their next collective; a rank that hangs without
//! dying is caught by the [`Watchdog`] around each collective (`--collective-timeout`);
//! the overlapped gradient all-reduce's thread ([`Group::reducer`]) has a watchdog of
//! its own.
//!
//! Threads: MPI is initialised with `MPI_THREAD_MULTIPLE` where the library provides
//! it, since the overlap's communication thread calls collectives (on a duplicated
//! communicator) while the main thread may call its own (SyncBatchNorm's, during a
//! run). A library that provides less trains only with `bucket_kb: 0`: asking for the
//! reducer fails with an error that says so.
//!
//! Sums are non-blocking all-reduces polled with short sleeps ([`sum_polled`]), not
//! blocking ones, which spin while they wait for the slower rank.

use super::distributed::{Group, Reducer};
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
    timeout: Option<std::time::Duration>,
    /// The thread level MPI provides.
    threading: mpi::Threading,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl MpiGroup {
    /// Initialises MPI, asking for `MPI_THREAD_MULTIPLE` (see the module doc).
    /// With `timeout`, a collective that waits longer ends the job (see [`Watchdog`]).
    pub fn init(timeout: Option<std::time::Duration>) -> Result<MpiGroup, RunError> {
        let Some((universe, threading)) = mpi::initialize_with_threading(mpi::Threading::Multiple)
        else {
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
        let watchdog = timeout.map(|t| watch(t, rank, size, "a collective"));
        Ok(MpiGroup {
            world,
            local,
            watchdog,
            timeout,
            threading,
            _universe: universe,
        })
    }
}

/// A watchdog that ends the job once a wait in `what` lasts longer than `t`.
fn watch(t: std::time::Duration, rank: i32, size: i32, what: &'static str) -> Watchdog {
    Watchdog::start(t, move |waited| {
        eprintln!(
            "fnetc train: rank {rank} of {size} has waited {:.0} s in {what} (--collective-timeout {}): another rank stopped responding; ending the job",
            waited.as_secs_f64(),
            t.as_secs()
        );
        // mpirun sees the abort, names this rank and ends the others (MPI itself
        // may not be called from this thread).
        std::process::abort()
    })
}

/// The overlap thread's sums, on a duplicate of the world communicator.
struct MpiReducer {
    comm: SimpleCommunicator,
    watchdog: Option<Watchdog>,
}

// SAFETY: the communicator is an MPI handle, which MPI_THREAD_MULTIPLE (checked by
// `MpiGroup::reducer` before one is made) lets any thread use; only the thread that
// owns the reducer calls collectives on it (`&mut self`), and it is dropped (freed)
// before the group finalises MPI (`train::overlap` joins its thread first).
unsafe impl Send for MpiReducer {}

/// Between two polls of a posted all-reduce, the waiting thread sleeps this long.
const POLL: std::time::Duration = std::time::Duration::from_micros(50);

/// The element-wise sum of `buf` over `comm`'s ranks, in place: a non-blocking
/// all-reduce polled with sleeps between the polls. A blocking one spins (Open MPI's
/// default) while it waits for the slower ranks, on a core that the ranks' compute
/// threads (and the overlapped all-reduce) need when they fill the machine
/// (docs/distributed.md measures both).
fn sum_polled<T: Equivalence + Clone>(comm: &SimpleCommunicator, buf: &mut [T]) {
    let send = buf.to_vec();
    mpi::request::scope(|scope| {
        let mut req = comm.immediate_all_reduce_into(scope, &send[..], buf, SystemOperation::sum());
        loop {
            match req.test() {
                Ok(_) => break,
                Err(r) => {
                    req = r;
                    std::thread::sleep(POLL);
                }
            }
        }
    });
}

impl Reducer for MpiReducer {
    fn sum_f32(&mut self, buf: &mut [f32]) {
        let _w = self.watchdog.as_ref().map(Watchdog::guard);
        sum_polled(&self.comm, buf);
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
        sum_polled(&self.world, buf);
    }
    fn sum_f64(&self, buf: &mut [f64]) {
        let _w = self.watch();
        sum_polled(&self.world, buf);
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
    fn reducer(&self) -> Result<Box<dyn Reducer>, RunError> {
        if self.threading != mpi::Threading::Multiple {
            return Err(RunError::new(format!(
                "overlapping the gradient all-reduce with the backward needs MPI_THREAD_MULTIPLE, but this MPI library provides only {:?}",
                self.threading
            ))
            .hint("set `bucket_kb: 0` in the train section (one all-reduce after the backward), or use an MPI built with thread support (Open MPI: ompi_info | grep 'Thread support')"));
        }
        let comm = {
            let _w = self.watch();
            self.world.duplicate()
        };
        let (rank, size) = (self.world.rank(), self.world.size());
        Ok(Box::new(MpiReducer {
            comm,
            watchdog: self
                .timeout
                .map(|t| watch(t, rank, size, "the overlapped gradient all-reduce")),
        }))
    }
}
