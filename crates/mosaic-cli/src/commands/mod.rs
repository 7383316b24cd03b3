//! One module per subcommand.

pub mod embed;
pub mod eval;
pub mod fill_mask;
pub mod generate;
pub mod predict;
pub mod train;
pub mod zero_shot;

use std::path::PathBuf;

use anyhow::Result;
use mosaic_models::ModelSource;

/// Resolves `--model` (local folder, hf:ORG/NAME or pip:PACKAGE) to a local folder.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    Ok(ModelSource::parse(spec).resolve()?)
}
