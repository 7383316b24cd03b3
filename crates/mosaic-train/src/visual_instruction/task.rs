//! A LLaVA trained on conversations about images, as the [`Trainer`](crate::trainer::Trainer) sees it: the loss
//! of a micro-batch is the summed token loss of the assistant replies, counted by tokens; the stage says which
//! parameters train.

use std::path::Path;

use candle_core::Var;
use mosaic_models::{Llava, Mode};

use super::checkpoint::{VisualMeta, save_checkpoint};
use super::data::{VisualBatch, VisualData};
use super::evaluate::evaluate_loss;
use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::recipe::{Freeze, Stage};
use crate::trainer::{BatchLoss, CheckpointInfo, EvalPoint, StepStats, TrainTask, param_ending};

const PROJECTOR: &str = "model.multi_modal_projector.";
const LANGUAGE: [&str; 2] = ["model.language_model.", "lm_head."];
const VISION: &str = "model.vision_tower.";

/// A LLaVA, its stage and the data it trains and validates on.
pub struct VisualInstructionTask<'a> {
    pub model: &'a Llava,
    pub stage: Stage,
    pub unfreeze_vision_tower: bool,
    pub train: &'a VisualData,
    pub valid: Option<&'a VisualData>,
    pub pad_id: u32,
    pub eval_batch: usize,
    pub meta: &'a VisualMeta,
    /// The LLaVA folder the run starts from (the adapter's base model; where the processor files are).
    pub model_dir: &'a Path,
}

impl VisualInstructionTask<'_> {
    /// Whether parameter `name` trains in this stage (without an adapter).
    fn trains(&self, name: &str) -> bool {
        name.starts_with(PROJECTOR)
            || (self.stage == Stage::Instruct
                && (LANGUAGE.iter().any(|p| name.starts_with(p))
                    || (self.unfreeze_vision_tower && name.starts_with(VISION))))
    }
}

impl TrainTask for VisualInstructionTask<'_> {
    fn train_len(&self) -> usize {
        self.train.examples.len()
    }

    fn count(&self, batch: &[usize]) -> usize {
        batch
            .iter()
            .map(|&i| self.train.examples[i].counted())
            .sum()
    }

    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let examples: Vec<_> = batch.iter().map(|&i| &self.train.examples[i]).collect();
        let batch = VisualBatch::collate(self.train, &examples, self.pad_id)?;
        let (loss, count) = self.model.loss_sum(
            &batch.input_ids,
            Some(&batch.pixel_values),
            &vec![1; examples.len()],
            Some(&batch.attention_mask),
            &batch.labels,
        )?;
        Ok(BatchLoss::Sum { loss, count })
    }

    fn after_step(&self, stats: &StepStats) -> Result<Vec<(&'static str, serde_json::Value)>> {
        Ok(vec![("tokens", stats.counted.into())])
    }

    fn set_training(&self, training: bool) {
        self.model.set_training(training);
    }

    fn dropout(&self) -> &Mode {
        &self.model.mode
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        self.model.params.all()
    }

    fn adaptable(&self) -> std::result::Result<crate::adapters::Adaptable, String> {
        if self.stage == Stage::Align {
            return Err(
                "stage \"align\" trains the projector alone; [peft] is for stage \"instruct\""
                    .into(),
            );
        }
        if self.unfreeze_vision_tower {
            return Err(
                "with [peft] the towers stay frozen: drop `unfreeze_vision_tower` or target the vision \
                 tower's projections in `target_modules`"
                    .into(),
            );
        }
        Ok(crate::adapters::Adaptable {
            params: self.model.params.clone(),
            mode: self.model.mode.clone(),
            task_type: Some(mosaic_peft::TaskType::CausalLm),
            default_targets: crate::adapters::GPT2_TARGETS,
            // LLaVA's LoRA stage trains the projector whole beside the adapter.
            heads: &["multi_modal_projector"],
            base_model: self.model_dir.to_path_buf(),
            virtual_tokens: None,
            prompt_tuning_refusal: Some(
                "visual-instruction puts image features among the tokens; use LoRA",
            ),
        })
    }

    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>> {
        if freeze != Freeze::None {
            return Err(TrainError::Invalid(format!(
                "train.freeze = \"{freeze}\": visual-instruction does not read it; `stage` says what trains \
                 (\"align\": the projector; \"instruct\": the projector and the language model)"
            )));
        }
        Ok(self
            .model
            .params
            .all()
            .into_iter()
            .filter(|(name, _)| self.trains(name))
            .collect())
    }

    fn fgm_embeddings(&self) -> std::result::Result<Var, String> {
        param_ending(self.parameters(), "wte.weight")
    }

    fn validate(
        &self,
        observer: &mut dyn Observer,
        at: &EvalPoint,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(valid) = self.valid else {
            return Ok(None);
        };
        let e = evaluate_loss(self.model, valid, self.eval_batch, self.pad_id)?;
        observer.message(&format!(
            "epoch {}: valid loss {:.4}, perplexity {:.2}",
            at.epoch, e.loss, e.perplexity
        ));
        Ok(serde_json::to_value(e)
            .ok()
            .and_then(|v| v.as_object().cloned()))
    }

    fn save_checkpoint(&self, dir: &Path, info: &CheckpointInfo) -> Result<()> {
        let mut meta = self.meta.clone();
        meta.epoch = info.epoch;
        meta.step = info.step;
        meta.metrics = info.metrics.clone();
        save_checkpoint(self.model, &meta, self.model_dir, dir)
    }
}
