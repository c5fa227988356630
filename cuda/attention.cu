/* attention.cu: causal attention, flash-style (no score matrix in memory), fp32.
 *
 * Forward (also prefill and decode): a block takes up to ATT_BQ query rows of one head and walks the keys in
 * tiles of ATT_BK held in shared memory, with an online softmax (running max m, running sum l); it writes
 * out = acc / l and lse = m + log l. Decode uses the same kernel with the ROWS of a block being the query heads
 * of one kv-head group at one position (they share every K/V tile: GQA reuse).
 *
 * Backward (deterministic, no atomics): D = rowsum(dO * O); dQ by query tiles (recomputing P = exp(s - lse)
 * from the saved lse); dK and dV by key tiles, each block summing over the group's query heads and the query
 * tiles in a fixed order. Scores are recomputed twice instead of racing on dQ.
 *
 * Threads: 4 warps a block; in the query-tile kernels lane = key within a tile, each warp owns 4 rows; in the
 * key-tile kernel lane = query within a tile, each warp owns 4 keys. A lane owns output columns d = lane + 32 n
 * (n < NI = ceil(hd / 32), a template parameter), so any hd up to 256 works. */
#include "cuda_common.cuh"

#define ATT_WARPS 4
#define ATT_ROWS_PER_WARP 4
#define ATT_BQ (ATT_WARPS * ATT_ROWS_PER_WARP) /* query rows of a block */
#define ATT_BK 32                              /* keys of a tile (= lanes) */
#define ATT_BKK (ATT_WARPS * ATT_ROWS_PER_WARP) /* keys of a dK/dV block */
#define ATT_QT 32                              /* queries of a dK/dV tile (= lanes) */

/* One unit of work: a run of query rows (or heads) against a run of keys. */
typedef struct {
    int q0;   /* first query row of the sequence, in q / out / lse (decode: the row r) */
    int k0;   /* first key row of the sequence, in k / v (decode: slot * slot_len) */
    int nq;   /* query rows of the sequence (decode: heads in the group) */
    int i0;   /* first local query row (or head) of this tile */
    int p0;   /* causal offset: local row i sees keys 0..p0+i (decode: ctx_len - 1, same for every head) */
    int kb, ke; /* decode split: keys [kb, ke) of the context (ke = 0: all of them) */
    int part;   /* decode split: index of the partial result to write (-1: write out itself) */
} att_tile;

/* Decode contexts longer than this are split in chunks of ATT_DEC_CHUNK keys (flash-decoding), each chunk a
 * block writing a partial (acc, m, l), combined in chunk order by att_decode_combine. The split depends only on
 * the row's own context length, so a row's result does not depend on the batch it is in. */
#define ATT_DEC_SPLIT_MIN 1024
#define ATT_DEC_CHUNK 512

enum { ATT_SEQ = 0, ATT_DECODE = 1 };

static size_t fwd_smem(int hd) { return sizeof(float) * ((size_t)ATT_BQ * hd + (size_t)ATT_BK * (hd + 1) + (size_t)ATT_BK * hd); }
static size_t dq_smem(int hd) { return sizeof(float) * (2 * (size_t)ATT_BQ * hd + 2 * (size_t)ATT_BK * (hd + 1)); }
static size_t dkv_smem(int hd) {
    return sizeof(float) * (2 * (size_t)ATT_QT * (hd + 1) + 2 * (size_t)ATT_BKK * hd + 2 * ATT_QT);
}

/* acc[n] (lane's columns d = lane + 32 n) += Σ_jj w_jj · tile[jj, d] over one key tile, where lane jj of the warp
 * holds w_jj (the tile's probabilities or score gradients); tile rows are ld floats apart. */
template <int NI>
__device__ __forceinline__ void acc_tile(float *acc, float w, const float *tile, int ld, int hd, int lane) {
    for (int jj = 0; jj < ATT_BK; jj++) {
        const float wj = __shfl_sync(0xffffffffu, w, jj);
        const float *row = tile + jj * ld;
#pragma unroll
        for (int n = 0; n < NI; n++) {
            const int d = lane + 32 * n;
            if (d < hd) acc[n] = fmaf(wj, row[d], acc[n]);
        }
    }
}

