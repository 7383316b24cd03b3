use std::time::Duration;

use super::threads::thread_ranks;
use super::*;

/// Runs `body` on each of `n` thread ranks and returns their results in rank order.
fn on_ranks<T: Send + 'static>(
    n: usize,
    body: impl Fn(&dyn Collective) -> T + Send + Sync + Copy + 'static,
) -> Vec<T> {
    let handles: Vec<_> = thread_ranks(n, Duration::from_secs(10))
        .into_iter()
        .map(|rank| std::thread::spawn(move || body(&rank)))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn thread_ranks_sum_broadcast_and_meet_repeatedly() {
    let out = on_ranks(3, |c| {
        let mut total = 0.0f32;
        for round in 0..50 {
            let mut v = vec![c.rank() as f32 + round as f32, 1.0];
            c.all_reduce_sum(&mut v).unwrap();
            total += v[0];
            assert_eq!(v[1], 3.0);
        }
        let mut bytes = if c.rank() == 1 {
            b"from one".to_vec()
        } else {
            Vec::new()
        };
        c.broadcast(&mut bytes, 1).unwrap();
        c.barrier().unwrap();
        (total, bytes)
    });
    for (total, bytes) in out {
        // Σ_round (0+1+2 + 3·round) = 50·3 + 3·1225.
        assert_eq!(total, 150.0 + 3.0 * 1225.0);
        assert_eq!(bytes, b"from one");
    }
}

#[test]
fn a_missing_rank_times_out_with_a_clear_error() {
    let ranks = thread_ranks(2, Duration::from_millis(200));
    let mut v = vec![1.0f32];
    let err = ranks[0].all_reduce_sum(&mut v).unwrap_err().to_string();
    assert!(
        err.contains("rank 0") && err.contains("did not join"),
        "{err}"
    );
}

#[test]
fn gradient_buckets_sum_every_parameter_and_fill_missing_ones() {
    use candle_core::{Device, Tensor, Var};
    let out = on_ranks(2, |c| {
        let a = Var::from_tensor(
            &Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let b = Var::from_tensor(&Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        let unused =
            Var::from_tensor(&Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap())
                .unwrap();
        let params = vec![
            ("a".to_string(), a.clone()),
            ("b".to_string(), b.clone()),
            ("unused".to_string(), unused.clone()),
        ];
        // `a` on both ranks, `b` on rank 1 only: a loss over both on rank 1, over `a` on rank 0.
        let r = c.rank() as f64 + 1.0;
        let loss = if c.rank() == 0 {
            a.as_tensor().affine(r, 0.0).unwrap().sum_all().unwrap()
        } else {
            let la = a.as_tensor().affine(r, 0.0).unwrap().sum_all().unwrap();
            (la + b.as_tensor().sum_all().unwrap()).unwrap()
        };
        let mut grads = loss.backward().unwrap();
        // Small buckets: three calls for two parameters plus the presence vote.
        let stats = GradientBuckets { bucket_elements: 5 }
            .all_reduce(c, &params, &mut grads)
            .unwrap();
        let ga = grads
            .get(a.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(grads.get(unused.as_tensor()).is_none());
        (ga, gb, stats.bytes, stats.calls)
    });
    for (ga, gb, bytes, calls) in out {
        assert_eq!(ga, vec![3.0; 6]);
        assert_eq!(gb, vec![1.0; 4]);
        assert_eq!((bytes, calls), (40, 3));
    }
}

#[test]
fn ranks_that_disagree_on_the_recipe_are_refused_by_key() {
    let out = on_ranks(2, |c| {
        let recipe = if c.rank() == 0 {
            "[train]\nlr = 0.1\n"
        } else {
            "[train]\nlr = 0.2\n"
        };
        agree_on_recipe(c, recipe).unwrap_err().to_string()
    });
    assert!(out[0].contains("rank 1's recipe differs"), "{}", out[0]);
    assert!(
        out[1].contains("`train.lr`: rank 0 has 0.1, this rank 0.2"),
        "{}",
        out[1]
    );
    assert!(
        on_ranks(2, |c| agree_on_recipe(c, "a = 1\n").is_ok())
            .iter()
            .all(|ok| *ok)
    );
}
