//! `mosaic eval --checkpoint DIR --data FILE [--json]`: the classification (or entity) report of a checkpoint, or
//! the loss and perplexity of a causal-LM checkpoint. For an image-classification checkpoint `--data` is an image
//! folder (`<label>/*.png`) or a JSONL/CSV file naming images.
//! For a CLIP (`image-text-contrastive`) checkpoint: loss and recall@1/5 of image-caption pairs, or for CoOp the
//! classification report of labelled images. For a LLaVA: the loss of the replies and the greedy answers' VQA
//! accuracy (rows with a `question_type`) and caption BLEU-4 / CIDEr-D (the other rows). For a multimodal
//! classifier: the classification report of JSONL image-text pairs.
//! `mosaic eval --data GT.json --predictions RESULTS.json [--json]` scores COCO detections made elsewhere
//! (`coco_eval`): pycocotools' twelve mAP / AR figures.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use mosaic_train::evaluate::{Evaluation, evaluate};
use mosaic_train::{
    causal_lm, checkpoint, contrastive, image_classification, multimodal, visual_instruction,
};

#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint folder written by `mosaic train` (e.g. runs/sentiment/best); not with --predictions.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A COCO results file (a JSON list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}) to score
    /// against the COCO ground truth given as --data: prints pycocotools' twelve mAP / AR figures.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// A PEFT adapter folder to apply to the checkpoint's model (text and causal-LM checkpoints; a run trained
    /// with [peft] holds its adapter already).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Labelled data (JSONL or CSV) with the fields the checkpoint was trained on; for an image classifier also
    /// an image folder (`<label>/*.png`); with --predictions a COCO detection file (GT.json).
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
    if let Some(predictions) = &args.predictions {
        // Detections made elsewhere: there is no model to run, so nothing that configures one applies.
        if args.checkpoint.is_some() {
            anyhow::bail!(
                "--predictions scores a COCO results file against --data; give it or --checkpoint, not both"
            );
        }
        if args.adapter.is_some() {
            anyhow::bail!("--adapter applies to --checkpoint, not to --predictions");
        }
        return super::coco_eval::run(&args.data, predictions, args.json);
    }
    let Some(checkpoint_dir) = args.checkpoint.clone() else {
        anyhow::bail!(
            "give --checkpoint DIR (a model to evaluate) or --predictions RESULTS.json (COCO detections to score)"
        );
    };
    if mosaic_train::detection::is_detection_checkpoint(&checkpoint_dir)
        || mosaic_train::detection::is_detr_folder(&checkpoint_dir)
    {
        if args.adapter.is_some() {
            anyhow::bail!("--adapter applies to text checkpoints, not to a DETR");
        }
        return super::detect::eval_checkpoint(
            &checkpoint_dir,
            &args.data,
            args.json,
            args.batch_size,
        );
    }
    if visual_instruction::is_llava_folder(&checkpoint_dir) {
        return eval_llava(&args, &checkpoint_dir, &device);
    }
    if multimodal::is_multimodal_checkpoint(&checkpoint_dir) {
        if args.adapter.is_some() {
            anyhow::bail!("--adapter applies to text checkpoints, not to a multimodal classifier");
        }
        let loaded = multimodal::load(&checkpoint_dir, &device)?;
        let e = loaded.evaluate(&args.data, args.batch_size.max(1))?;
        print_evaluation(&e.evaluation, args.json);
        if let (Some([image, text]), false) = (e.mean_weights, args.json) {
            println!("mean fusion weights: image {image:.4}, text {text:.4}");
        }
        return Ok(());
    }
    if causal_lm::is_causal_lm_checkpoint(&checkpoint_dir) {
        // A causal LM has no labels to report on: its measure is the mean token loss and the perplexity.
        let e = causal_lm::evaluate_checkpoint(
            &checkpoint_dir,
            args.adapter.as_deref(),
            &args.data,
            args.batch_size.max(1),
            &device,
        )?;
        // An instruction-tuned checkpoint also answers each instruction (greedy) for exact match.
        let answers = causal_lm::exact_match_checkpoint(
            &checkpoint_dir,
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
    let image_or_clip = image_classification::is_image_checkpoint(&checkpoint_dir)
        || contrastive::is_contrastive_checkpoint(&checkpoint_dir);
    if image_or_clip && args.adapter.is_some() {
        anyhow::bail!(
            "--adapter applies to text and causal-LM checkpoints; an image or CLIP run trained with [peft] holds its adapter in best/"
        );
    }
    if image_classification::is_image_checkpoint(&checkpoint_dir) {
        // Images: `--data` is an image folder (`<label>/*.png`) or a JSONL/CSV file naming images.
        let evaluation = image_classification::evaluate_checkpoint(
            &checkpoint_dir,
            &args.data,
            args.batch_size.max(1),
            &device,
        )?;
        print_evaluation(&evaluation, args.json);
        return Ok(());
    }
    if contrastive::is_contrastive_checkpoint(&checkpoint_dir) {
        // CLIP: loss and retrieval recall of image-caption pairs, or (CoOp) the report of labelled images.
        let e = contrastive::evaluate_checkpoint(
            &checkpoint_dir,
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
    let loaded = checkpoint::load(&checkpoint_dir, &device)?;
    if let Some(adapter) = &args.adapter {
        let bert = &loaded.model.bert;
        let target = mosaic_peft::AdapterTarget::new(&bert.params, bert.mode.clone());
        mosaic_train::adapters::apply_extra(&checkpoint_dir, adapter, &target)?;
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
fn eval_llava(args: &EvalArgs, checkpoint: &Path, device: &Device) -> Result<()> {
    if args.adapter.is_some() {
        anyhow::bail!(
            "--adapter: give the adapter folder itself as --checkpoint (it names its base LLaVA)"
        );
    }
    let (loss, answers) = visual_instruction::evaluate_checkpoint(
        checkpoint,
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
