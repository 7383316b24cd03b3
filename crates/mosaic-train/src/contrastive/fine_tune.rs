//! `method = "contrastive"`: CLIP fine-tuning of both towers and `logit_scale` on symmetric InfoNCE.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use mosaic_models::Clip;

use super::checkpoint::{ClipMeta, TASK, save_checkpoint};
use super::data::{CaptionTokenizer, PairData};
use super::info_nce::{PairEvaluation, evaluate_pairs, info_nce};
use super::{BaseModel, fields, finish_report, train_path};
use mosaic_models::Mode;

use crate::error::{Result, TrainError};
use crate::freeze::{Role, index_after};
use crate::observer::Observer;
use crate::recipe::{Freeze, Recipe};
use crate::resume::Found;
use crate::run::RunSummary;
use crate::run_folder::{RunFolder, eval_record};
use crate::trainer::{
    BatchLoss, CheckpointInfo, EvalPoint, StepStats, TrainTask, Trainer, metrics_json,
};

fn pair_metrics_json(e: &PairEvaluation) -> serde_json::Value {
    serde_json::to_value(e.metrics()).unwrap_or_default()
}

/// `recall@1 (image→text): 0.05 before → 0.40 after`, for each direction and cut-off.
pub fn summary_lines(before: &PairEvaluation, after: &PairEvaluation) -> Vec<String> {
    let mut lines = Vec::new();
    for &k in &before.recall.ks {
        for (arrow, b, a) in [
            (
                "image→text",
                before.recall.image_to_text_at(k),
                after.recall.image_to_text_at(k),
            ),
            (
                "text→image",
                before.recall.text_to_image_at(k),
                after.recall.text_to_image_at(k),
            ),
        ] {
            if let (Some(b), Some(a)) = (b, a) {
                lines.push(format!(
                    "recall@{k} ({arrow}): {b:.2} before → {a:.2} after"
                ));
            }
        }
    }
    lines.push(format!(
        "loss: {:.4} before → {:.4} after",
        before.loss, after.loss
    ));
    lines
}

/// Both towers and `logit_scale` trained on InfoNCE over each batch of pairs.
struct PairTraining<'a> {
    clip: &'a Clip,
    tokenizer: &'a CaptionTokenizer,
    model_dir: &'a Path,
    train: &'a PairData,
    valid: Option<&'a PairData>,
    eval_batch: usize,
    device: &'a Device,
    meta: &'a ClipMeta,
}

