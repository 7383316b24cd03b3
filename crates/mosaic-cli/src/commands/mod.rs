//! One module per subcommand.

pub mod coco_eval;
pub mod detect;
pub mod embed;
pub mod eval;
pub mod fill_mask;
pub mod generate;
pub mod imagine;
pub mod merge;
pub mod predict;
pub mod train;
pub mod visual;
pub mod zero_shot;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mosaic_models::ModelSource;

/// Resolves `--model` (local folder, hf:ORG/NAME or pip:PACKAGE) to a local folder.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    Ok(ModelSource::parse(spec).resolve()?)
}

/// A model from `--model` (a whole model, or an adapter folder on its base model) with `--adapter` on top, and
/// the folder its tokenizer comes from.
pub fn load_adapted<M>(
    dir: &Path,
    adapter: Option<&Path>,
    load: impl Fn(&Path) -> mosaic_models::Result<M>,
    target: impl Fn(&M) -> mosaic_peft::AdapterTarget,
) -> Result<(M, PathBuf)> {
    let (model, inner) = mosaic_peft::load_model_or_adapter(dir, &load, &target)?;
    let mut tokenizer_dir = dir.to_path_buf();
    if inner.is_some() && !dir.join("tokenizer.json").is_file() {
        tokenizer_dir = mosaic_peft::adapter_base_model(dir)?;
    }
    if let Some(adapter) = adapter {
        if inner.is_some() {
            bail!(
                "{}: this folder already holds an adapter; give its base model as --model",
                dir.display()
            );
        }
        mosaic_peft::Adapter::load(&target(&model), adapter)
            .with_context(|| format!("--adapter {}", adapter.display()))?;
    }
    Ok((model, tokenizer_dir))
}
