//! The CUDA C source of the `cuda` feature, checked without a GPU: compiled
//! as C++ by the host compiler with a small shim for the CUDA built-ins, and
//! *run* with one thread per block (so `__syncthreads` is trivially correct)
//! against the CPU kernels, forward and backward. Skipped, with a message,
//! when no C++ compiler is installed.
//!
//! With a GPU at hand, `tests/cuda.rs` (feature `cuda`) runs the same kernels
//! through NVRTC.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::{Rng, assert_close};
use mosaic_kernels::{AttentionOptions, attention};

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cuda/flash_attention.cu");

const SHIM: &str = r#"
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__
struct mosaic_dim3 { unsigned x, y, z; };
static mosaic_dim3 threadIdx, blockIdx, blockDim;
static inline void __syncthreads() {}
static inline float __int_as_float(int i) { float f; __builtin_memcpy(&f, &i, 4); return f; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
float smem[1 << 16];
"#;

const DRIVER: &str = r#"
template <class F> static void launch(unsigned gx, unsigned gy, F f) {
    blockDim = {1, 1, 1};
    threadIdx = {0, 0, 0};
    for (unsigned y = 0; y < gy; ++y)
        for (unsigned x = 0; x < gx; ++x) { blockIdx = {x, y, 0}; f(); }
}
template <class T> static std::vector<T> take(FILE* f, size_t n) {
    std::vector<T> v(n);
    if (n && fread(v.data(), sizeof(T), n, f) != n) { fprintf(stderr, "short input\n"); exit(1); }
    return v;
}
int main(int argc, char** argv) {
    if (argc != 3) return 2;
    FILE* in = fopen(argv[1], "rb");
    if (!in) return 3;
    int32_t hd[7];
    if (fread(hd, 4, 7, in) != 7) return 4;
    int b = hd[0], h = hd[1], nq = hd[2], nk = hd[3], d = hd[4], dv = hd[5], causal = hd[6];
    float sp[2];
    if (fread(sp, 4, 2, in) != 2) return 4;
    unsigned long long seed;
    if (fread(&seed, 8, 1, in) != 1) return 4;
    size_t bh = (size_t)b * h;
    auto q = take<float>(in, bh * nq * d), k = take<float>(in, bh * nk * d);
    auto v = take<float>(in, bh * nk * dv), bias = take<float>(in, (size_t)b * nk);
    auto first = take<int32_t>(in, b);
    auto qseg = take<int32_t>(in, (size_t)b * nq), kseg = take<int32_t>(in, (size_t)b * nk);
    auto dout = take<float>(in, bh * nq * dv);
    fclose(in);
    std::vector<float> out(bh * nq * dv), lse(bh * nq), drow(bh * nq);
    std::vector<float> dq(bh * nq * d), dk(bh * nk * d), dvv(bh * nk * dv);
    launch(nq, bh, [&] { mosaic_flash_fwd(q.data(), k.data(), v.data(), bias.data(), first.data(),
        qseg.data(), kseg.data(), out.data(), lse.data(), h, nq, nk, d, dv, sp[0], causal, sp[1], seed); });
    launch(bh * nq, 1, [&] { mosaic_flash_bwd_pre(out.data(), dout.data(), drow.data(),
        (long long)(bh * nq), dv); });
    launch(nk, bh, [&] { mosaic_flash_bwd_dkdv(q.data(), k.data(), v.data(), dout.data(),
        lse.data(), drow.data(), bias.data(), qseg.data(), kseg.data(), dk.data(), dvv.data(), h, nq, nk, d, dv, sp[0],
        causal, sp[1], seed); });
    launch(nq, bh, [&] { mosaic_flash_bwd_dq(q.data(), k.data(), v.data(), dout.data(),
        lse.data(), drow.data(), bias.data(), qseg.data(), kseg.data(), dq.data(), h, nq, nk, d, dv, sp[0], causal, sp[1],
        seed); });
    FILE* o = fopen(argv[2], "wb");
    if (!o) return 5;
    for (auto* vec : {&out, &dq, &dk, &dvv}) fwrite(vec->data(), 4, vec->size(), o);
    fclose(o);
    return 0;
}
"#;

fn compiler() -> Option<&'static str> {
    ["c++", "g++", "clang++"].into_iter().find(|cc| {
        Command::new(cc)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Builds the emulator in a fresh temporary directory; returns its path.
fn build(cc: &str, dir: &Path) -> PathBuf {
    let driver = dir.join("driver.cpp");
    let src = format!("{SHIM}\n#include \"{SOURCE}\"\n{DRIVER}");
    std::fs::write(&driver, src).unwrap();
    let exe = dir.join("flash_emulator");
    let out = Command::new(cc)
        .args([
            "-std=c++17",
            "-O2",
            "-Wall",
            "-Werror",
            "-Wno-unused-function",
            "-o",
        ])
        .arg(&exe)
        .arg(&driver)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the CUDA source does not compile as C++:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

struct Case {
    b: usize,
    h: usize,
    nq: usize,
    nk: usize,
    d: usize,
    dv: usize,
    causal: bool,
    dropout: f32,
    pad_keep: Option<f32>,
    /// Make the last batch element all padding.
    last_batch_empty: bool,
    /// Pack random contiguous segments (needs `nq == nk`).
    segments: bool,
    seed: u64,
}

fn run_case(exe: &Path, dir: &Path, c: &Case) {
    let mut rng = Rng::new(c.seed);
    let q = rng.var((c.b, c.h, c.nq, c.d), -2.0, 2.0);
    let k = rng.var((c.b, c.h, c.nk, c.d), -2.0, 2.0);
    let v = rng.var((c.b, c.h, c.nk, c.dv), -2.0, 2.0);
    let dout = rng.tensor((c.b, c.h, c.nq, c.dv), -1.0, 1.0);
    let mask: Option<Vec<f32>> = c.pad_keep.map(|keep| {
        (0..c.b * c.nk)
            .map(|i| {
                let empty = c.last_batch_empty && i >= (c.b - 1) * c.nk;
                f32::from(u8::from(!empty && rng.bool(keep)))
            })
            .collect()
    });
    // Runs of 1..=12 tokens with arbitrary (possibly repeated) ids.
    let segments: Option<Vec<i32>> = c.segments.then(|| {
        let mut ids = Vec::with_capacity(c.b * c.nk);
        for _ in 0..c.b {
            let mut left = 0;
            let mut id = 0;
            for _ in 0..c.nk {
                if left == 0 {
                    left = 1 + (rng.uniform(0.0, 12.0) as usize).min(11);
                    id = rng.uniform(0.0, 5.0) as i32;
                }
                left -= 1;
                ids.push(id);
            }
        }
        ids
    });
    let opts = AttentionOptions {
        scale: Some(0.37),
        causal: c.causal,
        key_padding_mask: mask
            .clone()
            .map(|m| Tensor::from_vec(m, (c.b, c.nk), &Device::Cpu).unwrap()),
        dropout: c.dropout,
        seed: c.seed,
        segment_ids: segments.as_ref().map(|s| {
            let raw: Vec<i64> = s.iter().map(|&x| i64::from(x)).collect();
            Tensor::from_vec(raw, (c.b, c.nk), &Device::Cpu).unwrap()
        }),
    };
    let y = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), &opts).unwrap();
    let grads = (&y * &dout).unwrap().sum_all().unwrap().backward().unwrap();

    // The emulator's input file.
    let mask = mask.unwrap_or_else(|| vec![1.0; c.b * c.nk]);
    let bias: Vec<f32> = mask
        .iter()
        .map(|&m| if m != 0.0 { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    let first: Vec<i32> = (0..c.b)
        .map(|bi| {
            (0..c.nk)
                .find(|&j| mask[bi * c.nk + j] != 0.0)
                .map_or(-1, |j| j as i32)
        })
        .collect();
    let mut bytes = Vec::new();
    for x in [c.b, c.h, c.nq, c.nk, c.d, c.dv, usize::from(c.causal)] {
        bytes.extend((x as i32).to_le_bytes());
    }
    bytes.extend(0.37f32.to_le_bytes());
    bytes.extend(c.dropout.to_le_bytes());
    bytes.extend(c.seed.to_le_bytes());
    for t in [q.as_tensor(), k.as_tensor(), v.as_tensor()] {
        floats(t).iter().for_each(|x| bytes.extend(x.to_le_bytes()));
    }
    bias.iter().for_each(|x| bytes.extend(x.to_le_bytes()));
    first.iter().for_each(|x| bytes.extend(x.to_le_bytes()));
    let (qseg, kseg) = match &segments {
        Some(s) => (s.clone(), s.clone()),
        None => (vec![0; c.b * c.nq], vec![0; c.b * c.nk]),
    };
    for x in qseg.iter().chain(&kseg) {
        bytes.extend(x.to_le_bytes());
    }
    floats(&dout)
        .iter()
        .for_each(|x| bytes.extend(x.to_le_bytes()));
    let input = dir.join("input.bin");
    let output = dir.join("output.bin");
    std::fs::write(&input, bytes).unwrap();
    let status = Command::new(exe).arg(&input).arg(&output).status().unwrap();
    assert!(status.success(), "emulator failed: {status}");
    let raw = std::fs::read(&output).unwrap();
    let all: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let sizes = [
        (c.nq, c.dv, y.clone()),
        (c.nq, c.d, grads.get(&q).unwrap().clone()),
        (c.nk, c.d, grads.get(&k).unwrap().clone()),
        (c.nk, c.dv, grads.get(&v).unwrap().clone()),
    ];
    let mut at = 0;
    for (what, (rows, cols, want)) in ["out", "dq", "dk", "dv"].iter().zip(sizes) {
        let n = c.b * c.h * rows * cols;
        let got = Tensor::from_vec(
            all[at..at + n].to_vec(),
            (c.b, c.h, rows, cols),
            &Device::Cpu,
        )
        .unwrap();
        at += n;
        assert_close(
            &format!(
                "cuda source vs cpu: {what} (causal={}, p={}, segments={})",
                c.causal, c.dropout, c.segments
            ),
            &got,
            &want.to_dtype(DType::F32).unwrap(),
            1e-4,
        );
    }
    assert_eq!(at, all.len());
}

#[test]
fn cuda_source_matches_cpu_kernels_when_emulated() {
    let Some(cc) = compiler() else {
        eprintln!("skipping: no C++ compiler (c++, g++, clang++) to check the CUDA source with");
        return;
    };
    let dir = std::env::temp_dir().join(format!("mosaic-cuda-emulator-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = build(cc, &dir);
    let cases = [
        Case {
            b: 2,
            h: 2,
            nq: 37,
            nk: 70,
            d: 16,
            dv: 8,
            causal: false,
            dropout: 0.0,
            pad_keep: Some(0.7),
            last_batch_empty: false,
            segments: false,
            seed: 1,
        },
        // Nq > Nk with causal masking: the first rows see no key at all.
        Case {
            b: 1,
            h: 3,
            nq: 45,
            nk: 33,
            d: 8,
            dv: 12,
            causal: true,
            dropout: 0.25,
            pad_keep: None,
            last_batch_empty: false,
            segments: false,
            seed: 2,
        },
        // A batch element that is all padding, with dropout.
        Case {
            b: 2,
            h: 1,
            nq: 20,
            nk: 40,
            d: 64,
            dv: 64,
            causal: true,
            dropout: 0.1,
            pad_keep: Some(0.6),
            last_batch_empty: true,
            segments: false,
            seed: 3,
        },
        // Packed segments with causal masking, padding and dropout.
        Case {
            b: 2,
            h: 2,
            nq: 50,
            nk: 50,
            d: 16,
            dv: 8,
            causal: true,
            dropout: 0.2,
            pad_keep: Some(0.8),
            last_batch_empty: false,
            segments: true,
            seed: 4,
        },
        // Segments without causal masking (bidirectional packed encoders).
        Case {
            b: 1,
            h: 1,
            nq: 70,
            nk: 70,
            d: 8,
            dv: 8,
            causal: false,
            dropout: 0.0,
            pad_keep: None,
            last_batch_empty: false,
            segments: true,
            seed: 5,
        },
    ];
    for c in &cases {
        run_case(&exe, &dir, c);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