template <int NI>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    att_fwd_kernel(float *__restrict__ out,          /* [rows, nh, hd] */
                   float *__restrict__ lse,          /* [rows, nh] or NULL */
                   const float *__restrict__ q,      /* [rows, nh, hd] */
                   const float *__restrict__ k,      /* [keys, nkv, hd] */
                   const float *__restrict__ v,      /* [keys, nkv, hd] */
                   float *__restrict__ part,         /* decode partials [parts, nkv, BQ, hd + 2] or NULL */
                   const att_tile *__restrict__ tiles, int nh, int nkv, int hd, float scale, int mode) {
    extern __shared__ float smem[];
    float *Qs = smem;                     /* [BQ][hd] */
    float *Ks = Qs + ATT_BQ * hd;         /* [BK][hd + 1]: lanes read their own key row */
    float *Vs = Ks + ATT_BK * (hd + 1);   /* [BK][hd] */
    const att_tile t = tiles[blockIdx.x];
    const int group = nh / nkv, ldq = nh * hd, ldk = nkv * hd;
    const int g = mode == ATT_DECODE ? (int)blockIdx.y : (int)blockIdx.y / group;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int rows = min(ATT_BQ, t.nq - t.i0);
    /* Query row r of the block: its q / out offset and its last visible key. */
    auto row_off = [&](int r) -> size_t {
        return mode == ATT_DECODE ? (size_t)t.q0 * ldq + (size_t)(g * group + t.i0 + r) * hd
                                  : (size_t)(t.q0 + t.i0 + r) * ldq + (size_t)blockIdx.y * hd;
    };
    auto row_limit = [&](int r) -> int { return mode == ATT_DECODE ? t.p0 : t.p0 + t.i0 + r; };
    for (int idx = threadIdx.x; idx < ATT_BQ * hd; idx += blockDim.x) {
        const int r = idx / hd, d = idx % hd;
        Qs[idx] = r < rows ? q[row_off(r) + d] : 0.0f;
    }
    int k_first = 0, ke = row_limit(rows - 1) + 1;
    if (mode == ATT_DECODE && t.ke > 0) k_first = t.kb, ke = t.ke;
    float m[ATT_ROWS_PER_WARP], l[ATT_ROWS_PER_WARP], acc[ATT_ROWS_PER_WARP][NI];
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++) {
        m[rr] = -INFINITY;
        l[rr] = 0.0f;
#pragma unroll
        for (int n = 0; n < NI; n++) acc[rr][n] = 0.0f;
    }
    const float *kb = k + (size_t)t.k0 * ldk + (size_t)g * hd, *vb = v + (size_t)t.k0 * ldk + (size_t)g * hd;
    for (int kt = k_first; kt < ke; kt += ATT_BK) {
        __syncthreads(); /* the previous tile is no longer read */
        for (int idx = threadIdx.x; idx < ATT_BK * hd; idx += blockDim.x) {
            const int jj = idx / hd, d = idx % hd, j = kt + jj;
            const bool in = j < ke;
            Ks[jj * (hd + 1) + d] = in ? kb[(size_t)j * ldk + d] : 0.0f;
            Vs[jj * hd + d] = in ? vb[(size_t)j * ldk + d] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++) {
            const int r = warp * ATT_ROWS_PER_WARP + rr;
            if (r >= rows) break; /* warp-uniform */
            const int limit = row_limit(r);
            if (kt > limit) continue; /* the whole tile is in this row's future */
            const float *qr = Qs + r * hd, *kr = Ks + lane * (hd + 1);
            float dot = 0.0f;
            for (int d = 0; d < hd; d++) dot = fmaf(qr[d], kr[d], dot);
            const float s = kt + lane <= limit && kt + lane < ke ? dot * scale : -INFINITY;
            const float mt = cu_warp_max_f(s);
            const float m_new = fmaxf(m[rr], mt);
            const float p = expf(s - m_new); /* 0 for masked keys */
            const float alpha = expf(m[rr] - m_new); /* 0 on the first tile (m = -inf) */
            l[rr] = l[rr] * alpha + cu_warp_sum_f(p);
            m[rr] = m_new;
#pragma unroll
            for (int n = 0; n < NI; n++) acc[rr][n] *= alpha;
            acc_tile<NI>(acc[rr], p, Vs, hd, hd, lane); /* acc += P V over the tile */
        }
    }
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++) {
        const int r = warp * ATT_ROWS_PER_WARP + rr;
        if (r >= rows) break;
        if (t.part >= 0) { /* a decode split: the unnormalised partial, combined later */
            float *pp = part + (((size_t)t.part * nkv + g) * ATT_BQ + r) * (hd + 2); /* blocks of one tile differ in g */
#pragma unroll
            for (int n = 0; n < NI; n++) {
                const int d = lane + 32 * n;
                if (d < hd) pp[d] = acc[rr][n];
            }
            if (lane == 0) pp[hd] = m[rr], pp[hd + 1] = l[rr];
            continue;
        }
        const float inv = 1.0f / l[rr];
        float *o = out + row_off(r);
#pragma unroll
        for (int n = 0; n < NI; n++) {
            const int d = lane + 32 * n;
            if (d < hd) o[d] = acc[rr][n] * inv;
        }
        if (lse && mode == ATT_SEQ && lane == 0) lse[(size_t)(t.q0 + t.i0 + r) * nh + blockIdx.y] = m[rr] + logf(l[rr]);
    }
}

