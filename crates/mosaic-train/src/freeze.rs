//! Which parameters train: the recipe's `freeze` strategy applied to parameter names, through each model's
//! [`Role`] of a name — one rule for every model.

use candle_core::Var;

use crate::error::{Result, TrainError};
use crate::recipe::Freeze;

/// Whether `name` belongs to a task head (classifier, MLM head, pooler).
fn is_head(name: &str) -> bool {
    name.starts_with("classifier.") || name.starts_with("cls.") || name.contains("pooler.")
}

/// What a parameter is part of, for the freezing strategies: `embeddings` freezes [`Role::Embedding`],
/// `all-but-head` trains [`Role::Head`] only, `all-but-top-N` trains the head, the final norms and the top N
/// layers of each stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Embedding,
    /// Layer `index` of a stack of `count`.
    Layer {
        index: usize,
        count: usize,
    },
    /// A norm after the last layer.
    Final,
    Head,
    Other,
}

/// The parameters of `params` that train under `freeze`, given each one's [`Role`]; an error when none does.
pub fn select(
    params: Vec<(String, Var)>,
    freeze: Freeze,
    role: impl Fn(&str) -> Role,
) -> Result<Vec<(String, Var)>> {
    let keep = |name: &str| match (freeze, role(name)) {
        (Freeze::None, _) => true,
        (Freeze::Embeddings, r) => r != Role::Embedding,
        (Freeze::AllButHead, r) => r == Role::Head,
        (Freeze::AllButTopN(n), Role::Layer { index, count }) => index + n >= count,
        (Freeze::AllButTopN(_), r) => matches!(r, Role::Head | Role::Final),
    };
    let chosen: Vec<(String, Var)> = params.into_iter().filter(|(n, _)| keep(n)).collect();
    if chosen.is_empty() {
        return Err(TrainError::Invalid(format!(
            "train.freeze = \"{freeze}\" leaves no parameter to train (this model has no head of its own)"
        )));
    }
    Ok(chosen)
}

/// The index after `marker` in a parameter name (`encoder.layer.3.attention…` with `encoder.layer.` → 3).
pub fn index_after(name: &str, marker: &str) -> Option<usize> {
    name.split(marker).nth(1)?.split('.').next()?.parse().ok()
}

/// The trainable subset of a BERT's `params` under `freeze`, for a model with `num_layers` encoder layers.
pub fn trainable(
    params: Vec<(String, Var)>,
    freeze: Freeze,
    num_layers: usize,
) -> Result<Vec<(String, Var)>> {
    select(params, freeze, |name| {
        if is_head(name) {
            Role::Head
        } else if name.contains("embeddings.") {
            Role::Embedding
        } else if let Some(index) = index_after(name, "encoder.layer.") {
            Role::Layer {
                index,
                count: num_layers,
            }
        } else {
            Role::Other
        }
    })
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
    select(params, freeze, |name| {
        if name.contains("wte.") || name.contains("wpe.") {
            Role::Embedding
        } else if name == "lm_head.weight" {
            Role::Head
        } else if name.contains("ln_f.") {
            Role::Final
        } else if let Some(index) = index_after(name, ".h.") {
            Role::Layer {
                index,
                count: num_layers,
            }
        } else {
            Role::Other
        }
    })
}
