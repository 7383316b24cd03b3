//! Which examples a rank trains on, and its dropout stream: `torch.utils.data.DistributedSampler`'s rule.

/// Rank `rank`'s share of an epoch's `order` among `world` ranks: the order padded to a multiple of `world` by
/// repeating its head (as `DistributedSampler` pads; [`padding`] says by how many), then every `world`-th index
/// from `rank`. With `world` ranks of batch `b`, step `k` of all ranks together sees exactly the `k`-th batch of
/// `b · world` of one process.
pub fn shard_order(order: &[usize], rank: usize, world: usize) -> Vec<usize> {
    if world <= 1 || order.is_empty() {
        return order.to_vec();
    }
    order
        .iter()
        .chain(order.iter().cycle().take(padding(order.len(), world)))
        .skip(rank)
        .step_by(world)
        .copied()
        .collect()
}

/// How many indices [`shard_order`] repeats so that `len` examples split evenly over `world` ranks.
pub fn padding(len: usize, world: usize) -> usize {
    let world = world.max(1);
    len.div_ceil(world) * world - len
}

/// The dropout seed of `rank`: rank 0 keeps the recipe's seed (a world of one is unchanged), the others get
/// their own stream, so that ranks do not draw the same masks for different examples.
pub fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        seed
    } else {
        seed ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_interleave_into_the_single_process_order() {
        let order: Vec<usize> = (0..8).rev().collect();
        let (a, b) = (shard_order(&order, 0, 2), shard_order(&order, 1, 2));
        assert_eq!(padding(order.len(), 2), 0);
        assert_eq!(a, vec![7, 5, 3, 1]);
        assert_eq!(b, vec![6, 4, 2, 0]);
    }

    #[test]
    fn an_uneven_order_is_padded_with_its_head() {
        let order = vec![4, 3, 2, 1, 0];
        let shards: Vec<_> = (0..3).map(|r| shard_order(&order, r, 3)).collect();
        assert_eq!(padding(order.len(), 3), 1);
        assert!(shards.iter().all(|s| s.len() == 2));
        assert_eq!(shards[2], vec![2, 4]);
        assert_eq!(shard_order(&order, 0, 1), order);
    }

    #[test]
    fn rank_zero_keeps_the_seed() {
        assert_eq!(rank_seed(42, 0), 42);
        assert_ne!(rank_seed(42, 1), 42);
        assert_ne!(rank_seed(42, 1), rank_seed(42, 2));
    }
}