/* out[r, h] from the row's decode splits, in split order: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M). */
__global__ void att_decode_combine(float *__restrict__ out,          /* [n, nh, hd] */
                                   const float *__restrict__ part,   /* [parts, nkv, BQ, hd + 2] */
                                   const int *__restrict__ row_part0, /* [n] part of (r, head chunk 0, split 0) */
                                   const int *__restrict__ row_ns,    /* [n] splits (0: the row was not split) */
                                   int nh, int nkv, int hd) {
    const int r = blockIdx.x, h = blockIdx.y, ns = row_ns[r];
    if (ns == 0) return;
    const int group = nh / nkv, g = h / group, hh = h % group, c = hh / ATT_BQ, rr = hh % ATT_BQ;
    const float *p0 = part + (((size_t)(row_part0[r] + c * ns) * nkv + g) * ATT_BQ + rr) * (hd + 2);
    const size_t stride = (size_t)nkv * ATT_BQ * (hd + 2); /* next split of the same row and head */
    float M = -INFINITY;
    for (int s = 0; s < ns; s++) M = fmaxf(M, p0[s * stride + hd]);
    float L = 0.0f;
    for (int s = 0; s < ns; s++) L += p0[s * stride + hd + 1] * expf(p0[s * stride + hd] - M);
    float *o = out + ((size_t)r * nh + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.0f;
        for (int s = 0; s < ns; s++) a += p0[s * stride + d] * expf(p0[s * stride + hd] - M);
        o[d] = a / L;
    }
}

/* D[t, h] = sum_d dO[t, h, d] * O[t, h, d]; one warp per (t, h). */
__global__ void att_bwd_d_kernel(float *__restrict__ D,          /* [T, nh] */
                                 const float *__restrict__ dout, /* [T, nh, hd] */
                                 const float *__restrict__ o,    /* [T, nh, hd] */
                                 size_t rows_heads, int hd) {
    const size_t w = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (w >= rows_heads) return;
    const float *a = dout + w * hd, *b = o + w * hd;
    float s = 0.0f;
    for (int d = lane; d < hd; d += 32) s = fmaf(a[d], b[d], s);
    s = cu_warp_sum_f(s);
    if (lane == 0) D[w] = s;
}

