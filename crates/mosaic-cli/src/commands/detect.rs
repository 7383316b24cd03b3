//! `mosaic detect --model M --image PATH [--threshold T] [--json] [--output RESULTS.json [--data GT.json]]`:
//! objects found by a DETR (a `mosaic train` detection checkpoint or a Hugging Face `DetrForObjectDetection`
//! folder), as transformers' `post_process_object_detection` returns them: per query its best real class, the
//! probability, and the box `[x0, y0, x1, y1]` in pixels of the input image. `mosaic eval --checkpoint DIR --data
//! GT.json` runs the model on a COCO file's images and prints pycocotools' twelve figures ([`eval_checkpoint`]).
//!
//! `--image` is one image, a folder of images (sorted by name) or a JSONL file of image paths (each line a JSON
//! string, or an object with `image` or `file_name` and optionally `image_id`; paths relative to the file).
//! With `--output` the detections are written as a COCO results file (a JSON list of `image_id`, `category_id`,
//! `bbox` `[x, y, w, h]`, `score`). Image ids come from `--data GT.json` (the image whose `file_name`, relative
//! to the GT file, is the same file), else from the JSONL's `image_id`, else they are the image's 1-based
//! position in the listing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use mosaic_data::CocoDataset;
use mosaic_data::image::{IMAGE_EXTENSIONS, RgbImage, decode_file};
use mosaic_models::detr::Detection;
use mosaic_train::detection::DetectionCheckpoint;
use mosaic_train::evaluate::Report;

/// The threshold without `--output`: transformers' default for `post_process_object_detection` and for the
/// object-detection pipeline.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// Images decoded and run at a time.
const CHUNK: usize = 64;

#[derive(Args)]
pub struct DetectArgs {
    /// A DETR folder: a detection checkpoint (runs/detr-shapes/best) or a Hugging Face DetrForObjectDetection.
    #[arg(long)]
    model: String,
    /// An image, a folder of images, or a JSONL file of image paths.
    #[arg(long)]
    image: PathBuf,
    /// Keep detections whose score is above this (strictly; 0 keeps every query). Default 0.5, or 0 with
    /// --output (COCO evaluation ranks every detection, so cutting low scores only lowers recall).
    #[arg(long)]
    threshold: Option<f32>,
    /// Print JSON ({"detections": [...]}, one line per image for several) instead of text.
    #[arg(long)]
    json: bool,
    /// Write the detections as a COCO results file here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// A COCO ground-truth file whose image ids the results file uses (matched by file).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
}

/// One input image and the id a results file gives it.
struct Input {
    path: PathBuf,
    image_id: Option<i64>,
}

pub fn run(args: DetectArgs) -> Result<()> {
    let device = Device::Cpu;
    let threshold = args.threshold.unwrap_or(if args.output.is_some() {
        0.0
    } else {
        DEFAULT_THRESHOLD
    });
    if !(threshold.is_finite() && (0.0..=1.0).contains(&threshold)) {
        bail!("--threshold must be between 0 and 1, got {threshold}");
    }
    if args.data.is_some() && args.output.is_none() {
        bail!("--data names the image ids of a results file: give --output too");
    }
    let dir = super::resolve_model(&args.model)?;
    let checkpoint = DetectionCheckpoint::open(&dir, &device)?;
    let (inputs, many) = list_inputs(&args.image)?;
    let ids = match &args.data {
        Some(gt) => Some(ground_truth_ids(gt)?),
        None => None,
    };
    let mut results = Vec::new();
    for (chunk_index, chunk) in inputs.chunks(CHUNK).enumerate() {
        let images = chunk
            .iter()
            .map(|i| decode_file(&i.path).with_context(|| format!("--image {}", i.path.display())))
            .collect::<Result<Vec<RgbImage>>>()?;
        let detections = checkpoint.detect(&images, threshold, args.batch_size.max(1), &device)?;
        for (offset, (input, found)) in chunk.iter().zip(&detections).enumerate() {
            if args.output.is_some() {
                let position = chunk_index * CHUNK + offset + 1;
                let image_id = image_id(input, position, ids.as_ref())?;
                results.extend(coco_results(&checkpoint, image_id, found));
            } else {
                print_detections(&checkpoint, input, found, many, args.json)?;
            }
        }
    }
    if let Some(output) = &args.output {
        let text = serde_json::to_string(&results)?;
        std::fs::write(output, text).with_context(|| format!("--output {}", output.display()))?;
        eprintln!(
            "wrote {} detections of {} images to {}",
            results.len(),
            inputs.len(),
            output.display()
        );
    }
    Ok(())
}

/// The detections of one image as `{"label", "label_id", "score", "box"}` objects.
fn detection_json(checkpoint: &DetectionCheckpoint, found: &[Detection]) -> Vec<serde_json::Value> {
    found
        .iter()
        .map(|d| {
            serde_json::json!({
                "label": checkpoint.label(d.label),
                "label_id": d.label,
                "score": d.score,
                "box": d.bbox,
            })
        })
        .collect()
}

