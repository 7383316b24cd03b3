//! What a run reports while it goes: the CLI draws progress bars from these events; tests ignore them.

use crate::evaluate::Evaluation;

/// One optimizer step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepLog {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub examples_per_second: f64,
}

/// Receives a run's events. Every method has a no-op default.
pub trait Observer {
    /// A line for the user (a phase starting, a warning, where the checkpoint is).
    fn message(&mut self, _text: &str) {}
    /// An evaluation report with a title ("zero-shot (before)", "validation, epoch 2", …).
    fn report(&mut self, _title: &str, _evaluation: &Evaluation) {}
    fn train_start(&mut self, _total_steps: usize) {}
    fn step(&mut self, _log: &StepLog) {}
    fn train_end(&mut self) {}
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {}
