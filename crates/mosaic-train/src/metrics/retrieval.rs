//! Cross-modal retrieval recall@k (image → text and text → image) from a square similarity matrix whose
//! matching pairs lie on the diagonal: row `i` is image `i`, column `j` is caption `j`, and caption `i` is image
//! `i`'s one positive.
//!
//! - **Duplicates.** Each image's positive is its own row's caption, and nothing else: when two rows share an
//!   identical caption, the other copy counts as a negative (as in the usual COCO/Flickr evaluation code that
//!   keys positives by index, not by text). Identical captions get identical embeddings, so they tie (below).
//! - **Ties.** Ranks are deterministic: a candidate ranks above the positive when its score is strictly
//!   higher, or equal with a smaller index. So a positive tied with an earlier candidate loses the tie, one tied
//!   with a later candidate wins it. A NaN positive score ranks last; NaN candidates never outrank.
//! - A query is a hit at `k` when its positive's 0-based rank is below `k`; recall@k is the fraction of hits.

use std::collections::BTreeMap;

use super::{MetricsError, check_len};

/// Recall@k of both retrieval directions.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalRecall {
    /// The cut-offs, in the order given.
    pub ks: Vec<usize>,
    /// Recall@k of image → text (each image ranks every caption), in `ks` order.
    pub image_to_text: Vec<f64>,
    /// Recall@k of text → image (each caption ranks every image), in `ks` order.
    pub text_to_image: Vec<f64>,
    /// The number of pairs.
    pub pairs: usize,
}

/// The 0-based rank of `scores[positive]` among `scores` under the tie rule of the module docs.
pub fn rank_of_positive(scores: &[f32], positive: usize) -> usize {
    let p = scores[positive];
    if p.is_nan() {
        return scores.len().saturating_sub(1);
    }
    scores
        .iter()
        .enumerate()
        .filter(|&(j, &s)| s > p || (s == p && j < positive))
        .count()
}

impl RetrievalRecall {
    /// From `similarity`, row-major `(n, n)` (`similarity[i * n + j]`: image `i` against caption `j`).
    pub fn compute(similarity: &[f32], n: usize, ks: &[usize]) -> Result<Self, MetricsError> {
        check_len("retrieval similarity matrix", n * n, similarity.len())?;
        let mut i2t_ranks = Vec::with_capacity(n);
        let mut t2i_ranks = Vec::with_capacity(n);
        let mut column = vec![0f32; n];
        for i in 0..n {
            i2t_ranks.push(rank_of_positive(&similarity[i * n..(i + 1) * n], i));
            for (r, c) in column.iter_mut().enumerate() {
                *c = similarity[r * n + i];
            }
            t2i_ranks.push(rank_of_positive(&column, i));
        }
        let recall = |ranks: &[usize], k: usize| -> f64 {
            if ranks.is_empty() {
                return 0.0;
            }
            ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
        };
        Ok(RetrievalRecall {
            ks: ks.to_vec(),
            image_to_text: ks.iter().map(|&k| recall(&i2t_ranks, k)).collect(),
            text_to_image: ks.iter().map(|&k| recall(&t2i_ranks, k)).collect(),
            pairs: n,
        })
    }

    /// Image → text recall at `k`, if `k` was computed.
    pub fn image_to_text_at(&self, k: usize) -> Option<f64> {
        self.ks
            .iter()
            .position(|&x| x == k)
            .map(|i| self.image_to_text[i])
    }

    /// Text → image recall at `k`, if `k` was computed.
    pub fn text_to_image_at(&self, k: usize) -> Option<f64> {
        self.ks
            .iter()
            .position(|&x| x == k)
            .map(|i| self.text_to_image[i])
    }

    /// The metrics under the names recipes use: `image_to_text_recall_at_{k}`, `text_to_image_recall_at_{k}`,
    /// and their mean `recall_at_{k}` (the headline).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for (i, k) in self.ks.iter().enumerate() {
            let (a, b) = (self.image_to_text[i], self.text_to_image[i]);
            m.insert(format!("image_to_text_recall_at_{k}"), a);
            m.insert(format!("text_to_image_recall_at_{k}"), b);
            m.insert(format!("recall_at_{k}"), (a + b) / 2.0);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_three_pairs() {
        // Images are rows, captions columns.
        //   image 0: [0.9, 0.1, 0.5] -> caption 0 first: rank 0
        //   image 1: [0.8, 0.3, 0.3] -> caption 0 above; caption 2 ties at 0.3 but has a larger index: rank 1
        //   image 2: [0.2, 0.7, 0.7] -> caption 1 ties at 0.7 with a smaller index: rank 1
        // Columns (text -> image):
        //   caption 0: [0.9, 0.8, 0.2] -> image 0 first: rank 0
        //   caption 1: [0.1, 0.3, 0.7] -> image 1 below image 2: rank 1
        //   caption 2: [0.5, 0.3, 0.7] -> image 2 first: rank 0
        let s = [0.9, 0.1, 0.5, 0.8, 0.3, 0.3, 0.2, 0.7, 0.7];
        let r = RetrievalRecall::compute(&s, 3, &[1, 2]).unwrap();
        assert_eq!(r.image_to_text, vec![1.0 / 3.0, 1.0]);
        assert_eq!(r.text_to_image, vec![2.0 / 3.0, 1.0]);
        let m = r.metrics();
        assert!((m["recall_at_1"] - 0.5).abs() < 1e-12);
        assert_eq!(m["image_to_text_recall_at_2"], 1.0);
        assert_eq!(r.image_to_text_at(1), Some(1.0 / 3.0));
        assert_eq!(r.text_to_image_at(5), None);
    }

    #[test]
    fn identical_captions_tie_and_the_earlier_row_wins() {
        // Captions 0 and 1 are the same text: identical columns. Image 1's positive (caption 1) ties with
        // caption 0 and loses; image 0's wins.
        let s = [0.6, 0.6, 0.4, 0.4];
        let r = RetrievalRecall::compute(&s, 2, &[1, 2]).unwrap();
        assert_eq!(r.image_to_text, vec![0.5, 1.0]);
        // Text -> image: caption 1 still ranks image 0 (0.6) above its own image 1 (0.4).
        assert_eq!(r.text_to_image, vec![0.5, 1.0]);
        assert_eq!(rank_of_positive(&[0.6, 0.6, 0.1], 1), 1);
    }

    #[test]
    fn nan_positive_ranks_last_and_size_is_checked() {
        assert_eq!(rank_of_positive(&[f32::NAN, 0.1, 0.2], 0), 2);
        assert_eq!(rank_of_positive(&[0.5, f32::NAN, 0.2], 0), 0);
        assert!(RetrievalRecall::compute(&[0.0; 5], 2, &[1]).is_err());
        let empty = RetrievalRecall::compute(&[], 0, &[1]).unwrap();
        assert_eq!(empty.image_to_text, vec![0.0]);
    }
}
