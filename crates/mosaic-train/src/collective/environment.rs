//! The collective a process belongs to, from how it was started: `mpirun -np N` sets the world size in the
//! environment (Open MPI's `OMPI_COMM_WORLD_SIZE`, MPICH's `PMI_SIZE`).

use std::time::Duration;

use super::{Collective, SingleProcess};
use crate::error::{Result, TrainError};

/// How long a rank waits for the others in one collective before it gives up on the run: a rank that died or
/// hangs stops the rest instead of leaving them waiting forever. `torch.distributed`'s default, 30 minutes (the
/// other ranks wait in a collective while rank 0 validates and saves); `MOSAIC_COLLECTIVE_TIMEOUT` (seconds)
/// sets it.
pub fn collective_timeout() -> Result<Duration> {
    match std::env::var("MOSAIC_COLLECTIVE_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(1800)),
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                TrainError::Collective(format!(
                    "MOSAIC_COLLECTIVE_TIMEOUT = `{text}` is not a positive number of seconds"
                ))
            }),
    }
}

/// The world size a launcher announced, if any.
pub fn launched_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
}

/// This process's collective: MPI when launched by `mpirun` (with feature `mpi`), otherwise a single process.
/// Launched by `mpirun` with more than one process but built without `mpi`: an error that says so, rather than
/// N processes each training alone into the same folder.
pub fn from_environment() -> Result<Box<dyn Collective>> {
    let launched = launched_world_size();
    #[cfg(feature = "mpi")]
    if launched.is_some() {
        let mpi = super::MpiCollective::initialize(collective_timeout()?)?;
        // GPU ranks: `MOSAIC_COLLECTIVE=nccl`, one device per rank on each host (Open MPI's local rank).
        #[cfg(feature = "nccl")]
        if std::env::var("MOSAIC_COLLECTIVE").is_ok_and(|v| v == "nccl") {
            let device = std::env::var("OMPI_COMM_WORLD_LOCAL_RANK")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return Ok(Box::new(super::NcclCollective::initialize(mpi, device)?));
        }
        return Ok(Box::new(mpi));
    }
    match launched {
        Some(n) if n > 1 => Err(TrainError::Collective(format!(
            "launched by mpirun with {n} processes, but this mosaic was built without data-parallel support; \
             rebuild with `cargo build --release -p mosaic-cli --features mpi` (needs Open MPI: libopenmpi-dev)"
        ))),
        _ => Ok(Box::new(SingleProcess)),
    }
}
