//! CIDEr-D as pycocoevalcap computes it (`pycocoevalcap.cider.Cider().compute_score(gts, res)`), and
//! [`ptb_tokenize`], the caption tokenization pycocoevalcap's `PTBTokenizer` applies first.
//!
//! The score follows `cider_scorer.py`: each caption becomes TF-IDF vectors of its 1- to 4-grams, the document
//! frequencies come from the references of the whole corpus (an n-gram counts once per image) and the IDF is
//! `ln(images) - ln(max(1, df))`. Per order the candidate and each reference are compared by a cosine in which the
//! candidate weights are clipped by the reference weights, times the Gaussian length penalty
//! `exp(-delta² / (2 σ²))` with σ = 6. The orders are averaged, the references averaged, the result multiplied
//! by 10, and the corpus score is the mean over images.
//!
//! Like the reference, `delta` is the difference in *bigram* counts (pycocoevalcap counts the length where the
//! n-gram index is 1), so it is kept that way here.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{MetricsError, check_corpus, py_split};

/// The n-gram orders CIDEr-D sums over.
const N: usize = 4;
/// The standard deviation of the length penalty.
const SIGMA: f64 = 6.0;

/// A CIDEr-D score: the corpus mean and the score of each item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CiderScore {
    pub score: f64,
    pub per_item: Vec<f64>,
}

/// CIDEr-D of `candidates` against `references` (`references[i]` are all references of candidate `i`, at least
/// one each). Captions must already be tokenized (see [`ptb_tokenize`]); tokens are split on whitespace.
///
/// As in pycocoevalcap, a corpus of one image scores 0: the IDF `ln(1) - ln(df)` is 0 for every n-gram.
pub fn cider_d(candidates: &[&str], references: &[Vec<&str>]) -> Result<CiderScore, MetricsError> {
    check_corpus("CIDEr-D", candidates.len(), references)?;
    let cand_tokens: Vec<Vec<&str>> = candidates.iter().map(|c| py_split(c).collect()).collect();
    let ref_tokens: Vec<Vec<Vec<&str>>> = references
        .iter()
        .map(|refs| refs.iter().map(|r| py_split(r).collect()).collect())
        .collect();
    let cand_counts: Vec<Counts> = cand_tokens.iter().map(|t| counts(t)).collect();
    let ref_counts: Vec<Vec<Counts>> = ref_tokens
        .iter()
        .map(|refs| refs.iter().map(|t| counts(t)).collect())
        .collect();

    let mut doc_freq: HashMap<&[&str], f64> = HashMap::new();
    for refs in &ref_counts {
        let grams: HashSet<&[&str]> = refs.iter().flatten().map(|&(g, _)| g).collect();
        for g in grams {
            *doc_freq.entry(g).or_insert(0.0) += 1.0;
        }
    }
    let log_images = (candidates.len() as f64).ln();

    let per_item: Vec<f64> = cand_counts
        .iter()
        .zip(&ref_counts)
        .map(|(cand, refs)| {
            let hyp = TfIdf::new(cand, &doc_freq, log_images);
            let mut score = [0.0; N];
            for r in refs {
                let val = similarity(&hyp, &TfIdf::new(r, &doc_freq, log_images));
                for (s, v) in score.iter_mut().zip(val) {
                    *s += v;
                }
            }
            let mean = score.iter().sum::<f64>() / N as f64;
            mean / refs.len() as f64 * 10.0
        })
        .collect();
    let score = per_item.iter().sum::<f64>() / per_item.len() as f64;
    Ok(CiderScore { score, per_item })
}

/// The n-gram counts of one caption in the order pycocoevalcap's `precook` first meets them.
type Counts<'a> = Vec<(&'a [&'a str], usize)>;

fn counts<'a>(tokens: &'a [&'a str]) -> Counts<'a> {
    let mut index: HashMap<&[&str], usize> = HashMap::new();
    let mut out: Counts<'a> = Vec::new();
    for n in 1..=N {
        for gram in tokens.windows(n) {
            match index.get(gram) {
                Some(&i) => out[i].1 += 1,
                None => {
                    index.insert(gram, out.len());
                    out.push((gram, 1));
                }
            }
        }
    }
    out
}

/// `counts2vec`: TF-IDF weights per order, their norms, and the caption's bigram count.
struct TfIdf<'a> {
    weights: Vec<(&'a [&'a str], f64)>,
    lookup: HashMap<&'a [&'a str], f64>,
    norm: [f64; N],
    length: usize,
}

impl<'a> TfIdf<'a> {
    fn new(counts: &Counts<'a>, doc_freq: &HashMap<&[&str], f64>, log_images: f64) -> Self {
        let mut norm = [0.0; N];
        let mut length = 0;
        let weights: Vec<(&[&str], f64)> = counts
            .iter()
            .map(|&(gram, tf)| {
                let df = doc_freq.get(gram).copied().unwrap_or(0.0).max(1.0).ln();
                let w = tf as f64 * (log_images - df);
                let n = gram.len() - 1;
                norm[n] += w * w;
                if n == 1 {
                    length += tf;
                }
                (gram, w)
            })
            .collect();
        TfIdf {
            lookup: weights.iter().copied().collect(),
            weights,
            norm: norm.map(f64::sqrt),
            length,
        }
    }
}