/* dQ = scale * sum_j dS_ij K_j with dS = P (dP - D), P = exp(s - lse): query tiles as the forward. */
template <int NI>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    att_bwd_dq_kernel(float *__restrict__ dq,          /* [T, nh, hd] */
                      const float *__restrict__ dout,  /* [T, nh, hd] */
                      const float *__restrict__ q,     /* [T, nh, hd] */
                      const float *__restrict__ k,     /* [T, nkv, hd] */
                      const float *__restrict__ v,     /* [T, nkv, hd] */
                      const float *__restrict__ lse,   /* [T, nh] */
                      const float *__restrict__ D,     /* [T, nh] */
                      const att_tile *__restrict__ tiles, int nh, int nkv, int hd, float scale) {
    extern __shared__ float smem[];
    float *Qs = smem;                    /* [BQ][hd] */
    float *dOs = Qs + ATT_BQ * hd;       /* [BQ][hd] */
    float *Ks = dOs + ATT_BQ * hd;       /* [BK][hd + 1] */
    float *Vs = Ks + ATT_BK * (hd + 1);  /* [BK][hd + 1] */
    const att_tile t = tiles[blockIdx.x];
    const int h = blockIdx.y, group = nh / nkv, g = h / group, ldq = nh * hd, ldk = nkv * hd;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int rows = min(ATT_BQ, t.nq - t.i0);
    for (int idx = threadIdx.x; idx < ATT_BQ * hd; idx += blockDim.x) {
        const int r = idx / hd, d = idx % hd;
        const size_t off = (size_t)(t.q0 + t.i0 + r) * ldq + (size_t)h * hd + d;
        Qs[idx] = r < rows ? q[off] : 0.0f;
        dOs[idx] = r < rows ? dout[off] : 0.0f;
    }
    float acc[ATT_ROWS_PER_WARP][NI], lse_r[ATT_ROWS_PER_WARP], D_r[ATT_ROWS_PER_WARP];
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++) {
        const int r = warp * ATT_ROWS_PER_WARP + rr;
        const size_t lh = (size_t)(t.q0 + t.i0 + r) * nh + h;
        lse_r[rr] = r < rows ? lse[lh] : 0.0f;
        D_r[rr] = r < rows ? D[lh] : 0.0f;
#pragma unroll
        for (int n = 0; n < NI; n++) acc[rr][n] = 0.0f;
    }
    const int n_keys = t.p0 + t.i0 + rows;
    const float *kb = k + (size_t)t.k0 * ldk + (size_t)g * hd, *vb = v + (size_t)t.k0 * ldk + (size_t)g * hd;
    for (int kt = 0; kt < n_keys; kt += ATT_BK) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < ATT_BK * hd; idx += blockDim.x) {
            const int jj = idx / hd, d = idx % hd, j = kt + jj;
            const bool in = j < n_keys;
            Ks[jj * (hd + 1) + d] = in ? kb[(size_t)j * ldk + d] : 0.0f;
            Vs[jj * (hd + 1) + d] = in ? vb[(size_t)j * ldk + d] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++) {
            const int r = warp * ATT_ROWS_PER_WARP + rr;
            if (r >= rows) break;
            const int limit = t.p0 + t.i0 + r;
            if (kt > limit) continue;
            const float *qr = Qs + r * hd, *dor = dOs + r * hd;
            const float *kr = Ks + lane * (hd + 1), *vr = Vs + lane * (hd + 1);
            float s = 0.0f, dp = 0.0f;
            for (int d = 0; d < hd; d++) {
                s = fmaf(qr[d], kr[d], s);
                dp = fmaf(dor[d], vr[d], dp);
            }
            const float p = kt + lane <= limit ? expf(s * scale - lse_r[rr]) : 0.0f;
            const float ds = p * (dp - D_r[rr]);
            acc_tile<NI>(acc[rr], ds, Ks, hd + 1, hd, lane); /* acc += dS K over the tile */
        }
    }
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++) {
        const int r = warp * ATT_ROWS_PER_WARP + rr;
        if (r >= rows) break;
        float *o = dq + (size_t)(t.q0 + t.i0 + r) * ldq + (size_t)h * hd;
#pragma unroll
        for (int n = 0; n < NI; n++) {
            const int d = lane + 32 * n;
            if (d < hd) o[d] = scale * acc[rr][n];
        }
    }
}

/* dV_j = sum_i P_ij dO_i, dK_j = scale * sum_i dS_ij Q_i over the group's heads and the queries i >= j.
 * A block owns ATT_BKK keys of one kv head and writes them once (overwrite): no other block touches them. */
