//! PyTorch peer figures: runs `../shared/peers/torch_attention.py` with the
//! reference venv's python and parses its report.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cases::{AttnShape, Impl};
use crate::report::Entry;

/// What the peer script measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TorchFigures {
    /// fp32 GEMM 2048³, GFLOP/s.
    pub gemm_gflops: Option<f64>,
    /// SDPA and naive attention entries.
    pub entries: Vec<Entry>,
}

/// Errors of [`run`].
#[derive(Debug)]
pub enum TorchError {
    /// The python could not be started.
    Spawn(std::io::Error),
    /// The script failed; its stderr.
    Failed(String),
}

impl std::fmt::Display for TorchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TorchError::Spawn(e) => write!(f, "could not start python: {e}"),
            TorchError::Failed(stderr) => write!(f, "the PyTorch script failed: {stderr}"),
        }
    }
}

impl std::error::Error for TorchError {}

/// Runs `python script` and parses its output.
pub fn run(python: &Path, script: &Path) -> Result<TorchFigures, TorchError> {
    let out = Command::new(python)
        .arg(script)
        .output()
        .map_err(TorchError::Spawn)?;
    if !out.status.success() {
        return Err(TorchError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// The number right after `label` in `line`.
fn number_after(line: &str, label: &str) -> Option<f64> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Parses the script's lines:
/// `gemm fp32 2048^3: 196.0 GFLOP/s  threads=2` and
/// `B4 H12 N512 D64 causal=False: sdpa fwd 25.0 ms (129 GF/s) naive fwd 196.0 ms | sdpa f+b 95.0 ms naive f+b 1080.0 ms`.
/// Lines it does not recognise are skipped.
pub fn parse(stdout: &str) -> TorchFigures {
    let mut figs = TorchFigures::default();
    for line in stdout.lines() {
        if line.starts_with("gemm") {
            figs.gemm_gflops = number_after(line, ":");
            continue;
        }
        let Some((head, tail)) = line.split_once(':') else {
            continue;
        };
        let mut dims = [None; 4];
        let mut causal = None;
        for tok in head.split_whitespace() {
            let (prefix, value) = tok.split_at(1);
            match prefix {
                "B" => dims[0] = value.parse().ok(),
                "H" => dims[1] = value.parse().ok(),
                "N" => dims[2] = value.parse().ok(),
                "D" => dims[3] = value.parse().ok(),
                _ => causal = tok.strip_prefix("causal=").map(|v| v == "True"),
            }
        }
        let (Some(b), Some(h), Some(n), Some(d), Some(causal)) =
            (dims[0], dims[1], dims[2], dims[3], causal)
        else {
            continue;
        };
        let shape = AttnShape { b, h, n, d, causal };
        figs.entries.push(Entry::attention(
            &shape,
            Impl::TorchSdpa,
            number_after(tail, "sdpa fwd"),
            number_after(tail, "sdpa f+b"),
            None,
        ));
        figs.entries.push(Entry::attention(
            &shape,
            Impl::TorchNaive,
            number_after(tail, "naive fwd"),
            number_after(tail, "naive f+b"),
            None,
        ));
    }
    figs
}

/// The reference venv's python: `$MOSAIC_REFENV_PYTHON`, else `~/.cache/mosaic-refenv/bin/python` when it exists
/// (what `../shared/tools/setup-reference-env.sh` creates).
pub fn default_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOSAIC_REFENV_PYTHON").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/mosaic-refenv/bin/python");
    p.is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_peer_script_output() {
        let out = "gemm fp32 2048^3: 196.0 GFLOP/s  threads=2\n\
                   B4 H12 N512 D64 causal=False: sdpa fwd 25.0 ms (129 GF/s) naive fwd 196.0 ms | sdpa f+b 95.0 ms naive f+b 1080.0 ms\n\
                   B1 H12 N2048 D64 causal=True: sdpa fwd 60.5 ms (106 GF/s) naive fwd 400.0 ms | sdpa f+b 250.0 ms naive f+b 2000.0 ms\n\
                   some warning\n";
        let f = parse(out);
        assert_eq!(f.gemm_gflops, Some(196.0));
        assert_eq!(f.entries.len(), 4);
        let sdpa = &f.entries[0];
        assert_eq!(
            (sdpa.b, sdpa.h, sdpa.n, sdpa.d, sdpa.causal),
            (4, 12, 512, 64, false)
        );
        assert_eq!((sdpa.fwd_ms, sdpa.fwd_bwd_ms), (Some(25.0), Some(95.0)));
        assert_eq!(sdpa.imp, "torch-sdpa");
        let naive = &f.entries[1];
        assert_eq!(
            (naive.fwd_ms, naive.fwd_bwd_ms),
            (Some(196.0), Some(1080.0))
        );
        assert!(f.entries[2].causal);
        assert_eq!(f.entries[2].fwd_ms, Some(60.5));
    }
}
