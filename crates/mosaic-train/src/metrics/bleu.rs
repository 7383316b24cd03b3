//! Corpus BLEU-4, computed exactly as sacrebleu 2.x does with its defaults:
//! `sacrebleu.corpus_bleu(hypotheses, reference_streams)` with `tokenize="13a"`, `smooth_method="exp"`,
//! `lowercase=False`, `max_ngram_order=4` and `effective_order=False`.
//!
//! The statistics follow `sacrebleu/metrics/bleu.py`: n-gram counts are clipped by the largest count of that
//! n-gram in any one reference of the segment, the reference length of a segment is the reference length closest
//! to the hypothesis length (the shorter one on a tie), and everything is summed over the corpus before the
//! precisions, the brevity penalty and their geometric mean are taken.
//!
//! References are given per hypothesis, and their number may differ from one hypothesis to the next. That is what
//! sacrebleu computes when its reference streams are padded with `None` for the missing ones (it drops `None`).

use std::collections::HashMap;

use serde::Serialize;

use super::{MetricsError, check_corpus, is_py_space, py_split};

/// The n-gram orders BLEU-4 counts.
const MAX_ORDER: usize = 4;

/// sacrebleu's `my_log(0)`: a floor instead of minus infinity.
const LOG_ZERO: f64 = -9_999_999_999.0;

/// A corpus BLEU score and its parts, on sacrebleu's scales.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BleuScore {
    /// BLEU in 0..=100 (sacrebleu's `score`).
    pub score: f64,
    /// The 1- to 4-gram precisions in percent, smoothed as sacrebleu's `exp` method does.
    pub precisions: [f64; MAX_ORDER],
    /// The brevity penalty in 0..=1 (sacrebleu's `bp`).
    pub brevity_penalty: f64,
    /// The number of hypothesis tokens (sacrebleu's `sys_len`).
    pub hyp_len: usize,
    /// The summed closest reference lengths (sacrebleu's `ref_len`).
    pub ref_len: usize,
}

/// Corpus BLEU-4 of `hypotheses` against `references`, where `references[i]` are all references of
/// hypothesis `i` (at least one each; the count may differ per hypothesis).
///
/// Both sides are tokenized with [`tokenize_13a`]. An empty hypothesis is allowed and counts as zero tokens.
pub fn corpus_bleu(
    hypotheses: &[&str],
    references: &[Vec<&str>],
) -> Result<BleuScore, MetricsError> {
    check_corpus("BLEU", hypotheses.len(), references)?;
    let mut stats = Stats::default();
    for (hyp, refs) in hypotheses.iter().zip(references) {
        stats.add_segment(hyp, refs);
    }
    Ok(stats.score())
}

/// The summed segment statistics: lengths, matched and total n-grams per order.
#[derive(Debug, Default)]
struct Stats {
    hyp_len: usize,
    ref_len: usize,
    correct: [usize; MAX_ORDER],
    total: [usize; MAX_ORDER],
}

impl Stats {
    fn add_segment(&mut self, hypothesis: &str, references: &[&str]) {
        let ref_tokens: Vec<Vec<String>> = references.iter().map(|r| tokens(r)).collect();
        // The reference n-gram counts are the maximum over the references, as in `_extract_reference_info`.
        let mut ref_counts: HashMap<&[String], usize> = HashMap::new();
        for toks in &ref_tokens {
            for (gram, count) in ngram_counts(toks) {
                let max = ref_counts.entry(gram).or_insert(0);
                *max = (*max).max(count);
            }
        }
        let hyp_tokens = tokens(hypothesis);
        let ref_lens: Vec<usize> = ref_tokens.iter().map(Vec::len).collect();
        self.hyp_len += hyp_tokens.len();
        self.ref_len += closest_ref_len(hyp_tokens.len(), &ref_lens);
        for (gram, count) in ngram_counts(&hyp_tokens) {
            let n = gram.len() - 1;
            self.total[n] += count;
            if let Some(&max) = ref_counts.get(gram) {
                self.correct[n] += count.min(max);
            }
        }
    }

    /// `BLEU.compute_bleu` with `smooth_method="exp"` and `effective_order=False`.
    fn score(&self) -> BleuScore {
        let (sys_len, ref_len) = (self.hyp_len, self.ref_len);
        let mut brevity_penalty = 1.0;
        if sys_len < ref_len {
            brevity_penalty = if sys_len > 0 {
                (1.0 - ref_len as f64 / sys_len as f64).exp()
            } else {
                0.0
            };
        }
        let mut precisions = [0.0; MAX_ORDER];
        let result = |score, precisions| BleuScore {
            score,
            precisions,
            brevity_penalty,
            hyp_len: sys_len,
            ref_len,
        };
        // sacrebleu stops early (score and precisions 0) when nothing matches at all.
        if self.correct.iter().all(|&c| c == 0) {
            return result(0.0, precisions);
        }
        let mut smooth = 1.0;
        for ((p, &correct), &total) in precisions.iter_mut().zip(&self.correct).zip(&self.total) {
            if total == 0 {
                // No n-grams of this order or higher: those precisions stay 0.
                break;
            }
            *p = if correct == 0 {
                smooth *= 2.0;
                100.0 / (smooth * total as f64)
            } else {
                100.0 * correct as f64 / total as f64
            };
        }
        let log_sum: f64 = precisions
            .iter()
            .map(|&p| if p == 0.0 { LOG_ZERO } else { p.ln() })
            .sum();
        let score = brevity_penalty * (log_sum / MAX_ORDER as f64).exp();
        result(score, precisions)
    }
}

