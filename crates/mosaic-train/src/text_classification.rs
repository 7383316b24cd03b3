//! Text classification (`task = "classification"` with a head, cloze through the MLM head or prompt similarity,
//! and `task = "token-classification"`), end to end: [`prepare`] the model and data, evaluate before training
//! (zero-shot for prompt methods), train with the [`Trainer`], evaluate the best checkpoint on the test set, and
//! write the run folder (`recipe.toml`, `metrics.jsonl`, `report.json`, `best/`, `last/`, `training.svg`).

pub mod prepare;

use candle_core::Var;
use mosaic_data::{Collator, EncodedDataset, IGNORE_INDEX, Target};

pub use crate::task_model::mask_token;
pub use prepare::{DEFAULT_MAX_LENGTH, DEFAULT_TEMPERATURE, Prepared, prepare};

use crate::checkpoint;
use mosaic_models::Mode;

use crate::error::Result;
use crate::evaluate::{Evaluation, evaluate};
use crate::observer::Observer;
use crate::recipe::{Freeze, Method, Recipe};
use crate::run::{RunOptions, RunSummary};
use crate::task_model::TensorBatch;
use crate::trainer::{
    BatchLoss, CheckpointInfo, EvalPoint, TrainTask, Trainer, metrics_json, param_ending,
};

/// A BERT task model trained on an encoded data set.
struct TextTask<'a> {
    prepared: &'a Prepared,
    train: &'a EncodedDataset,
    valid: Option<&'a EncodedDataset>,
    collator: Collator,
    eval_batch: usize,
}

impl TrainTask for TextTask<'_> {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn count(&self, batch: &[usize]) -> usize {
        batch
            .iter()
            .map(|&i| match &self.train.examples[i].target {
                Target::Class(c) => usize::from(*c != IGNORE_INDEX),
                Target::Tokens(tags) => tags.iter().filter(|&&t| t != IGNORE_INDEX).count(),
            })
            .sum()
    }

    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let collated = self
            .collator
            .collate(batch.iter().map(|&i| &self.train.examples[i]))?;
        let tensors = TensorBatch::new(&collated, &self.prepared.device)?;
        let (loss, count) = self.prepared.model.loss_sum(&tensors)?;
        Ok(BatchLoss::Sum { loss, count })
    }

    fn set_training(&self, training: bool) {
        self.prepared.model.bert.set_training(training);
    }

    fn dropout(&self) -> &Mode {
        &self.prepared.model.bert.mode
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        self.prepared.model.bert.params.all()
    }

    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>> {
        let bert = &self.prepared.model.bert;
        crate::freeze::trainable(bert.params.all(), freeze, bert.encoder.num_layers())
    }

    fn adaptable(&self) -> std::result::Result<crate::adapters::Adaptable, String> {
        use mosaic_peft::TaskType;
        let bert = &self.prepared.model.bert;
        let (task_type, heads): (_, &'static [&'static str]) = match bert.task {
            mosaic_models::BertTask::SequenceClassification => {
                (Some(TaskType::SeqCls), &["classifier"])
            }
            mosaic_models::BertTask::TokenClassification => {
                (Some(TaskType::TokenCls), &["classifier"])
            }
            mosaic_models::BertTask::Base => (Some(TaskType::FeatureExtraction), &[]),
            mosaic_models::BertTask::MaskedLm => (None, &[]),
        };
        Ok(crate::adapters::Adaptable {
            params: bert.params.clone(),
            mode: bert.mode.clone(),
            task_type,
            default_targets: crate::adapters::BERT_TARGETS,
            heads,
            base_model: self.prepared.model_dir.clone(),
            virtual_tokens: None,
            // The encoder's output then starts with the virtual tokens (PEFT's SEQ_CLS pools the first of
            // them); cloze mask positions, token tags and mean pooling would all shift.
            prompt_tuning_refusal: (bert.task != mosaic_models::BertTask::SequenceClassification)
                .then_some("on BERT it is supported with a classification head (method = \"head\"), as PEFT's SEQ_CLS"),
        })
    }

    fn fgm_embeddings(&self) -> std::result::Result<Var, String> {
        param_ending(self.parameters(), "embeddings.word_embeddings.weight")
    }

    fn validate(
        &self,
        observer: &mut dyn Observer,
        at: &EvalPoint,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(valid) = self.valid else {
            return Ok(None);
        };
        let p = self.prepared;
        let evaluation = evaluate(&p.model, valid, &self.collator, self.eval_batch, &p.device)?;
        observer.report(
            &format!("validation, epoch {} (step {})", at.epoch, at.step),
            &evaluation,
        );
        Ok(Some(metrics_json(&evaluation.metrics)))
    }

    fn save_checkpoint(&self, dir: &std::path::Path, info: &CheckpointInfo) -> Result<()> {
        let p = self.prepared;
        let mut meta = p.meta.clone();
        meta.epoch = info.epoch;
        meta.step = info.step;
        meta.metrics = info.f64_metrics();
        checkpoint::save(&p.model, &meta, &p.model_dir, dir)
    }
}

