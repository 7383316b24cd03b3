// Fused attention for the `cuda` feature of mosaic-kernels, compiled at run
// time by NVRTC. Same semantics as the CPU kernels in src/flash.rs:
//   * scores s = scale * q.k, key padding (bias -inf), bottom-right causal
//     masking (key j visible to query i iff j <= i + nk - nq) and segments
//     (key j visible to query i only if q_segment[b, i] == k_segment[b, j];
//     all zeros when the call has no segments);
//   * a query row with no visible key averages every value uniformly (what the
//     finite MASK_VALUE gives in the composed reference) and passes no
//     gradient to q/k; its lse is stored as +inf;
//   * dropout: element (bh, i, j) is kept iff the top 24 bits of SplitMix64
//     output ((bh * nq + i) * nk + j) seeded with `seed` are >= p (scaled to
//     [0, 1)), kept values scaled by 1 / (1 - p).
// Layouts (row-major, contiguous): q (BH, nq, d), k (BH, nk, d),
// v (BH, nk, dv), out (BH, nq, dv), lse (BH, nq); key_bias (B, nk) of 0 / -inf;
// first_visible (B): first non-padding key, -1 if none; q_segment (B, nq),
// k_segment (B, nk).
//
// One thread per query row (forward, dq) or key row (dk/dv); a block walks
// tiles of MOSAIC_TILE rows of the other side through shared memory, with an
// online softmax. Head dims up to MOSAIC_MAX_D (the host checks).

#ifndef MOSAIC_MAX_D
#define MOSAIC_MAX_D 128
#endif
#ifndef MOSAIC_TILE
#define MOSAIC_TILE 32
#endif

#define NEG_INF (-__int_as_float(0x7f800000))
#define POS_INF (__int_as_float(0x7f800000))