fn print_detections(
    checkpoint: &DetectionCheckpoint,
    input: &Input,
    found: &[Detection],
    many: bool,
    json: bool,
) -> Result<()> {
    if json {
        let mut value = serde_json::json!({ "detections": detection_json(checkpoint, found) });
        if many {
            value["image"] = input.path.display().to_string().into();
        }
        println!("{}", serde_json::to_string(&value)?);
        return Ok(());
    }
    if many {
        println!("{}: {} detections", input.path.display(), found.len());
    }
    for d in found {
        let [x0, y0, x1, y1] = d.bbox;
        println!(
            "{:<12} {:.3}  [{x0:.1}, {y0:.1}, {x1:.1}, {y1:.1}]",
            checkpoint.label(d.label),
            d.score
        );
    }
    Ok(())
}

/// One image's detections as COCO results (labels without a category id are left out).
fn coco_results(
    checkpoint: &DetectionCheckpoint,
    image_id: i64,
    found: &[Detection],
) -> Vec<serde_json::Value> {
    found
        .iter()
        .filter_map(|d| {
            let category_id = checkpoint.category_id(d.label)?;
            let [x0, y0, x1, y1] = d.bbox;
            Some(serde_json::json!({
                "image_id": image_id,
                "category_id": category_id,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": d.score,
            }))
        })
        .collect()
}

/// The images of `--image`, and whether it named several (a folder or a JSONL file).
fn list_inputs(path: &Path) -> Result<(Vec<Input>, bool)> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("--image {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_lowercase().as_str()))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("--image {}: the folder holds no images", path.display());
        }
        let inputs = files
            .into_iter()
            .map(|path| Input {
                path,
                image_id: None,
            })
            .collect();
        return Ok((inputs, true));
    }
    if path.extension().and_then(|e| e.to_str()) == Some("jsonl") {
        return Ok((read_jsonl(path)?, true));
    }
    if !path.is_file() {
        bail!("--image {}: no such file or folder", path.display());
    }
    Ok((
        vec![Input {
            path: path.to_path_buf(),
            image_id: None,
        }],
        false,
    ))
}

/// A JSONL file of image paths: strings, or objects with `image` / `file_name` and an optional `image_id`.
fn read_jsonl(path: &Path) -> Result<Vec<Input>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--image {}", path.display()))?;
    let root = path.parent().unwrap_or(Path::new("."));
    let mut inputs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), n + 1);
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let (file, image_id) = match &value {
            serde_json::Value::String(s) => (s.clone(), None),
            serde_json::Value::Object(o) => {
                let file = o
                    .get("image")
                    .or_else(|| o.get("file_name"))
                    .and_then(|v| v.as_str())
                    .with_context(|| format!("{}: no \"image\" or \"file_name\" string", at()))?;
                (file.to_string(), o.get("image_id").and_then(|v| v.as_i64()))
            }
            _ => bail!("{}: expected an image path or an object", at()),
        };
        inputs.push(Input {
            path: root.join(file),
            image_id,
        });
    }
    if inputs.is_empty() {
        bail!("--image {}: no image paths", path.display());
    }
    Ok(inputs)
}

/// The image ids of a COCO ground truth by the (canonical) path of each image.
fn ground_truth_ids(gt: &Path) -> Result<HashMap<PathBuf, i64>> {
    let coco = CocoDataset::load(gt)?;
    let root = gt.parent().unwrap_or(Path::new("."));
    Ok(coco
        .images()
        .iter()
        .map(|i| {
            let path = root.join(&i.file_name);
            (path.canonicalize().unwrap_or(path), i.id)
        })
        .collect())
}

/// The id of an image in a results file (see the module documentation).
fn image_id(input: &Input, position: usize, ids: Option<&HashMap<PathBuf, i64>>) -> Result<i64> {
    if let Some(ids) = ids {
        let key = input
            .path
            .canonicalize()
            .unwrap_or_else(|_| input.path.clone());
        return ids.get(&key).copied().with_context(|| {
            format!(
                "{}: not an image of the --data ground truth (its file_names are relative to that file)",
                input.path.display()
            )
        });
    }
    Ok(input.image_id.unwrap_or(position as i64))
}

/// `mosaic eval --checkpoint DIR --data GT.json [--json]` for a DETR: the model's detections on the file's images
/// (threshold 0), scored as pycocotools does, printed as `coco_eval` prints a results file's figures.
pub fn eval_checkpoint(dir: &Path, data: &Path, json: bool, batch_size: usize) -> Result<()> {
    let device = Device::Cpu;
    let evaluation =
        DetectionCheckpoint::open(dir, &device)?.evaluate(data, batch_size.max(1), &device)?;
    let Report::Detection(stats) = &evaluation.report else {
        bail!("{}: the evaluation gave no COCO figures", dir.display());
    };
    super::coco_eval::print_stats(stats, json)
}
