//! LLaVA from the command line: `mosaic caption` and `mosaic vqa` (the model's chat template around the image
//! and the question), and what `mosaic generate --image` runs.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use candle_core::Device;
use clap::Args;
use mosaic_models::Llava;
use mosaic_models::generation::GenerationConfig;
use mosaic_train::visual_instruction::{IMAGE_TOKEN, LlavaProcessor};

use crate::output::write_output;

/// Whether `dir` holds a LLaVA (its own config, or an adapter's base model's).
pub fn is_llava(dir: &Path) -> bool {
    let base = mosaic_peft::adapter_base_model(dir).unwrap_or_else(|_| dir.to_path_buf());
    mosaic_train::visual_instruction::is_llava_folder(dir)
        || mosaic_train::visual_instruction::is_llava_folder(&base)
}

/// A LLaVA from `--model` (with `--adapter` on top) and its processor.
fn load(dir: &Path, adapter: Option<&Path>) -> Result<(Llava, LlavaProcessor)> {
    let device = Device::Cpu;
    let (model, files_dir) = super::load_adapted(
        dir,
        adapter,
        |d| Llava::from_folder(d, 0, &device),
        |m: &Llava| mosaic_peft::AdapterTarget::new(&m.params, m.mode.clone()),
    )?;
    let processor = LlavaProcessor::from_folder(&files_dir, &model)?;
    Ok((model, processor))
}

/// The new tokens a LLaVA generates after the rendered `prompt` (with its `<image>` expanded) about `image`.
pub fn generate_about(
    dir: &Path,
    adapter: Option<&Path>,
    image: Option<&Path>,
    prompt: &str,
    config: GenerationConfig,
) -> Result<(String, Vec<u32>)> {
    let (model, processor) = load(dir, adapter)?;
    generate_with(&model, &processor, image, prompt, config)
}

fn generate_with(
    model: &Llava,
    processor: &LlavaProcessor,
    image: Option<&Path>,
    prompt: &str,
    mut config: GenerationConfig,
) -> Result<(String, Vec<u32>)> {
    let prompt = match image {
        Some(_) if !prompt.contains(IMAGE_TOKEN) => format!("{IMAGE_TOKEN}\n{prompt}"),
        _ => prompt.to_string(),
    };
    let ids = processor.tokenize(&prompt)?.get_ids().to_vec();
    let images = processor.count_images(&ids);
    let (pixels, per_row) = match image {
        Some(path) if images == 1 => (
            Some(processor.pixel_values(&[path.to_path_buf()], &model.device())?),
            1,
        ),
        Some(_) => bail!("--prompt has {images} `{IMAGE_TOKEN}` markers for one --image"),
        None if images > 0 => bail!("--prompt has `{IMAGE_TOKEN}` but no --image is given"),
        None => (None, 0),
    };
    let ids = processor.expand(&ids);
    config.eos_token_ids = processor.stop_ids.clone();
    config.pad_token_id = Some(processor.encoder.pad_id());
    let tokenizer = processor.encoder.tokenizer();
    let decode = |ids: &[u32]| tokenizer.decode(ids, true).unwrap_or_default();
    let out = model.generate(&[ids], pixels.as_ref(), &[per_row], &config, Some(&decode))?;
    let Some(generation) = out.into_iter().next() else {
        bail!("generation returned no result");
    };
    let text = tokenizer
        .decode(&generation.token_ids, true)
        .map_err(|e| anyhow::anyhow!("cannot decode the generated tokens: {e}"))?;
    Ok((text, generation.token_ids))
}

#[derive(Args)]
pub struct CaptionArgs {
    /// A LLaVA folder or checkpoint (local, hf:ORG/NAME).
    #[arg(long)]
    model: String,
    /// A LoRA adapter folder to apply to the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The image to describe.
    #[arg(long)]
    image: PathBuf,
    /// What the user turn asks.
    #[arg(long, default_value = "Describe the image briefly.")]
    prompt: String,
    /// New tokens at most.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Print {"caption": ..., "generated_token_ids": [...]}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct VqaArgs {
    /// A LLaVA folder or checkpoint (local, hf:ORG/NAME).
    #[arg(long)]
    model: String,
    /// A LoRA adapter folder to apply to the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The image the question is about.
    #[arg(long)]
    image: PathBuf,
    /// The question.
    #[arg(long)]
    question: String,
    /// New tokens at most.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Print {"question": ..., "answer": ..., "generated_token_ids": [...]}.
    #[arg(long)]
    json: bool,
}

/// The answer to `question` about `image`, asked through the model's chat template.
fn ask(
    model: &str,
    adapter: Option<&Path>,
    image: &Path,
    question: &str,
    max_new_tokens: usize,
) -> Result<(String, Vec<u32>)> {
    if max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    let dir = super::resolve_model(model)?;
    if !is_llava(&dir) {
        bail!(
            "{}: not a LLaVA (config.json's model_type is not \"llava\")",
            dir.display()
        );
    }
    let (llava, processor) = load(&dir, adapter)?;
    let prompt = processor.question_prompt(question)?;
    let (text, ids) = generate_with(
        &llava,
        &processor,
        Some(image),
        &prompt,
        GenerationConfig::greedy(max_new_tokens),
    )?;
    Ok((text.trim().to_string(), ids))
}

pub fn caption(args: CaptionArgs) -> Result<()> {
    let (text, ids) = ask(
        &args.model,
        args.adapter.as_deref(),
        &args.image,
        &args.prompt,
        args.max_new_tokens,
    )?;
    let out = if args.json {
        format!(
            "{}\n",
            serde_json::json!({ "caption": text, "generated_token_ids": ids })
        )
    } else {
        format!("{text}\n")
    };
    write_output(None, &out)
}

pub fn vqa(args: VqaArgs) -> Result<()> {
    let (text, ids) = ask(
        &args.model,
        args.adapter.as_deref(),
        &args.image,
        &args.question,
        args.max_new_tokens,
    )?;
    let out = if args.json {
        format!(
            "{}\n",
            serde_json::json!({ "question": args.question, "answer": text, "generated_token_ids": ids })
        )
    } else {
        format!("{text}\n")
    };
    write_output(None, &out)
}