__device__ __forceinline__ unsigned long long mosaic_splitmix64(unsigned long long seed,
                                                               unsigned long long index) {
    unsigned long long z = seed + (index + 1ULL) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// The dropout multiplier of flat element `index`: 0 or 1 / (1 - p); 1 when p == 0.
__device__ __forceinline__ float mosaic_drop_scale(unsigned long long seed,
                                                   unsigned long long index, float p) {
    if (p <= 0.0f) {
        return 1.0f;
    }
    float u = (float)(mosaic_splitmix64(seed, index) >> 40) * (1.0f / 16777216.0f);
    return u >= p ? 1.0f / (1.0f - p) : 0.0f;
}

// Whether query i of batch element b sees at least one key.
__device__ __forceinline__ bool mosaic_row_live(const int* first_visible, int b, int i, int nq,
                                                int nk, int causal) {
    int first = first_visible[b];
    if (first < 0) {
        return false;
    }
    return !causal || (long long)first <= (long long)i + nk - nq;
}

extern "C" __global__ void mosaic_flash_fwd(const float* __restrict__ q,
                                            const float* __restrict__ k,
                                            const float* __restrict__ v,
                                            const float* __restrict__ key_bias,
                                            const int* __restrict__ first_visible,
                                            const int* __restrict__ q_segment,
                                            const int* __restrict__ k_segment,
                                            float* __restrict__ out, float* __restrict__ lse,
                                            int h, int nq, int nk, int d, int dv, float scale,
                                            int causal, float dropout, unsigned long long seed) {
    extern __shared__ float smem[];
    float* ks = smem;                       // MOSAIC_TILE * d
    float* vs = ks + MOSAIC_TILE * d;       // MOSAIC_TILE * dv
    float* bs = vs + MOSAIC_TILE * dv;      // MOSAIC_TILE

    const int bh = blockIdx.y;
    const int b = bh / h;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = i < nq;
    const long long last = (long long)i + nk - nq;  // last visible key when causal
    const int seg = active ? q_segment[(long long)b * nq + i] : 0;

    float qr[MOSAIC_MAX_D];
    float acc[MOSAIC_MAX_D];
    float sc[MOSAIC_TILE];
    for (int c = 0; c < d; ++c) {
        qr[c] = active ? q[((long long)bh * nq + i) * d + c] * scale : 0.0f;
    }
    for (int c = 0; c < dv; ++c) {
        acc[c] = 0.0f;
    }
    float m = NEG_INF;
    float l = 0.0f;

    // Keys any row of this block may see.
    int i_last = min(nq - 1, (int)(blockIdx.x * blockDim.x + blockDim.x - 1));
    long long key_end = nk;
    if (causal) {
        key_end = min((long long)nk, (long long)i_last + nk - nq + 1);
    }
    for (int j0 = 0; j0 < key_end; j0 += MOSAIC_TILE) {
        const int w = (int)min((long long)MOSAIC_TILE, key_end - j0);
        for (int t = threadIdx.x; t < w * d; t += blockDim.x) {
            ks[t] = k[((long long)bh * nk + j0) * d + t];
        }
        for (int t = threadIdx.x; t < w * dv; t += blockDim.x) {
            vs[t] = v[((long long)bh * nk + j0) * dv + t];
        }
        for (int t = threadIdx.x; t < w; t += blockDim.x) {
            bs[t] = key_bias[(long long)b * nk + j0 + t];
        }
        __syncthreads();
        if (active) {
            float tile_max = NEG_INF;
            for (int jj = 0; jj < w; ++jj) {
                float s = NEG_INF;
                if (bs[jj] == 0.0f && (!causal || (long long)(j0 + jj) <= last) &&
                    k_segment[(long long)b * nk + j0 + jj] == seg) {
                    s = 0.0f;
                    for (int c = 0; c < d; ++c) {
                        s += qr[c] * ks[jj * d + c];
                    }
                }
                sc[jj] = s;
                tile_max = fmaxf(tile_max, s);
            }
            const float m_new = fmaxf(m, tile_max);
            if (m_new != NEG_INF) {
                const float alpha = expf(m - m_new);  // 0 when m is -inf
                l *= alpha;
                for (int c = 0; c < dv; ++c) {
                    acc[c] *= alpha;
                }
                for (int jj = 0; jj < w; ++jj) {
                    const float p = expf(sc[jj] - m_new);
                    l += p;
                    const unsigned long long idx =
                        ((unsigned long long)bh * nq + i) * nk + (unsigned long long)(j0 + jj);
                    const float pd = p * mosaic_drop_scale(seed, idx, dropout);
                    if (pd != 0.0f) {
                        for (int c = 0; c < dv; ++c) {
                            acc[c] += pd * vs[jj * dv + c];
                        }
                    }
                }
                m = m_new;
            }
        }
        __syncthreads();
    }
    if (!active) {
        return;
    }
    float* o = out + ((long long)bh * nq + i) * dv;
    if (mosaic_row_live(first_visible, b, i, nq, nk, causal) && l > 0.0f) {
        const float inv = 1.0f / l;
        for (int c = 0; c < dv; ++c) {
            o[c] = acc[c] * inv;
        }
        lse[(long long)bh * nq + i] = m + logf(l);
    } else {
        // No visible key: the uniform average of every value.
        for (int c = 0; c < dv; ++c) {
            acc[c] = 0.0f;
        }
        const float inv_n = 1.0f / (float)nk;
        for (int j = 0; j < nk; ++j) {
            const unsigned long long idx = ((unsigned long long)bh * nq + i) * nk + j;
            const float wgt = mosaic_drop_scale(seed, idx, dropout) * inv_n;
            for (int c = 0; c < dv; ++c) {
                acc[c] += wgt * v[((long long)bh * nk + j) * dv + c];
            }
        }
        for (int c = 0; c < dv; ++c) {
            o[c] = acc[c];
        }
        lse[(long long)bh * nq + i] = POS_INF;
    }
}

// D_i = dO_i . O_i, one thread per (bh, i).
extern "C" __global__ void mosaic_flash_bwd_pre(const float* __restrict__ out,
                                                const float* __restrict__ dout,
                                                float* __restrict__ drow, long long rows, int dv) {
    const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) {
        return;
    }
    float s = 0.0f;
    for (int c = 0; c < dv; ++c) {
        s += out[r * dv + c] * dout[r * dv + c];
    }
    drow[r] = s;
}

