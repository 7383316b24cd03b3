//! Ranks that are threads of one process: the same semantics as MPI ranks, with no MPI. For tests of the
//! data-parallel Trainer (two threads against one process with twice the batch) and for trying data parallelism
//! without a launcher.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Collective;
use crate::error::{Result, TrainError};

/// One rank of a [`thread_ranks`] group; move each into its own thread.
#[derive(Debug, Clone)]
pub struct ThreadRank {
    rank: usize,
    shared: Arc<Shared>,
}

/// `n` ranks that meet in memory; a collective waits at most `timeout` for the others.
pub fn thread_ranks(n: usize, timeout: Duration) -> Vec<ThreadRank> {
    let shared = Arc::new(Shared {
        n: n.max(1),
        timeout,
        slot: Mutex::new(Slot::default()),
        changed: Condvar::new(),
    });
    (0..n.max(1))
        .map(|rank| ThreadRank {
            rank,
            shared: shared.clone(),
        })
        .collect()
}

#[derive(Debug)]
struct Shared {
    n: usize,
    timeout: Duration,
    slot: Mutex<Slot>,
    changed: Condvar,
}

/// One round of a collective: contributions arrive, the last one publishes the result, everyone reads it, the
/// last to leave opens the next round.
#[derive(Debug, Default)]
struct Slot {
    round: u64,
    arrived: usize,
    draining: bool,
    sums: Vec<f64>,
    bytes: Option<Vec<u8>>,
    result: Vec<f64>,
    result_bytes: Vec<u8>,
}

impl ThreadRank {
    /// Adds `values` into the round's sums (and offers `bytes` when this rank is the root); returns the sums
    /// and the root's bytes once every rank has come.
    fn exchange(
        &self,
        values: &[f64],
        bytes: Option<&[u8]>,
        what: &str,
    ) -> Result<(Vec<f64>, Vec<u8>)> {
        let shared = &*self.shared;
        let deadline = Instant::now() + shared.timeout;
        let timed_out = || {
            TrainError::Collective(format!(
                "rank {}: the other ranks did not join the {what} within {:.0} s (a rank died or hangs)",
                self.rank,
                shared.timeout.as_secs_f64()
            ))
        };
        fn poisoned<T>(_: T) -> TrainError {
            TrainError::Collective("a rank's thread panicked".into())
        }
        let mut slot = shared.slot.lock().map_err(poisoned)?;
        while slot.draining {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            slot = shared.changed.wait_timeout(slot, left).map_err(poisoned)?.0;
        }
        if slot.sums.len() < values.len() {
            slot.sums.resize(values.len(), 0.0);
        }
        for (s, v) in slot.sums.iter_mut().zip(values) {
            *s += v;
        }
        if let Some(b) = bytes {
            slot.bytes = Some(b.to_vec());
        }
        slot.arrived += 1;
        let round = slot.round;
        if slot.arrived == shared.n {
            slot.result = std::mem::take(&mut slot.sums);
            slot.result_bytes = slot.bytes.take().unwrap_or_default();
            slot.draining = true;
            slot.round += 1;
            shared.changed.notify_all();
        } else {
            while slot.round == round {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                slot = shared.changed.wait_timeout(slot, left).map_err(poisoned)?.0;
            }
        }
        let out = (
            slot.result[..values.len()].to_vec(),
            slot.result_bytes.clone(),
        );
        slot.arrived -= 1;
        if slot.arrived == 0 {
            slot.draining = false;
            shared.changed.notify_all();
        }
        Ok(out)
    }
}

impl Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.n
    }
    fn backend(&self) -> &'static str {
        "threads"
    }
    fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let wide: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        let (sums, _) = self.exchange(&wide, None, "all-reduce")?;
        for (v, s) in values.iter_mut().zip(sums) {
            *v = s as f32;
        }
        Ok(())
    }
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        let (sums, _) = self.exchange(values, None, "all-reduce")?;
        values.copy_from_slice(&sums);
        Ok(())
    }
    fn broadcast(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let mine = (self.rank == root).then_some(bytes.as_slice());
        let (_, theirs) = self.exchange(&[], mine, "broadcast")?;
        *bytes = theirs;
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.exchange(&[], None, "barrier").map(|_| ())
    }
}
