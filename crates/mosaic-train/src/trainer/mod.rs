//! The one training loop. A task ([`TrainTask`]) owns its data, losses, metrics, parameters and checkpoint
//! folders; the [`Trainer`] owns the rest, once for every task: seeded batch order, accumulation windows
//! normalised by counted targets, FGM, global-norm clipping, the non-finite stop/skip rule, the LR schedule, the
//! optimizer, freezing, `eval_every` / `save_every`, early stopping, `best/` and `last/`, resumable step
//! checkpoints, SIGINT/SIGTERM, `metrics.jsonl` and progress.

mod fit;
mod state;
mod task;
mod window;

pub use fit::Trainer;
pub use state::{FitOutcome, TrainerState};
pub use task::{
    BatchLoss, CheckpointInfo, EvalPoint, StepStats, TrainTask, metrics_json, param_ending,
};
pub use window::{NonFiniteWindow, WindowGradients, WindowPlan};