// dK and dV, one thread per key row j.
extern "C" __global__ void mosaic_flash_bwd_dkdv(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const float* __restrict__ dout, const float* __restrict__ lse,
    const float* __restrict__ drow, const float* __restrict__ key_bias,
    const int* __restrict__ q_segment, const int* __restrict__ k_segment,
    float* __restrict__ dk, float* __restrict__ dv_out, int h, int nq, int nk, int d, int dv,
    float scale, int causal, float dropout, unsigned long long seed) {
    extern __shared__ float smem[];
    float* qs = smem;                        // MOSAIC_TILE * d (scaled q)
    float* dos = qs + MOSAIC_TILE * d;       // MOSAIC_TILE * dv
    float* ls = dos + MOSAIC_TILE * dv;      // MOSAIC_TILE
    float* ds_ = ls + MOSAIC_TILE;           // MOSAIC_TILE

    const int bh = blockIdx.y;
    const int b = bh / h;
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = j < nk;
    const bool visible_key = active && key_bias[(long long)b * nk + j] == 0.0f;
    const int seg = active ? k_segment[(long long)b * nk + j] : 0;

    float kr[MOSAIC_MAX_D];
    float vr[MOSAIC_MAX_D];
    float dka[MOSAIC_MAX_D];
    float dva[MOSAIC_MAX_D];
    for (int c = 0; c < d; ++c) {
        kr[c] = active ? k[((long long)bh * nk + j) * d + c] : 0.0f;
        dka[c] = 0.0f;
    }
    for (int c = 0; c < dv; ++c) {
        vr[c] = active ? v[((long long)bh * nk + j) * dv + c] : 0.0f;
        dva[c] = 0.0f;
    }
    const float inv_n = 1.0f / (float)nk;

    for (int i0 = 0; i0 < nq; i0 += MOSAIC_TILE) {
        const int w = min(MOSAIC_TILE, nq - i0);
        for (int t = threadIdx.x; t < w * d; t += blockDim.x) {
            qs[t] = q[((long long)bh * nq + i0) * d + t] * scale;
        }
        for (int t = threadIdx.x; t < w * dv; t += blockDim.x) {
            dos[t] = dout[((long long)bh * nq + i0) * dv + t];
        }
        for (int t = threadIdx.x; t < w; t += blockDim.x) {
            ls[t] = lse[(long long)bh * nq + i0 + t];
            ds_[t] = drow[(long long)bh * nq + i0 + t];
        }
        __syncthreads();
        if (active) {
            for (int ii = 0; ii < w; ++ii) {
                const int i = i0 + ii;
                const unsigned long long idx = ((unsigned long long)bh * nq + i) * nk + j;
                const float keep = mosaic_drop_scale(seed, idx, dropout);
                if (ls[ii] == POS_INF) {
                    // A row without visible keys averaged every value uniformly.
                    const float wgt = keep * inv_n;
                    for (int c = 0; c < dv; ++c) {
                        dva[c] += wgt * dos[ii * dv + c];
                    }
                    continue;
                }
                if (!visible_key || (causal && (long long)j > (long long)i + nk - nq) ||
                    q_segment[(long long)b * nq + i] != seg) {
                    continue;
                }
                float s = 0.0f;
                for (int c = 0; c < d; ++c) {
                    s += qs[ii * d + c] * kr[c];
                }
                const float p = expf(s - ls[ii]);
                float dp = 0.0f;
                for (int c = 0; c < dv; ++c) {
                    dva[c] += p * keep * dos[ii * dv + c];
                    dp += dos[ii * dv + c] * vr[c];
                }
                const float dsv = p * (dp * keep - ds_[ii]);
                for (int c = 0; c < d; ++c) {
                    dka[c] += dsv * qs[ii * d + c];
                }
            }
        }
        __syncthreads();
    }
    if (!active) {
        return;
    }
    for (int c = 0; c < d; ++c) {
        dk[((long long)bh * nk + j) * d + c] = dka[c];
    }
    for (int c = 0; c < dv; ++c) {
        dv_out[((long long)bh * nk + j) * dv + c] = dva[c];
    }
}