template <int NI>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    att_bwd_dkv_kernel(float *__restrict__ dk,          /* [T, nkv, hd] */
                       float *__restrict__ dv,          /* [T, nkv, hd] */
                       const float *__restrict__ dout,  /* [T, nh, hd] */
                       const float *__restrict__ q,     /* [T, nh, hd] */
                       const float *__restrict__ k,     /* [T, nkv, hd] */
                       const float *__restrict__ v,     /* [T, nkv, hd] */
                       const float *__restrict__ lse,   /* [T, nh] */
                       const float *__restrict__ D,     /* [T, nh] */
                       const att_tile *__restrict__ tiles, int nh, int nkv, int hd, float scale) {
    extern __shared__ float smem[];
    float *Qs = smem;                      /* [QT][hd + 1]: lanes read their own query row */
    float *dOs = Qs + ATT_QT * (hd + 1);   /* [QT][hd + 1] */
    float *Ks = dOs + ATT_QT * (hd + 1);   /* [BKK][hd] */
    float *Vs = Ks + ATT_BKK * hd;         /* [BKK][hd] */
    float *lse_s = Vs + ATT_BKK * hd;      /* [QT] */
    float *D_s = lse_s + ATT_QT;           /* [QT] */
    const att_tile t = tiles[blockIdx.x];  /* i0 = first key of the block */
    const int g = blockIdx.y, group = nh / nkv, ldq = nh * hd, ldk = nkv * hd;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int keys = min(ATT_BKK, t.nq - t.i0);
    const size_t kbase = (size_t)(t.k0 + t.i0) * ldk + (size_t)g * hd;
    for (int idx = threadIdx.x; idx < ATT_BKK * hd; idx += blockDim.x) {
        const int jr = idx / hd, d = idx % hd;
        Ks[idx] = jr < keys ? k[kbase + (size_t)jr * ldk + d] : 0.0f;
        Vs[idx] = jr < keys ? v[kbase + (size_t)jr * ldk + d] : 0.0f;
    }
    float adk[ATT_ROWS_PER_WARP][NI], adv[ATT_ROWS_PER_WARP][NI];
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++)
#pragma unroll
        for (int n = 0; n < NI; n++) adk[rr][n] = adv[rr][n] = 0.0f;
    const int qt0 = (t.i0 / ATT_QT) * ATT_QT;
    for (int h = g * group; h < (g + 1) * group; h++) {
        for (int qt = qt0; qt < t.nq; qt += ATT_QT) {
            __syncthreads();
            for (int idx = threadIdx.x; idx < ATT_QT * hd; idx += blockDim.x) {
                const int ii = idx / hd, d = idx % hd, i = qt + ii;
                const bool in = i < t.nq;
                const size_t off = (size_t)(t.q0 + i) * ldq + (size_t)h * hd + d;
                Qs[ii * (hd + 1) + d] = in ? q[off] : 0.0f;
                dOs[ii * (hd + 1) + d] = in ? dout[off] : 0.0f;
            }
            if (threadIdx.x < ATT_QT) {
                const int i = qt + threadIdx.x;
                const size_t lh = (size_t)(t.q0 + i) * nh + h;
                lse_s[threadIdx.x] = i < t.nq ? lse[lh] : 0.0f;
                D_s[threadIdx.x] = i < t.nq ? D[lh] : 0.0f;
            }
            __syncthreads();
            const int i = qt + lane;
#pragma unroll
            for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++) {
                const int jr = warp * ATT_ROWS_PER_WARP + rr;
                if (jr >= keys) break;
                const int j = t.i0 + jr;
                if (qt + ATT_QT - 1 < j) continue; /* every query of the tile is before this key */
                const float *qi = Qs + lane * (hd + 1), *doi = dOs + lane * (hd + 1);
                const float *kj = Ks + jr * hd, *vj = Vs + jr * hd;
                float s = 0.0f, dp = 0.0f;
                for (int d = 0; d < hd; d++) {
                    s = fmaf(qi[d], kj[d], s);
                    dp = fmaf(doi[d], vj[d], dp);
                }
                const bool vis = i < t.nq && i >= j;
                const float p = vis ? expf(s * scale - lse_s[lane]) : 0.0f;
                const float ds = p * (dp - D_s[lane]);
                for (int ii = 0; ii < ATT_QT; ii++) {
                    const float pi = __shfl_sync(0xffffffffu, p, ii);
                    const float dsi = __shfl_sync(0xffffffffu, ds, ii);
                    const float *qr = Qs + ii * (hd + 1), *dor = dOs + ii * (hd + 1);
#pragma unroll
                    for (int n = 0; n < NI; n++) {
                        const int d = lane + 32 * n;
                        if (d < hd) {
                            adv[rr][n] = fmaf(pi, dor[d], adv[rr][n]);
                            adk[rr][n] = fmaf(dsi, qr[d], adk[rr][n]);
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < ATT_ROWS_PER_WARP; rr++) {
        const int jr = warp * ATT_ROWS_PER_WARP + rr;
        if (jr >= keys) break;
        const size_t off = kbase + (size_t)jr * ldk;
#pragma unroll
        for (int n = 0; n < NI; n++) {
            const int d = lane + 32 * n;
            if (d < hd) {
                dk[off + d] = scale * adk[rr][n];
                dv[off + d] = adv[rr][n];
            }
        }
    }
}

/* ---- host side ---- */

typedef void (*fwd_fn)(float *, float *, const float *, const float *, const float *, float *, const att_tile *, int,
                       int, int, float, int);
typedef void (*dq_fn)(float *, const float *, const float *, const float *, const float *, const float *,
                      const float *, const att_tile *, int, int, int, float);
typedef void (*dkv_fn)(float *, float *, const float *, const float *, const float *, const float *, const float *,
                       const float *, const att_tile *, int, int, int, float);

/* The instantiation of a kernel template for NI = ceil(head_dim / 32) = ni (1..8). */
#define NI_DISPATCH(kernel)                                                                                          \
    switch (ni) {                                                                                                    \
    case 1: return kernel<1>;                                                                                        \
    case 2: return kernel<2>;                                                                                        \
    case 3: return kernel<3>;                                                                                        \
    case 4: return kernel<4>;                                                                                        \
    case 5: return kernel<5>;                                                                                        \
    case 6: return kernel<6>;                                                                                        \
    case 7: return kernel<7>;                                                                                        \
    default: return kernel<8>;                                                                                       \
    }
static fwd_fn fwd_for(int ni) { NI_DISPATCH(att_fwd_kernel) }
static dq_fn dq_for(int ni) { NI_DISPATCH(att_bwd_dq_kernel) }
static dkv_fn dkv_for(int ni) { NI_DISPATCH(att_bwd_dkv_kernel) }
#undef NI_DISPATCH

void cu_attention_setup(ops_queue *q) {
    /* Above 48 KiB a kernel must opt in; each instance gets what its largest head_dim (32 NI) needs. */
    const size_t cap = cuq(q)->smem_optin;
    for (int ni = 1; ni <= 8; ni++) {
        const int hd = 32 * ni;
        CHECK(dq_smem(hd) <= cap && dkv_smem(hd) <= cap && fwd_smem(hd) <= cap,
              "cuda attention: head_dim %d needs %zu bytes of shared memory, the device allows %zu", hd,
              S2D_MAX(dq_smem(hd), dkv_smem(hd)), cap);
        CUDA_CHECK(cudaFuncSetAttribute((const void *)fwd_for(ni), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)fwd_smem(hd)));
        CUDA_CHECK(cudaFuncSetAttribute((const void *)dq_for(ni), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)dq_smem(hd)));
        CUDA_CHECK(cudaFuncSetAttribute((const void *)dkv_for(ni), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)dkv_smem(hd)));
    }
}

