//! `mpirun -np 2 mosaic train` (feature `mpi`, Open MPI installed; `.ci/run` runs these): two ranks of batch 8
//! end with one process of batch 16's weights, a 2-rank run killed mid-way resumes exactly, ranks that disagree
//! on the recipe are refused by key, and a rank that dies stops the run. Without the feature, a launch under
//! mpirun with two processes is refused.
// Without the feature only the last test runs; the launch helpers wait for the MPI build.
#![cfg_attr(not(feature = "mpi"), allow(dead_code, unused_imports))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

// The shared child-process helpers (the exact-resume tests' own are unused here).
#[allow(dead_code)]
mod interrupted_run;

use interrupted_run::{fixtures, head, latest_step};

/// The tiny MLM BERT, with its dropout on or set to 0.
fn model(dir: &Path, dropout: bool) -> PathBuf {
    let src = fixtures().join("models/tiny-bert-mlm");
    let dst = dir.join(if dropout { "model" } else { "model-no-dropout" });
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    if !dropout {
        let config = std::fs::read_to_string(dst.join("config.json"))
            .unwrap()
            .replace("_dropout_prob\": 0.1", "_dropout_prob\": 0.0");
        std::fs::write(dst.join("config.json"), config).unwrap();
    }
    dst
}

/// A cloze recipe on the first 64 sentiment rows, checkpointing every step.
fn recipe(dir: &Path, model: &Path) -> PathBuf {
    let data = fixtures().join("data/sentiment");
    let train = head(dir, &data.join("train.jsonl"), 64);
    let valid = head(dir, &data.join("valid.jsonl"), 16);
    let path = dir.join("recipe.toml");
    std::fs::write(
        &path,
        format!(
            r#"
name = "data-parallel"
model = "{model}"
task = "classification"
method = "cloze"
output = "unused"
[data]
train = "{train}"
valid = "{valid}"
max_length = 64
[prompt]
template = "{{text}} it was {{mask}} ."
[prompt.verbalizer]
positive = ["great", "good"]
negative = ["terrible", "bad"]
[train]
epochs = 6
batch_size = 8
lr = 0.05
seed = 5
save_every = 1
save_total_limit = 2
"#,
            model = model.display(),
            train = train.display(),
            valid = valid.display(),
        ),
    )
    .unwrap();
    path
}

fn mosaic() -> &'static str {
    env!("CARGO_BIN_EXE_mosaic")
}

