//! Range and combination checks on a resolved recipe. Types were checked before resolution
//! ([`super::check`]); what is left is what one value alone cannot say: a positive learning rate, split fractions
//! that sum to 1, a method that belongs to the task.

use super::choices::{Freeze, Init, Method, Task};
use super::error::{RecipeError, invalid};
use super::sections::{DataSection, PromptSection, Recipe, TrainSection};
use crate::schedule::Warmup;

/// An [`RecipeError::Invalid`] result for `key`.
fn bad(origin: &str, key: &str, message: &str) -> Result<(), RecipeError> {
    Err(invalid(origin, key, message))
}

fn missing(origin: &str, key: &str) -> Result<(), RecipeError> {
    Err(RecipeError::Missing {
        origin: origin.into(),
        key: key.into(),
    })
}

impl Recipe {
    /// Checks value ranges and combinations; errors name the key.
    pub fn validate(&self, origin: &str) -> Result<(), RecipeError> {
        if self.model.trim().is_empty() {
            return bad(origin, "model", "must not be empty");
        }
        if self.name.trim().is_empty() {
            return bad(origin, "name", "must not be empty");
        }
        validate_train(&self.train, origin)?;
        validate_data(&self.data, origin)?;
        self.validate_task(origin)?;
        self.validate_loss(origin)?;
        if let Some(peft) = &self.peft {
            self.validate_peft(peft, origin)?;
        }
        validate_prompt(&self.prompt, origin)
    }

    /// `[loss]`: weights that are finite and not negative, on objectives the task has, not all zero.
    fn validate_loss(&self, origin: &str) -> Result<(), RecipeError> {
        let Some(weights) = &self.loss else {
            return Ok(());
        };
        let offered = self.task.objectives();
        for (name, &weight) in weights {
            let key = format!("loss.{name}");
            if !offered.contains(&name.as_str()) {
                let message = if offered.is_empty() {
                    format!(
                        "task {} has a single loss and no objectives to weight",
                        self.task.as_str()
                    )
                } else {
                    format!(
                        "task {} has no objective `{name}`; its objectives are {}",
                        self.task.as_str(),
                        offered.join(", ")
                    )
                };
                return bad(origin, &key, &message);
            }
            if !weight.is_finite() || weight < 0.0 {
                return bad(
                    origin,
                    &key,
                    &format!("must be a finite weight ≥ 0, got {weight}"),
                );
            }
        }
        if weights.values().all(|&w| w == 0.0) {
            return bad(
                origin,
                "loss",
                "needs at least one objective with a weight above 0",
            );
        }
        Ok(())
    }

    /// The weight of each of the task's objectives: the `[loss]` table's (an objective it leaves out weighs 0),
    /// or the first objective alone with weight 1 when the recipe has no table.
    pub fn objective_weights(&self) -> Vec<(&'static str, f64)> {
        let offered = self.task.objectives();
        offered
            .iter()
            .enumerate()
            .map(|(i, &name)| {
                let weight = match &self.loss {
                    Some(table) => table.get(name).copied().unwrap_or(0.0),
                    None if i == 0 => 1.0,
                    None => 0.0,
                };
                (name, weight)
            })
            .collect()
    }