impl TrainTask for PairTraining<'_> {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn min_batch(&self) -> usize {
        // The last batch of an epoch is dropped when it would hold a single pair (no negative to contrast with).
        2
    }

    fn accumulation_refusal(&self) -> Option<String> {
        Some(
            "gradient accumulation is not supported for image-text-contrastive recipes (InfoNCE's negatives \
             come from one batch: raise train.batch_size instead)"
                .into(),
        )
    }

    fn count(&self, batch: &[usize]) -> usize {
        batch.len()
    }

    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let index: Vec<u32> = batch.iter().map(|&i| i as u32).collect();
        let index = Tensor::new(index.as_slice(), self.device)?;
        let pixels = self.train.pixels.index_select(&index, 0)?;
        let rows: Vec<&[u32]> = batch
            .iter()
            .map(|&i| self.train.captions[i].as_slice())
            .collect();
        let (ids, mask) = self.tokenizer.batch(&rows, self.device)?;
        Ok(BatchLoss::InBatch {
            loss: info_nce(self.clip, &pixels, &ids, &mask)?,
            count: batch.len(),
        })
    }

    fn after_step(&self, stats: &StepStats) -> Result<Vec<(&'static str, serde_json::Value)>> {
        // CLIP's rule: the temperature may not make logits larger than 100 x cosine.
        self.clip.clamp_logit_scale()?;
        let scale = self
            .clip
            .logit_scale
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        Ok(vec![
            ("examples", stats.examples.into()),
            ("logit_scale", scale.into()),
        ])
    }

    fn set_training(&self, training: bool) {
        self.clip.set_training(training);
    }

    fn dropout(&self) -> &Mode {
        &self.clip.mode
    }

    fn parameters(&self) -> Vec<(String, Var)> {
        self.clip.params.all()
    }

    fn adaptable(&self) -> std::result::Result<crate::adapters::Adaptable, String> {
        Ok(crate::adapters::Adaptable {
            params: self.clip.params.clone(),
            mode: self.clip.mode.clone(),
            task_type: None,
            default_targets: crate::adapters::CLIP_TARGETS,
            heads: &[],
            base_model: self.model_dir.to_path_buf(),
            virtual_tokens: None,
            prompt_tuning_refusal: Some("CLIP has two towers; use LoRA or prefix tuning"),
        })
    }

    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>> {
        let config = &self.clip.config;
        let (text_layers, vision_layers) = (
            config.text.encoder.num_hidden_layers,
            config.vision.encoder.num_hidden_layers,
        );
        crate::freeze::select(self.parameters(), freeze, |name| {
            clip_role(name, text_layers, vision_layers)
        })
    }

    fn no_decay(&self, name: &str) -> bool {
        super::no_decay(name)
    }

    fn fgm_embeddings(&self) -> std::result::Result<Var, String> {
        self.clip
            .params
            .get(TOKEN_EMBEDDING)
            .ok_or_else(|| format!("the model has no `{TOKEN_EMBEDDING}` to perturb"))
    }

    fn validate(
        &self,
        observer: &mut dyn Observer,
        at: &EvalPoint,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(valid) = self.valid else {
            return Ok(None);
        };
        let e = evaluate_pairs(
            self.clip,
            valid,
            self.tokenizer,
            self.eval_batch,
            self.device,
        )?;
        let metrics = e.metrics();
        observer.message(&format!(
            "epoch {}: train loss {:.4}; valid loss {:.4}, recall@1 {:.3} (image→text {:.3}, text→image {:.3}), recall@5 {:.3}",
            at.epoch,
            at.train_loss,
            e.loss,
            metrics["recall_at_1"],
            e.recall.image_to_text[0],
            e.recall.text_to_image[0],
            metrics["recall_at_5"]
        ));
        Ok(Some(metrics_json(&metrics)))
    }

    fn save_checkpoint(&self, dir: &Path, info: &CheckpointInfo) -> Result<()> {
        let mut meta = self.meta.clone();
        meta.epoch = info.epoch;
        meta.step = info.step;
        meta.metrics = info.f64_metrics();
        save_checkpoint(self.clip, None, &meta, self.model_dir, dir)
    }
}

/// The text tower's token embedding matrix (what FGM perturbs).
const TOKEN_EMBEDDING: &str = "text_model.embeddings.token_embedding.weight";

/// What a CLIP parameter is part of, for `train.freeze`: the towers' embeddings (and the vision tower's
/// pre-encoder norm), their encoder layers (each tower its own stack), their final norms, and the projections with
/// `logit_scale` as the head.
pub fn clip_role(name: &str, text_layers: usize, vision_layers: usize) -> Role {
    let count = if name.starts_with("vision_model.") {
        vision_layers
    } else {
        text_layers
    };
    if name.contains("projection") || name == "logit_scale" {
        Role::Head
    } else if name.contains("embeddings.") || name.contains("pre_layrnorm") {
        Role::Embedding
    } else if let Some(index) = index_after(name, "encoder.layers.") {
        Role::Layer { index, count }
    } else if name.contains("final_layer_norm") || name.contains("post_layernorm") {
        Role::Final
    } else {
        Role::Other
    }
}