/// `mpirun` allowed to run as root (CI's containers), without the single-copy mechanism containers lack.
fn mpirun_command() -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe", "--bind-to", "none"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `mpirun -np 2` of `mosaic ARGS`, one thread a rank.
fn mpirun(args: &[&str]) -> Command {
    let mut cmd = mpirun_command();
    cmd.args(["-x", "RAYON_NUM_THREADS=1", "-np", "2", mosaic()])
        .args(args);
    cmd
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut named: Vec<_> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

fn max_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .flat_map(|((_, x), (_, y))| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

#[cfg(feature = "mpi")]
#[test]
fn two_ranks_of_batch_8_end_where_one_process_of_batch_16_does() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = recipe(dir.path(), &model(dir.path(), false));
    let recipe = recipe.to_str().unwrap();
    let single = dir.path().join("single");
    let out = Command::new(mosaic())
        .args(["train", recipe, "--output", single.to_str().unwrap()])
        .args([
            "--set",
            "train.batch_size=16",
            "--set",
            "train.optimizer=sgd",
        ])
        .output()
        .unwrap();
    ok(out);
    let parallel = dir.path().join("parallel");
    let text = ok(
        mpirun(&["train", recipe, "--output", parallel.to_str().unwrap()])
            .args([
                "--set",
                "train.batch_size=8",
                "--set",
                "train.optimizer=sgd",
            ])
            .output()
            .unwrap(),
    );
    assert!(text.contains("data parallel: 2 ranks (MPI)"), "{text}");
    assert!(text.contains("a global batch of 16"), "{text}");
    let last = "last/model.safetensors";
    let moved = max_difference(
        &single.join(last),
        &dir.path().join("model-no-dropout/model.safetensors"),
    );
    let differs = max_difference(&single.join(last), &parallel.join(last));
    assert!(moved > 1e-3, "training moved the weights ({moved})");
    assert!(differs < 1e-4, "2 ranks vs 1 process: {differs}");
    // Rank 0 alone wrote: one log, one report.
    assert!(parallel.join("report.json").is_file() && parallel.join("training.svg").is_file());
}

#[cfg(feature = "mpi")]
#[test]
fn a_two_rank_run_killed_mid_way_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // Dropout on: each rank's stream must come back too.
    let recipe = recipe(dir.path(), &model(dir.path(), true));
    let recipe = recipe.to_str().unwrap();
    let reference = dir.path().join("uninterrupted");
    ok(
        mpirun(&["train", recipe, "--output", reference.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    // 64 examples over 2 ranks of 8: 4 steps an epoch, 24 in all.
    assert_eq!(latest_step(&reference), 24);

    let killed = dir.path().join("killed");
    let mut child = mpirun(&["train", recipe, "--output", killed.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while latest_step(&killed) < 9 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before step 9"
        );
        assert!(Instant::now() < deadline, "timed out waiting for step 9");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SIGKILL both ranks (mpirun's children), as a machine failure would.
    Command::new("pkill")
        .args(["-KILL", "-P", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(latest_step(&killed) < 24, "killed before the end");
    ok(mpirun(&[
        "train",
        recipe,
        "--output",
        killed.to_str().unwrap(),
        "--resume",
    ])
    .output()
    .unwrap());
    for file in [
        "last/model.safetensors",
        "best/model.safetensors",
        "metrics.jsonl",
        "report.json",
    ] {
        assert!(
            std::fs::read(killed.join(file)).unwrap()
                == std::fs::read(reference.join(file)).unwrap(),
            "{file} differs after the resume"
        );
    }
}

#[cfg(feature = "mpi")]
#[test]
fn ranks_with_different_recipes_are_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = recipe(dir.path(), &model(dir.path(), false));
    let recipe = recipe.to_str().unwrap();
    let output = dir.path().join("run");
    let output = output.to_str().unwrap();
    // MPMD launch: each rank gets its own --set.
    let out = mpirun_command()
        .args(["-np", "1", mosaic(), "train", recipe, "--output", output])
        .args([
            "--set",
            "train.lr=0.1",
            ":",
            "-np",
            "1",
            mosaic(),
            "train",
            recipe,
        ])
        .args(["--output", output, "--set", "train.lr=0.2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "rank 1's recipe differs from rank 0's: key `train.lr`: rank 0 has 0.1, this rank 0.2"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[cfg(feature = "mpi")]
#[test]
fn a_rank_that_dies_stops_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = recipe(dir.path(), &model(dir.path(), false));
    let output = dir.path().join("run");
    let mut child = mpirun(&[
        "train",
        recipe.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ])
    .env("MOSAIC_COLLECTIVE_TIMEOUT", "20")
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let started = Instant::now();
    while latest_step(&output) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before step 3"
        );
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "timed out waiting for step 3"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // The highest pid among mpirun's children: one rank only.
    let ranks = Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let pids: Vec<u32> = String::from_utf8_lossy(&ranks.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 2, "two ranks under mpirun: {pids:?}");
    let killed_at = Instant::now();
    Command::new("kill")
        .args(["-KILL", &pids.iter().max().unwrap().to_string()])
        .status()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "the other rank hangs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(not(feature = "mpi"))]
#[test]
fn without_mpi_a_launch_of_two_processes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = recipe(dir.path(), &model(dir.path(), false));
    let out = Command::new(mosaic())
        .args(["train", recipe.to_str().unwrap(), "--output"])
        .arg(dir.path().join("run"))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("launched by mpirun with 2 processes") && stderr.contains("--features mpi"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("run/metrics.jsonl").exists(),
        "nothing trained"
    );
}
