//! `cargo xtask bench` (= `cargo bench -p mosaic-benches --bench kernels -- ARGS`):
//! mosaic's fused kernels against candle's composed ops, timed by criterion,
//! printed as one side-by-side table and optionally written as JSON.
//!
//! ARGS: `--quick` (smoke test: the smallest attention shape, short timings, no
//! memory series), `--json FILE`, `--vs-torch` (add PyTorch's figures from the
//! peer script; `--torch-python PY` / `--torch-script PATH` override where
//! they are looked for), `--only OP[,OP]` (attention, layer_norm,
//! cross_entropy), `--mosaic-only` (skip candle's versions, for profiling).

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use candle_core::Result;
use criterion::Criterion;
use mosaic_benches::alloc::{CountingAlloc, measure_peak};
use mosaic_benches::cases::{self, ATTENTION_SHAPES, AttnShape, Impl};
use mosaic_benches::report::{Entry, GemmPeaks, memory_table, table};
use mosaic_benches::torch;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const USAGE: &str = "usage: kernels [--quick] [--json FILE] [--vs-torch] [--torch-python PY] \
                     [--torch-script PATH] [--only attention,layer_norm,cross_entropy] [--mosaic-only]";

#[derive(Debug, Default)]
struct Args {
    quick: bool,
    json: Option<PathBuf>,
    vs_torch: bool,
    torch_python: Option<PathBuf>,
    torch_script: Option<PathBuf>,
    only: Option<Vec<String>>,
    mosaic_only: bool,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = Some(value("--json")?.into()),
            "--vs-torch" => args.vs_torch = true,
            "--mosaic-only" => args.mosaic_only = true,
            "--torch-python" => args.torch_python = Some(value("--torch-python")?.into()),
            "--torch-script" => args.torch_script = Some(value("--torch-script")?.into()),
            "--only" => {
                args.only = Some(
                    value("--only")?
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .collect(),
                )
            }
            // `cargo bench` passes `--bench`; criterion-style filters are not used.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// Times closures with criterion and keeps the per-iteration times of the
/// measured samples (criterion's warm-up calls come first and are dropped).
struct Timer {
    crit: Criterion,
    samples: usize,
}

impl Timer {
    fn new(quick: bool) -> Self {
        let samples = 10;
        // Criterion writes under ./target/criterion by default, and cargo runs
        // benches from the package directory: use the workspace target dir.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let crit = Criterion::default()
            .output_directory(&target.join("criterion"))
            .sample_size(samples)
            .warm_up_time(Duration::from_millis(if quick { 200 } else { 1000 }))
            .measurement_time(Duration::from_millis(if quick { 500 } else { 3000 }))
            .without_plots();
        Self { crit, samples }
    }

    /// Median milliseconds per call of `f`.
    fn median_ms(&mut self, id: &str, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        let log: RefCell<Vec<(u64, Duration)>> = RefCell::new(Vec::new());
        let error: RefCell<Option<candle_core::Error>> = RefCell::new(None);
        self.crit.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    if let Err(e) = f() {
                        error.borrow_mut().get_or_insert(e);
                    }
                }
                let elapsed = start.elapsed();
                log.borrow_mut().push((iters, elapsed));
                elapsed
            })
        });
        if let Some(e) = error.into_inner() {
            return Err(e);
        }
        let log = log.into_inner();
        let mut per_iter: Vec<f64> = log[log.len().saturating_sub(self.samples)..]
            .iter()
            .map(|&(n, d)| d.as_secs_f64() * 1e3 / n.max(1) as f64)
            .collect();
        per_iter.sort_by(f64::total_cmp);
        Ok(per_iter[per_iter.len() / 2])
    }
}

fn shape_id(s: &AttnShape) -> String {
    format!(
        "B{}H{}N{}D{}{}",
        s.b,
        s.h,
        s.n,
        s.d,
        if s.causal { "causal" } else { "" }
    )
}

