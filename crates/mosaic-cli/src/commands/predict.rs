//! `mosaic predict --checkpoint DIR --input FILE --output FILE`: adds `label` and `scores` (label → probability) to
//! each JSONL row (token classification: `tags`, one per word; image classification: rows name an image file,
//! relative to the input file, in the checkpoint's image field).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use mosaic_data::{EncodedDataset, EncodedExample, IGNORE_INDEX, Target};
use mosaic_train::recipe::Task;
use mosaic_train::task_model::TensorBatch;
use mosaic_train::{checkpoint, image_classification, multimodal};

use crate::output::write_output;

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// A PEFT adapter folder to apply to the checkpoint's model (text checkpoints; a run trained with [peft]
    /// holds its adapter already).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// JSONL rows with the checkpoint's text field (or tokens field for token classification).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the rows with predictions (written atomically).
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

fn read_rows(
    path: &PathBuf,
    field: &str,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: not valid JSON: {e}", path.display(), i + 1))?;
        let serde_json::Value::Object(row) = value else {
            bail!("{}:{}: expected a JSON object", path.display(), i + 1);
        };
        if !row.contains_key(field) {
            bail!("{}:{}: missing field `{field}`", path.display(), i + 1);
        }
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(rows)
}

pub fn run(args: PredictArgs) -> Result<()> {
    let device = Device::Cpu;
    if image_classification::is_image_checkpoint(&args.checkpoint) {
        if args.adapter.is_some() {
            anyhow::bail!(
                "--adapter applies to text checkpoints; an image run trained with [peft] holds its adapter in best/"
            );
        }
        let rows = image_classification::predict(
            &args.checkpoint,
            &args.input,
            args.batch_size.max(1),
            &device,
        )?;
        let mut out = String::new();
        for row in &rows {
            out.push_str(&serde_json::Value::Object(row.clone()).to_string());
            out.push('\n');
        }
        write_output(Some(&args.output), &out)?;
        eprintln!("wrote {} rows to {}", rows.len(), args.output.display());
        return Ok(());
    }
    if multimodal::is_multimodal_checkpoint(&args.checkpoint) {
        return predict_pairs(&args);
    }
    let loaded = checkpoint::load(&args.checkpoint, &device)?;
    if let Some(adapter) = &args.adapter {
        let bert = &loaded.model.bert;
        let target = mosaic_peft::AdapterTarget::new(&bert.params, bert.mode.clone());
        mosaic_train::adapters::apply_extra(&args.checkpoint, adapter, &target)?;
    }
    let meta = &loaded.meta;
    let field = match meta.task {
        Task::CausalLm
        | Task::ImageClassification
        | Task::ImageTextContrastive
        | Task::VisualInstruction
        | Task::MultimodalClassification
        | Task::TextToImage
        | Task::Detection => {
            anyhow::bail!(
                "{}: a {:?} checkpoint has no text labels to predict",
                args.checkpoint.display(),
                meta.task
            )
        }
        Task::Classification => meta.text_field.clone(),
        Task::TokenClassification => meta.tokens_field.clone(),
    };
    let mut rows = read_rows(&args.input, &field)?;
    let encoded = match meta.task {
        Task::CausalLm
        | Task::ImageClassification
        | Task::ImageTextContrastive
        | Task::VisualInstruction
        | Task::MultimodalClassification
        | Task::TextToImage
        | Task::Detection => {
            anyhow::bail!(
                "{}: a {:?} checkpoint has no text labels to predict",
                args.checkpoint.display(),
                meta.task
            )
        }
        Task::Classification => {
            let mut texts = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                match row[&field].as_str() {
                    Some(t) => texts.push(t.to_string()),
                    None => bail!(
                        "{}: row {}: field `{field}` is not a string",
                        args.input.display(),
                        i + 1
                    ),
                }
            }
            let rendered = loaded.render(&texts)?;
            let (encodings, _) = loaded.encoder.encode_texts(&rendered, meta.max_length)?;
            encodings
                .iter()
                .map(|e| EncodedExample {
                    input_ids: e.get_ids().to_vec(),
                    token_type_ids: e.get_type_ids().to_vec(),
                    target: Target::Class(0),
                })
                .collect::<Vec<_>>()
        }
        Task::TokenClassification => {
            let mut words = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                let list: Option<Vec<String>> = row[&field]
                    .as_array()
                    .and_then(|a| a.iter().map(|w| w.as_str().map(String::from)).collect());
                match list {
                    Some(w) => words.push(w),
                    None => bail!(
                        "{}: row {}: field `{field}` is not a list of strings",
                        args.input.display(),
                        i + 1
                    ),
                }
            }
            let (encodings, _) = loaded.encoder.encode_words(&words, meta.max_length)?;
            encodings
                .iter()
                .zip(&words)
                .map(|(e, w)| EncodedExample {
                    input_ids: e.get_ids().to_vec(),
                    token_type_ids: e.get_type_ids().to_vec(),
                    target: Target::Tokens(mosaic_data::align_labels(
                        e.get_word_ids(),
                        &vec![0; w.len()],
                    )),
                })
                .collect()
        }
    };
    let data = EncodedDataset {
        examples: encoded,
        truncated: 0,
        max_len: meta.max_length,
    };
    let collator = loaded.encoder.collator();
    loaded.model.bert.set_training(false);
    let mut out = String::new();
    let mut row_index = 0;
    for chunk in data.examples.chunks(args.batch_size.max(1)) {
        let batch = collator.collate(chunk)?;
        let predictions = loaded.model.predict(&TensorBatch::new(&batch, &device)?)?;
        for b in 0..batch.batch_size {
            let row = &mut rows[row_index];
            row_index += 1;
            match meta.task {
                Task::CausalLm
                | Task::ImageClassification
                | Task::ImageTextContrastive
                | Task::VisualInstruction
                | Task::MultimodalClassification
                | Task::TextToImage
                | Task::Detection => {
                    anyhow::bail!(
                        "{}: a {:?} checkpoint has no text labels to predict",
                        args.checkpoint.display(),
                        meta.task
                    )
                }
                Task::Classification => {
                    let (best, probs) = &predictions[b];
                    let scores: serde_json::Map<String, serde_json::Value> = meta
                        .labels
                        .iter()
                        .zip(probs)
                        .map(|(l, p)| (l.clone(), serde_json::json!(p)))
                        .collect();
                    row.insert("label".into(), serde_json::json!(meta.labels[*best]));
                    row.insert("scores".into(), serde_json::Value::Object(scores));
                }
                Task::TokenClassification => {
                    let words = row[&field].as_array().map(Vec::len).unwrap_or(0);
                    let mut tags: Vec<String> = (0..batch.seq_len)
                        .filter(|&t| batch.labels[b * batch.seq_len + t] != IGNORE_INDEX)
                        .map(|t| meta.labels[predictions[b * batch.seq_len + t].0].clone())
                        .collect();
                    // Words cut off by truncation get "O".
                    tags.resize(words, "O".into());
                    row.insert("tags".into(), serde_json::json!(tags));
                }
            }
            out.push_str(&serde_json::Value::Object(row.clone()).to_string());
            out.push('\n');
        }
    }
    write_output(Some(&args.output), &out)?;
    eprintln!("wrote {} rows to {}", rows.len(), args.output.display());
    Ok(())
}

/// A multimodal-classification checkpoint: each row names an image (relative to the input file) and a text in
/// the checkpoint's fields; it gets `label` and `scores`.
fn predict_pairs(args: &PredictArgs) -> Result<()> {
    if args.adapter.is_some() {
        bail!("--adapter applies to text checkpoints, not to a multimodal classifier");
    }
    let loaded = multimodal::load(&args.checkpoint, &Device::Cpu)?;
    let mut rows = read_rows(&args.input, &loaded.meta.fields.image)?;
    let predictions = loaded.predict(&args.input, args.batch_size.max(1))?;
    let mut out = String::new();
    for (row, (label, probs)) in rows.iter_mut().zip(&predictions) {
        let scores: serde_json::Map<String, serde_json::Value> = loaded
            .meta
            .labels
            .iter()
            .zip(probs)
            .map(|(l, p)| (l.clone(), (*p as f64).into()))
            .collect();
        row.insert("label".into(), label.clone().into());
        row.insert("scores".into(), scores.into());
        out.push_str(&serde_json::Value::Object(row.clone()).to_string());
        out.push('\n');
    }
    write_output(Some(&args.output), &out)?;
    eprintln!("wrote {} rows to {}", rows.len(), args.output.display());
    Ok(())
}