static int ni_of(int hd) { return (hd + 31) / 32; }

/* Tiles of `step` rows over every sequence of the packed batch, staged to the device. */
static const att_tile *seq_tiles(ops_queue *q, int n_seqs, const int *seq_start, int step, int *n_tiles) {
    int n = 0;
    for (int s = 0; s < n_seqs; s++) n += (seq_start[s + 1] - seq_start[s] + step - 1) / step;
    cu_meta m;
    cu_meta_begin(&m, q, (size_t)S2D_MAX(n, 1) * sizeof(att_tile) + 16);
    att_tile *host = (att_tile *)m.host;
    int at = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int b = seq_start[s], len = seq_start[s + 1] - b;
        CHECK(len >= 0, "attention: seq_start is not increasing at sequence %d", s);
        for (int i0 = 0; i0 < len; i0 += step) host[at++] = (att_tile){b, b, len, i0, 0, 0, 0, -1};
    }
    m.used = (size_t)n * sizeof(att_tile);
    *n_tiles = n;
    return (const att_tile *)cu_meta_upload(&m);
}

void cu_attention_fwd(ops_queue *q, ops_tensor out, ops_tensor lse, ops_tensor qh, ops_tensor k, ops_tensor v,
                      int n_seqs, const int *seq_start, int nh, int nkv, int hd) {
    cu_need(out, OPS_F32, "attention_fwd", "out");
    cu_need(lse, OPS_F32, "attention_fwd", "lse");
    cu_need(qh, OPS_F32, "attention_fwd", "q");
    cu_need(k, OPS_F32, "attention_fwd", "k");
    cu_need(v, OPS_F32, "attention_fwd", "v");
    int n_tiles;
    const att_tile *tiles = seq_tiles(q, n_seqs, seq_start, ATT_BQ, &n_tiles);
    if (n_tiles == 0) return;
    dim3 grid((unsigned)n_tiles, (unsigned)nh);
    fwd_for(ni_of(hd))<<<grid, ATT_WARPS * 32, fwd_smem(hd), cus(q)>>>(f32p(out), f32p(lse), f32p(qh), f32p(k),
                                                                       f32p(v), NULL, tiles, nh, nkv, hd,
                                                                       1.0f / sqrtf((float)hd), ATT_SEQ);
    KERNEL_CHECK();
}