fn bench_attention(
    timer: &mut Timer,
    s: &AttnShape,
    impls: &[Impl],
    out: &mut Vec<Entry>,
) -> Result<()> {
    let [q, k, v] = cases::attention_inputs(s)?;
    let (q, k, v) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
    for &imp in impls {
        let id = format!("attention/{}/{}", shape_id(s), imp.name());
        // Forward only: detached inputs, so no graph is recorded.
        let (qd, kd, vd) = (q.detach(), k.detach(), v.detach());
        let (y, peak) = measure_peak(|| cases::attention(imp, &qd, &kd, &vd, s.causal));
        drop(y?);
        let fwd = timer.median_ms(&format!("{id}/fwd"), || {
            cases::attention(imp, &qd, &kd, &vd, s.causal).map(drop)
        })?;
        let fwd_bwd = timer.median_ms(&format!("{id}/fwd+bwd"), || {
            cases::forward_backward(|| cases::attention(imp, q, k, v, s.causal)).map(drop)
        })?;
        out.push(Entry::attention(
            s,
            imp,
            Some(fwd),
            Some(fwd_bwd),
            Some(peak as u64),
        ));
    }
    Ok(())
}

fn bench_layer_norm(timer: &mut Timer, impls: &[Impl], out: &mut Vec<Entry>) -> Result<()> {
    let shape = cases::LAYER_NORM_SHAPE;
    let [x, w, b] = cases::layer_norm_inputs(&shape)?;
    for &imp in impls {
        let id = format!(
            "layer_norm/{}x{}x{}/{}",
            shape[0],
            shape[1],
            shape[2],
            imp.name()
        );
        let (xd, wd, bd) = (x.detach(), w.detach(), b.detach());
        let (y, peak) = measure_peak(|| cases::layer_norm(imp, &xd, &wd, &bd));
        drop(y?);
        let fwd = timer.median_ms(&format!("{id}/fwd"), || {
            cases::layer_norm(imp, &xd, &wd, &bd).map(drop)
        })?;
        let fwd_bwd = timer.median_ms(&format!("{id}/fwd+bwd"), || {
            cases::forward_backward(|| cases::layer_norm(imp, &x, &w, &b)).map(drop)
        })?;
        out.push(Entry {
            op: "layer_norm".into(),
            b: shape[0],
            h: 1,
            n: shape[1],
            d: shape[2],
            causal: false,
            imp: imp.name().into(),
            fwd_ms: Some(fwd),
            fwd_bwd_ms: Some(fwd_bwd),
            peak_bytes: Some(peak as u64),
        });
    }
    Ok(())
}

fn bench_cross_entropy(timer: &mut Timer, impls: &[Impl], out: &mut Vec<Entry>) -> Result<()> {
    let shape = cases::CROSS_ENTROPY_SHAPE;
    let (logits, labels) = cases::cross_entropy_inputs(&shape)?;
    for &imp in impls {
        let id = format!(
            "cross_entropy/{}x{}x{}/{}",
            shape[0],
            shape[1],
            shape[2],
            imp.name()
        );
        let detached = logits.detach();
        let (y, peak) = measure_peak(|| cases::cross_entropy(imp, &detached, &labels));
        drop(y?);
        let fwd = timer.median_ms(&format!("{id}/fwd"), || {
            cases::cross_entropy(imp, &detached, &labels).map(drop)
        })?;
        let fwd_bwd = timer.median_ms(&format!("{id}/fwd+bwd"), || {
            cases::forward_backward(|| cases::cross_entropy(imp, &logits, &labels)).map(drop)
        })?;
        out.push(Entry {
            op: "cross_entropy".into(),
            b: shape[0],
            h: 1,
            n: shape[1],
            d: shape[2],
            causal: false,
            imp: imp.name().into(),
            fwd_ms: Some(fwd),
            fwd_bwd_ms: Some(fwd_bwd),
            peak_bytes: Some(peak as u64),
        });
    }
    Ok(())
}

