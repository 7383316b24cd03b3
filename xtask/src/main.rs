//! Workspace automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! Commands:
//! - `fixtures [ARGS...]`: regenerate `fixtures/` with PyTorch + transformers (`xtask/scripts/make_fixtures.py`
//!   with ARGS, then every other `xtask/scripts/make_*.py` with `--out fixtures`).
//! - `bench [ARGS...]`: `cargo bench -p mosaic-benches --bench kernels -- [ARGS...]`: mosaic's kernels
//!   against candle's composed ops, one side-by-side table (`--quick`, `--json FILE`, `--vs-torch`, `--only OPS`).
//! - `bench model [ARGS...]`: `cargo bench -p mosaic-benches --bench model -- [ARGS...]`: whole models (MiniLM
//!   training and inference, GPT-2 training and generation) beside PyTorch, speed and peak memory.
//!   `--profile P` (either bench) builds with cargo profile P instead of `bench` (e.g. `dev`, whose numeric crates
//!   are optimised, to reuse the test build).
//! - `bench data-parallel [--quick] [--profile P]`: one process against `mpirun -np 2` at the same global batch
//!   (`data_parallel.rs`): step time, and the bytes and time of the gradients' all-reduce, full vs LoRA.
//! - `fuzz [--seconds N]`: every libFuzzer target of `fuzz/` for a bounded time (see `fuzz.rs`).
//! - `ci`: `cargo fmt --all --check`, `cargo clippy --workspace --all-targets -- -D warnings`, `cargo test --workspace`.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

mod data_parallel;
mod fuzz;

const USAGE: &str = "\
usage: cargo xtask <command> [args...]

commands:
  fixtures [ARGS...]  regenerate fixtures/ (models, reference outputs) with PyTorch + transformers;
                      ARGS go to xtask/scripts/make_fixtures.py (e.g. --skip-minilm, --minilm-dir DIR);
                      then every other xtask/scripts/make_*.py runs with --out fixtures
  bench [ARGS...]     kernel benchmarks (criterion): mosaic vs candle's composed ops, one table;
                      ARGS: --quick (smoke test), --json FILE, --vs-torch (PyTorch figures from
                      ../shared/peers/torch_attention.py with the reference venv: MOSAIC_REFENV_PYTHON
                      or ~/.cache/mosaic-refenv), --only attention,layer_norm,cross_entropy
  bench model [ARGS...]
                      whole-model benchmarks beside PyTorch + transformers (benches/scripts/torch_model.py):
                      MiniLM train steps and inference, GPT-2 train steps and generation, peak memory;
                      ARGS: --quick, --json FILE, --vs-torch, --only CASES, --minilm SPEC
                      (either bench: --profile P builds with cargo profile P, e.g. dev)
  bench data-parallel [--quick] [--profile P]
                      one process (2 threads) against mpirun -np 2 (1 thread a rank) at the same global
                      batch: step time and the gradients' all-reduce (bytes, seconds), full fine-tuning vs
                      LoRA (needs Open MPI; builds mosaic-cli --features mpi, dev profile by default)
  fuzz [--seconds N] [--only T1,T2] [--timeout S]
                      each libFuzzer target of fuzz/ for N s (default 30): executions, crashes
  ci                  cargo fmt --all --check; cargo clippy --workspace --all-targets -- -D warnings;
                      cargo test --workspace
  help                this text

