//! `mosaic train [RECIPE.toml] [--output DIR] [--set key=value ...]`: run a recipe; with no recipe, the embedded
//! default (prompt-similarity fine-tuning of all-MiniLM-L6-v2 on the bundled sentiment set).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use mosaic_models::ModelSource;
use mosaic_train::pipeline::{self, RunOptions};
use mosaic_train::recipe::{Recipe, Task, override_key};
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
            for model in std::iter::once(&mut recipe.model).chain(recipe.vision_model.as_mut()) {
                if let ModelSource::Local(p) = ModelSource::parse(model)
                    && p.is_relative()
                    && dir.join(&p).exists()
                {
                    *model = beside(dir, &p).display().to_string();
                }
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
        bundled_data(&mut recipe, &args.set)?;
    }
    Ok(recipe)
}

/// The embedded default's data: each of `data.train`, `data.valid` and `data.test` that no `--set` gave gets the
/// bundled file, written beside the run so that the resolved recipe.toml points at real files. A file the user
/// gave wins (made absolute, so the saved recipe works from any folder).
fn bundled_data(recipe: &mut Recipe, overrides: &[String]) -> Result<()> {
    let set = |key: &str| overrides.iter().any(|o| override_key(o) == Some(key));
    let data = recipe.output.join("data");
    let slots = [
        ("data.train", &mut recipe.data.train),
        ("data.valid", &mut recipe.data.valid),
        ("data.test", &mut recipe.data.test),
    ];
    for ((key, slot), (name, content)) in slots.into_iter().zip(DEFAULT_DATA) {
        if set(key) {
            if let Some(path) = slot.as_mut()
                && let Ok(absolute) = std::path::absolute(&*path)
            {
                *path = absolute;
            }
            continue;
        }
        std::fs::create_dir_all(&data)?;
        let path = data.join(name);
        mosaic_models::folder::write_atomic(&path, content.as_bytes())?;
        *slot = Some(path);
    }
    Ok(())
}

pub fn run(args: TrainArgs) -> Result<()> {
    // Before anything else: under `mpirun -np N` this process is one rank of N.
    let collective = mosaic_train::collective::from_environment()?;
    let recipe = load_recipe(&args)?;
    // SIGINT / SIGTERM: finish the step, save a resumable checkpoint, stop. A second signal exits at once. With
    // several ranks, a signal on any of them stops all at the same step.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let options = RunOptions {
        resume: args.resume.is_some(),
        stop: Some(&stop),
        collective: Some(collective.as_ref()),
    };
    if !collective.writes() {
        // Rank 0 reports; the other ranks train quietly (their errors still reach stderr).
        pipeline::run_with(&recipe, &mut mosaic_train::observer::Silent, options)?;
        return Ok(());
    }
    let mut observer = ProgressObserver::default();
    // Visual instruction has stages, not methods.
    let how = match (recipe.task, recipe.stage) {
        (Task::VisualInstruction, stage) => {
            format!("stage {}", stage.map_or("instruct", |s| s.as_str()))
        }
        _ => serde_json::to_string(&recipe.method)?
            .trim_matches('"')
            .to_string(),
    };
    eprintln!(
        "recipe `{}`: {how} on {} ({}), output {}",
        recipe.name,
        recipe.model,
        recipe.task.as_str(),
        recipe.output.display()
    );
    let started = std::time::Instant::now();
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
        let next = if recipe.task == Task::VisualInstruction {
            format!(
                "mosaic vqa --model {} --image IMAGE --question \"...\" (or mosaic caption)",
                best.display()
            )
        } else if recipe.task == Task::Detection {
            format!(
                "mosaic detect --model {} --image IMAGE.png (or mosaic eval --checkpoint {} --data GT.json)",
                best.display(),
                best.display()
            )
        } else if recipe.task == Task::TextToImage {
            format!(
                "mosaic imagine --model {} --prompt \"two red squares\" --output out.png",
                best.display()
            )
        } else if matches!(recipe.task, Task::CausalLm | Task::ImageTextContrastive) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(output: &Path, set: &[String]) -> TrainArgs {
        TrainArgs {
            recipe: None,
            output: Some(output.to_path_buf()),
            set: set.to_vec(),
            resume: None,
        }
    }

    /// Issue 11: `mosaic train --set data.train=my.jsonl` with no recipe trained on the bundled set, because the
    /// embedded default rewrote every data file after the overrides.
    #[test]
    fn issue_11_set_data_train_wins_over_the_embedded_default() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("my.jsonl");
        let out = dir.path().join("run");
        let recipe = load_recipe(&args(&out, &[format!("data.train={}", mine.display())])).unwrap();
        assert_eq!(recipe.data.train.as_deref(), Some(mine.as_path()));
        // Only the keys the user left unset get the bundled files.
        assert_eq!(recipe.data.valid, Some(out.join("data/valid.jsonl")));
        assert_eq!(recipe.data.test, Some(out.join("data/test.jsonl")));
        assert!(out.join("data/valid.jsonl").exists());
        assert!(
            !out.join("data/train.jsonl").exists(),
            "the bundled train file is not used"
        );

        // Without overrides, all three are the bundled copies.
        let out = dir.path().join("plain");
        let recipe = load_recipe(&args(&out, &[])).unwrap();
        assert_eq!(recipe.data.train, Some(out.join("data/train.jsonl")));
        let text = std::fs::read_to_string(out.join("data/train.jsonl")).unwrap();
        assert_eq!(text, DEFAULT_DATA[0].1);
    }
}
