//! Where a run stands: what an exact resume needs besides the weights and the optimizer's moments, and what
//! [`Trainer::fit`](super::Trainer::fit) reports at the end.

use serde::{Deserialize, Serialize};

use crate::early_stopping::EarlyStopping;
use crate::recipe::TrainSection;

/// Where training stands: with the model weights and the optimizer state, everything an exact resume needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: usize,
    /// The epoch (0-based) and the accumulation window within it that come next.
    pub epoch: usize,
    pub window: usize,
    /// The dropout stream: (seed, draws so far).
    pub rng: (u64, u64),
    pub early_stopping: EarlyStopping,
    pub best: Option<(f64, usize)>,
    pub epoch_loss: f64,
    pub epoch_count: usize,
    pub stopped_early: bool,
    /// Every record of `metrics.jsonl` so far.
    pub history: Vec<serde_json::Value>,
    /// Ranks the run trains with (a resume must use as many).
    #[serde(default = "one")]
    pub world_size: usize,
}

fn one() -> usize {
    1
}

impl TrainerState {
    /// The state before the first step.
    pub fn new(cfg: &TrainSection, rng: (u64, u64), history: Vec<serde_json::Value>) -> Self {
        TrainerState {
            step: 0,
            epoch: 0,
            window: 0,
            rng,
            early_stopping: EarlyStopping::new(
                cfg.metric.clone(),
                cfg.mode,
                cfg.patience,
                cfg.min_delta,
            ),
            best: None,
            epoch_loss: 0.0,
            epoch_count: 0,
            stopped_early: false,
            history,
            world_size: 1,
        }
    }
}

/// What happened during [`Trainer::fit`](super::Trainer::fit).
#[derive(Debug, Clone, Default)]
pub struct FitOutcome {
    pub steps: usize,
    pub epochs: usize,
    pub stopped_early: bool,
    /// The best validation value of the recipe's metric and the step it was reached at.
    pub best: Option<(f64, usize)>,
    /// Mean training loss of the last complete epoch.
    pub last_train_loss: f64,
    /// Numbers in the parameters that trained, and in all parameters.
    pub trainable_parameters: usize,
    pub total_parameters: usize,
}