environment:
  MOSAIC_REFENV_PYTHON  python of a venv with torch + transformers (used by `fixtures`); if unset,
                        ../shared/tools/setup-reference-env.sh (relative to the workspace root) is run to get it";

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = env::args_os().skip(1);
    let Some(cmd) = args.next() else {
        eprintln!("{USAGE}");
        bail!("no command given");
    };
    let rest: Vec<OsString> = args.collect();
    let root = workspace_root()?;
    match cmd.to_str() {
        Some("fixtures") => fixtures(&root, &rest),
        Some("bench") => bench(&root, &rest),
        Some("fuzz") => fuzz::fuzz(&root, &rest),
        Some("ci") => {
            if !rest.is_empty() {
                bail!("`ci` takes no arguments, got {rest:?}");
            }
            ci(&root)
        }
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown command {cmd:?}")
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .with_context(|| format!("{} has no parent directory", manifest_dir.display()))?;
    Ok(root.to_path_buf())
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs `cmd` (inheriting stdio) and fails unless it exits successfully.
fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: running {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------------------------
// fixtures
// ------------------------------------------------------------------------------------------------------------------

fn fixtures(root: &Path, extra: &[OsString]) -> Result<()> {
    let python = reference_python(root)?;
    let script = root.join("xtask/scripts/make_fixtures.py");
    if !script.is_file() {
        bail!("{} is missing", script.display());
    }
    let out = root.join("fixtures");
    run_cmd(
        Command::new(&python)
            .arg(&script)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .current_dir(root),
    )
    .context("generating fixtures failed")?;
    // The other generators (one per model family, e.g. make_gpt2_fixtures.py) take only `--out`.
    for script in extra_fixture_scripts(root)? {
        run_cmd(
            Command::new(&python)
                .arg(&script)
                .arg("--out")
                .arg(&out)
                .current_dir(root),
        )
        .with_context(|| format!("{} failed", script.display()))?;
    }
    eprintln!("xtask: fixtures written to {}", out.display());
    Ok(())
}

/// `xtask/scripts/make_*.py` other than `make_fixtures.py`, sorted by name.
fn extra_fixture_scripts(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("xtask/scripts");
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut scripts = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("make_") && name.ends_with(".py") && name != "make_fixtures.py" {
            scripts.push(path);
        }
    }
    scripts.sort();
    Ok(scripts)
}

/// The python of the reference venv (torch + transformers).
fn reference_python(root: &Path) -> Result<PathBuf> {
    if let Some(py) = env::var_os("MOSAIC_REFENV_PYTHON").filter(|p| !p.is_empty()) {
        let py = PathBuf::from(py);
        check_python(&py).with_context(|| {
            format!(
                "MOSAIC_REFENV_PYTHON={} cannot import torch and transformers",
                py.display()
            )
        })?;
        return Ok(py);
    }
    let setup = root.join("../shared/tools/setup-reference-env.sh");
    if !setup.is_file() {
        bail!(
            "no reference Python environment: set MOSAIC_REFENV_PYTHON to the python of a virtual environment \
             with torch, transformers, safetensors, tokenizers, numpy and scikit-learn (seqeval and \
             sentence-transformers optional), e.g.\n\
             \n    python3 -m venv ~/.cache/mosaic-refenv\
             \n    ~/.cache/mosaic-refenv/bin/pip install torch transformers safetensors tokenizers numpy scikit-learn seqeval\
             \n    MOSAIC_REFENV_PYTHON=~/.cache/mosaic-refenv/bin/python cargo xtask fixtures\n\
             \n(or provide {}, which creates that environment)",
            setup.display()
        );
    }
    eprintln!(
        "xtask: MOSAIC_REFENV_PYTHON unset; running {} (the first time installs torch: minutes)",
        setup.display()
    );
    let output = Command::new("bash")
        .arg(&setup)
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not run {}", setup.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}); set MOSAIC_REFENV_PYTHON to a python with torch + transformers instead",
            setup.display(),
            output.status
        );
    }
    let stdout = String::from_utf8(output.stdout).context("setup script printed non-UTF-8")?;
    let line = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .with_context(|| format!("{} printed no python path", setup.display()))?;
    let py = PathBuf::from(line);
    check_python(&py).with_context(|| {
        format!(
            "{} printed {}, which cannot import torch and transformers",
            setup.display(),
            py.display()
        )
    })?;
    Ok(py)
}

fn check_python(py: &Path) -> Result<()> {
    let status = Command::new(py)
        .args(["-c", "import torch, transformers"])
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("could not run {}", py.display()))?;
    if !status.success() {
        bail!("`{} -c 'import torch, transformers'` failed", py.display());
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------------------------
// bench, ci
// ------------------------------------------------------------------------------------------------------------------

fn bench(root: &Path, extra: &[OsString]) -> Result<()> {
    let (target, extra) = match extra.first().and_then(|a| a.to_str()) {
        Some("data-parallel") => return data_parallel::bench_data_parallel(root, &extra[1..]),
        Some("model") => ("model", &extra[1..]),
        _ => ("kernels", extra),
    };
    // cargo runs the bench binary from benches/: make path arguments absolute
    // relative to where the user is.
    let cwd = env::current_dir().context("cannot read the current directory")?;
    let mut args: Vec<OsString> = Vec::with_capacity(extra.len() + 2);
    let mut profile: Option<OsString> = None;
    let mut it = extra.iter();
    let mut has_script = false;
    while let Some(arg) = it.next() {
        if arg == "--profile" {
            profile = Some(it.next().context("--profile needs a value")?.clone());
            continue;
        }
        args.push(arg.clone());
        let takes_path = matches!(
            arg.to_str(),
            Some("--json" | "--torch-python" | "--torch-script")
        );
        has_script |= arg == "--torch-script";
        if takes_path && let Some(value) = it.next() {
            args.push(cwd.join(value).into_os_string());
        }
    }
    let script = root.join("../shared/peers/torch_attention.py");
    if target == "kernels"
        && args.iter().any(|a| a == "--vs-torch")
        && !has_script
        && script.is_file()
    {
        args.push("--torch-script".into());
        args.push(script.into_os_string());
    }
    let mut cmd = Command::new(cargo());
    cmd.args(["bench", "-p", "mosaic-benches", "--bench", target]);
    if let Some(p) = profile {
        cmd.arg("--profile").arg(p);
    }
    run_cmd(cmd.arg("--").args(&args).current_dir(root))
}

fn ci(root: &Path) -> Result<()> {
    let steps: [&[&str]; 3] = [
        &["fmt", "--all", "--check"],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &["test", "--workspace"],
    ];
    for step in steps {
        run_cmd(Command::new(cargo()).args(step).current_dir(root))?;
    }
    eprintln!("xtask: ci passed");
    Ok(())
}
