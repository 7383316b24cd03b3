//! `mosaic embed`: sentence embeddings (mean or CLS pooling, optionally L2-normalised) as JSONL.

use std::path::PathBuf;

use anyhow::{Result, bail};
use candle_core::Device;
use clap::{Args, ValueEnum};
use mosaic_models::{Bert, BertTask, HfFolder, l2_normalize, mean_pool};

use crate::encode::{TextEncoder, read_texts};
use crate::output::write_output;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Pooling {
    Mean,
    Cls,
}

#[derive(Args)]
pub struct EmbedArgs {
    /// A local HF folder, hf:ORG/NAME or pip:PACKAGE.
    #[arg(long)]
    model: String,
    /// A LoRA adapter folder (PEFT's or mosaic's) to apply to the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// One text to embed.
    #[arg(long, conflicts_with = "input", required_unless_present = "input")]
    text: Option<String>,
    /// A file of texts: one a line, or JSONL rows with a "text" field.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Where to write the JSONL rows (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "mean")]
    pooling: Pooling,
    /// L2-normalise each embedding.
    #[arg(long)]
    normalize: bool,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Fail on a text longer than the model's context instead of truncating it with a warning.
    #[arg(long)]
    no_truncate: bool,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let texts = match (&args.text, &args.input) {
        (Some(t), _) => vec![t.clone()],
        (None, Some(path)) => read_texts(path)?,
        (None, None) => bail!("give --text or --input"),
    };
    let dir = super::resolve_model(&args.model)?;
    let device = Device::Cpu;
    let (bert, tokenizer_dir) = super::load_adapted(
        &dir,
        args.adapter.as_deref(),
        |d| Bert::from_folder(d, Some(BertTask::Base), None, 0, &device),
        |b| mosaic_peft::AdapterTarget::new(&b.params, b.mode.clone()),
    )?;
    let folder = HfFolder::open(&tokenizer_dir)?;
    let max_len = folder
        .sentence_max_length()
        .unwrap_or(usize::MAX)
        .min(bert.config.max_position_embeddings);
    let encoder = TextEncoder::load(
        &tokenizer_dir,
        max_len,
        bert.config.pad_token_id,
        !args.no_truncate,
    )?;
    let mut out = String::new();
    for chunk in texts.chunks(args.batch_size) {
        let batch = encoder.encode(chunk, &device)?;
        let hidden = bert.hidden_states(
            &batch.input_ids,
            Some(&batch.token_type_ids),
            Some(&batch.attention_mask),
        )?;
        let pooled = match args.pooling {
            Pooling::Mean => mean_pool(&hidden, &batch.attention_mask)?,
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        };
        let pooled = if args.normalize {
            l2_normalize(&pooled)?
        } else {
            pooled
        };
        for (text, embedding) in chunk.iter().zip(pooled.to_vec2::<f32>()?) {
            let row = serde_json::json!({ "text": text, "embedding": embedding });
            out.push_str(&row.to_string());
            out.push('\n');
        }
    }
    write_output(args.output.as_deref(), &out)
}
