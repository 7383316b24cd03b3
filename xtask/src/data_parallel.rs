//! `cargo xtask bench data-parallel`: step time of one process against `mpirun -np 2` at the same global batch
//! (2 threads in one process vs one thread in each of two ranks, on this 2-core machine), with what the gradients'
//! all-reduce moves and costs a step — full fine-tuning beside LoRA, whose adapters alone are reduced.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A recipe measured: a name, the recipe file (None: the embedded default) and its global batch.
struct Case {
    name: &'static str,
    recipe: Option<&'static str>,
    global_batch: usize,
}

const CASES: [Case; 2] = [
    Case {
        name: "MiniLM-L6 full fine-tuning (default recipe)",
        recipe: None,
        global_batch: 16,
    },
    Case {
        name: "MiniLM-L6 LoRA (sentiment-lora)",
        recipe: Some("fixtures/recipes/sentiment-lora.toml"),
        global_batch: 16,
    },
];

const QUICK: [Case; 1] = [Case {
    name: "tiny BERT cloze (cloze-tiny)",
    recipe: Some("fixtures/recipes/cloze-tiny.toml"),
    global_batch: 16,
}];

/// What one run printed.
#[derive(Debug, Default)]
struct Measured {
    steps: usize,
    step_seconds: f64,
    trainable: usize,
    /// `all-reduced X a step in B bucket(s), S s a step` (2 ranks only).
    reduced: Option<(String, f64)>,
}

pub fn bench_data_parallel(root: &Path, args: &[OsString]) -> Result<()> {
    let mut profile = "dev".to_string();
    let mut quick = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--quick") => quick = true,
            Some("--profile") => {
                profile = it
                    .next()
                    .and_then(|p| p.to_str())
                    .context("--profile needs a value")?
                    .to_string()
            }
            other => {
                bail!("bench data-parallel: unknown argument {other:?} (--quick, --profile P)")
            }
        }
    }
    let mut build = Command::new(crate::cargo());
    build.args([
        "build",
        "-p",
        "mosaic-cli",
        "--features",
        "mpi",
        "--profile",
        &profile,
    ]);
    crate::run_cmd(build.current_dir(root))?;
    let dir = if profile == "dev" {
        "debug"
    } else {
        profile.as_str()
    };
    let mosaic = root.join("target").join(dir).join("mosaic");
    let runs = root.join("target/bench-data-parallel");
    let cases: &[Case] = if quick { &QUICK } else { &CASES };
    println!(
        "| recipe (1 epoch) | processes × threads | batch a rank | steps | step (s) | speed-up | gradient all-reduce a step |"
    );
    println!("|---|---|---|---|---|---|---|");
    for case in cases {
        let one = train(
            &mosaic,
            root,
            case,
            1,
            &runs.join(format!("{}-1", slug(case.name))),
        )?;
        let two = train(
            &mosaic,
            root,
            case,
            2,
            &runs.join(format!("{}-2", slug(case.name))),
        )?;
        for (ranks, m) in [(1, &one), (2, &two)] {
            let reduce = match &m.reduced {
                Some((bytes, seconds)) => format!(
                    "{bytes} ({} trainable × 4 B), {:.4} s ({:.1}% of the step)",
                    m.trainable,
                    seconds,
                    100.0 * seconds / m.step_seconds.max(1e-12)
                ),
                None => "none (one process)".into(),
            };
            println!(
                "| {} | {ranks} × {} | {} | {} | {:.3} | {:.2}× | {reduce} |",
                case.name,
                2 / ranks,
                case.global_batch / ranks,
                m.steps,
                m.step_seconds,
                one.step_seconds / m.step_seconds.max(1e-12),
            );
        }
    }
    Ok(())
}

fn slug(name: &str) -> String {
    name.split_whitespace()
        .next()
        .unwrap_or("case")
        .to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        + if name.contains("LoRA") { "-lora" } else { "" }
}

/// Trains `case` for one epoch with `ranks` processes (one thread each when 2, two threads when 1).
fn train(
    mosaic: &Path,
    root: &Path,
    case: &Case,
    ranks: usize,
    output: &PathBuf,
) -> Result<Measured> {
    let mut cmd = if ranks == 1 {
        let mut cmd = Command::new(mosaic);
        cmd.env("RAYON_NUM_THREADS", "2");
        cmd
    } else {
        let mut cmd = Command::new("mpirun");
        cmd.args([
            "--oversubscribe",
            "--bind-to",
            "none",
            "-x",
            "RAYON_NUM_THREADS=1",
        ])
        .arg("-np")
        .arg(ranks.to_string())
        .arg(mosaic)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        cmd
    };
    cmd.arg("train");
    if let Some(recipe) = case.recipe {
        cmd.arg(root.join(recipe));
    }
    cmd.arg("--output")
        .arg(output)
        .args(["--set", "train.epochs=1", "--set"])
        .arg(format!("train.batch_size={}", case.global_batch / ranks))
        .current_dir(root);
    eprintln!("xtask: running {cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{text}", out.status);
    }
    parse(&text).with_context(|| format!("{cmd:?} printed no step time:\n{text}"))
}

/// The figures of `mosaic train`'s summary lines.
fn parse(text: &str) -> Option<Measured> {
    let mut m = Measured::default();
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("trainable parameters: ") {
            m.trainable = rest.split_whitespace().next()?.parse().ok()?;
        }
        if let Some(rest) = line.trim().strip_prefix("trained ") {
            m.steps = rest.split_whitespace().next()?.parse().ok()?;
            let open = rest.find('(')?;
            m.step_seconds = rest[open + 1..].split_whitespace().next()?.parse().ok()?;
        }
        if let Some(at) = line.find("all-reduced ") {
            let rest = &line[at + "all-reduced ".len()..];
            let bytes = rest.split(" a step").next()?.to_string();
            let seconds = rest
                .rsplit(", ")
                .next()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            m.reduced = Some((bytes, seconds));
        }
    }
    (m.steps > 0).then_some(m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_summary_lines() {
        let m = super::parse(
            "trainable parameters: 22713 of 22713 (100.00%)\n\
             data parallel: 2 ranks (MPI); all-reduced 88.7 KiB a step in 1 bucket(s), 0.0012 s a step\n\
             trained 56 steps over 2 epochs (0.002 s a step)\n",
        )
        .unwrap();
        assert_eq!((m.steps, m.trainable, m.step_seconds), (56, 22713, 0.002));
        assert_eq!(m.reduced, Some(("88.7 KiB".into(), 0.0012)));
    }
}
