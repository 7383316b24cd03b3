//! Which parameters train: the recipe's `freeze` strategy applied to parameter names.

use candle_core::Var;

use crate::error::{Result, TrainError};
use crate::recipe::Freeze;

/// Whether `name` belongs to a task head (classifier, MLM head, pooler).
fn is_head(name: &str) -> bool {
    name.starts_with("classifier.") || name.starts_with("cls.") || name.contains("pooler.")
}

fn layer_index(name: &str) -> Option<usize> {
    let rest = name.split("encoder.layer.").nth(1)?;
    rest.split('.').next()?.parse().ok()
}

/// The trainable subset of `params` under `freeze`, for a model with `num_layers` encoder layers.
pub fn trainable(
    params: Vec<(String, Var)>,
    freeze: Freeze,
    num_layers: usize,
) -> Result<Vec<(String, Var)>> {
    let keep = |name: &str| match freeze {
        Freeze::None => true,
        Freeze::Embeddings => !name.contains("embeddings."),
        Freeze::AllButHead => is_head(name),
        Freeze::AllButTopN(n) => {
            is_head(name) || layer_index(name).is_some_and(|i| i + n >= num_layers)
        }
    };
    let chosen: Vec<(String, Var)> = params.into_iter().filter(|(n, _)| keep(n)).collect();
    if chosen.is_empty() {
        return Err(TrainError::Invalid(format!(
            "train.freeze = \"{freeze}\" leaves no parameter to train (this model has no head of its own)"
        )));
    }
    Ok(chosen)
}
