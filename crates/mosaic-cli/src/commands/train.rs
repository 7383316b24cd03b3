//! `mosaic train [RECIPE.toml] [--output DIR] [--set key=value ...]`: run a recipe; with no recipe, the embedded
//! default (prompt-similarity fine-tuning of all-MiniLM-L6-v2 on the bundled sentiment set).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use mosaic_models::ModelSource;
use mosaic_train::pipeline::{self, RunOptions};
use mosaic_train::recipe::{Recipe, Task};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::progress::ProgressObserver;

/// The embedded default recipe and its data, so `mosaic train` works with nothing but the binary.
const DEFAULT_RECIPE: &str = include_str!("../../../../fixtures/recipes/sentiment.toml");
const DEFAULT_DATA: [(&str, &str); 3] = [
    (
        "train.jsonl",
        include_str!("../../../../fixtures/data/sentiment/train.jsonl"),
    ),
    (
        "valid.jsonl",
        include_str!("../../../../fixtures/data/sentiment/valid.jsonl"),
    ),
    (
        "test.jsonl",
        include_str!("../../../../fixtures/data/sentiment/test.jsonl"),
    ),
];

#[derive(Args)]
pub struct TrainArgs {
    /// A recipe (TOML). Without one, the embedded default sentiment recipe runs.
    recipe: Option<PathBuf>,
    /// Where to write the run (overrides the recipe's `output`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Override a recipe key, e.g. --set train.lr=3e-5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue from the last complete checkpoint of the run folder DIR (default: the recipe's output). Without a
    /// recipe, the run's own resolved recipe.toml is used.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    resume: Option<Option<PathBuf>>,
}

/// `path` relative to the recipe's folder when it is relative, made absolute so the saved recipe works anywhere.
fn beside(dir: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    };
    std::path::absolute(&joined).unwrap_or(joined)
}

pub fn load_recipe(args: &TrainArgs) -> Result<Recipe> {
    let resume_dir = args.resume.clone().flatten();
    let saved;
    let recipe_path = match (&args.recipe, &resume_dir) {
        (None, Some(dir)) => {
            saved = dir.join("recipe.toml");
            Some(&saved)
        }
        (path, _) => path.as_ref(),
    };
    let mut recipe = match recipe_path {
        Some(path) => {
            let mut recipe = Recipe::from_file_with_overrides(path, &args.set)?;
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            for p in [
                &mut recipe.data.train,
                &mut recipe.data.valid,
                &mut recipe.data.test,
            ]
            .into_iter()
            .flatten()
            {
                *p = beside(dir, p);
            }
            if let ModelSource::Local(p) = ModelSource::parse(&recipe.model)
                && p.is_relative()
                && dir.join(&p).exists()
            {
                recipe.model = beside(dir, &p).display().to_string();
            }
            recipe
        }
        None => Recipe::from_toml_str_with_overrides(
            DEFAULT_RECIPE,
            "embedded default recipe",
            &args.set,
        )?,
    };
    if let Some(out) = args.output.as_ref().or(resume_dir.as_ref()) {
        recipe.output = out.clone();
    }
    if recipe_path.is_none() {
        // Write the bundled data beside the run so the resolved recipe.toml points at real files.
        let data = recipe.output.join("data");
        std::fs::create_dir_all(&data)?;
        for (name, content) in DEFAULT_DATA {
            mosaic_models::folder::write_atomic(&data.join(name), content.as_bytes())?;
        }
        recipe.data.train = Some(data.join("train.jsonl"));
        recipe.data.valid = Some(data.join("valid.jsonl"));
        recipe.data.test = Some(data.join("test.jsonl"));
    }
    Ok(recipe)
}

pub fn run(args: TrainArgs) -> Result<()> {
    let recipe = load_recipe(&args)?;
    let mut observer = ProgressObserver::default();
    eprintln!(
        "recipe `{}`: {} on {} ({:?}), output {}",
        recipe.name,
        serde_json::to_string(&recipe.method)?.trim_matches('"'),
        recipe.model,
        recipe.task,
        recipe.output.display()
    );
    // SIGINT / SIGTERM: finish the step, save a resumable checkpoint, stop. A second signal exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let started = std::time::Instant::now();
    let options = RunOptions {
        resume: args.resume.is_some(),
        stop: Some(&stop),
    };
    let summary = pipeline::run_with(&recipe, &mut observer, options)?;
    if let (Some(before), Some(after)) = (&summary.before, &summary.after) {
        let metric = &recipe.train.metric;
        if let (Some(b), Some(a)) = (before.metrics.get(metric), after.metrics.get(metric)) {
            println!("{metric}: {b:.4} before → {a:.4} after");
        }
    }
    if let Some(best) = &summary.best_checkpoint {
        println!("best checkpoint: {}", best.display());
        // Causal LMs and CLIP checkpoints have no labels to predict: evaluate them instead.
        let next = if matches!(recipe.task, Task::CausalLm | Task::ImageTextContrastive) {
            format!(
                "mosaic eval --checkpoint {} --data FILE.jsonl",
                best.display()
            )
        } else {
            format!(
                "mosaic predict --checkpoint {} --input FILE.jsonl --output OUT.jsonl",
                best.display()
            )
        };
        println!("next: {next}");
    }
    let files = "recipe.toml, metrics.jsonl, report.json, training.svg";
    println!(
        "run folder: {} ({files}) — {:.1}s",
        summary.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
