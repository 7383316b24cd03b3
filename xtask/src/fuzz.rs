//! `cargo xtask fuzz`: runs every libFuzzer target of `fuzz/` for a bounded time, one after the other, and
//! prints how many inputs each executed and what it found.
//!
//! cargo-fuzz needs a nightly compiler for its sanitizer flags; the workspace pins a stable one, so the runs set
//! `RUSTC_BOOTSTRAP=1`, which lets stable rustc accept them. Each target reads `fuzz/seeds/<target>` (committed
//! starting inputs) and grows `fuzz/corpus/<target>` (kept between runs, not committed); a crashing input lands
//! in `fuzz/artifacts/<target>/` and must become a regression test in the crate at fault.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// The help text of the subcommand.
const USAGE: &str = "\
  fuzz [--seconds N] [--only T1,T2] [--timeout S]
                      run each libFuzzer target of fuzz/ for N seconds (default 30), one at a time,
                      niced; prints executions and crashes per target (needs `cargo install cargo-fuzz`;
                      the pinned stable toolchain builds it with RUSTC_BOOTSTRAP=1). --timeout: seconds one
                      input may take before it counts as a hang (default 10)";

const DEFAULT_SECONDS: u64 = 30;
const DEFAULT_INPUT_TIMEOUT: u64 = 10;
/// libFuzzer's own default, stated so that an input that allocates gigabytes is reported as a finding (an
/// `oom-*` artifact) rather than taking the shared machine down.
const RSS_LIMIT_MB: u64 = 2048;

struct Options {
    seconds: u64,
    input_timeout: u64,
    only: Option<Vec<String>>,
}

/// What one target's run found.
struct Outcome {
    target: String,
    executions: Option<u64>,
    execs_per_second: Option<u64>,
    corpus_size: usize,
    /// Failing inputs libFuzzer wrote to `fuzz/artifacts/<target>/` during this run (crash-, oom-, timeout-,
    /// leak-).
    artifacts: Vec<PathBuf>,
    /// Inputs that took longer than libFuzzer's `-report_slow_units` (slow-unit-): worth a look, not failures.
    slow_units: Vec<PathBuf>,
    /// The first line of the report that names the failure (a panic message or a sanitizer summary).
    failure: Option<String>,
    log: PathBuf,
}