/// Forward peak memory against N: one timed run per point.
fn memory_series(impls: &[Impl], out: &mut Vec<Entry>) -> Result<()> {
    for (imp, ns) in [
        (Impl::Mosaic, &[1024usize, 2048, 4096][..]),
        (Impl::Candle, &[1024usize, 2048][..]),
    ] {
        if !impls.contains(&imp) {
            continue;
        }
        for &n in ns {
            let s = AttnShape {
                b: 1,
                h: 12,
                n,
                d: 64,
                causal: false,
            };
            eprintln!("memory series: {} N={n}", imp.name());
            let [q, k, v] = cases::attention_inputs(&s)?;
            let (q, k, v) = (q.detach(), k.detach(), v.detach());
            let start = Instant::now();
            let (y, peak) = measure_peak(|| cases::attention(imp, &q, &k, &v, false));
            let ms = start.elapsed().as_secs_f64() * 1e3;
            drop(y?);
            let mut e = Entry::attention(&s, imp, Some(ms), None, Some(peak as u64));
            e.op = "attention_peak".into();
            out.push(e);
        }
    }
    Ok(())
}

fn run(args: &Args) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let wants = |op: &str| args.only.as_ref().is_none_or(|o| o.iter().any(|x| x == op));
    eprintln!(
        "mosaic kernels use {} with {} threads",
        mosaic_kernels::active_isa(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut timer = Timer::new(args.quick);
    let impls: &[Impl] = if args.mosaic_only {
        &[Impl::Mosaic]
    } else {
        &[Impl::Mosaic, Impl::Candle]
    };
    let mut entries = Vec::new();
    if wants("attention") {
        let shapes: &[AttnShape] = if args.quick {
            &ATTENTION_SHAPES[..1]
        } else {
            &ATTENTION_SHAPES
        };
        for s in shapes {
            bench_attention(&mut timer, s, impls, &mut entries)?;
        }
    }
    if wants("layer_norm") {
        bench_layer_norm(&mut timer, impls, &mut entries)?;
    }
    if wants("cross_entropy") {
        bench_cross_entropy(&mut timer, impls, &mut entries)?;
    }
    if wants("attention") && !args.quick {
        memory_series(impls, &mut entries)?;
    }

    let mut gemm = GemmPeaks::default();
    if !args.quick {
        gemm.candle = Some(cases::candle_gemm_gflops(2048, 5)?);
    }
    if args.vs_torch {
        let python = args.torch_python.clone().or_else(torch::default_python);
        let script = args.torch_script.clone().unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/torch_attention.py")
        });
        match python {
            None => eprintln!(
                "--vs-torch: no reference venv (set MOSAIC_REFENV_PYTHON or create ~/.cache/mosaic-refenv); skipping PyTorch"
            ),
            Some(_) if !script.is_file() => {
                eprintln!(
                    "--vs-torch: {} not found; skipping PyTorch",
                    script.display()
                )
            }
            Some(py) => {
                eprintln!("running {} {}", py.display(), script.display());
                let figs = torch::run(&py, &script)?;
                gemm.torch = figs.gemm_gflops;
                let keep_shape = |e: &Entry| {
                    entries.iter().any(|m| {
                        m.op == e.op
                            && (m.b, m.h, m.n, m.d, m.causal) == (e.b, e.h, e.n, e.d, e.causal)
                    })
                };
                let figs: Vec<Entry> = figs.entries.into_iter().filter(keep_shape).collect();
                entries.extend(figs);
            }
        }
    }

    let show_gemm = (gemm.candle.is_some() || gemm.torch.is_some()).then_some(&gemm);
    println!("\n{}", table(&entries, show_gemm));
    let mem = memory_table(&entries);
    if !mem.is_empty() {
        println!("{mem}");
    }
    if let Some(path) = &args.json {
        mosaic_benches::report::write_json_atomic(path, &entries)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kernels: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernels: error: {e}");
            ExitCode::FAILURE
        }
    }
}
