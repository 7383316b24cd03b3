//! Learning-rate schedules with linear warmup, matching Hugging Face
//! Transformers' `get_constant_schedule_with_warmup`,
//! `get_linear_schedule_with_warmup` and `get_cosine_schedule_with_warmup`
//! (`num_cycles = 0.5`).
//!
//! `step` is the number of optimizer steps already taken: the first update
//! uses `lr_at(0)`, which is 0 when there is warmup (as with PyTorch's
//! `LambdaLR`).

use serde::{Deserialize, Serialize};

/// Warmup length, as a number of steps or a fraction of the total steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Warmup {
    /// A number of optimizer steps (a TOML integer).
    Steps(usize),
    /// A fraction of the total optimizer steps (a TOML float), rounded up
    /// like the HF `Trainer`'s `warmup_ratio`.
    Ratio(f64),
}

impl Default for Warmup {
    fn default() -> Self {
        Warmup::Steps(0)
    }
}

impl Warmup {
    /// The number of warmup steps for a run of `total_steps` steps.
    pub fn steps(&self, total_steps: usize) -> usize {
        match *self {
            Warmup::Steps(n) => n,
            Warmup::Ratio(r) => (total_steps as f64 * r).ceil().max(0.0) as usize,
        }
    }
}

/// The shape of the schedule after warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Stay at the base learning rate.
    Constant,
    /// Decay linearly to 0 at `total_steps`.
    #[default]
    Linear,
    /// Half a cosine down to 0 at `total_steps`.
    Cosine,
}

impl ScheduleKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ScheduleKind::Constant => "constant",
            ScheduleKind::Linear => "linear",
            ScheduleKind::Cosine => "cosine",
        }
    }
}

/// A learning-rate schedule: `lr_at(step) = base_lr * multiplier(step)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LrSchedule {
    pub fn new(kind: ScheduleKind, base_lr: f64, warmup: Warmup, total_steps: usize) -> Self {
        Self {
            kind,
            base_lr,
            warmup_steps: warmup.steps(total_steps),
            total_steps,
        }
    }

    /// The factor applied to the base learning rate after `step` optimizer steps.
    pub fn multiplier(&self, step: usize) -> f64 {
        let w = self.warmup_steps;
        if step < w {
            return step as f64 / w.max(1) as f64;
        }
        let decay_len = self.total_steps.saturating_sub(w).max(1) as f64;
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => {
                // HF: max(0, (total - step) / max(1, total - warmup)).
                ((self.total_steps as f64 - step as f64) / decay_len).max(0.0)
            }
            ScheduleKind::Cosine => {
                let progress = (step - w) as f64 / decay_len;
                let num_cycles = 0.5;
                (0.5 * (1.0 + (std::f64::consts::PI * num_cycles * 2.0 * progress).cos())).max(0.0)
            }
        }
    }

    /// The learning rate after `step` optimizer steps.
    pub fn lr_at(&self, step: usize) -> f64 {
        self.base_lr * self.multiplier(step)
    }
}
