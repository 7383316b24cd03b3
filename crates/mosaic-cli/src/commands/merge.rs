//! `mosaic merge --model M --adapter DIR --output OUT`: folds a LoRA adapter into its base model's weights and
//! writes a whole HF folder (config, safetensors, tokenizer files) that transformers loads without PEFT.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use mosaic_models::{Bert, BertTask, Gpt2, HfFolder};
use mosaic_peft::{AdapterConfig, Lora, TaskType};

#[derive(Args)]
pub struct MergeArgs {
    /// The base model: a local HF folder, hf:ORG/NAME or pip:PACKAGE (default: the adapter's
    /// `base_model_name_or_path`).
    #[arg(long)]
    model: Option<String>,
    /// The adapter folder (adapter_config.json + adapter_model.safetensors), PEFT's or mosaic's.
    #[arg(long)]
    adapter: PathBuf,
    /// Where to write the merged model folder.
    #[arg(long)]
    output: PathBuf,
}

pub fn run(args: MergeArgs) -> Result<()> {
    let config = AdapterConfig::read(&args.adapter)?;
    let spec = match (&args.model, &config.base_model) {
        (Some(m), _) => m.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => bail!(
            "{}: no base_model_name_or_path; give --model",
            args.adapter.join(mosaic_peft::ADAPTER_CONFIG).display()
        ),
    };
    let base = super::resolve_model(&spec)?;
    let model_type = model_type(&base)?;
    let device = Device::Cpu;
    let adapt = |params: &mosaic_models::ParamStore, mode| {
        Lora::load(params, mode, &args.adapter)
            .with_context(|| format!("--adapter {}", args.adapter.display()))?
            .merge_and_unload()
            .map_err(anyhow::Error::from)
    };
    let write = |staging: &Path| -> Result<()> {
        match model_type.as_str() {
            "gpt2" => {
                let model = Gpt2::from_folder(&base, 0, &device)?;
                adapt(&model.params, model.mode.clone())?;
                model.save(staging)?;
            }
            "bert" => {
                let bert = bert_for(&base, &config, &args.adapter, &device)?;
                adapt(&bert.params, bert.mode.clone())?;
                bert.save(staging)?;
            }
            other => bail!(
                "{}: model_type `{other}`: mosaic merge supports bert and gpt2 models",
                base.join("config.json").display()
            ),
        }
        mosaic_models::folder::copy_tokenizer_files(&base, staging)?;
        // A mosaic checkpoint's own tokenizer files (and mosaic.json) win over the base model's.
        mosaic_models::folder::copy_tokenizer_files(&args.adapter, staging)?;
        Ok(())
    };
    mosaic_train::atomic_folder::write_folder_atomically(&args.output, |staging| {
        write(staging).map_err(|e| mosaic_train::error::TrainError::Invalid(format!("{e:#}")))
    })?;
    println!(
        "merged {} into {} -> {}",
        args.adapter.display(),
        base.display(),
        args.output.display()
    );
    Ok(())
}

fn model_type(dir: &Path) -> Result<String> {
    let folder = HfFolder::open(dir)?;
    let text = std::fs::read_to_string(folder.config())
        .with_context(|| format!("{}", folder.config().display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: malformed JSON", folder.config().display()))?;
    Ok(v["model_type"].as_str().unwrap_or_default().to_string())
}

/// The BERT class the adapter was trained on (its `task_type`), with the labels of a mosaic checkpoint's
/// `mosaic.json` or, for a PEFT adapter, as many `LABEL_i` as its saved classifier has rows.
fn bert_for(base: &Path, config: &AdapterConfig, adapter: &Path, device: &Device) -> Result<Bert> {
    let task = match config.task_type {
        Some(TaskType::SeqCls) => Some(BertTask::SequenceClassification),
        Some(TaskType::TokenCls) => Some(BertTask::TokenClassification),
        Some(TaskType::FeatureExtraction) => Some(BertTask::Base),
        Some(TaskType::CausalLm) => bail!(
            "{}: a CAUSAL_LM adapter does not apply to a BERT model",
            adapter.display()
        ),
        None => None,
    };
    let labels = match task {
        Some(BertTask::SequenceClassification | BertTask::TokenClassification) => {
            Some(adapter_labels(adapter)?)
        }
        _ => None,
    };
    Ok(Bert::from_folder(base, task, labels, 0, device)?)
}

fn adapter_labels(adapter: &Path) -> Result<Vec<String>> {
    if let Ok(text) = std::fs::read_to_string(adapter.join("mosaic.json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(labels) = v["labels"].as_array()
        && !labels.is_empty()
    {
        return Ok(labels
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_string())
            .collect());
    }
    let weights = adapter.join(mosaic_peft::ADAPTER_WEIGHTS);
    let file = mosaic_models::params::Checkpoint::read(&weights, &Device::Cpu)?;
    let rows = file
        .names()
        .find(|n| n.ends_with("classifier.weight"))
        .and_then(|n| file.shape(n).map(|s| s[0]))
        .with_context(|| {
            format!(
                "{}: no saved classifier to take the number of labels from",
                weights.display()
            )
        })?;
    Ok((0..rows).map(|i| format!("LABEL_{i}")).collect())
}
