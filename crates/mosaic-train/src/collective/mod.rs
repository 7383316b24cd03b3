//! Data-parallel training's one seam: a [`Collective`] sums buffers over every process of a run (all-reduce),
//! broadcasts bytes and waits at barriers. The [`Trainer`](crate::trainer::Trainer) is the only caller that
//! reduces gradients: it shards each epoch's batch order by rank, counts targets over all ranks, and all-reduces
//! the window's gradients once per optimizer step in buckets ([`buckets`]).
//!
//! - [`SingleProcess`]: the default, a world of one; nothing to build or run.
//! - [`thread_ranks`]: ranks that are threads of one process (tests, and trying it without a launcher).
//! - `NcclCollective` (feature `nccl`): GPU ranks under `mpirun`, gradients over NCCL (compile-checked; not run
//!   on a GPU yet).
//! - `MpiCollective` (feature `mpi`): processes started by `mpirun -np N`, over the system's Open MPI (rsmpi).
//!
//! ```
//! use mosaic_train::collective::{Collective, SingleProcess};
//!
//! let world = SingleProcess;
//! let mut grads = vec![1.0f32, 2.0];
//! world.all_reduce_sum(&mut grads).unwrap();
//! assert_eq!((world.rank(), world.world_size(), grads), (0, 1, vec![1.0, 2.0]));
//! ```

pub mod buckets;
pub mod environment;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
pub mod recipe_agreement;
pub mod shard;
pub mod threads;

#[cfg(feature = "mpi")]
pub use self::mpi::MpiCollective;
#[cfg(feature = "nccl")]
pub use self::nccl::NcclCollective;
pub use buckets::{GradientBuckets, ReduceStats};
pub use environment::from_environment;
pub use recipe_agreement::agree_on_recipe;
pub use shard::{rank_seed, shard_order};
pub use threads::{ThreadRank, thread_ranks};

use crate::error::Result;

/// The processes of one data-parallel run, as `torch.distributed` sees a process group.
pub trait Collective: std::fmt::Debug {
    /// This process's rank, 0-based; rank 0 alone writes the run folder.
    fn rank(&self) -> usize;
    /// How many processes train together.
    fn world_size(&self) -> usize;
    /// What carries the data ("single process", "MPI").
    fn backend(&self) -> &'static str;
    /// Element-wise sum of `values` over all ranks, in place (every rank passes the same length).
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()>;
    /// The same for f64 scalars (losses, counts, flags: exact in f64).
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()>;
    /// Rank `root`'s `bytes`, on every rank.
    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()>;
    /// Waits until every rank is here.
    fn barrier(&self) -> Result<()>;

    /// Element-wise mean over all ranks, in place.
    fn all_reduce_mean(&self, values: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(values)?;
        let n = self.world_size() as f32;
        if n > 1.0 {
            values.iter_mut().for_each(|v| *v /= n);
        }
        Ok(())
    }

    /// Whether this rank writes files (rank 0).
    fn writes(&self) -> bool {
        self.rank() == 0
    }
}

/// One process alone: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

/// A `&'static` single process, for callers that hold no collective.
pub static SINGLE_PROCESS: SingleProcess = SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "single process"
    }
    fn all_reduce_sum(&self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _bytes: &mut Vec<u8>, _root: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