    /// LoRA's ranges, and no second say over what trains.
    fn validate_peft(&self, peft: &super::PeftSection, origin: &str) -> Result<(), RecipeError> {
        use super::{PeftMethod, PromptInitKind};
        let lora = peft.method == PeftMethod::Lora;
        // Keys of another method than the one chosen (compared with their defaults: serde fills those in).
        let foreign: &[(&str, bool)] = &[
            ("peft.r", !lora && peft.r != 8),
            ("peft.alpha", !lora && peft.alpha != 8.0),
            ("peft.dropout", !lora && peft.dropout != 0.0),
            (
                "peft.target_modules",
                !lora && peft.target_modules.is_some(),
            ),
            (
                "peft.modules_to_save",
                !lora && peft.modules_to_save.is_some(),
            ),
            ("peft.use_rslora", !lora && peft.use_rslora),
            ("peft.use_dora", !lora && peft.use_dora),
            (
                "peft.num_virtual_tokens",
                lora && peft.num_virtual_tokens != 20,
            ),
            (
                "peft.init",
                peft.method != PeftMethod::PromptTuning && peft.init != PromptInitKind::Random,
            ),
            (
                "peft.init_text",
                peft.method != PeftMethod::PromptTuning && peft.init_text.is_some(),
            ),
            (
                "peft.prefix_projection",
                peft.method != PeftMethod::PrefixTuning && peft.prefix_projection,
            ),
            (
                "peft.encoder_hidden_size",
                peft.method != PeftMethod::PrefixTuning && peft.encoder_hidden_size.is_some(),
            ),
        ];
        if let Some((key, _)) = foreign.iter().find(|(_, set)| *set) {
            return bad(
                origin,
                key,
                &format!("is not read by peft.method = \"{}\"", peft.method.as_str()),
            );
        }
        if peft.method == PeftMethod::PromptTuning
            && (peft.init == PromptInitKind::Text) != peft.init_text.is_some()
        {
            return bad(
                origin,
                "peft.init_text",
                "goes with peft.init = \"text\" (and that needs it)",
            );
        }
        if !lora && peft.num_virtual_tokens == 0 {
            return bad(origin, "peft.num_virtual_tokens", "must be at least 1");
        }
        if peft.r == 0 {
            return bad(origin, "peft.r", "must be at least 1 (the adapter's rank)");
        }
        if !(peft.alpha.is_finite() && peft.alpha > 0.0) {
            return bad(origin, "peft.alpha", "must be a positive number");
        }
        if !(0.0..1.0).contains(&peft.dropout) {
            return bad(origin, "peft.dropout", "must be in [0, 1)");
        }
        if self.train.freeze != Freeze::None {
            return bad(
                origin,
                "train.freeze",
                "does not apply with [peft]: the adapter and `peft.modules_to_save` are what trains",
            );
        }
        if self.init == Init::Random {
            return bad(
                origin,
                "init",
                "= \"random\" cannot go with [peft]: an adapter is saved without its base model, and randomly \
                 initialised base weights would exist nowhere to load it onto",
            );
        }
        if self.method == Method::Coop {
            return bad(
                origin,
                "peft",
                "CoOp trains its context vectors only; [peft] does not apply to it",
            );
        }
        Ok(())
    }

    /// The data each method needs, and the task each method and `init` belong to.
    fn validate_task(&self, origin: &str) -> Result<(), RecipeError> {
        match self.method {
            Method::Head if self.data.train.is_none() => return missing(origin, "data.train"),
            _ if self.data.train.is_none() && self.data.test.is_none() => {
                return bad(origin, "data", "needs `train` or `test`");
            }
            _ => {}
        }
        let lm_method = matches!(self.method, Method::Instruction | Method::Lm);
        if self.task == Task::CausalLm && !lm_method {
            return bad(
                origin,
                "method",
                "must be \"instruction\" or \"lm\" for causal-lm",
            );
        }
        if lm_method && self.task != Task::CausalLm {
            return bad(
                origin,
                "task",
                "must be \"causal-lm\" for methods \"instruction\" and \"lm\"",
            );
        }
        if self.task == Task::CausalLm && self.data.train.is_none() {
            return missing(origin, "data.train");
        }
        if self.task == Task::ImageClassification && self.method != Method::Head {
            return bad(
                origin,
                "method",
                "must be \"head\" for image-classification",
            );
        }
        let clip_method = matches!(self.method, Method::Contrastive | Method::Coop);
        if self.task == Task::ImageTextContrastive && !clip_method {
            return bad(
                origin,
                "method",
                "must be \"contrastive\" or \"coop\" for image-text-contrastive",
            );
        }
        if clip_method && self.task != Task::ImageTextContrastive {
            return bad(
                origin,
                "task",
                "must be \"image-text-contrastive\" for methods \"contrastive\" and \"coop\"",
            );
        }
        if self.init == Init::Random
            && !matches!(
                self.task,
                Task::CausalLm | Task::ImageClassification | Task::Detection
            )
        {
            return bad(
                origin,
                "init",
                "\"random\" is for causal-lm, image-classification and detection (training from scratch)",
            );
        }
        if self.task == Task::Detection {
            if self.method != Method::Head {
                return bad(
                    origin,
                    "method",
                    "detection has no method: the DETR's class and box heads train with the set loss",
                );
            }
            if self.data.train.is_none() {
                return missing(origin, "data.train");
            }
        }
        if self.task == Task::VisualInstruction {
            if self.method != Method::Head {
                return bad(
                    origin,
                    "method",
                    "visual-instruction has no method: `stage` (\"align\" or \"instruct\") says what trains",
                );
            }
            if self.data.train.is_none() {
                return missing(origin, "data.train");
            }
            if self.projector.is_some() && self.vision_model.is_none() {
                return bad(
                    origin,
                    "projector",
                    "is for a LLaVA built from parts (with `vision_model`); a LLaVA folder has its projector",
                );
            }
            if self.unfreeze_vision_tower && self.stage == Some(super::sections::Stage::Align) {
                return bad(
                    origin,
                    "unfreeze_vision_tower",
                    "stage \"align\" trains the projector alone",
                );
            }
        }
        if self.task == Task::MultimodalClassification {
            if self.method != Method::Head {
                return bad(
                    origin,
                    "method",
                    "must be \"head\" for multimodal-classification",
                );
            }
            if self.data.train.is_none() {
                return missing(origin, "data.train");
            }
            if self.vision_model.is_none() {
                return missing(origin, "vision_model");
            }
        }
        if self.task == Task::TokenClassification && self.method != Method::Head {
            return bad(
                origin,
                "method",
                "must be \"head\" for token-classification",
            );
        }
        Ok(())
    }
}