// dQ, one thread per query row i.
extern "C" __global__ void mosaic_flash_bwd_dq(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    const float* __restrict__ dout, const float* __restrict__ lse,
    const float* __restrict__ drow, const float* __restrict__ key_bias,
    const int* __restrict__ q_segment, const int* __restrict__ k_segment, float* __restrict__ dq,
    int h, int nq, int nk, int d, int dv, float scale, int causal, float dropout,
    unsigned long long seed) {
    extern __shared__ float smem[];
    float* ks = smem;                       // MOSAIC_TILE * d
    float* vs = ks + MOSAIC_TILE * d;       // MOSAIC_TILE * dv
    float* bs = vs + MOSAIC_TILE * dv;      // MOSAIC_TILE

    const int bh = blockIdx.y;
    const int b = bh / h;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = i < nq;
    const float l = active ? lse[(long long)bh * nq + i] : POS_INF;
    const float di = active ? drow[(long long)bh * nq + i] : 0.0f;
    const long long last = (long long)i + nk - nq;
    const int seg = active ? q_segment[(long long)b * nq + i] : 0;

    float qr[MOSAIC_MAX_D];
    float dor[MOSAIC_MAX_D];
    float acc[MOSAIC_MAX_D];
    for (int c = 0; c < d; ++c) {
        qr[c] = active ? q[((long long)bh * nq + i) * d + c] * scale : 0.0f;
        acc[c] = 0.0f;
    }
    for (int c = 0; c < dv; ++c) {
        dor[c] = active ? dout[((long long)bh * nq + i) * dv + c] : 0.0f;
    }

    for (int j0 = 0; j0 < nk; j0 += MOSAIC_TILE) {
        const int w = min(MOSAIC_TILE, nk - j0);
        for (int t = threadIdx.x; t < w * d; t += blockDim.x) {
            ks[t] = k[((long long)bh * nk + j0) * d + t];
        }
        for (int t = threadIdx.x; t < w * dv; t += blockDim.x) {
            vs[t] = v[((long long)bh * nk + j0) * dv + t];
        }
        for (int t = threadIdx.x; t < w; t += blockDim.x) {
            bs[t] = key_bias[(long long)b * nk + j0 + t];
        }
        __syncthreads();
        if (active && l != POS_INF) {
            for (int jj = 0; jj < w; ++jj) {
                const int j = j0 + jj;
                if (bs[jj] != 0.0f || (causal && (long long)j > last) ||
                    k_segment[(long long)b * nk + j] != seg) {
                    continue;
                }
                float s = 0.0f;
                for (int c = 0; c < d; ++c) {
                    s += qr[c] * ks[jj * d + c];
                }
                const float p = expf(s - l);
                float dp = 0.0f;
                for (int c = 0; c < dv; ++c) {
                    dp += dor[c] * vs[jj * dv + c];
                }
                const unsigned long long idx = ((unsigned long long)bh * nq + i) * nk + j;
                const float dsv = p * (dp * mosaic_drop_scale(seed, idx, dropout) - di);
                for (int c = 0; c < d; ++c) {
                    acc[c] += dsv * ks[jj * d + c];
                }
            }
        }
        __syncthreads();
    }
    if (!active) {
        return;
    }
    for (int c = 0; c < d; ++c) {
        dq[((long long)bh * nq + i) * d + c] = acc[c] * scale;
    }
}
