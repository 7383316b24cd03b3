//! `mosaic zero-shot`: classify an image among free-form labels with a CLIP model, averaging the text embeddings
//! of several prompt templates per label (a prompt ensemble).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use clap::Args;
use mosaic_data::image::{ImageProcessor, ImageProcessorConfig, decode_file};
use mosaic_models::Clip;
use mosaic_models::clip::zero_shot::{
    DEFAULT_TEMPLATE, class_prompts, ensemble_class_embeddings, zero_shot_probs,
};

use crate::encode::TextEncoder;

#[derive(Args)]
pub struct ZeroShotArgs {
    /// A CLIP model: a local HF folder, hf:ORG/NAME or pip:PACKAGE.
    #[arg(long)]
    model: String,
    /// The image to classify (PNG or JPEG).
    #[arg(long)]
    image: PathBuf,
    /// Candidate labels, comma-separated.
    #[arg(long)]
    labels: String,
    /// A prompt template with `{}` for the label; repeat it for a prompt ensemble.
    #[arg(long = "template", default_value = DEFAULT_TEMPLATE)]
    templates: Vec<String>,
    /// Print {"labels": [...], "probs": [...]} (labels in the order given) instead of a ranked table.
    #[arg(long)]
    json: bool,
}

fn parse_labels(labels: &str) -> Result<Vec<String>> {
    let labels: Vec<String> = labels.split(',').map(|l| l.trim().to_string()).collect();
    if labels.iter().any(String::is_empty) {
        bail!(
            "--labels: empty label in `{}` (give comma-separated names)",
            labels.join(",")
        );
    }
    for (i, l) in labels.iter().enumerate() {
        if labels[..i].contains(l) {
            bail!("--labels: label `{l}` is given twice");
        }
    }
    if labels.len() < 2 {
        bail!("--labels: give at least two labels to choose from");
    }
    Ok(labels)
}

pub fn run(args: ZeroShotArgs) -> Result<()> {
    let labels = parse_labels(&args.labels)?;
    let prompts = class_prompts(&labels, &args.templates).context("--template")?;
    let dir = super::resolve_model(&args.model)?;
    let device = Device::Cpu;
    let clip = Clip::from_folder(&dir, 0, &device)?;

    let preprocessor = dir.join("preprocessor_config.json");
    let processor = if preprocessor.is_file() {
        ImageProcessor::new(ImageProcessorConfig::read(&preprocessor)?)
    } else {
        tracing::warn!(
            "{}: missing; using CLIP's default preprocessing",
            preprocessor.display()
        );
        ImageProcessor::new(ImageProcessorConfig::clip(clip.config.vision.image_size))
    };
    let pixels = processor.preprocess(&decode_file(&args.image)?)?;
    let pixel_values = Tensor::from_vec(
        pixels.data,
        (1, pixels.channels, pixels.height, pixels.width),
        &device,
    )?;

    let text = &clip.config.text;
    let encoder = TextEncoder::load(&dir, text.max_position_embeddings, text.pad_token_id, true)?;
    let flat: Vec<String> = prompts.into_iter().flatten().collect();
    let batch = encoder.encode(&flat, &device)?;
    let text_features = clip.text_features(&batch.input_ids, Some(&batch.attention_mask))?;
    let classes = ensemble_class_embeddings(&text_features, args.templates.len())?;
    let image_features = clip.image_features(&pixel_values)?;
    let probs: Vec<f32> = zero_shot_probs(&clip, &image_features, &classes)?
        .squeeze(0)?
        .to_vec1()?;

    if args.json {
        println!(
            "{}",
            serde_json::json!({ "labels": labels, "probs": probs })
        );
    } else {
        let mut ranked: Vec<(&String, f32)> = labels.iter().zip(probs).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        for (label, p) in ranked {
            println!("{label:<width$}  {:6.2}%", p * 100.0);
        }
    }
    Ok(())
}
