//! Results: one [`Entry`] per (op, shape, implementation), the side-by-side
//! table (markdown, so it pastes into notes) and the JSON list.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cases::{AttnShape, FWD_BWD_FLOP_FACTOR, Impl, attention_flops};

/// One measured figure set, serialised exactly as
/// `{"op","b","h","n","d","causal","impl","fwd_ms","fwd_bwd_ms","peak_bytes"}`.
///
/// For `layer_norm`, `(b, n, d)` is the `(batch, tokens, hidden)` input and
/// `h` is 1; for `cross_entropy`, `b × n` rows of `d` classes. `peak_bytes`
/// is the forward pass's peak allocation (inputs excluded, output included).
/// `attention_peak` entries are single forward runs of the memory-scaling
/// series (timed once, no backward).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub op: String,
    pub b: usize,
    pub h: usize,
    pub n: usize,
    pub d: usize,
    pub causal: bool,
    #[serde(rename = "impl")]
    pub imp: String,
    pub fwd_ms: Option<f64>,
    pub fwd_bwd_ms: Option<f64>,
    pub peak_bytes: Option<u64>,
}

impl Entry {
    /// An attention entry.
    pub fn attention(
        s: &AttnShape,
        imp: Impl,
        fwd_ms: Option<f64>,
        fwd_bwd_ms: Option<f64>,
        peak_bytes: Option<u64>,
    ) -> Self {
        Self {
            op: "attention".into(),
            b: s.b,
            h: s.h,
            n: s.n,
            d: s.d,
            causal: s.causal,
            imp: imp.name().into(),
            fwd_ms,
            fwd_bwd_ms,
            peak_bytes,
        }
    }

    fn key(&self) -> (String, usize, usize, usize, usize, bool) {
        (self.op.clone(), self.b, self.h, self.n, self.d, self.causal)
    }

    fn shape(&self) -> AttnShape {
        AttnShape {
            b: self.b,
            h: self.h,
            n: self.n,
            d: self.d,
            causal: self.causal,
        }
    }
}

/// GEMM reference points, GFLOP/s.
#[derive(Debug, Clone, Copy, Default)]
pub struct GemmPeaks {
    /// candle's matmul, 2048³.
    pub candle: Option<f64>,
    /// PyTorch's matmul, 2048³ (from the peer script).
    pub torch: Option<f64>,
}

impl GemmPeaks {
    /// The higher of the measured figures: the GEMM peak of this machine, as
    /// far as this run can tell.
    pub fn best(&self) -> Option<f64> {
        match (self.candle, self.torch) {
            (Some(c), Some(t)) => Some(c.max(t)),
            (c, t) => c.or(t),
        }
    }
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else if v >= 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    })
}

fn ratio(slow: Option<f64>, fast: Option<f64>) -> String {
    match (slow, fast) {
        (Some(s), Some(f)) if f > 0.0 => format!("{:.2}x", s / f),
        _ => "-".into(),
    }
}

fn gflops(flops: Option<f64>, ms: Option<f64>) -> String {
    match (flops, ms) {
        (Some(fl), Some(t)) if t > 0.0 => format!("{:.0}", fl / (t * 1e6)),
        _ => "-".into(),
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.1}", b as f64 / (1 << 20) as f64)
    })
}