fn report_json(e: &Evaluation) -> serde_json::Value {
    serde_json::json!({"metrics": e.metrics, "report": e.report.to_json()})
}

/// Runs a text-classification `recipe` with [`RunOptions`] (resume, stop flag), writing its run folder.
pub fn run(
    recipe: &Recipe,
    observer: &mut dyn Observer,
    options: RunOptions<'_>,
) -> Result<RunSummary> {
    let resume = crate::run::resume_point(recipe, &options, observer)?;
    let prepared = prepare(recipe, observer)?;
    let mut files = crate::run_folder::RunFolder::create(recipe, options.collective())?;
    let collator = prepared.collator();
    let eval_batch = recipe.train.batch_size.max(1) * 2;
    let eval_set = prepared.test.as_ref().or(prepared.valid.as_ref());
    // The untrained model's figures: also on resume (before the checkpoint's weights are restored), so a resumed
    // run reports what an uninterrupted one does.
    let before = match eval_set {
        Some(set) => {
            let e = evaluate(
                &prepared.model,
                set,
                &collator,
                eval_batch,
                &prepared.device,
            )?;
            let title = if recipe.method == Method::Head {
                "before training (untrained head)"
            } else {
                "zero-shot (before)"
            };
            observer.report(title, &e);
            Some(e)
        }
        None => None,
    };
    let mut after = None;
    let mut best_checkpoint = None;
    let mut trainable_parameters = prepared.model.bert.params.num_elements();
    let mut total_parameters = trainable_parameters;
    if let Some(train) = &prepared.train {
        let mut task = TextTask {
            prepared: &prepared,
            train,
            valid: prepared.valid.as_ref(),
            collator,
            eval_batch,
        };
        let trainer = Trainer {
            config: &recipe.train,
            peft: recipe.peft.as_ref(),
            stop: options.stop,
            collective: options.collective(),
        };
        let outcome = trainer.fit(&mut task, &mut files, resume, observer)?;
        trainable_parameters = outcome.trainable_parameters;
        total_parameters = outcome.total_parameters;
        let best = files.path("best");
        if let Some(set) = eval_set {
            let loaded = checkpoint::load(&best, &prepared.device)?;
            let e = evaluate(&loaded.model, set, &collator, eval_batch, &prepared.device)?;
            observer.report("fine-tuned (after, best checkpoint)", &e);
            let split = if prepared.test.is_some() {
                "test"
            } else {
                "valid"
            };
            let mut record = serde_json::json!({ "type": "eval", "split": split, "final": true });
            for (k, v) in metrics_json(&e.metrics) {
                record[k] = v;
            }
            files.log(record)?;
            after = Some(e);
        }
        best_checkpoint = Some(best);
    }
    let report = serde_json::json!({
        "name": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "method": recipe.method,
        "labels": prepared.meta.labels,
        "trainable_parameters": trainable_parameters,
        "total_parameters": total_parameters,
        "peft": recipe.peft.as_ref().map(|p| p.method.as_str()),
        "before": before.as_ref().map(report_json),
        "after": after.as_ref().map(report_json),
    });
    files.finish(&report, &recipe.train.metric)?;
    Ok(RunSummary {
        output: files.output.clone(),
        before,
        after,
        best_checkpoint,
    })
}