void cu_attention_prefill(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k, ops_tensor v, int n, int p0,
                          int nh, int nkv, int hd) {
    cu_need(out, OPS_F32, "attention_prefill", "out");
    cu_need(qh, OPS_F32, "attention_prefill", "q");
    cu_need(k, OPS_F32, "attention_prefill", "k");
    cu_need(v, OPS_F32, "attention_prefill", "v");
    if (n <= 0) return;
    const int n_tiles = (n + ATT_BQ - 1) / ATT_BQ;
    cu_meta m;
    cu_meta_begin(&m, q, (size_t)n_tiles * sizeof(att_tile) + 16);
    att_tile *host = (att_tile *)m.host;
    for (int i = 0; i < n_tiles; i++) host[i] = (att_tile){0, 0, n, i * ATT_BQ, p0, 0, 0, -1};
    m.used = (size_t)n_tiles * sizeof(att_tile);
    const att_tile *tiles = (const att_tile *)cu_meta_upload(&m);
    dim3 grid((unsigned)n_tiles, (unsigned)nh);
    fwd_for(ni_of(hd))<<<grid, ATT_WARPS * 32, fwd_smem(hd), cus(q)>>>(f32p(out), NULL, f32p(qh), f32p(k), f32p(v),
                                                                       NULL, tiles, nh, nkv, hd, 1.0f / sqrtf((float)hd),
                                                                       ATT_SEQ);
    KERNEL_CHECK();
}

void cu_attention_decode(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k_cache, ops_tensor v_cache,
                         int slot_len, const int *slots, const int *ctx_len, int n, int nh, int nkv, int hd) {
    cu_need(out, OPS_F32, "attention_decode", "out");
    cu_need(qh, OPS_F32, "attention_decode", "q");
    cu_need(k_cache, OPS_F32, "attention_decode", "k_cache");
    cu_need(v_cache, OPS_F32, "attention_decode", "v_cache");
    if (n <= 0) return;
    const int group = nh / nkv, per_row = (group + ATT_BQ - 1) / ATT_BQ;
    int n_tiles = 0, n_parts = 0;
    for (int r = 0; r < n; r++) {
        CHECK(ctx_len[r] >= 1 && ctx_len[r] <= slot_len, "attention_decode: row %d has context %d (slot_len %d)", r,
              ctx_len[r], slot_len);
        const int ns = ctx_len[r] > ATT_DEC_SPLIT_MIN ? (ctx_len[r] + ATT_DEC_CHUNK - 1) / ATT_DEC_CHUNK : 1;
        n_tiles += per_row * ns;
        if (ns > 1) n_parts += per_row * ns;
    }
    /* Staged: the tiles, then per row the first partial and the split count (for the combine). */
    const size_t tiles_bytes = ((size_t)n_tiles * sizeof(att_tile) + 15) & ~(size_t)15;
    const size_t row_bytes = ((size_t)n * sizeof(int) + 15) & ~(size_t)15;
    cu_meta m;
    cu_meta_begin(&m, q, tiles_bytes + 2 * row_bytes);
    att_tile *host = (att_tile *)m.host;
    int *row_part0 = (int *)(m.host + tiles_bytes), *row_ns = (int *)(m.host + tiles_bytes + row_bytes);
    int at = 0, part = 0;
    for (int r = 0; r < n; r++) {
        const int ctx = ctx_len[r];
        const int ns = ctx > ATT_DEC_SPLIT_MIN ? (ctx + ATT_DEC_CHUNK - 1) / ATT_DEC_CHUNK : 1;
        row_part0[r] = ns > 1 ? part : -1;
        row_ns[r] = ns > 1 ? ns : 0;
        for (int c = 0; c < per_row; c++)
            for (int sp = 0; sp < ns; sp++) {
                const int kb = ns > 1 ? sp * ATT_DEC_CHUNK : 0, ke = ns > 1 ? S2D_MIN(ctx, kb + ATT_DEC_CHUNK) : 0;
                host[at++] = (att_tile){r, slots[r] * slot_len, group, c * ATT_BQ, ctx - 1, kb, ke, ns > 1 ? part++ : -1};
            }
    }
    m.used = tiles_bytes + 2 * row_bytes;
    char *dev = cu_meta_upload(&m);
    const att_tile *tiles = (const att_tile *)dev;
    float *pbuf = n_parts ? (float *)cu_scratch_get(q, &cuq(q)->dec_part,
                                                    (size_t)n_parts * nkv * ATT_BQ * (hd + 2) * sizeof(float))
                          : NULL;
    dim3 grid((unsigned)n_tiles, (unsigned)nkv);
    fwd_for(ni_of(hd))<<<grid, ATT_WARPS * 32, fwd_smem(hd), cus(q)>>>(
        f32p(out), NULL, f32p(qh), f32p(k_cache), f32p(v_cache), pbuf, tiles, nh, nkv, hd, 1.0f / sqrtf((float)hd),
        ATT_DECODE);
    KERNEL_CHECK();
    if (n_parts) {
        att_decode_combine<<<dim3((unsigned)n, (unsigned)nh), 128, 0, cus(q)>>>(
            f32p(out), pbuf, (const int *)(dev + tiles_bytes), (const int *)(dev + tiles_bytes + row_bytes), nh, nkv, hd);
        KERNEL_CHECK();
    }
}

