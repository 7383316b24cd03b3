//! `mosaic fill-mask`: the top-k tokens for the mask through a masked-LM head.

use anyhow::{Result, bail};
use candle_core::{Device, IndexOp};
use clap::Args;
use mosaic_models::{Bert, BertTask};

use crate::encode::TextEncoder;
use crate::output::write_output;

#[derive(Args)]
pub struct FillMaskArgs {
    /// A local HF folder, hf:ORG/NAME or pip:PACKAGE (it needs a masked-LM head).
    #[arg(long)]
    model: String,
    /// A LoRA adapter folder (PEFT's or mosaic's) to apply to the model.
    #[arg(long)]
    adapter: Option<std::path::PathBuf>,
    /// Text with the tokenizer's mask token, e.g. "Paris is the [MASK] of France."
    #[arg(long)]
    text: String,
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: FillMaskArgs) -> Result<()> {
    if args.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let dir = super::resolve_model(&args.model)?;
    let device = Device::Cpu;
    let (bert, tokenizer_dir) = super::load_adapted(
        &dir,
        args.adapter.as_deref(),
        |d| Bert::from_folder(d, Some(BertTask::MaskedLm), None, 0, &device),
        |b| mosaic_peft::AdapterTarget::new(&b.params, b.mode.clone()),
    )?;
    let encoder = TextEncoder::load(
        &tokenizer_dir,
        bert.config.max_position_embeddings,
        bert.config.pad_token_id,
        true,
    )?;
    let tokenizer = encoder.tokenizer();
    let mask_token = "[MASK]";
    let Some(mask_id) = tokenizer.token_to_id(mask_token) else {
        bail!("the tokenizer has no {mask_token} token");
    };
    let batch = encoder.encode(std::slice::from_ref(&args.text), &device)?;
    let positions: Vec<usize> = batch.ids[0]
        .iter()
        .enumerate()
        .filter(|(_, id)| **id == mask_id)
        .map(|(i, _)| i)
        .collect();
    if positions.is_empty() {
        bail!("--text has no {mask_token} token (or it was truncated away)");
    }
    let hidden = bert.hidden_states(
        &batch.input_ids,
        Some(&batch.token_type_ids),
        Some(&batch.attention_mask),
    )?;
    let logits = bert.mlm_logits(&hidden)?;
    let mut per_mask = Vec::new();
    for &pos in &positions {
        let probs = mosaic_kernels::softmax_last_dim(&logits.i((0, pos))?.unsqueeze(0)?)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let preds: Vec<serde_json::Value> = order
            .into_iter()
            .take(args.top_k)
            .map(|id| {
                let token = tokenizer
                    .decode(&[id as u32], false)
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                serde_json::json!({ "token": token, "token_id": id, "score": probs[id] })
            })
            .collect();
        per_mask.push(preds);
    }
    let text = if args.json {
        let mut value = serde_json::json!({ "predictions": per_mask[0] });
        if per_mask.len() > 1 {
            value["per_mask"] = serde_json::json!(per_mask);
        }
        format!("{value}\n")
    } else {
        let mut s = String::new();
        for (i, preds) in per_mask.iter().enumerate() {
            if per_mask.len() > 1 {
                s.push_str(&format!("mask {}:\n", i + 1));
            }
            for p in preds {
                s.push_str(&format!(
                    "{:>8.4}  {} ({})\n",
                    p["score"].as_f64().unwrap_or(0.0),
                    p["token"].as_str().unwrap_or(""),
                    p["token_id"]
                ));
            }
        }
        s
    };
    write_output(None, &text)
}
