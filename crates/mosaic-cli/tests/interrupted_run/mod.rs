//! Running `mosaic train` as a child process, interrupting it at a chosen checkpoint and resuming it: shared by the
//! exact-resume tests of the text classifiers and of causal LMs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
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
