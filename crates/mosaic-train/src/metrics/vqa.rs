//! VQA answer accuracy: exact match after the official VQA evaluation's answer normalisation, overall and per
//! question type (the same shape as [`super::exact_match::ExactMatch`], accumulated one answer at a time).
//!
//! [`normalize_vqa_answer`] follows `VQAEval` in the VQA evaluation tools
//! (<https://github.com/GT-Vision-Lab/VQA/blob/master/PythonEvaluationTools/vqaEvaluation/vqaEval.py>): the
//! newline/tab/strip step of `evaluate`, then `processPunctuation`, then `processDigitArticle`, quirks included.
//! Scoring is a single exact match against one answer, not the ten-annotator `min(1, matches / 3)` average.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::ser::SerializeMap;

use super::{MetricsError, check_len, divide, is_py_space, py_split};

/// `self.punct`: replaced by a space, or removed outright (see [`process_punctuation`]).
const PUNCT: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];
/// `self.manualMap`: number words to digits.
const NUMBERS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];
const ARTICLES: [&str; 3] = ["a", "an", "the"];
/// The most periods the script's `periodStrip.sub("", text, re.UNICODE)` removes: `re.UNICODE` (32) lands in
/// `sub`'s `count` argument.
const MAX_PERIODS_STRIPPED: usize = 32;
/// `self.contractions`, verbatim. The keys with capitals (`Im`, `Ive`, `Id've`, `I'dve`) never match because
/// words are lower-cased first, and `somebody'd` maps to `somebodyd`; both as in the script.
const CONTRACTIONS: [(&str, &str); 120] = [
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// An answer as the VQA evaluation compares it: newlines and tabs to spaces, stripped, then
/// [`process_punctuation`] and [`process_digit_article`].
///
/// The script's `\d` matches any Unicode decimal digit; here only ASCII digits count, which differs only for
/// answers written with other digits.
pub fn normalize_vqa_answer(s: &str) -> String {
    let s = s.replace(['\n', '\t'], " ");
    process_digit_article(&process_punctuation(s.trim_matches(is_py_space)))
}

/// `processPunctuation`: each of `PUNCT` is removed when it touches a space anywhere in the answer (or when the
/// answer has a digit-comma-digit anywhere), else replaced by a space; then periods not followed by a digit are
/// removed (at most 32 of them, as the script does).
pub fn process_punctuation(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let comma_between_digits = chars
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == ',' && w[2].is_ascii_digit());
    let mut out = text.to_owned();
    for p in PUNCT {
        let touches_space = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        let replacement = if touches_space || comma_between_digits {
            ""
        } else {
            " "
        };
        out = out.replace(p, replacement);
    }
    // `(?!<=\d)(\.)(?!\d)`: the first group is a (mistyped) lookahead that always holds, so this drops every
    // period not followed by a digit, judged on the text before any removal.
    let chars: Vec<char> = out.chars().collect();
    let mut stripped = 0;
    let mut result = String::with_capacity(out.len());
    for (i, &c) in chars.iter().enumerate() {
        let next_is_digit = chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c == '.' && !next_is_digit && stripped < MAX_PERIODS_STRIPPED {
            stripped += 1;
        } else {
            result.push(c);
        }
    }
    result
}

/// `processDigitArticle`: lower case, number words to digits, articles dropped, contractions restored.
pub fn process_digit_article(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = py_split(&lower)
        .map(|w| NUMBERS.iter().find(|(k, _)| *k == w).map_or(w, |(_, v)| *v))
        .filter(|w| !ARTICLES.contains(w))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(k, _)| *k == w)
                .map_or(w, |(_, v)| *v)
        })
        .collect();
    words.join(" ")
}

/// Whether `prediction` and `answer` are the same once both are [`normalize_vqa_answer`]ed.
pub fn is_vqa_match(prediction: &str, answer: &str) -> bool {
    normalize_vqa_answer(prediction) == normalize_vqa_answer(answer)
}

