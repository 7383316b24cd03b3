//! How a run starts and what it returns, for every task: [`RunOptions`] (resume, the stop flag), [`RunSummary`],
//! and [`resume_point`], the checkpoint a resumed run continues from.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use crate::collective::{Collective, SINGLE_PROCESS};
use crate::error::Result;
use crate::evaluate::Evaluation;
use crate::observer::Observer;
use crate::recipe::Recipe;
use crate::resume::Found;

/// How to start a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunOptions<'a> {
    /// Continue from the last complete checkpoint in the output folder.
    pub resume: bool,
    /// Set (e.g. by a SIGINT/SIGTERM handler) to save a checkpoint and stop after the current step.
    pub stop: Option<&'a AtomicBool>,
    /// The ranks of a data-parallel run (`mpirun -np N`); `None`: one process.
    pub collective: Option<&'a dyn Collective>,
}

impl<'a> RunOptions<'a> {
    /// The run's collective: one process unless one was given.
    pub fn collective(&self) -> &'a dyn Collective {
        self.collective.unwrap_or(&SINGLE_PROCESS)
    }
}

/// The outcome of a whole run.
#[derive(Debug)]
pub struct RunSummary {
    pub output: PathBuf,
    pub before: Option<Evaluation>,
    pub after: Option<Evaluation>,
    pub best_checkpoint: Option<PathBuf>,
}

/// With `options.resume`, the latest resumable checkpoint of the run folder: an error when there is none, or when
/// the recipe differs from the one the run started with. Called before anything is written, so a refused resume
/// leaves the run folder as it was.
pub fn resume_point(
    recipe: &Recipe,
    options: &RunOptions<'_>,
    observer: &mut dyn Observer,
) -> Result<Option<Found>> {
    if !options.resume {
        return Ok(None);
    }
    // The recipe the run started with: everything but `train.epochs` must be as it was.
    let saved = recipe.output.join("recipe.toml");
    if saved.is_file() {
        recipe.check_resume(&Recipe::from_file(&saved)?)?;
    }
    let found = crate::resume::load_latest(&recipe.output.join("checkpoints"))?;
    observer.message(&format!(
        "resuming from {} (step {})",
        found.dir.display(),
        found.state.step
    ));
    Ok(Some(found))
}
