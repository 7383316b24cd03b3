//! A GPT-2 trained on next-token prediction, as the [`Trainer`](crate::trainer::Trainer) sees it: the loss of a
//! micro-batch is the summed token loss (response tokens only for instruction data), counted by tokens.

use std::path::Path;

use candle_core::{Device, Var};
use mosaic_models::Gpt2;

use super::checkpoint::{LmMeta, save_checkpoint};
use super::data::{LmBatch, LmExample};
use super::loss::evaluate;
use super::report::eval_json;
use mosaic_models::Mode;

use crate::error::Result;
use crate::observer::Observer;
use crate::recipe::Freeze;
use crate::trainer::{BatchLoss, CheckpointInfo, EvalPoint, StepStats, TrainTask, param_ending};

/// A causal LM and the data it trains and validates on.
pub struct CausalLmTask<'a> {
    pub model: &'a Gpt2,
    pub train: &'a [LmExample],
    pub valid: Option<&'a [LmExample]>,
    pub pad_id: u32,
    pub eval_batch: usize,
    pub device: &'a Device,
    /// The checkpoints' `mosaic.json` and where the tokenizer files come from.
    pub meta: &'a LmMeta,
    pub model_dir: &'a Path,
}

impl TrainTask for CausalLmTask<'_> {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn count(&self, batch: &[usize]) -> usize {
        batch.iter().map(|&i| self.train[i].counted()).sum()
    }

    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let batch = LmBatch::collate(
            batch.iter().map(|&i| &self.train[i]),
            self.pad_id,
            self.device,
        )?;
        // Packed batches carry positions and segments: every sample sees only itself.
        let (loss, count) = self.model.lm_loss_sum_with_layout(
            &batch.input_ids,
            &batch.layout(),
            Some(&batch.labels),
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
        Ok(crate::adapters::Adaptable {
            params: self.model.params.clone(),
            mode: self.model.mode.clone(),
            task_type: Some(mosaic_peft::TaskType::CausalLm),
            default_targets: crate::adapters::GPT2_TARGETS,
            heads: &[],
            base_model: self.model_dir.to_path_buf(),
            virtual_tokens: Some(mosaic_peft::Gpt2VirtualTokens::shared(self.model)),
            prompt_tuning_refusal: None,
        })
    }

    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>> {
        crate::freeze::trainable_gpt2(
            self.model.params.all(),
            freeze,
            self.model.transformer.num_layers(),
            self.model.config.tie_word_embeddings,
        )
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
        let e = evaluate(self.model, valid, self.eval_batch, self.pad_id, self.device)?;
        observer.message(&format!(
            "epoch {}: valid loss {:.4}, perplexity {:.2}",
            at.epoch, e.loss, e.perplexity
        ));
        Ok(eval_json(&e).as_object().cloned())
    }

    fn save_checkpoint(&self, dir: &Path, info: &CheckpointInfo) -> Result<()> {
        let mut meta = self.meta.clone();
        meta.epoch = info.epoch;
        meta.step = info.step;
        meta.metrics = info.metrics.clone();
        save_checkpoint(self.model, &meta, self.model_dir, dir)
    }
}
