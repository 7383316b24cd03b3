//! `COCOeval.accumulate()` (precision and recall arrays) and `summarize()` (the twelve figures).

use std::cmp::Ordering;

use super::params::{AREA_RANGES, EvalImg, MAX_DETS};
use super::stats::CocoStats;

/// `np.spacing(1)`: added to the precision's denominator as pycocotools does.
const SPACING_1: f64 = f64::EPSILON;

/// `precision[T, R, K, A, M]` and `recall[T, K, A, M]`, C order as numpy's, -1 where undefined.
#[derive(Clone, Debug)]
pub(super) struct Accumulated {
    n_t: usize,
    n_r: usize,
    n_k: usize,
    precision: Vec<f64>,
    recall: Vec<f64>,
}

const N_A: usize = AREA_RANGES.len();
const N_M: usize = MAX_DETS.len();

impl Accumulated {
    fn p_index(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> usize {
        (((t * self.n_r + r) * self.n_k + k) * N_A + a) * N_M + m
    }

    fn r_index(&self, t: usize, k: usize, a: usize, m: usize) -> usize {
        ((t * self.n_k + k) * N_A + a) * N_M + m
    }

    pub fn precision(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> Option<f64> {
        (t < self.n_t && r < self.n_r && k < self.n_k && a < N_A && m < N_M)
            .then(|| self.precision[self.p_index(t, r, k, a, m)])
    }

    pub fn recall(&self, t: usize, k: usize, a: usize, m: usize) -> Option<f64> {
        (t < self.n_t && k < self.n_k && a < N_A && m < N_M)
            .then(|| self.recall[self.r_index(t, k, a, m)])
    }

    /// AP@[.50:.95], all areas, 100 detections, of category `k`.
    pub fn category_ap(&self, k: usize) -> f64 {
        let m = N_M - 1;
        let values: Vec<f64> = (0..self.n_t)
            .flat_map(|t| (0..self.n_r).map(move |r| (t, r)))
            .map(|(t, r)| self.precision[self.p_index(t, r, k, 0, m)])
            .collect();
        mean_defined(&values)
    }
}

/// `accumulate()`: for each category, area range and `maxDets`, the detections of all images ranked by score,
/// cumulative true and false positives, and the interpolated precision at each recall threshold.
///
/// `eval_imgs` is indexed `(k * A + a) * n_images + i`, as pycocotools' `evalImgs`.
pub(super) fn accumulate(
    eval_imgs: &[Option<EvalImg>],
    n_k: usize,
    n_images: usize,
    n_t: usize,
    rec_thrs: &[f64],
) -> Accumulated {
    let n_r = rec_thrs.len();
    let mut acc = Accumulated {
        n_t,
        n_r,
        n_k,
        precision: vec![-1.0; n_t * n_r * n_k * N_A * N_M],
        recall: vec![-1.0; n_t * n_k * N_A * N_M],
    };
    for k in 0..n_k {
        for a in 0..N_A {
            let base = (k * N_A + a) * n_images;
            let es: Vec<&EvalImg> = eval_imgs[base..base + n_images].iter().flatten().collect();
            if es.is_empty() {
                continue;
            }
            let npig = es
                .iter()
                .map(|e| e.gt_ignore.iter().filter(|&&ig| !ig).count())
                .sum::<usize>();
            if npig == 0 {
                continue;
            }
            for (m, &max_det) in MAX_DETS.iter().enumerate() {
                // (score, image, detection) of the first `max_det` detections of each image, in image order.
                let mut ranked: Vec<(f64, usize, usize)> = es
                    .iter()
                    .enumerate()
                    .flat_map(|(e, img)| {
                        img.scores
                            .iter()
                            .take(max_det)
                            .enumerate()
                            .map(move |(d, &s)| (s, e, d))
                    })
                    .collect();
                // Stable, as `argsort(-scores, kind="mergesort")`.
                ranked.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(Ordering::Equal));
                let nd = ranked.len();
                for t in 0..n_t {
                    let (mut tp, mut fp) = (0usize, 0usize);
                    let mut rc = Vec::with_capacity(nd);
                    let mut pr = Vec::with_capacity(nd);
                    for &(_, e, d) in &ranked {
                        if !es[e].dt_ignore[t][d] {
                            if es[e].matches[t][d] != 0 {
                                tp += 1;
                            } else {
                                fp += 1;
                            }
                        }
                        let (tpf, fpf) = (tp as f64, fp as f64);
                        rc.push(tpf / npig as f64);
                        pr.push(tpf / (fpf + tpf + SPACING_1));
                    }
                    let ri = acc.r_index(t, k, a, m);
                    acc.recall[ri] = rc.last().copied().unwrap_or(0.0);
                    // The monotone (non-increasing) envelope of the precision.
                    for i in (1..nd).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (r, &thr) in rec_thrs.iter().enumerate() {
                        // `searchsorted(rc, thr, side="left")`; past the last detection the precision stays 0.
                        let pi = rc.partition_point(|&x| x < thr);
                        let pidx = acc.p_index(t, r, k, a, m);
                        acc.precision[pidx] = pr.get(pi).copied().unwrap_or(0.0);
                    }
                }
            }
        }
    }
    acc
}

/// `summarize()` for boxes: the twelve figures, each the mean of the defined (> -1) entries it covers.
pub(super) fn summarize(acc: &Accumulated, iou_thrs: &[f64]) -> CocoStats {
    let m_last = N_M - 1;
    let ap = |iou: Option<f64>, a: usize, m: usize| {
        let mut values = Vec::new();
        for t in thresholds_at(iou_thrs, iou) {
            for r in 0..acc.n_r {
                for k in 0..acc.n_k {
                    values.push(acc.precision[acc.p_index(t, r, k, a, m)]);
                }
            }
        }
        mean_defined(&values)
    };
    let ar = |a: usize, m: usize| {
        let mut values = Vec::new();
        for t in 0..acc.n_t {
            for k in 0..acc.n_k {
                values.push(acc.recall[acc.r_index(t, k, a, m)]);
            }
        }
        mean_defined(&values)
    };
    CocoStats {
        ap: ap(None, 0, m_last),
        ap50: ap(Some(0.5), 0, m_last),
        ap75: ap(Some(0.75), 0, m_last),
        ap_small: ap(None, 1, m_last),
        ap_medium: ap(None, 2, m_last),
        ap_large: ap(None, 3, m_last),
        ar1: ar(0, 0),
        ar10: ar(0, 1),
        ar100: ar(0, m_last),
        ar_small: ar(1, m_last),
        ar_medium: ar(2, m_last),
        ar_large: ar(3, m_last),
    }
}

/// The threshold indices a figure covers: all, or those equal to `iou` (`np.where(iouThr == p.iouThrs)`).
fn thresholds_at(iou_thrs: &[f64], iou: Option<f64>) -> Vec<usize> {
    (0..iou_thrs.len())
        .filter(|&t| iou.is_none_or(|v| iou_thrs[t] == v))
        .collect()
}

/// `np.mean(s[s > -1])`, or -1 when nothing is defined.
fn mean_defined(values: &[f64]) -> f64 {
    let defined: Vec<f64> = values.iter().copied().filter(|&v| v > -1.0).collect();
    if defined.is_empty() {
        -1.0
    } else {
        pairwise_sum(&defined) / defined.len() as f64
    }
}

/// numpy's pairwise summation of a contiguous float64 array (`np.add.reduce`), so that means agree bit for bit.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, &v| s + v)
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (j, rj) in r.iter_mut().enumerate() {
                *rj += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[whole..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_matches_a_plain_sum_closely() {
        let values: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.37).sin()).collect();
        let plain: f64 = values.iter().sum();
        assert!((pairwise_sum(&values) - plain).abs() < 1e-12);
        assert_eq!(pairwise_sum(&[1.0, 2.0]), 3.0);
    }

    #[test]
    fn undefined_means_are_minus_one() {
        assert_eq!(mean_defined(&[-1.0, -1.0]), -1.0);
        assert_eq!(mean_defined(&[-1.0, 0.5, 1.0]), 0.75);
    }
}
