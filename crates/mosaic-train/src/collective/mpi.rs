//! [`MpiCollective`]: ranks started by `mpirun -np N`, over the system's MPI (rsmpi). Every collective is the
//! non-blocking MPI call polled against a deadline, so that a rank that died or hangs stops the run with a
//! message instead of leaving the others blocked forever.

use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::request::Request;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::Collective;
use crate::error::{Result, TrainError};

/// The MPI world of this process. Dropping it finalises MPI.
pub struct MpiCollective {
    world: SimpleCommunicator,
    timeout: Duration,
    // Last: finalises MPI after the communicator is gone.
    _universe: Universe,
}

impl std::fmt::Debug for MpiCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCollective")
            .field("rank", &self.world.rank())
            .field("size", &self.world.size())
            .finish()
    }
}

impl MpiCollective {
    /// Initialises MPI (only the main thread calls it; rayon's threads compute in between).
    pub fn initialize(timeout: Duration) -> Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| TrainError::Collective("MPI was initialised twice".into()))?;
        let world = universe.world();
        Ok(MpiCollective {
            world,
            timeout,
            _universe: universe,
        })
    }

    /// Polls `request` until it completes; past the deadline, says which collective timed out and aborts the
    /// whole MPI job (an in-flight MPI request cannot be abandoned safely, and the others are stuck too).
    fn finish<'a, D: ?Sized, S: mpi::request::Scope<'a>>(
        &self,
        mut request: Request<'a, D, S>,
        what: &str,
    ) {
        let started = Instant::now();
        let mut polls = 0u32;
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            polls = polls.saturating_add(1);
            if polls > 10_000 {
                // Past the first few milliseconds, leave the core to the ranks still computing.
                std::thread::sleep(Duration::from_micros(200));
                if started.elapsed() > self.timeout {
                    eprintln!(
                        "mosaic: data parallel: rank {} waited {:.0} s in {what} for the other ranks; a rank died or \
                         hangs, so the run stops (the last resumable checkpoint is kept; MOSAIC_COLLECTIVE_TIMEOUT sets \
                         the limit)",
                        self.world.rank(),
                        started.elapsed().as_secs_f64()
                    );
                    self.world.abort(3);
                }
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl MpiCollective {
    /// MPI_Iallreduce(SUM) of `values` into themselves.
    fn sum_in_place<T: Equivalence + Clone>(&self, values: &mut [T]) {
        let send = values.to_vec();
        mpi::request::scope(|scope| {
            let request = self.world.immediate_all_reduce_into(
                scope,
                &send[..],
                values,
                SystemOperation::sum(),
            );
            self.finish(request, "an all-reduce");
        });
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn world_size(&self) -> usize {
        self.world.size() as usize
    }
    fn backend(&self) -> &'static str {
        "MPI"
    }
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        self.sum_in_place(values);
        Ok(())
    }
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        self.sum_in_place(values);
        Ok(())
    }
    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let root = self.world.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        mpi::request::scope(|scope| {
            let request = root.immediate_broadcast_into(scope, &mut len);
            self.finish(request, "a broadcast");
        });
        bytes.resize(len as usize, 0);
        mpi::request::scope(|scope| {
            let request = root.immediate_broadcast_into(scope, &mut bytes[..]);
            self.finish(request, "a broadcast");
        });
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        let request = self.world.immediate_barrier();
        self.finish(request, "a barrier");
        Ok(())
    }
}