/// VQA accuracy accumulated answer by answer: the fraction of normalised exact matches, overall and per question
/// type. Serializes as `{"overall": .., "count": .., "per_type": {type: {"accuracy": .., "count": ..}}}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VqaAccuracy {
    hits: usize,
    count: usize,
    /// Per question type: matches and answers.
    types: BTreeMap<String, (usize, usize)>,
}

impl VqaAccuracy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scores all answers at once; the three slices are parallel.
    pub fn compute<T: AsRef<str>, P: AsRef<str>, A: AsRef<str>>(
        question_types: &[T],
        predictions: &[P],
        answers: &[A],
    ) -> Result<Self, MetricsError> {
        check_len("VQA accuracy", answers.len(), predictions.len())?;
        check_len(
            "VQA accuracy question types",
            answers.len(),
            question_types.len(),
        )?;
        let mut acc = Self::new();
        for ((t, p), a) in question_types.iter().zip(predictions).zip(answers) {
            acc.add(t.as_ref(), p.as_ref(), a.as_ref());
        }
        Ok(acc)
    }

    /// Scores one prediction against its answer.
    pub fn add(&mut self, question_type: &str, prediction: &str, answer: &str) {
        let hit = usize::from(is_vqa_match(prediction, answer));
        self.hits += hit;
        self.count += 1;
        let entry = self.types.entry(question_type.to_owned()).or_default();
        entry.0 += hit;
        entry.1 += 1;
    }

    /// The fraction of answers matched (0 when there are none).
    pub fn overall(&self) -> f64 {
        divide(self.hits as f64, self.count as f64)
    }

    /// How many answers were scored.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Per question type: the fraction matched and how many answers there were.
    pub fn per_type(&self) -> BTreeMap<String, (f64, usize)> {
        self.types
            .iter()
            .map(|(t, &(hits, n))| (t.clone(), (divide(hits as f64, n as f64), n)))
            .collect()
    }
}

/// One question type's entry in the serialized report.
#[derive(Serialize)]
struct TypeScore {
    accuracy: f64,
    count: usize,
}

impl Serialize for VqaAccuracy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let per_type: BTreeMap<String, TypeScore> = self
            .per_type()
            .into_iter()
            .map(|(t, (accuracy, count))| (t, TypeScore { accuracy, count }))
            .collect();
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("overall", &self.overall())?;
        m.serialize_entry("count", &self.count)?;
        m.serialize_entry("per_type", &per_type)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_follows_the_script() {
        assert_eq!(normalize_vqa_answer(" The Two dogs. "), "2 dogs");
        assert_eq!(normalize_vqa_answer("dont"), "don't");
        assert_eq!(normalize_vqa_answer("1,000 (approx.)"), "1000 approx");
        assert_eq!(normalize_vqa_answer("left/right"), "left right");
        assert_eq!(normalize_vqa_answer("3.5"), "3.5");
    }

    #[test]
    fn accuracy_overall_and_per_type_serializes() {
        let mut acc = VqaAccuracy::new();
        acc.add("what color", "Red.", "red");
        acc.add("how many", "two", "2");
        acc.add("how many", "3", "4");
        assert!((acc.overall() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(acc.per_type()["how many"], (0.5, 2));
        let json = serde_json::to_value(&acc).unwrap();
        assert_eq!(json["count"], 3);
        assert_eq!(json["per_type"]["what color"]["accuracy"], 1.0);
        assert_eq!(json["per_type"]["how many"]["count"], 2);
    }

    #[test]
    fn empty_is_zero_and_mismatches_are_errors() {
        assert_eq!(VqaAccuracy::new().overall(), 0.0);
        assert!(matches!(
            VqaAccuracy::compute(&["t"], &["a", "b"], &["a"]),
            Err(MetricsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            VqaAccuracy::compute(&["t"], &["a", "b"], &["a", "b"]),
            Err(MetricsError::LengthMismatch { .. })
        ));
        let acc = VqaAccuracy::compute(&["t", "t"], &["yes", "no"], &["Yes", "yes"]).unwrap();
        assert_eq!((acc.overall(), acc.count()), (0.5, 2));
    }
}
