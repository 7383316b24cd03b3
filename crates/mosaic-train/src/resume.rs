//! Resumable checkpoints: `checkpoints/step-NNNNNNNN/` holds the weights, the optimizer state and the trainer state
//! (position in the data, dropout stream, early stopping, metrics so far). Each is written into a private folder,
//! fsynced and renamed into place; `checkpoints/latest` names the newest complete one and is updated last, so a
//! crash at any moment leaves the previous checkpoint usable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};

use crate::error::{Result, TrainError};
use crate::optim::Optimizer;
use crate::trainer::TrainerState;

const LATEST: &str = "latest";
const STATE_FILE: &str = "trainer_state.json";
const WEIGHTS_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// A checkpoint read back for resuming.
pub struct Found {
    pub dir: PathBuf,
    pub state: TrainerState,
    pub optimizer: Vec<(String, Tensor)>,
    pub weights: HashMap<String, Tensor>,
}

fn step_dir_name(step: usize) -> String {
    format!("step-{step:08}")
}

fn sync_dir(dir: &Path) {
    // Make the rename durable; not every filesystem supports fsync on a directory, so failures are ignored.
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes a resumable checkpoint for `state` under `root` — every parameter in `params` (trainable or not) and
/// the `buffers` (batch-norm running statistics) — and prunes old ones down to `keep` (plus the best).
pub fn save(
    root: &Path,
    params: &[(String, Var)],
    buffers: &[(String, Tensor)],
    optimizer: &dyn Optimizer,
    state: &TrainerState,
    keep: usize,
) -> Result<()> {
    std::fs::create_dir_all(root).map_err(|e| TrainError::file(root, e))?;
    let name = step_dir_name(state.step);
    let staging = root.join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    let previous = std::fs::read_to_string(root.join(LATEST)).ok();
    let fail = |e: TrainError| {
        let _ = std::fs::remove_dir_all(&staging);
        let kept = match &previous {
            Some(p) => format!(
                "the previous checkpoint {} is intact",
                root.join(p.trim()).display()
            ),
            None => "no earlier checkpoint exists".to_string(),
        };
        TrainError::file(
            root.join(&name),
            format!("cannot save checkpoint ({e}); {kept}"),
        )
    };
    let written = (|| -> Result<()> {
        std::fs::create_dir_all(&staging).map_err(|e| TrainError::file(&staging, e))?;
        let weights: HashMap<String, Tensor> = params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .chain(buffers.iter().cloned())
            .collect();
        mosaic_models::folder::save_safetensors(&weights, &staging.join(WEIGHTS_FILE))?;
        let opt: HashMap<String, Tensor> = optimizer.state()?.into_iter().collect();
        mosaic_models::folder::save_safetensors(&opt, &staging.join(OPTIMIZER_FILE))?;
        let json = serde_json::to_string(state).map_err(|e| TrainError::Invalid(e.to_string()))?;
        mosaic_models::folder::write_atomic(&staging.join(STATE_FILE), json.as_bytes())?;
        sync_dir(&staging);
        let target = root.join(&name);
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| TrainError::file(&target, e))?;
        }
        std::fs::rename(&staging, &target).map_err(|e| TrainError::file(&target, e))?;
        sync_dir(root);
        mosaic_models::folder::write_atomic(&root.join(LATEST), name.as_bytes())?;
        Ok(())
    })();
    written.map_err(fail)?;
    prune(root, keep.max(1), state.best.map(|(_, step)| step));
    Ok(())
}

/// Removes all but the newest `keep` step checkpoints, always keeping the one at `best_step`.
fn prune(root: &Path, keep: usize, best_step: Option<usize>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut steps: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    steps.sort_unstable_by(|a, b| b.cmp(a));
    for step in steps.into_iter().skip(keep) {
        if Some(step) != best_step {
            let _ = std::fs::remove_dir_all(root.join(step_dir_name(step)));
        }
    }
}

/// Reads the checkpoint `root/latest` names.
pub fn load_latest(root: &Path) -> Result<Found> {
    let latest = root.join(LATEST);
    let name = std::fs::read_to_string(&latest).map_err(|_| {
        TrainError::file(
            &latest,
            "no complete checkpoint to resume from (nothing was saved yet?)",
        )
    })?;
    let dir = root.join(name.trim());
    let state_path = dir.join(STATE_FILE);
    let text =
        std::fs::read_to_string(&state_path).map_err(|e| TrainError::file(&state_path, e))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| TrainError::file(&state_path, format!("malformed: {e}")))?;
    let read = |file: &str| -> Result<HashMap<String, Tensor>> {
        let path = dir.join(file);
        candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| TrainError::file(&path, e))
    };
    let weights = read(WEIGHTS_FILE)?;
    let mut optimizer: Vec<(String, Tensor)> = read(OPTIMIZER_FILE)?.into_iter().collect();
    optimizer.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Found {
        dir,
        state,
        optimizer,
        weights,
    })
}

/// Sets each of `params` from `weights` (all must be present, with the same shapes).
pub fn restore_params(params: &[(String, Var)], weights: &HashMap<String, Tensor>) -> Result<()> {
    for (name, var) in params {
        let t = weights.get(name).ok_or_else(|| {
            TrainError::Invalid(format!("resume checkpoint lacks tensor `{name}`"))
        })?;
        if t.dims() != var.dims() {
            return Err(TrainError::Invalid(format!(
                "resume checkpoint tensor `{name}` has shape {:?}, the model {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(t)?;
    }
    Ok(())
}