/// sacrebleu's `_get_closest_ref_len`: the reference length nearest `hyp_len`, the shorter on a tie.
fn closest_ref_len(hyp_len: usize, ref_lens: &[usize]) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            Some((d, l)) if diff > d || (diff == d && len >= l) => Some((d, l)),
            _ => Some((diff, len)),
        };
    }
    best.map_or(0, |(_, len)| len)
}

/// The tokens of one segment as sacrebleu sees them: right-stripped, 13a-tokenized, split on whitespace.
fn tokens(segment: &str) -> Vec<String> {
    let tokenized = tokenize_13a(segment.trim_end_matches(is_py_space));
    py_split(&tokenized).map(str::to_owned).collect()
}

/// Counts of all 1- to 4-grams of `tokens`.
fn ngram_counts(tokens: &[String]) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_ORDER {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// sacrebleu's `Tokenizer13a` (mteval-v13a): drops `<skipped>`, joins `-\n` hyphenations, unescapes
/// `&quot;` `&amp;` `&lt;` `&gt;`, pads ASCII punctuation (all of it but `'`, `,`, `-` and `.`) with spaces,
/// splits `.` and `,` off unless they sit between digits, splits `-` after a digit, and collapses whitespace.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    // `TokenizerRegexp`'s first rule: one class of characters, each padded with a space on both sides.
    let mut padded: Vec<char> = Vec::with_capacity(line.len() + 8);
    padded.push(' ');
    for c in line.chars() {
        if is_13a_symbol(c) {
            padded.extend([' ', c, ' ']);
        } else {
            padded.push(c);
        }
    }
    padded.push(' ');
    let is_digit = |c: char| c.is_ascii_digit();
    let is_period_comma = |c: char| c == '.' || c == ',';
    // `([^0-9])([\.,])` -> `\1 \2 `
    let s = substitute_pairs(
        &padded,
        |a, b| !is_digit(a) && is_period_comma(b),
        |a, b| [Some(a), Some(' '), Some(b), Some(' ')],
    );
    // `([\.,])([^0-9])` -> ` \1 \2`
    let s = substitute_pairs(
        &s,
        |a, b| is_period_comma(a) && !is_digit(b),
        |a, b| [Some(' '), Some(a), Some(' '), Some(b)],
    );
    // `([0-9])(-)` -> `\1 \2 `
    let s = substitute_pairs(
        &s,
        |a, b| is_digit(a) && b == '-',
        |a, b| [Some(a), Some(' '), Some(b), Some(' ')],
    );
    let s: String = s.into_iter().collect();
    py_split(&s).collect::<Vec<_>>().join(" ")
}

/// The characters of the class `[\{-\~\[-\` -\&\(-\+\:-\@\/]` in sacrebleu's `TokenizerRegexp`.
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// `re.sub` of a two-character pattern: scans left to right and replaces each non-overlapping pair
/// `(a, b)` with `matches(a, b)` by `replace(a, b)`, as Python's regex engine does for such a pattern.
fn substitute_pairs(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char) -> [Option<char>; 4],
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && matches(chars[i], chars[i + 1]) {
            out.extend(replace(chars[i], chars[i + 1]).into_iter().flatten());
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_13a_matches_sacrebleu_on_hand_checked_lines() {
        // Outputs of sacrebleu's Tokenizer13a()(line).
        let cases = [
            ("A red circle, on the LEFT.", "A red circle , on the LEFT ."),
            ("3,000 people at 3.30 p.m.", "3,000 people at 3.30 p . m ."),
            ("It's a \"big\" (box)...", "It's a \" big \" ( box ) . . ."),
            ("&quot;Hi&quot; &amp; &lt;b&gt;", "\" Hi \" & < b >"),
            ("pre-<skipped>war 1990-2000", "pre-war 1990 - 2000"),
            ("", ""),
        ];
        for (line, want) in cases {
            assert_eq!(tokenize_13a(line), want, "{line:?}");
        }
    }

    #[test]
    fn identical_corpus_scores_100() {
        let b = corpus_bleu(
            &["a red circle on the left"],
            &[vec!["a red circle on the left"]],
        )
        .unwrap();
        assert!((b.score - 100.0).abs() < 1e-9);
        assert_eq!(b.brevity_penalty, 1.0);
        assert_eq!((b.hyp_len, b.ref_len), (6, 6));
    }

    #[test]
    fn closest_reference_length_prefers_the_shorter_on_a_tie() {
        assert_eq!(closest_ref_len(6, &[7, 5, 9]), 5);
        assert_eq!(closest_ref_len(6, &[5, 7]), 5);
        assert_eq!(closest_ref_len(3, &[9, 4]), 4);
    }

    #[test]
    fn errors_instead_of_panics() {
        assert_eq!(
            corpus_bleu(&[], &[]),
            Err(MetricsError::Empty {
                what: "BLEU",
                items: "hypotheses"
            })
        );
        assert_eq!(
            corpus_bleu(&["a", "b"], &[vec!["a"]]),
            Err(MetricsError::ReferenceCountMismatch {
                what: "BLEU",
                hypotheses: 2,
                references: 1
            })
        );
        assert_eq!(
            corpus_bleu(&["a", "b"], &[vec!["a"], vec![]]),
            Err(MetricsError::NoReference {
                what: "BLEU",
                index: 1
            })
        );
    }
}
