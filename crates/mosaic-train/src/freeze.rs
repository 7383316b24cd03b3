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

/// The index of a GPT-2 block from a parameter name (`transformer.h.3.attn.c_attn.weight` → 3).
fn gpt2_block_index(name: &str) -> Option<usize> {
    let rest = name.split(".h.").nth(1)?;
    rest.split('.').next()?.parse().ok()
}

/// The trainable subset of a GPT-2's `params` under `freeze` (`num_layers` blocks; `tied`: the LM head is the
/// token embedding matrix, as in every released GPT-2).
///
/// - `embeddings`: `wte` and `wpe` are frozen — and with them a tied LM head, which *is* `wte`.
/// - `all-but-top-N`: only the top N blocks and the final `ln_f` train (plus an untied `lm_head`); a tied head
///   stays frozen with `wte`.
/// - `all-but-head`: only an untied `lm_head` trains; with a tied head there is no separate head, which is an
///   error.
pub fn trainable_gpt2(
    params: Vec<(String, Var)>,
    freeze: Freeze,
    num_layers: usize,
    tied: bool,
) -> Result<Vec<(String, Var)>> {
    if freeze == Freeze::AllButHead && tied {
        return Err(TrainError::Invalid(
            "train.freeze = \"all-but-head\": this GPT-2 ties its LM head to the token embeddings \
             (tie_word_embeddings = true), so it has no separate head to train; use \"all-but-top-N\" or \
             \"embeddings\""
                .into(),
        ));
    }
    if let Freeze::AllButTopN(n) = freeze
        && n > num_layers
    {
        return Err(TrainError::Invalid(format!(
            "train.freeze = \"{freeze}\": the model has only {num_layers} blocks"
        )));
    }
    let is_embedding = |name: &str| name.contains("wte.") || name.contains("wpe.");
    let keep = |name: &str| match freeze {
        Freeze::None => true,
        Freeze::Embeddings => !is_embedding(name),
        Freeze::AllButHead => name == "lm_head.weight",
        Freeze::AllButTopN(n) => {
            name == "lm_head.weight"
                || name.contains("ln_f.")
                || gpt2_block_index(name).is_some_and(|i| i + n >= num_layers)
        }
    };
    let chosen: Vec<(String, Var)> = params.into_iter().filter(|(n, _)| keep(n)).collect();
    if chosen.is_empty() {
        return Err(TrainError::Invalid(format!(
            "train.freeze = \"{freeze}\" leaves no parameter to train"
        )));
    }
    Ok(chosen)
}
