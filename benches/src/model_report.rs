//! The whole-model table: mosaic beside PyTorch per case, speed ratio (PyTorch time / mosaic time, so > 1 means
//! mosaic is faster) and peak resident memory of each.

use std::fmt::Write;

use crate::model_cases::{CaseResult, MODEL_CASES};

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
    })
}

fn time_cell(r: &CaseResult) -> String {
    match r.tokens_per_s {
        Some(t) => format!("{t:.1} tok/s"),
        None => format!("{:.1} ms", r.ms),
    }
}

/// One row per case that has a mosaic result, in [`MODEL_CASES`] order.
pub fn model_table(results: &[CaseResult]) -> String {
    let find = |case: &str, imp: &str| results.iter().find(|r| r.case == case && r.imp == imp);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>14} {:>14} {:>8} {:>11} {:>11} {:>9}",
        "case", "mosaic", "pytorch", "speed", "mosaic mem", "torch mem", "mem ratio"
    );
    for case in MODEL_CASES {
        let Some(m) = find(case.name, "mosaic") else {
            continue;
        };
        let t = find(case.name, "torch");
        let speed = t.map_or("-".into(), |t| format!("{:.2}x", t.ms / m.ms));
        let mem_ratio = match (m.peak_rss_bytes, t.and_then(|t| t.peak_rss_bytes)) {
            (Some(a), Some(b)) if b > 0 => format!("{:.2}", a as f64 / b as f64),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<22} {:>14} {:>14} {:>8} {:>11} {:>11} {:>9}",
            case.name,
            time_cell(m),
            t.map_or("-".into(), time_cell),
            speed,
            mib(m.peak_rss_bytes),
            mib(t.and_then(|t| t.peak_rss_bytes)),
            mem_ratio,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(case: &str, imp: &str, ms: f64, rss: u64) -> CaseResult {
        CaseResult {
            case: case.into(),
            imp: imp.into(),
            ms,
            tokens_per_s: None,
            peak_rss_bytes: Some(rss),
        }
    }

    #[test]
    fn ratio_is_torch_time_over_mosaic_time() {
        let rows = [
            result("minilm-train-16x64", "mosaic", 500.0, 100 << 20),
            result("minilm-train-16x64", "torch", 1000.0, 400 << 20),
        ];
        let text = model_table(&rows);
        assert!(text.contains("2.00x"), "{text}");
        assert!(text.contains("0.25"), "{text}");
        assert!(text.contains("100 MiB"), "{text}");
    }
}
