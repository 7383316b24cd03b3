//! `task = "image-text-contrastive"` runs (placeholder: filled in by the issue-6 work).

use crate::observer::Observer;
use crate::pipeline::{RunOptions, RunSummary};
use crate::recipe::Recipe;
use crate::{Result, TrainError};

/// Trains `recipe` and writes its run folder.
pub fn run(
    _recipe: &Recipe,
    _observer: &mut dyn Observer,
    _options: RunOptions<'_>,
) -> Result<RunSummary> {
    Err(TrainError::Invalid(
        "task \"image-text-contrastive\" is not implemented yet".into(),
    ))
}
