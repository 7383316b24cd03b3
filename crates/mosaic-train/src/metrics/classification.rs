//! scikit-learn's `classification_report` (with `zero_division=0`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;
use serde::ser::SerializeMap;

use super::{MetricsError, Scores, check_len, divide, write_header, write_row};

/// Per-class and averaged precision / recall / F1, as scikit-learn's
/// `classification_report(y_true, y_pred, labels=..., zero_division=0)`.
///
/// Per class: precision = tp / predicted, recall = tp / true,
/// F1 = 2 tp / (true + predicted), each 0 when its denominator is 0.
/// Micro average: the same over the summed counts of the reported labels;
/// macro: the unweighted mean over labels; weighted: the mean weighted by
/// support (the unweighted mean when all supports are 0).
///
/// When the reported labels cover every class present in `y_true` and
/// `y_pred`, the micro average is shown as `accuracy` (its precision);
/// otherwise as `micro avg`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassificationReport {
    /// The reported labels, in order.
    pub labels: Vec<String>,
    /// Scores per label, in `labels` order.
    pub per_class: Vec<Scores>,
    pub micro_avg: Scores,
    pub macro_avg: Scores,
    pub weighted_avg: Scores,
    /// Whether the micro average is the accuracy (reported as `accuracy`).
    pub micro_is_accuracy: bool,
}

impl ClassificationReport {
    /// `y_true` and `y_pred` are class indices; `labels[i]` names class `i`.
    /// Indices `>= labels.len()` are classes outside the report: they count
    /// as wrong predictions for the reported classes but get no row (and the
    /// micro average is then reported as `micro avg`, not `accuracy`).
    pub fn compute(
        labels: &[String],
        y_true: &[usize],
        y_pred: &[usize],
    ) -> Result<Self, MetricsError> {
        check_len("classification report", y_true.len(), y_pred.len())?;
        let k = labels.len();
        let mut tp = vec![0usize; k];
        let mut true_sum = vec![0usize; k];
        let mut pred_sum = vec![0usize; k];
        let mut outside = false;
        for (&t, &p) in y_true.iter().zip(y_pred) {
            if t < k {
                true_sum[t] += 1;
            } else {
                outside = true;
            }
            if p < k {
                pred_sum[p] += 1;
            } else {
                outside = true;
            }
            if t == p && t < k {
                tp[t] += 1;
            }
        }
        let per_class: Vec<Scores> = (0..k)
            .map(|i| scores(tp[i], true_sum[i], pred_sum[i]))
            .collect();
        let micro_avg = scores(
            tp.iter().sum(),
            true_sum.iter().sum(),
            pred_sum.iter().sum(),
        );
        let support: usize = true_sum.iter().sum();
        let n = k as f64;
        let mean = |f: fn(&Scores) -> f64| divide(per_class.iter().map(f).sum::<f64>(), n);
        let macro_avg = Scores {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
            support,
        };
        let weighted_avg = if support == 0 {
            // numpy.average raises on zero weights; sklearn falls back to the plain mean.
            macro_avg
        } else {
            let w = support as f64;
            let wmean = |f: fn(&Scores) -> f64| {
                per_class
                    .iter()
                    .map(|s| f(s) * s.support as f64)
                    .sum::<f64>()
                    / w
            };
            Scores {
                precision: wmean(|s| s.precision),
                recall: wmean(|s| s.recall),
                f1: wmean(|s| s.f1),
                support,
            }
        };
        Ok(Self {
            labels: labels.to_vec(),
            per_class,
            micro_avg,
            macro_avg,
            weighted_avg,
            micro_is_accuracy: !outside,
        })
    }

