//! Patience-based early stopping (the Hugging Face `EarlyStoppingCallback`
//! rule): a value improves on the best so far when it is better by more
//! than `min_delta`; after `patience` evaluations in a row without
//! improvement, training stops.

use serde::{Deserialize, Serialize};

/// Whether larger or smaller metric values are better.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Max,
    Min,
}

impl Mode {
    /// `min` for metrics whose name contains `loss`, else `max`.
    pub fn for_metric(metric: &str) -> Self {
        if metric.to_lowercase().contains("loss") {
            Mode::Min
        } else {
            Mode::Max
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Max => "max",
            Mode::Min => "min",
        }
    }

    /// Whether `value` is better than `best` by more than `min_delta`.
    pub fn improves(&self, value: f64, best: f64, min_delta: f64) -> bool {
        let better = match self {
            Mode::Max => value > best,
            Mode::Min => value < best,
        };
        better && (value - best).abs() > min_delta
    }
}

/// The outcome of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A new best value (the caller typically saves a checkpoint).
    Improved,
    /// Not better; patience not yet exhausted.
    NoImprovement,
    /// Not better, and `patience` evaluations in a row without improvement.
    Stop,
}

/// Early-stopping state; serialise it (serde) to resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// The metric watched (informational).
    pub metric: String,
    pub mode: Mode,
    /// Evaluations without improvement before stopping; 0 never stops.
    pub patience: usize,
    /// How much better a value must be to count as an improvement.
    pub min_delta: f64,
    /// The best value so far.
    pub best: Option<f64>,
    /// Evaluations since the last improvement.
    pub bad_evals: usize,
    /// Evaluations so far.
    pub evals: usize,
    /// The evaluation (0-based) that gave the best value.
    pub best_eval: Option<usize>,
}

impl EarlyStopping {
    pub fn new(metric: impl Into<String>, mode: Mode, patience: usize, min_delta: f64) -> Self {
        Self {
            metric: metric.into(),
            mode,
            patience,
            min_delta: min_delta.abs(),
            best: None,
            bad_evals: 0,
            evals: 0,
            best_eval: None,
        }
    }

    /// Records one evaluation's value. A NaN never improves.
    pub fn update(&mut self, value: f64) -> Decision {
        let eval = self.evals;
        self.evals += 1;
        let improved = !value.is_nan()
            && match self.best {
                None => true,
                Some(best) => self.mode.improves(value, best, self.min_delta),
            };
        if improved {
            self.best = Some(value);
            self.best_eval = Some(eval);
            self.bad_evals = 0;
            return Decision::Improved;
        }
        self.bad_evals += 1;
        if self.patience > 0 && self.bad_evals >= self.patience {
            Decision::Stop
        } else {
            Decision::NoImprovement
        }
    }

    /// Whether the last update asked to stop.
    pub fn should_stop(&self) -> bool {
        self.patience > 0 && self.bad_evals >= self.patience
    }

    pub fn best(&self) -> Option<f64> {
        self.best
    }
}