/// `sim`: per order, the clipped cosine of candidate and reference times the Gaussian length penalty.
fn similarity(hyp: &TfIdf<'_>, reference: &TfIdf<'_>) -> [f64; N] {
    let delta = hyp.length as f64 - reference.length as f64;
    let penalty = std::f64::consts::E.powf(-(delta * delta) / (2.0 * SIGMA * SIGMA));
    let mut val = [0.0; N];
    for &(gram, w) in &hyp.weights {
        let r = reference.lookup.get(gram).copied().unwrap_or(0.0);
        val[gram.len() - 1] += w.min(r) * r;
    }
    for ((v, h), r) in val.iter_mut().zip(hyp.norm).zip(reference.norm) {
        if h != 0.0 && r != 0.0 {
            *v /= h * r;
        }
        *v *= penalty;
    }
    val
}

/// The tokens pycocoevalcap's `PTBTokenizer` removes after running Stanford's PTBTokenizer. Bracket tokens are
/// not among them in effect: `-lowerCase` turns `-LRB-` into `-lrb-`, which this list (in upper case) misses.
const PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];
/// Abbreviations whose period Stanford's PTBTokenizer keeps.
const ABBREVIATIONS: [&str; 15] = [
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "etc", "vs", "inc", "co", "ltd", "mt", "ave", "ft",
];
/// Words PTB splits in two.
const SPLIT_WORDS: [(&str, &str, &str); 6] = [
    ("cannot", "can", "not"),
    ("gonna", "gon", "na"),
    ("gotta", "got", "ta"),
    ("wanna", "wan", "na"),
    ("lemme", "lem", "me"),
    ("gimme", "gim", "me"),
];
/// Clitics split off the end of a word.
const CLITICS: [&str; 7] = ["'s", "'m", "'d", "'re", "'ve", "'ll", "n't"];

/// What pycocoevalcap's `PTBTokenizer` (Stanford CoreNLP 3.4.1 `PTBTokenizer -preserveLines -lowerCase`, then
/// removal of its punctuation tokens) makes of one caption, for plain English text.
///
/// Covered, and checked against the real tokenizer by the caption-metrics fixture:
/// - lower case, whitespace collapsed; `&quot;` `&amp;` `&lt;` `&gt;`, curly quotes, en/em dashes and `…`;
/// - the marks `.` `,` `;` `:` `!` `?` `-` `--` `...`, double quotes, backquotes and single quotes split off and
///   dropped, while runs like `?!` or `!!!` stay (as PTB keeps them);
/// - `( ) [ ] { }` as `-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-`, which stay: pycocoevalcap's list has them in upper
///   case only;
/// - other ASCII symbols (`$ % & # + = * | ~ ^ < >`) as tokens of their own;
/// - hyphenated words (`t-shirt`), numbers with `.` `,` `:` inside (`5.50`, `3,000`, `3:30`), a sign or a
///   leading period (`-5`, `.5`), `a/b`, `a_b`, periods inside words (`a.b.c`);
/// - clitics `'s 'm 'd 're 've 'll n't` (`can't` → `ca n't`, `shouldn't've` → `should n't 've`), quotes
///   around words, `cannot gonna gotta wanna lemme gimme`;
/// - a final period kept on initials and acronyms (`a.`, `p.m.`, `u.s.a.`) and on a few abbreviations (`mr.`,
///   `dr.`, `st.`, `etc.`, ...; see `ABBREVIATIONS`).
///
/// Not covered (PTB has rules this does not): other abbreviations, SGML tags (`<b>`), URLs and e-mail
/// addresses, `@handles`, `AT&T`-style words, `'90s`/`'tis`/`'n'`, `y'all`, times like `10:30am`, and the
/// finer Unicode normalisation.
pub fn ptb_tokenize(text: &str) -> String {
    let text = text
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .to_lowercase();
    // Curly quotes become straight ones; dashes and the ellipsis become removed tokens, so a space will do.
    let text: String = text
        .chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' => '\'',
            '\u{201c}' | '\u{201d}' => '"',
            '\u{2013}' | '\u{2014}' | '\u{2026}' => ' ',
            c => c,
        })
        .collect();
    let mut tokens = Vec::new();
    for chunk in text.split_whitespace() {
        tokenize_chunk(&chunk.chars().collect::<Vec<_>>(), &mut tokens);
    }
    tokens.retain(|t| !PUNCTUATIONS.contains(&t.as_str()));
    tokens.join(" ")
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '\''
}

