//! `mosaic eval --checkpoint DIR --data FILE [--json]`: the classification (or entity) report of a checkpoint, or
//! the loss and perplexity of a causal-LM checkpoint.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use mosaic_train::{causal_lm, checkpoint, evaluate::evaluate};

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint folder written by `mosaic train` (e.g. runs/sentiment/best).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Labelled data (JSONL or CSV) with the fields the checkpoint was trained on.
    #[arg(long)]
    data: PathBuf,
    /// Print JSON ({"metrics": ..., "report": ...}) instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let device = Device::Cpu;
    if causal_lm::is_causal_lm_checkpoint(&args.checkpoint) {
        // A causal LM has no labels to report on: its measure is the mean token loss and the perplexity.
        let e = causal_lm::evaluate_checkpoint(
            &args.checkpoint,
            &args.data,
            args.batch_size.max(1),
            &device,
        )?;
        if args.json {
            let value = serde_json::json!({ "metrics": { "loss": e.loss, "perplexity": e.perplexity }, "tokens": e.tokens });
            println!("{value}");
        } else {
            println!("loss {:.4}", e.loss);
            println!("perplexity {:.4}", e.perplexity);
            println!("tokens {}", e.tokens);
        }
        return Ok(());
    }
    let loaded = checkpoint::load(&args.checkpoint, &device)?;
    let data = loaded.load_data(&args.data)?;
    let collator = loaded.encoder.collator();
    let evaluation = evaluate(
        &loaded.model,
        &data,
        &collator,
        args.batch_size.max(1),
        &device,
    )?;
    if args.json {
        let value = serde_json::json!({ "metrics": evaluation.metrics, "report": evaluation.report.to_json() });
        println!("{value}");
    } else {
        println!("{}", evaluation.report.to_text());
        println!("loss {:.4}", evaluation.loss);
    }
    Ok(())
}