/// The side-by-side table of the timed entries (`attention_peak` entries go
/// to [`memory_table`]): per (op, shape) one row with mosaic's and candle's
/// times, their ratio (candle / mosaic: how many times faster mosaic is),
/// GFLOP/s (attention), peak forward memory and, when present, PyTorch SDPA's
/// times and mosaic's speed-up over them. A footer relates mosaic's attention
/// forward throughput to the GEMM peaks.
pub fn table(entries: &[Entry], gemm: Option<&GemmPeaks>) -> String {
    let mut groups: BTreeMap<_, BTreeMap<String, &Entry>> = BTreeMap::new();
    let mut order = Vec::new();
    for e in entries.iter().filter(|e| e.op != "attention_peak") {
        let key = e.key();
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().insert(e.imp.clone(), e);
    }
    let mut out = String::new();
    let header = [
        "op",
        "B",
        "H",
        "N",
        "D",
        "causal",
        "fwd ms mosaic",
        "fwd ms candle",
        "fwd x",
        "f+b ms mosaic",
        "f+b ms candle",
        "f+b x",
        "GFLOP/s mosaic fwd / f+b",
        "GFLOP/s candle fwd / f+b",
        "peak MiB mosaic / candle",
        "torch sdpa fwd / f+b ms",
        "mosaic vs sdpa fwd / f+b",
    ];
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        header
            .iter()
            .map(|h| format!("{}|", "-".repeat(h.len() + 2)))
            .collect::<String>()
    );
    let mut best_fwd_fraction: Option<(AttnShape, f64)> = None;
    for key in &order {
        let g = &groups[key];
        let get = |imp: Impl| g.get(imp.name()).copied();
        let (m, c, t) = (get(Impl::Mosaic), get(Impl::Candle), get(Impl::TorchSdpa));
        let any = m.or(c).or(t).expect("groups are never empty");
        let fwd = |e: Option<&Entry>| e.and_then(|e| e.fwd_ms);
        let fb = |e: Option<&Entry>| e.and_then(|e| e.fwd_bwd_ms);
        let is_attn = any.op == "attention";
        let flops = is_attn.then(|| attention_flops(&any.shape()));
        let flops_fb = flops.map(|f| f * FWD_BWD_FLOP_FACTOR);
        if let (true, Some(fl), Some(t_ms), Some(peak)) =
            (is_attn, flops, fwd(m), gemm.and_then(GemmPeaks::best))
        {
            let frac = fl / (t_ms * 1e6) / peak;
            if best_fwd_fraction.is_none_or(|(_, f)| frac > f) {
                best_fwd_fraction = Some((any.shape(), frac));
            }
        }
        let row = [
            any.op.clone(),
            any.b.to_string(),
            any.h.to_string(),
            any.n.to_string(),
            any.d.to_string(),
            any.causal.to_string(),
            ms(fwd(m)),
            ms(fwd(c)),
            ratio(fwd(c), fwd(m)),
            ms(fb(m)),
            ms(fb(c)),
            ratio(fb(c), fb(m)),
            format!("{} / {}", gflops(flops, fwd(m)), gflops(flops_fb, fb(m))),
            format!("{} / {}", gflops(flops, fwd(c)), gflops(flops_fb, fb(c))),
            format!(
                "{} / {}",
                mib(m.and_then(|e| e.peak_bytes)),
                mib(c.and_then(|e| e.peak_bytes))
            ),
            format!("{} / {}", ms(fwd(t)), ms(fb(t))),
            format!("{} / {}", ratio(fwd(t), fwd(m)), ratio(fb(t), fb(m))),
        ];
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    if let Some(g) = gemm {
        let mut line = String::from("\nGEMM 2048^3 fp32:");
        if let Some(c) = g.candle {
            let _ = write!(line, " candle {c:.0} GFLOP/s;");
        }
        if let Some(t) = g.torch {
            let _ = write!(line, " torch {t:.0} GFLOP/s;");
        }
        if let Some((s, frac)) = best_fwd_fraction {
            let _ = write!(
                line,
                " best mosaic attention forward ({},{},{},{}{}) = {:.0}% of the best GEMM figure.",
                s.b,
                s.h,
                s.n,
                s.d,
                if s.causal { " causal" } else { "" },
                frac * 100.0,
            );
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(
        "\nx = candle ms / mosaic ms (and sdpa ms / mosaic ms): above 1 means mosaic is faster. \
         Peak = forward pass allocations beyond the inputs. f+b GFLOP/s counts 3.5x the forward FLOPs.\n",
    );
    out
}

/// The memory-scaling table of the `attention_peak` entries: forward peak
/// bytes against N, per implementation.
pub fn memory_table(entries: &[Entry]) -> String {
    let peaks: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.op == "attention_peak")
        .collect();
    if peaks.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "| attention forward peak | B | H | N | D | impl | peak MiB | MiB per key | fwd ms |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for e in peaks {
        let per_key = e
            .peak_bytes
            .map(|b| b as f64 / (1 << 20) as f64 / e.n as f64);
        let _ = writeln!(
            out,
            "| | {} | {} | {} | {} | {} | {} | {} | {} |",
            e.b,
            e.h,
            e.n,
            e.d,
            e.imp,
            mib(e.peak_bytes),
            per_key.map_or("-".into(), |v| format!("{v:.4}")),
            ms(e.fwd_ms)
        );
    }
    out
}

/// Writes `value` as pretty JSON to `path` through a temporary file and a rename, so a crash leaves no half file.
pub fn write_json_atomic(
    path: &std::path::Path,
    value: &impl serde::Serialize,
) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_exactly_the_issue_fields() {
        let s = AttnShape {
            b: 4,
            h: 12,
            n: 512,
            d: 64,
            causal: true,
        };
        let e = Entry::attention(&s, Impl::Mosaic, Some(1.5), None, Some(42));
        let v = serde_json::to_value(vec![e.clone()]).unwrap();
        let obj = v[0].as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "b",
                "causal",
                "d",
                "fwd_bwd_ms",
                "fwd_ms",
                "h",
                "impl",
                "n",
                "op",
                "peak_bytes"
            ]
        );
        assert_eq!(obj["impl"], "mosaic");
        assert!(obj["fwd_bwd_ms"].is_null());
        let back: Vec<Entry> = serde_json::from_value(v).unwrap();
        assert_eq!(back, vec![e]);
    }

    #[test]
    fn table_puts_implementations_side_by_side() {
        let s = AttnShape {
            b: 4,
            h: 12,
            n: 512,
            d: 64,
            causal: false,
        };
        let entries = [
            Entry::attention(&s, Impl::Mosaic, Some(20.0), Some(80.0), Some(10 << 20)),
            Entry::attention(&s, Impl::Candle, Some(200.0), Some(1000.0), Some(300 << 20)),
            Entry::attention(&s, Impl::TorchSdpa, Some(25.0), Some(95.0), None),
        ];
        let gemm = GemmPeaks {
            candle: Some(86.0),
            torch: Some(196.0),
        };
        let t = table(&entries, Some(&gemm));
        let row = t.lines().find(|l| l.starts_with("| attention")).unwrap();
        assert!(row.contains("| 10.00x |"), "{row}");
        assert!(row.contains("| 12.50x |"), "{row}");
        assert!(row.contains("1.25x / 1.19x"), "{row}");
        assert!(row.contains("161 / 141"), "{row}");
        assert!(t.contains("82% of the best GEMM figure"), "{t}");
    }
}