void cu_attention_bwd(ops_queue *q, ops_tensor dq, ops_tensor dk, ops_tensor dv, ops_tensor dout, ops_tensor qh,
                      ops_tensor k, ops_tensor v, ops_tensor out, ops_tensor lse, int n_seqs, const int *seq_start,
                      int nh, int nkv, int hd) {
    const char *op = "attention_bwd";
    cu_need(dq, OPS_F32, op, "dq");
    cu_need(dk, OPS_F32, op, "dk");
    cu_need(dv, OPS_F32, op, "dv");
    cu_need(dout, OPS_F32, op, "dout");
    cu_need(qh, OPS_F32, op, "q");
    cu_need(k, OPS_F32, op, "k");
    cu_need(v, OPS_F32, op, "v");
    cu_need(out, OPS_F32, op, "out");
    cu_need(lse, OPS_F32, op, "lse");
    CHECK(lse.p, "attention_bwd: lse from the forward is required");
    const int T = seq_start[n_seqs] - seq_start[0];
    if (T <= 0) return;
    const size_t rh = (size_t)seq_start[n_seqs] * nh;
    float *D = (float *)cu_scratch_get(q, &cuq(q)->attn, rh * sizeof(float));
    att_bwd_d_kernel<<<(unsigned)((rh * 32 + 255) / 256), 256, 0, cus(q)>>>(D, f32p(dout), f32p(out), rh, hd);
    KERNEL_CHECK();
    const float scale = 1.0f / sqrtf((float)hd);
    const int ni = ni_of(hd);
    int n_tiles;
    /* The two tile tables share the staging buffer one after the other: dq's is used before dkv's upload. */
    const att_tile *tq = seq_tiles(q, n_seqs, seq_start, ATT_BQ, &n_tiles);
    if (n_tiles) {
        dq_for(ni)<<<dim3((unsigned)n_tiles, (unsigned)nh), ATT_WARPS * 32, dq_smem(hd), cus(q)>>>(
            f32p(dq), f32p(dout), f32p(qh), f32p(k), f32p(v), f32p(lse), D, tq, nh, nkv, hd, scale);
        KERNEL_CHECK();
    }
    const att_tile *tk = seq_tiles(q, n_seqs, seq_start, ATT_BKK, &n_tiles);
    if (n_tiles) {
        dkv_for(ni)<<<dim3((unsigned)n_tiles, (unsigned)nkv), ATT_WARPS * 32, dkv_smem(hd), cus(q)>>>(
            f32p(dk), f32p(dv), f32p(dout), f32p(qh), f32p(k), f32p(v), f32p(lse), D, tk, nh, nkv, hd, scale);
        KERNEL_CHECK();
    }
}

/* cache[slots[r], pos[r], :] = rows[r, :]; one block per row. */
__global__ void kv_write_kernel(float *__restrict__ cache,        /* [n_slots, slot_len, width] */
                                const float *__restrict__ rows,   /* [n, width] */
                                const int *__restrict__ slots,    /* [n] */
                                const int *__restrict__ pos,      /* [n] */
                                int slot_len, int width) {
    const int r = blockIdx.x;
    float *dst = cache + ((size_t)slots[r] * slot_len + pos[r]) * width;
    const float *src = rows + (size_t)r * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
}

void cu_kv_write(ops_queue *q, ops_tensor cache, ops_tensor rows, int slot_len, const int *slots, const int *pos,
                 int n, int width) {
    cu_need(cache, OPS_F32, "kv_write", "cache");
    cu_need(rows, OPS_F32, "kv_write", "rows");
    if (n <= 0) return;
    for (int r = 0; r < n; r++)
        CHECK(pos[r] >= 0 && pos[r] < slot_len && slots[r] >= 0, "kv_write: row %d to slot %d position %d (slot_len %d)",
              r, slots[r], pos[r], slot_len);
    cu_meta m;
    cu_meta_begin(&m, q, 2 * (size_t)n * sizeof(int) + 32);
    const size_t o_slots = cu_meta_push(&m, slots, (size_t)n * sizeof(int));
    const size_t o_pos = cu_meta_push(&m, pos, (size_t)n * sizeof(int));
    char *dev = cu_meta_upload(&m);
    kv_write_kernel<<<n, 256, 0, cus(q)>>>(f32p(cache), f32p(rows), (const int *)(dev + o_slots),
                                           (const int *)(dev + o_pos), slot_len, width);
    KERNEL_CHECK();
}