/// Runs `cargo xtask fuzz [ARGS...]`.
pub fn fuzz(root: &Path, args: &[OsString]) -> Result<()> {
    let options = parse_options(args)?;
    let fuzz_dir = root.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").is_file() {
        bail!("{} has no Cargo.toml", fuzz_dir.display());
    }
    check_cargo_fuzz(root)?;
    let mut targets = list_targets(root)?;
    if let Some(only) = &options.only {
        if let Some(unknown) = only.iter().find(|t| !targets.contains(t)) {
            bail!(
                "no fuzz target `{unknown}` (targets: {})",
                targets.join(", ")
            );
        }
        targets.retain(|t| only.contains(t));
    }

    // One build for all targets, then the binaries run directly: the time budget is spent fuzzing, and every
    // target tests the same snapshot of the code even while the tree changes under it.
    let status = Command::new("nice")
        .args(["-n", "10"])
        .arg(super::cargo())
        .args(["fuzz", "build"])
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
        .context("could not start `cargo fuzz build`")?;
    if !status.success() {
        bail!("`cargo fuzz build` failed ({status})");
    }
    let binaries = fuzz_dir.join("target").join(host_triple()?).join("release");

    let mut outcomes = Vec::with_capacity(targets.len());
    for target in &targets {
        eprintln!("xtask: fuzzing {target} for {} s (niced)", options.seconds);
        outcomes.push(run_target(root, &binaries.join(target), target, &options)?);
    }

    println!();
    println!(
        "{:<18} {:>12} {:>9} {:>8}  result",
        "target", "executions", "exec/s", "corpus"
    );
    for outcome in &outcomes {
        let show = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let result = if outcome.artifacts.is_empty() && outcome.failure.is_none() {
            "no crash".to_owned()
        } else {
            format!(
                "CRASH: {} ({})",
                outcome.failure.as_deref().unwrap_or("see the log"),
                outcome
                    .artifacts
                    .iter()
                    .map(|a| a.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        println!(
            "{:<18} {:>12} {:>9} {:>8}  {result}",
            outcome.target,
            show(outcome.executions),
            show(outcome.execs_per_second),
            outcome.corpus_size,
        );
    }
    for outcome in &outcomes {
        for slow in &outcome.slow_units {
            println!(
                "{}: slow input (not a failure): {}",
                outcome.target,
                slow.display()
            );
        }
    }
    let total: u64 = outcomes.iter().filter_map(|o| o.executions).sum();
    println!("total executions: {total}");

    let crashed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.artifacts.is_empty() || o.failure.is_some())
        .collect();
    if !crashed.is_empty() {
        for outcome in &crashed {
            eprintln!("xtask: {} log: {}", outcome.target, outcome.log.display());
        }
        bail!(
            "{} target(s) crashed: reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET ARTIFACT`, fix the \
             crate at fault and keep the input as a regression test",
            crashed.len()
        );
    }
    Ok(())
}

fn parse_options(args: &[OsString]) -> Result<Options> {
    let mut options = Options {
        seconds: DEFAULT_SECONDS,
        input_timeout: DEFAULT_INPUT_TIMEOUT,
        only: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .to_str()
            .with_context(|| format!("argument {arg:?} is not UTF-8"))?;
        let mut value = |name: &str| -> Result<String> {
            it.next()
                .and_then(|v| v.to_str())
                .map(str::to_owned)
                .with_context(|| format!("{name} needs a value"))
        };
        let positive = |name: &str, text: &str| -> Result<u64> {
            match text.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{name} takes a positive whole number of seconds, got `{text}`"),
            }
        };
        match arg {
            "--seconds" => options.seconds = positive(arg, &value(arg)?)?,
            "--timeout" => options.input_timeout = positive(arg, &value(arg)?)?,
            "--only" => {
                options.only = Some(
                    value(arg)?
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            "--help" | "-h" => {
                println!("usage: cargo xtask\n{USAGE}");
                std::process::exit(0);
            }
            other => bail!("`fuzz` does not take `{other}`\nusage: cargo xtask\n{USAGE}"),
        }
    }
    Ok(options)
}

/// `cargo fuzz` in the workspace root, with the flag that lets the stable toolchain build it.
fn fuzz_command(root: &Path) -> Command {
    let mut cmd = Command::new(super::cargo());
    cmd.arg("fuzz")
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn check_cargo_fuzz(root: &Path) -> Result<()> {
    let installed = fuzz_command(root)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        bail!(
            "cargo-fuzz is not installed: run `cargo install cargo-fuzz` (it builds with the pinned toolchain)"
        );
    }
    Ok(())
}

fn list_targets(root: &Path) -> Result<Vec<String>> {
    let output = fuzz_command(root)
        .arg("list")
        .output()
        .context("could not run `cargo fuzz list`")?;
    if !output.status.success() {
        bail!(
            "`cargo fuzz list` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let targets: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` names no targets");
    }
    Ok(targets)
}

/// The triple cargo-fuzz builds for (the host's), which names its output folder.
fn host_triple() -> Result<String> {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("could not run `rustc -vV`")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
        .context("`rustc -vV` names no host triple")
}

fn run_target(root: &Path, binary: &Path, target: &str, options: &Options) -> Result<Outcome> {
    if !binary.is_file() {
        bail!("{} was not built by `cargo fuzz build`", binary.display());
    }
    let fuzz_dir = root.join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    let seeds = fuzz_dir.join("seeds").join(target);
    let artifacts_dir = fuzz_dir.join("artifacts").join(target);
    for dir in [&corpus, &artifacts_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log = fuzz_dir.join("artifacts").join(format!("{target}.log"));
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let log_for_stderr = log_file
        .try_clone()
        .with_context(|| format!("cannot reopen {}", log.display()))?;
    let started = SystemTime::now();

    // Niced: the machine's cores are shared with builds and tests.
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "10"]).arg(binary).arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg(format!("-max_total_time={}", options.seconds))
        .arg(format!("-timeout={}", options.input_timeout))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={}/", artifacts_dir.display()))
        .arg("-print_final_stats=1");
    let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let status = cmd
        .current_dir(root)
        .stdout(log_file)
        .stderr(log_for_stderr)
        .status()
        .with_context(|| format!("could not start {}", binary.display()))?;

    let text =
        std::fs::read_to_string(&log).with_context(|| format!("cannot read {}", log.display()))?;
    let (slow_units, artifacts): (Vec<PathBuf>, Vec<PathBuf>) =
        files_newer_than(&artifacts_dir, started)?
            .into_iter()
            .partition(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("slow-unit-"))
            });
    let failure = if status.success() {
        None
    } else {
        Some(failure_line(&text).unwrap_or_else(|| format!("{target} exited with {status}")))
    };
    Ok(Outcome {
        target: target.to_owned(),
        executions: final_stat(&text, "number_of_executed_units")
            .or_else(|| last_status_count(&text)),
        execs_per_second: final_stat(&text, "average_exec_per_sec"),
        corpus_size: count_files(&corpus)?,
        artifacts,
        slow_units,
        failure,
        log,
    })
}