/// Splits one whitespace-free chunk into PTB tokens.
fn tokenize_chunk(chars: &[char], out: &mut Vec<String>) {
    let at = |i: usize| chars.get(i).copied();
    let mut i = 0;
    while let Some(c) = at(i) {
        let signed_number =
            matches!(c, '+' | '-' | '.') && at(i + 1).is_some_and(|d| d.is_ascii_digit());
        if is_word_char(c) || signed_number {
            let mut j = i + 1;
            while let Some(c) = at(j) {
                let (prev, next) = (chars[j - 1], at(j + 1).unwrap_or(' '));
                let joins = match c {
                    '-' | '.' | '/' => prev.is_alphanumeric() && next.is_alphanumeric(),
                    ',' | ':' => prev.is_ascii_digit() && next.is_ascii_digit(),
                    _ => is_word_char(c),
                };
                if !joins {
                    break;
                }
                j += 1;
            }
            let mut word: String = chars[i..j].iter().collect();
            if at(j) == Some('.') && (is_initials(&word) || ABBREVIATIONS.contains(&word.as_str()))
            {
                word.push('.');
                j += 1;
            }
            push_word(&word, out);
            i = j;
            continue;
        }
        let run_of =
            |pred: &dyn Fn(char) -> bool| chars[i..].iter().take_while(|&&d| pred(d)).count();
        let (token, len) = match c {
            // PTB keeps a run of sentence-final marks (`?!`, `!!!`) as one token.
            '!' | '?' => {
                let n = run_of(&|d| d == '!' || d == '?');
                (chars[i..i + n].iter().collect(), n)
            }
            '.' | '-' => match (c, run_of(&|d| d == c)) {
                ('.', n @ 3..) => ("...".to_owned(), n),
                ('-', n @ 2..) => ("--".to_owned(), n),
                _ => (c.to_string(), 1),
            },
            _ => (bracket(c).map_or_else(|| c.to_string(), str::to_owned), 1),
        };
        out.push(token);
        i += len;
    }
}

/// PTB's names for brackets (lower-cased by `-lowerCase`) and quotes.
fn bracket(c: char) -> Option<&'static str> {
    Some(match c {
        // PTB writes `` or '' depending on context; both are dropped afterwards.
        '"' => "''",
        '(' => "-lrb-",
        ')' => "-rrb-",
        '[' => "-lsb-",
        ']' => "-rsb-",
        '{' => "-lcb-",
        '}' => "-rcb-",
        _ => return None,
    })
}

/// Single letters separated by periods (`a`, `p.m`, `u.s.a`): PTB keeps a period that follows them.
fn is_initials(word: &str) -> bool {
    let mut chars = word.chars();
    loop {
        match (chars.next(), chars.next()) {
            (Some(l), None) if l.is_alphabetic() => return true,
            (Some(l), Some('.')) if l.is_alphabetic() => {}
            _ => return false,
        }
    }
}

/// Emits one word: quotes around it, then the clitics and split words PTB separates.
fn push_word(word: &str, out: &mut Vec<String>) {
    let mut word = word;
    while word.starts_with('\'') && !CLITICS.contains(&word) {
        out.push("'".to_owned());
        word = &word[1..];
    }
    let quotes_after = word.len() - word.trim_end_matches('\'').len();
    word = &word[..word.len() - quotes_after];
    let mut suffixes = Vec::new();
    while let Some(c) = CLITICS
        .iter()
        .find(|c| word.len() > c.len() && word.ends_with(*c))
    {
        suffixes.push(*c);
        word = &word[..word.len() - c.len()];
    }
    if !word.is_empty() {
        match SPLIT_WORDS.iter().find(|(w, _, _)| *w == word) {
            Some((_, a, b)) => out.extend([a.to_string(), b.to_string()]),
            None => out.push(word.to_owned()),
        }
    }
    out.extend(suffixes.iter().rev().map(|s| s.to_string()));
    out.extend(std::iter::repeat_n("'".to_owned(), quotes_after));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptb_splits_clitics_and_drops_punctuation() {
        assert_eq!(
            ptb_tokenize("A dog's ball, isn't it?"),
            "a dog 's ball is n't it"
        );
        assert_eq!(
            ptb_tokenize("(left) 'quoted' U.S.A. Mr. x."),
            "-lrb- left -rrb- quoted u.s.a. mr. x."
        );
        assert_eq!(ptb_tokenize("  \t "), "");
    }

    #[test]
    fn identical_captions_score_ten_and_unrelated_zero() {
        let refs = vec![vec!["a red circle on the left"], vec!["a blue square"]];
        let s = cider_d(&["a red circle on the left", "one green star"], &refs).unwrap();
        assert!((s.per_item[0] - 10.0).abs() < 1e-12, "{s:?}");
        assert_eq!(s.per_item[1], 0.0);
        assert!((s.score - 5.0).abs() < 1e-12);
    }

    #[test]
    fn errors_instead_of_panics() {
        assert!(matches!(cider_d(&[], &[]), Err(MetricsError::Empty { .. })));
        assert!(matches!(
            cider_d(&["a"], &[vec!["a"], vec!["b"]]),
            Err(MetricsError::ReferenceCountMismatch {
                hypotheses: 1,
                references: 2,
                ..
            })
        ));
        assert!(matches!(
            cider_d(&["a"], &[vec![]]),
            Err(MetricsError::NoReference { index: 0, .. })
        ));
    }
}
