//! Running `mosaic train` as a child process, interrupting it at a chosen checkpoint and resuming it: the one
//! exact-resume check ([`assert_resumes_exactly`]) every task's test calls.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The first `n` lines of a bundled JSONL file, written into `dir`.
pub fn head(dir: &Path, source: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(source).unwrap();
    let rows: Vec<&str> = text.lines().take(n).collect();
    let path = dir.join(source.file_name().unwrap());
    std::fs::write(&path, rows.join("\n")).unwrap();
    path
}

pub fn train(recipe: &Path, output: &Path, resume: bool) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mosaic"));
    cmd.arg("train").arg(recipe).arg("--output").arg(output);
    if resume {
        cmd.arg("--resume");
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn latest_step(output: &Path) -> usize {
    std::fs::read_to_string(output.join("checkpoints/latest"))
        .ok()
        .and_then(|s| s.trim().strip_prefix("step-")?.parse().ok())
        .unwrap_or(0)
}

/// Starts a run and signals it once its latest checkpoint reaches `at_step`.
pub fn interrupt_at(
    recipe: &Path,
    output: &Path,
    at_step: usize,
    signal: &str,
) -> std::process::Output {
    let mut child = train(recipe, output, false);
    let deadline = Instant::now() + Duration::from_secs(120);
    while latest_step(output) < at_step {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before step {at_step}"
        );
        assert!(
            Instant::now() < deadline,
            "timed out waiting for step {at_step}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn finish(recipe: &Path, output: &Path) {
    let out = train(recipe, output, true).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How many `checkpoints/step-*` folders a run keeps.
pub fn step_checkpoints(output: &Path) -> usize {
    std::fs::read_dir(output.join("checkpoints"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("step-")
        })
        .count()
}

/// SIGTERM at `at_step`: the run saves a checkpoint, says "interrupted at step", exits non-zero, and does not panic.
pub fn stop_with_sigterm(recipe: &Path, output: &Path, at_step: usize) {
    let out = interrupt_at(recipe, output, at_step, "-TERM");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("interrupted at step") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

fn read(output: &Path, file: &str) -> Vec<u8> {
    std::fs::read(output.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", output.join(file).display()))
}

/// The exact-resume contract, for any recipe that saves a checkpoint every step (`save_every = 1`) and keeps two
/// (`save_total_limit = 2`): a run SIGKILLed at a random checkpoint and resumed, and a run stopped by SIGTERM
/// (which saves a checkpoint and says so) and resumed, both end with every file in `same` byte-identical to an
/// uninterrupted run of `total_steps` steps.
pub fn assert_resumes_exactly(recipe: &Path, dir: &Path, total_steps: usize, same: &[&str]) {
    let reference = dir.join("uninterrupted");
    let out = train(recipe, &reference, false).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(latest_step(&reference), total_steps);
    assert!(reference.join("training.svg").is_file());

    // A "random" step from the clock, away from both ends.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    let kill_at = 2 + nanos % (total_steps - 4);
    let killed = dir.join("killed");
    let out = interrupt_at(recipe, &killed, kill_at, "-KILL");
    assert!(!out.status.success());
    finish(recipe, &killed);
    for file in same {
        assert!(
            read(&killed, file) == read(&reference, file),
            "{file} differs (killed at step ≥ {kill_at})"
        );
    }
    assert!(
        step_checkpoints(&killed) <= 3,
        "save_total_limit 2 (+ the best) is respected"
    );

    let stopped = dir.join("stopped");
    stop_with_sigterm(recipe, &stopped, 3);
    finish(recipe, &stopped);
    for file in same {
        assert!(
            read(&stopped, file) == read(&reference, file),
            "{file} differs after SIGTERM"
        );
    }
}