/// Trains `base` as `recipe` says (the caller checked the options).
pub fn run(
    recipe: &Recipe,
    base: &BaseModel,
    device: &Device,
    trainer: &Trainer<'_>,
    resume: Option<Found>,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    let (cfg, clip, tokenizer) = (&recipe.train, &base.clip, &base.tokenizer);
    let fields = fields(recipe);
    let load = |path: &Path, observer: &mut dyn Observer| -> Result<PairData> {
        let data = PairData::load(path, &fields, &base.processor, tokenizer, device)?;
        if data.truncated > 0 {
            observer.message(&format!(
                "warning: {}: {} captions cut to the model's {} text positions",
                path.display(),
                data.truncated,
                clip.config.text.max_position_embeddings
            ));
        }
        Ok(data)
    };
    let train_path = train_path(recipe)?;
    let train = load(train_path, observer)?;
    if train.len() < 2 {
        return Err(TrainError::file(
            train_path,
            "contrastive training needs at least 2 image-caption pairs",
        ));
    }
    let valid = match &recipe.data.valid {
        Some(p) => Some(load(p, observer)?),
        None => None,
    };
    let test = match &recipe.data.test {
        Some(p) => Some(load(p, observer)?),
        None => None,
    };
    // Before / after on the test pairs when given, else on the validation pairs.
    let (final_split, final_data) = match (&test, &valid) {
        (Some(t), _) => ("test", Some(t)),
        (None, Some(v)) => ("valid", Some(v)),
        _ => ("none", None),
    };
    observer.message(&format!(
        "data: {} training pairs, {} validation, {} test",
        train.len(),
        valid.as_ref().map_or(0, PairData::len),
        test.as_ref().map_or(0, PairData::len)
    ));

    let mut files = RunFolder::create(recipe, trainer.collective)?;
    let eval_batch = cfg.batch_size.max(1) * 2;
    clip.set_training(false);
    let before = match final_data {
        Some(d) => {
            let e = evaluate_pairs(clip, d, tokenizer, eval_batch, device)?;
            observer.message(&format!(
                "before training ({final_split}): loss {:.4}, recall@1 {:.3} (image→text {:.3}, text→image {:.3})",
                e.loss,
                e.metrics()["recall_at_1"],
                e.recall.image_to_text[0],
                e.recall.text_to_image[0]
            ));
            if resume.is_none() {
                let mut record = eval_record(&e.metrics(), final_split);
                record["before"] = true.into();
                files.log(record)?;
            }
            Some(e)
        }
        None => None,
    };

    let meta = ClipMeta {
        task: TASK.into(),
        method: "contrastive".into(),
        fields: fields.clone(),
        classes: None,
        context_tokens: None,
        template: None,
        epoch: 0,
        step: 0,
        metrics: Default::default(),
    };
    let mut task = PairTraining {
        clip,
        tokenizer,
        model_dir: &base.dir,
        train: &train,
        valid: valid.as_ref(),
        eval_batch,
        device,
        meta: &meta,
    };
    let outcome = trainer.fit(&mut task, &mut files, resume, observer)?;
    let best_dir = files.path("best");
    let after = match final_data {
        Some(d) => {
            let best = super::checkpoint::load_clip(&best_dir, cfg.seed, device)?;
            best.set_training(false);
            let e = evaluate_pairs(&best, d, tokenizer, eval_batch, device)?;
            let mut record = eval_record(&e.metrics(), final_split);
            record["final"] = true.into();
            files.log(record)?;
            Some(e)
        }
        None => None,
    };
    if let (Some(b), Some(a)) = (&before, &after) {
        observer.message(&format!("{final_split} split, best checkpoint:"));
        for line in summary_lines(b, a) {
            observer.message(&format!("  {line}"));
        }
    }
    let report = serde_json::json!({
        "train_examples": train.len(),
        "valid_examples": valid.as_ref().map(PairData::len),
        "test_examples": test.as_ref().map(PairData::len),
        "trainable_parameters": outcome.trainable_parameters,
        "total_parameters": outcome.total_parameters,
        "peft": recipe.peft.as_ref().map(|p| p.method.as_str()),
        "logit_scale": clip.logit_scale.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
        "evaluated_on": final_split,
        "before": before.as_ref().map(pair_metrics_json),
        "after": after.as_ref().map(pair_metrics_json),
    });
    finish_report(recipe, &outcome, report, &files)?;
    Ok(RunSummary {
        output: files.output.clone(),
        before: None,
        after: None,
        best_checkpoint: Some(best_dir),
    })
}