/// `[train]`: every number in its range.
fn validate_train(t: &TrainSection, origin: &str) -> Result<(), RecipeError> {
    let bad = |key: &str, msg: &str| bad(origin, key, msg);
    if !(t.lr.is_finite() && t.lr > 0.0) {
        return bad(
            "train.lr",
            &format!("must be a positive number, not {}", t.lr),
        );
    }
    if t.epochs == 0 {
        return bad("train.epochs", "must be at least 1");
    }
    if t.batch_size == 0 {
        return bad("train.batch_size", "must be at least 1");
    }
    if t.grad_accum == 0 {
        return bad("train.grad_accum", "must be at least 1");
    }
    if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
        return bad("train.weight_decay", "must be a non-negative number");
    }
    if !(t.max_grad_norm.is_finite() && t.max_grad_norm >= 0.0) {
        return bad(
            "train.max_grad_norm",
            "must be a non-negative number (0 disables clipping)",
        );
    }
    if let Warmup::Ratio(r) = t.warmup
        && !(0.0..=1.0).contains(&r)
    {
        return bad(
            "train.warmup",
            &format!("as a float is a ratio of the total steps and must be in [0, 1], not {r}"),
        );
    }
    if !(0.0..1.0).contains(&t.momentum) {
        return bad("train.momentum", "must be in [0, 1)");
    }
    if !(t.min_delta.is_finite() && t.min_delta >= 0.0) {
        return bad("train.min_delta", "must be a non-negative number");
    }
    if t.eval_every == Some(0) {
        return bad(
            "train.eval_every",
            "must be at least 1 (leave it out to evaluate per epoch)",
        );
    }
    if let Some(e) = t.fgm_epsilon
        && !(e.is_finite() && e > 0.0)
    {
        return bad("train.fgm_epsilon", "must be a positive number");
    }
    Ok(())
}

/// `[data]`: a positive length and split fractions that fit the files given.
fn validate_data(d: &DataSection, origin: &str) -> Result<(), RecipeError> {
    let bad = |key: &str, msg: &str| bad(origin, key, msg);
    if d.max_length == Some(0) {
        return bad("data.max_length", "must be at least 1");
    }
    if let Some(split) = &d.split {
        if d.valid.is_some() {
            return bad(
                "data.split",
                "is for splitting `data.train` when there is no `data.valid`",
            );
        }
        let want = if d.test.is_some() {
            "2 fractions ([train, valid], since `data.test` is given)"
        } else {
            "2 or 3 fractions ([train, valid] or [train, valid, test])"
        };
        let ok_len = if d.test.is_some() {
            split.len() == 2
        } else {
            split.len() == 2 || split.len() == 3
        };
        if !ok_len {
            return bad("data.split", &format!("must have {want}"));
        }
        if split
            .iter()
            .any(|f| !(f.is_finite() && *f > 0.0 && *f < 1.0))
        {
            return bad("data.split", "fractions must be between 0 and 1");
        }
        let sum: f64 = split.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return bad("data.split", &format!("fractions must sum to 1, not {sum}"));
        }
    }
    if d.split.is_some() && d.train.is_none() {
        return bad("data.split", "needs `data.train`");
    }
    Ok(())
}

/// `[prompt]`: a positive temperature and no empty verbalizer words.
fn validate_prompt(p: &PromptSection, origin: &str) -> Result<(), RecipeError> {
    if let Some(temp) = p.temperature
        && !(temp.is_finite() && temp > 0.0)
    {
        return bad(origin, "prompt.temperature", "must be a positive number");
    }
    for (label, v) in &p.verbalizer {
        let words = v.words();
        if words.is_empty() || words.iter().any(|w| w.is_empty()) {
            return bad(
                origin,
                &format!("prompt.verbalizer.{label}"),
                "must be a non-empty word or list of non-empty words",
            );
        }
    }
    Ok(())
}
