//! [`NcclCollective`] (feature `nccl`): ranks launched by `mpirun`, one GPU each, whose f32 all-reduces (the
//! gradient buckets) run over NCCL; the NCCL unique id, scalars, broadcasts and barriers go over MPI. The buffers
//! are copied to the rank's device and back, since the trainer's buckets are host slices.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};

use super::{Collective, MpiCollective};
use crate::error::{Result, TrainError};

/// NCCL for the gradients, MPI for the rest.
pub struct NcclCollective {
    mpi: MpiCollective,
    stream: Arc<CudaStream>,
    comm: Comm,
}

impl std::fmt::Debug for NcclCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclCollective")
            .field("mpi", &self.mpi)
            .finish()
    }
}

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Collective(format!("NCCL {what}: {e:?}"))
}

impl NcclCollective {
    /// Joins the NCCL communicator of `mpi`'s ranks on GPU `device` (by convention the rank's local index).
    pub fn initialize(mpi: MpiCollective, device: usize) -> Result<Self> {
        let context = CudaContext::new(device).map_err(|e| nccl_error("device", e))?;
        let stream = context.default_stream();
        // Rank 0 makes the id; MPI carries its 128 bytes to the others.
        let mut bytes = if mpi.rank() == 0 {
            let id = Id::new().map_err(|e| nccl_error("unique id", e))?;
            id.internal().iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        mpi.broadcast(&mut bytes, 0)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (slot, b) in internal.iter_mut().zip(&bytes) {
            *slot = *b as std::ffi::c_char;
        }
        let comm = Comm::from_rank(
            stream.clone(),
            mpi.rank(),
            mpi.world_size(),
            Id::uninit(internal),
        )
        .map_err(|e| nccl_error("communicator", e))?;
        Ok(NcclCollective { mpi, stream, comm })
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }
    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }
    fn backend(&self) -> &'static str {
        "NCCL"
    }
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let mut device = self
            .stream
            .clone_htod(values)
            .map_err(|e| nccl_error("copy to the device", e))?;
        self.comm
            .all_reduce_in_place(&mut device, &ReduceOp::Sum)
            .map_err(|e| nccl_error("all-reduce", e))?;
        self.stream
            .memcpy_dtoh(&device, values)
            .map_err(|e| nccl_error("copy from the device", e))?;
        Ok(())
    }
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        self.mpi.all_reduce_sum_f64(values)
    }
    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        self.mpi.broadcast(bytes, root)
    }
    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }
}
