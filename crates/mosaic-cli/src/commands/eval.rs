//! `mosaic eval --checkpoint DIR --data FILE [--json]`: the classification (or entity) report of a checkpoint, or
//! the loss and perplexity of a causal-LM checkpoint. For an image-classification checkpoint `--data` is an image
//! folder (`<label>/*.png`) or a JSONL/CSV file naming images.
//! For a CLIP (`image-text-contrastive`) checkpoint: loss and recall@1/5 of image-caption pairs, or for CoOp the
//! classification report of labelled images. For a LLaVA: the loss of the replies and the greedy answers' VQA
//! accuracy (rows with a `question_type`) and caption BLEU-4 / CIDEr-D (the other rows).

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use mosaic_train::evaluate::{Evaluation, evaluate};
use mosaic_train::{causal_lm, checkpoint, contrastive, image_classification, visual_instruction};

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint folder written by `mosaic train` (e.g. runs/sentiment/best).
    #[arg(long)]
    checkpoint: PathBuf,
    /// A PEFT adapter folder to apply to the checkpoint's model (text and causal-LM checkpoints; a run trained
    /// with [peft] holds its adapter already).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Labelled data (JSONL or CSV) with the fields the checkpoint was trained on; for an image classifier also
    /// an image folder (`<label>/*.png`).
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
    if visual_instruction::is_llava_folder(&args.checkpoint) {
        return eval_llava(&args, &device);
    }
    if causal_lm::is_causal_lm_checkpoint(&args.checkpoint) {
        // A causal LM has no labels to report on: its measure is the mean token loss and the perplexity.
        let e = causal_lm::evaluate_checkpoint(
            &args.checkpoint,
            args.adapter.as_deref(),
            &args.data,
            args.batch_size.max(1),
            &device,
        )?;
        // An instruction-tuned checkpoint also answers each instruction (greedy) for exact match.
        let answers = causal_lm::exact_match_checkpoint(
            &args.checkpoint,
            args.adapter.as_deref(),
            &args.data,
            &device,
        )?;
        if args.json {
            let mut value = serde_json::json!({ "metrics": { "loss": e.loss, "perplexity": e.perplexity }, "tokens": e.tokens });
            if let Some(a) = &answers {
                value["metrics"]["exact_match"] = a.score.exact_match.into();
                value["exact_match"] = serde_json::to_value(&a.score)?;
            }
            println!("{value}");
        } else {
            println!("loss {:.4}", e.loss);
            println!("perplexity {:.4}", e.perplexity);
            println!("tokens {}", e.tokens);
            if let Some(a) = &answers {
                println!(
                    "exact_match {:.4} ({} examples)",
                    a.score.exact_match, a.score.count
                );
                for (group, s) in &a.score.by_group {
                    println!("  {group} {:.4} ({} examples)", s.exact_match, s.count);
                }
            }
        }
        return Ok(());
    }
    let image_or_clip = image_classification::is_image_checkpoint(&args.checkpoint)
        || contrastive::is_contrastive_checkpoint(&args.checkpoint);
    if image_or_clip && args.adapter.is_some() {
        anyhow::bail!(
            "--adapter applies to text and causal-LM checkpoints; an image or CLIP run trained with [peft] holds its adapter in best/"
        );
    }
    if image_classification::is_image_checkpoint(&args.checkpoint) {
        // Images: `--data` is an image folder (`<label>/*.png`) or a JSONL/CSV file naming images.
        let evaluation = image_classification::evaluate_checkpoint(
            &args.checkpoint,
            &args.data,
            args.batch_size.max(1),
            &device,
        )?;
        print_evaluation(&evaluation, args.json);
        return Ok(());
    }
    if contrastive::is_contrastive_checkpoint(&args.checkpoint) {
        // CLIP: loss and retrieval recall of image-caption pairs, or (CoOp) the report of labelled images.
        let e = contrastive::evaluate_checkpoint(
            &args.checkpoint,
            &args.data,
            args.batch_size.max(1),
            &device,
        )?;
        if args.json {
            let report = e.report.as_ref().map(|r| r.to_json());
            let value = serde_json::json!({ "method": e.method, "metrics": e.metrics, "report": report, "examples": e.examples });
            println!("{value}");
        } else {
            if let Some(report) = &e.report {
                println!("{}", report.to_text(4));
            }
            for (name, value) in &e.metrics {
                println!("{name} {value:.4}");
            }
        }
        return Ok(());
    }
    let loaded = checkpoint::load(&args.checkpoint, &device)?;
    if let Some(adapter) = &args.adapter {
        let bert = &loaded.model.bert;
        let target = mosaic_peft::AdapterTarget::new(&bert.params, bert.mode.clone());
        mosaic_train::adapters::apply_extra(&args.checkpoint, adapter, &target)?;
    }
    let data = loaded.load_data(&args.data)?;
    let collator = loaded.encoder.collator();
    let evaluation = evaluate(
        &loaded.model,
        &data,
        &collator,
        args.batch_size.max(1),
        &device,
    )?;
    print_evaluation(&evaluation, args.json);
    Ok(())
}

fn print_evaluation(evaluation: &Evaluation, json: bool) {
    if json {
        let value = serde_json::json!({ "metrics": evaluation.metrics, "report": evaluation.report.to_json() });
        println!("{value}");
    } else {
        println!("{}", evaluation.report.to_text());
        println!("loss {:.4}", evaluation.loss);
    }
}

/// `mosaic eval` on a LLaVA checkpoint or folder.
fn eval_llava(args: &EvalArgs, device: &Device) -> Result<()> {
    if args.adapter.is_some() {
        anyhow::bail!(
            "--adapter: give the adapter folder itself as --checkpoint (it names its base LLaVA)"
        );
    }
    let (loss, answers) = visual_instruction::evaluate_checkpoint(
        &args.checkpoint,
        &args.data,
        args.batch_size.max(1),
        device,
    )?;
    if args.json {
        let mut value = answers.json();
        value["metrics"] = serde_json::json!({
            "loss": loss.loss,
            "perplexity": loss.perplexity,
            "vqa_accuracy": answers.vqa.as_ref().map(|v| v.overall()),
            "bleu4": answers.bleu4,
            "cider": answers.cider,
        });
        value["tokens"] = loss.tokens.into();
        println!("{value}");
    } else {
        println!("loss {:.4}", loss.loss);
        println!("perplexity {:.4}", loss.perplexity);
        println!("{}", answers.line());
        if let Some(v) = &answers.vqa {
            for (kind, (accuracy, count)) in v.per_type() {
                println!("  {kind} {accuracy:.4} ({count} questions)");
            }
        }
    }
    Ok(())
}