    /// String labels, like sklearn. `labels`: the labels to report, in
    /// order; `None` reports every label in `y_true` or `y_pred`, sorted.
    pub fn from_strings<S: AsRef<str>>(
        labels: Option<&[String]>,
        y_true: &[S],
        y_pred: &[S],
    ) -> Result<Self, MetricsError> {
        check_len("classification report", y_true.len(), y_pred.len())?;
        let labels: Vec<String> = match labels {
            Some(l) => l.to_vec(),
            None => y_true
                .iter()
                .chain(y_pred)
                .map(|s| s.as_ref())
                .collect::<BTreeSet<&str>>()
                .into_iter()
                .map(String::from)
                .collect(),
        };
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, l) in labels.iter().enumerate() {
            index.entry(l.as_str()).or_insert(i);
        }
        let mut next = labels.len();
        let mut to_index = |s: &S| -> usize {
            let s = s.as_ref();
            if let Some(&i) = index.get(s) {
                return i;
            }
            // A class outside the report: give it an index of its own.
            let i = next;
            next += 1;
            i
        };
        let t: Vec<usize> = y_true.iter().map(&mut to_index).collect();
        let p: Vec<usize> = y_pred.iter().map(&mut to_index).collect();
        Self::compute(&labels, &t, &p)
    }

    /// Accuracy when the report covers every class (see the type's docs).
    pub fn accuracy(&self) -> Option<f64> {
        self.micro_is_accuracy.then_some(self.micro_avg.precision)
    }

    /// The scores of `label`.
    pub fn class(&self, label: &str) -> Option<&Scores> {
        self.labels
            .iter()
            .position(|l| l == label)
            .map(|i| &self.per_class[i])
    }

    /// The report as sklearn's `output_dict=True` shape, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a report serialises")
    }

    /// The text table with `digits` decimals (sklearn's text report).
    pub fn to_text(&self, digits: usize) -> String {
        struct Text<'a>(&'a ClassificationReport, usize);
        impl fmt::Display for Text<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write_text(f, self.1)
            }
        }
        Text(self, digits).to_string()
    }

    fn write_text(&self, f: &mut fmt::Formatter<'_>, digits: usize) -> fmt::Result {
        let name_width = self
            .labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0);
        let width = name_width.max("weighted avg".len()).max(digits);
        write_header(f, width)?;
        for (label, s) in self.labels.iter().zip(&self.per_class) {
            write_row(f, label, s, width, digits)?;
        }
        writeln!(f)?;
        if self.micro_is_accuracy {
            writeln!(
                f,
                "{:>width$}  {:>9} {:>9} {:>9.digits$} {:>9}",
                "accuracy", "", "", self.micro_avg.f1, self.micro_avg.support
            )?;
        } else {
            write_row(f, "micro avg", &self.micro_avg, width, digits)?;
        }
        write_row(f, "macro avg", &self.macro_avg, width, digits)?;
        write_row(f, "weighted avg", &self.weighted_avg, width, digits)
    }
}

fn scores(tp: usize, true_sum: usize, pred_sum: usize) -> Scores {
    let tp_f = tp as f64;
    Scores {
        precision: divide(tp_f, pred_sum as f64),
        recall: divide(tp_f, true_sum as f64),
        // sklearn: (1 + beta^2) tp / (beta^2 true + pred).
        f1: divide(2.0 * tp_f, (true_sum + pred_sum) as f64),
        support: true_sum,
    }
}

/// sklearn's text report with 4 decimals.
impl fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_text(f, 4)
    }
}

/// sklearn's `output_dict=True` shape: one entry per label, then
/// `accuracy` (a number) or `micro avg`, `macro avg`, `weighted avg`.
impl Serialize for ClassificationReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.labels.len() + 3))?;
        for (label, sc) in self.labels.iter().zip(&self.per_class) {
            m.serialize_entry(label, sc)?;
        }
        if self.micro_is_accuracy {
            m.serialize_entry("accuracy", &self.micro_avg.precision)?;
        } else {
            m.serialize_entry("micro avg", &self.micro_avg)?;
        }
        m.serialize_entry("macro avg", &self.macro_avg)?;
        m.serialize_entry("weighted avg", &self.weighted_avg)?;
        m.end()
    }
}
