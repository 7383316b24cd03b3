//! A recipe, end to end: [`run`] picks the task's runner from `recipe.task` — text classification
//! ([`crate::text_classification`]), causal-LM training ([`crate::causal_lm`]), image classification
//! ([`crate::image_classification`]), CLIP ([`crate::contrastive`]) LLaVA ([`crate::visual_instruction`]) or image + text ([`crate::multimodal`]) — and each trains with the one
//! [`Trainer`](crate::trainer::Trainer).

pub use crate::run::{RunOptions, RunSummary};
pub use crate::text_classification::{
    DEFAULT_MAX_LENGTH, DEFAULT_TEMPERATURE, Prepared, mask_token, prepare,
};

use crate::error::Result;
use crate::observer::Observer;
use crate::recipe::{Recipe, Task};

/// Runs `recipe`, writing into its output folder.
pub fn run(recipe: &Recipe, observer: &mut dyn Observer) -> Result<RunSummary> {
    run_with(recipe, observer, RunOptions::default())
}

/// Runs `recipe` with [`RunOptions`] (resume, stop flag).
pub fn run_with(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    options: RunOptions<'_>,
) -> Result<RunSummary> {
    // Every rank of a data-parallel run trains the same recipe, or none starts.
    crate::collective::agree_on_recipe(options.collective(), &recipe.to_toml_string())?;
    match recipe.task {
        Task::CausalLm => crate::causal_lm::run(recipe, observer, options),
        Task::ImageClassification => crate::image_classification::run(recipe, observer, options),
        Task::ImageTextContrastive => crate::contrastive::run(recipe, observer, options),
        Task::VisualInstruction => crate::visual_instruction::run(recipe, observer, options),
        Task::MultimodalClassification => crate::multimodal::run(recipe, observer, options),
        Task::TextToImage => crate::text_to_image::run(recipe, observer, options),
        Task::Detection => crate::detection::run(recipe, observer, options),
        Task::Classification | Task::TokenClassification => {
            crate::text_classification::run(recipe, observer, options)
        }
    }
}
