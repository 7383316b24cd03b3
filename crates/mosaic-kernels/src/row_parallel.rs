//! Row loops over a flat buffer, in parallel with rayon once the buffer is
//! large enough to pay for it.

use rayon::prelude::*;

/// Below this many elements a row loop runs on the calling thread: rayon's
/// fork/join overhead dominates for tiny tensors.
const PAR_MIN_ELEMS: usize = 1 << 14;

/// Target number of elements handled by one rayon task.
const ELEMS_PER_TASK: usize = 1 << 12;

/// Number of rows to give one rayon task for rows of length `d`.
pub(crate) fn rows_per_task(d: usize) -> usize {
    (ELEMS_PER_TASK / d.max(1)).max(1)
}

/// Calls `f(row_index, out_row)` for every row of length `d` of `out`,
/// in parallel when the buffer is large enough. `d` must be non-zero.
pub(crate) fn for_each_row<F>(out: &mut [f32], d: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    debug_assert!(d > 0);
    if out.len() < PAR_MIN_ELEMS {
        out.chunks_mut(d).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        out.par_chunks_mut(d)
            .with_min_len(rows_per_task(d))
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    }
}
