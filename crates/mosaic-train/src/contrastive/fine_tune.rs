//! `method = "contrastive"`: CLIP fine-tuning of both towers and `logit_scale` on symmetric InfoNCE.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use mosaic_models::Clip;

use super::checkpoint::{ClipMeta, TASK, save_checkpoint};
use super::data::{CaptionTokenizer, PairData};
use super::epoch_loop::{EpochLoop, EpochMethod};
use super::info_nce::{PairEvaluation, evaluate_pairs, info_nce};
use super::{BaseModel, fields, train_path};
use crate::error::{Result, TrainError};
use crate::observer::Observer;
use crate::pipeline::RunSummary;
use crate::recipe::Recipe;
use crate::run_folder::{RunFolder, eval_record};

fn metrics_json(e: &PairEvaluation) -> serde_json::Value {
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
}

impl EpochMethod for PairTraining<'_> {
    fn set_training(&self, training: bool) {
        self.clip.set_training(training);
    }

    fn batch_loss(&self, batch: &[usize]) -> Result<Tensor> {
        let index: Vec<u32> = batch.iter().map(|&i| i as u32).collect();
        let index = Tensor::new(index.as_slice(), self.device)?;
        let pixels = self.train.pixels.index_select(&index, 0)?;
        let rows: Vec<&[u32]> = batch
            .iter()
            .map(|&i| self.train.captions[i].as_slice())
            .collect();
        let (ids, mask) = self.tokenizer.batch(&rows, self.device)?;
        info_nce(self.clip, &pixels, &ids, &mask)
    }

    fn after_step(&self) -> Result<Vec<(&'static str, serde_json::Value)>> {
        // CLIP's rule: the temperature may not make logits larger than 100 x cosine.
        self.clip.clamp_logit_scale()?;
        let scale = self
            .clip
            .logit_scale
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        Ok(vec![("logit_scale", scale.into())])
    }

    fn validate(&self) -> Result<Option<(BTreeMap<String, f64>, String)>> {
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
        let described = format!(
            "loss {:.4}, recall@1 {:.3} (image→text {:.3}, text→image {:.3}), recall@5 {:.3}",
            e.loss,
            metrics["recall_at_1"],
            e.recall.image_to_text[0],
            e.recall.text_to_image[0],
            metrics["recall_at_5"]
        );
        Ok(Some((metrics, described)))
    }

    fn save(&self, meta: &ClipMeta, dir: &Path) -> Result<()> {
        save_checkpoint(self.clip, None, meta, self.model_dir, dir)
    }
}

/// Trains `base` as `recipe` says (the caller checked the options).
pub fn run(
    recipe: &Recipe,
    base: &BaseModel,
    device: &Device,
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

    let mut files = RunFolder::create(recipe)?;
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
            let mut record = eval_record(&e.metrics(), final_split);
            record["before"] = true.into();
            files.log(record)?;
            Some(e)
        }
        None => None,
    };

    let params = clip.params.all();
    let trainable: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    observer.message(&format!(
        "trainable parameters: {trainable} (both towers, projections, logit_scale)"
    ));
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
    // The last batch of an epoch is dropped when it would hold a single pair (no negative to contrast with).
    let mut training = EpochLoop::new(cfg, train.len(), 2, params, meta)?;
    clip.mode.set_seed(cfg.seed);
    let method = PairTraining {
        clip,
        tokenizer,
        model_dir: &base.dir,
        train: &train,
        valid: valid.as_ref(),
        eval_batch,
        device,
    };
    training.run(&method, &mut files, observer)?;
    let best_dir = files.path("best");
    let after = match final_data {
        Some(d) => {
            let best = Clip::from_folder(&best_dir, cfg.seed, device)?;
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
        "trainable_parameters": trainable,
        "logit_scale": clip.logit_scale.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
        "evaluated_on": final_split,
        "before": before.as_ref().map(metrics_json),
        "after": after.as_ref().map(metrics_json),
    });
    training.finish(recipe, report, &files)?;
    Ok(RunSummary {
        output: files.output.clone(),
        before: None,
        after: None,
        best_checkpoint: Some(best_dir),
    })
}