/// A value of libFuzzer's `-print_final_stats=1` block (`stat::number_of_executed_units: 1234`).
fn final_stat(log: &str, name: &str) -> Option<u64> {
    let key = format!("stat::{name}:");
    log.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// The count of the last status line (`#123456 pulse  cov: ...`), for runs that died before the final stats.
fn last_status_count(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        let rest = line.strip_prefix('#')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The line that says what failed: a Rust panic, or a libFuzzer / sanitizer error.
fn failure_line(log: &str) -> Option<String> {
    let patterns = [
        "panicked at",
        "==ERROR: libFuzzer",
        "ERROR: AddressSanitizer",
        "SUMMARY:",
        "ALARM: working on the last Unit",
    ];
    let lines: Vec<&str> = log.lines().collect();
    for pattern in patterns {
        if let Some(i) = lines.iter().position(|l| l.contains(pattern)) {
            // A panic's message is on the line after `panicked at FILE:LINE:`.
            let mut found = lines[i].trim().to_owned();
            if pattern == "panicked at"
                && let Some(next) = lines.get(i + 1)
            {
                found = format!("{found} {}", next.trim());
            }
            return Some(found);
        }
    }
    None
}

fn files_newer_than(dir: &Path, since: SystemTime) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let modified = entry.metadata().and_then(|m| m.modified()).ok();
        if entry.path().is_file() && modified.is_some_and(|m| m >= since) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

fn count_files(dir: &Path) -> Result<usize> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "#4096\tpulse  cov: 10 ft: 20\nDone 5000 runs in 3 second(s)\n\
                   stat::number_of_executed_units: 5000\nstat::average_exec_per_sec:     1666\n";
        assert_eq!(final_stat(log, "number_of_executed_units"), Some(5000));
        assert_eq!(final_stat(log, "average_exec_per_sec"), Some(1666));
        assert_eq!(last_status_count(log), Some(4096));
    }

    #[test]
    fn names_the_panic() {
        let log = "INFO: seed\nthread '<unnamed>' panicked at src/x.rs:3:5:\nindex out of bounds\n\
                   ==123== ERROR: libFuzzer: deadly signal\n";
        assert_eq!(
            failure_line(log).as_deref(),
            Some("thread '<unnamed>' panicked at src/x.rs:3:5: index out of bounds")
        );
    }
}
