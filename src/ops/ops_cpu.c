/* ops_cpu.c: fp32 reference backend of ops.h (OpenBLAS sgemm + OpenMP). Deterministic: each output element is
 * produced by one thread with a fixed reduction order; gradient accumulations that several rows share (norm
 * weights, embedding rows, GQA key/value heads) are split by column or by kv head, never raced. */
#include "ops/ops_cpu.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/common.h"
#include "ops/ops_vmath.h"

/* Query rows per attention block: bounds scratch to QBLOCK x seq_len per thread. */
#define QBLOCK 64
/* Below this many elements a row-wise / element-wise op runs on one thread: a parallel region costs more than
 * it saves (decode steps of small models), and on a shared machine each region waits for every thread. */
#define PAR_MIN 32768

void cpu_matmul(float *C, const float *A, const float *B, int M, int N, int K, bool trans_a, bool trans_b,
               bool accumulate) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (!accumulate) memset(C, 0, sizeof(float) * (size_t)M * (size_t)N);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
                1.0f, A, trans_a ? M : K, B, trans_b ? K : N, accumulate ? 1.0f : 0.0f, C, N);
}

void cpu_linear_fwd(float *y, const float *x, const float *W, int T, int in, int out) {
    cpu_matmul(y, x, W, T, out, in, false, true, false);
}

void cpu_linear_bwd(float *dx, float *dW, const float *dy, const float *x, const float *W, int T, int in, int out,
                   bool accumulate_dx) {
    if (dx) cpu_matmul(dx, dy, W, T, in, out, false, false, accumulate_dx);
    if (dW) cpu_matmul(dW, dy, x, out, in, T, true, false, true);
}

/* Rows are handled 4 at a time: their double sums are independent chains, interleaved so that they overlap
 * (one row's chain of dim dependent adds is latency-bound); each row's sum keeps its order, so the bits are a
 * row's alone. */
#define RMS_ROWS 4

void cpu_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int rows, int dim, float eps) {
    const int n_groups = (rows + RMS_ROWS - 1) / RMS_ROWS;
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN)
    for (int gi = 0; gi < n_groups; gi++) {
        const int r0 = gi * RMS_ROWS, nr = S2D_MIN(RMS_ROWS, rows - r0);
        double ss[RMS_ROWS] = {0, 0, 0, 0};
        const float *xr[RMS_ROWS];
        for (int q = 0; q < RMS_ROWS; q++) xr[q] = x + (size_t)(r0 + S2D_MIN(q, nr - 1)) * dim;
        if (nr == RMS_ROWS)
            for (int i = 0; i < dim; i++) {
                ss[0] += (double)xr[0][i] * xr[0][i];
                ss[1] += (double)xr[1][i] * xr[1][i];
                ss[2] += (double)xr[2][i] * xr[2][i];
                ss[3] += (double)xr[3][i] * xr[3][i];
            }
        else
            for (int q = 0; q < nr; q++)
                for (int i = 0; i < dim; i++) ss[q] += (double)xr[q][i] * xr[q][i];
        for (int q = 0; q < nr; q++) {
            float *yr = y + (size_t)(r0 + q) * dim;
            float rs = (float)(1.0 / sqrt(ss[q] / dim + (double)eps));
            if (rstd) rstd[r0 + q] = rs;
#pragma omp simd
            for (int i = 0; i < dim; i++) yr[i] = w[i] * (xr[q][i] * rs);
        }
    }
}

void cpu_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                    int rows, int dim, bool accumulate_dx) {
    /* dx = rs * (w*dy) - rs^3/dim * x * sum(w*dy*x) */
    if (dx) {
        const int n_groups = (rows + RMS_ROWS - 1) / RMS_ROWS;
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN)
        for (int gi = 0; gi < n_groups; gi++) {
            const int r0 = gi * RMS_ROWS, nr = S2D_MIN(RMS_ROWS, rows - r0);
            double dot[RMS_ROWS] = {0, 0, 0, 0};
            const float *xr[RMS_ROWS], *dyr[RMS_ROWS];
            for (int q = 0; q < RMS_ROWS; q++) {
                const size_t off = (size_t)(r0 + S2D_MIN(q, nr - 1)) * dim;
                xr[q] = x + off, dyr[q] = dy + off;
            }
            if (nr == RMS_ROWS)
                for (int i = 0; i < dim; i++) {
                    dot[0] += (double)w[i] * dyr[0][i] * xr[0][i];
                    dot[1] += (double)w[i] * dyr[1][i] * xr[1][i];
                    dot[2] += (double)w[i] * dyr[2][i] * xr[2][i];
                    dot[3] += (double)w[i] * dyr[3][i] * xr[3][i];
                }
            else
                for (int q = 0; q < nr; q++)
                    for (int i = 0; i < dim; i++) dot[q] += (double)w[i] * dyr[q][i] * xr[q][i];
            for (int q = 0; q < nr; q++) {
                float *dxr = dx + (size_t)(r0 + q) * dim;
                const float *xq = xr[q], *dyq = dyr[q];
                float rs = rstd[r0 + q];
                float c = (float)(dot[q] * rs * rs * rs / dim);
                if (accumulate_dx)
#pragma omp simd
                    for (int i = 0; i < dim; i++) dxr[i] += rs * w[i] * dyq[i] - c * xq[i];
                else
#pragma omp simd
                    for (int i = 0; i < dim; i++) dxr[i] = rs * w[i] * dyq[i] - c * xq[i];
            }
        }
    }
    if (dw) {
        /* Columns split across threads; rows summed in order inside each column block. */
        const int CB = 16;
        int nblocks = (dim + CB - 1) / CB;
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN)
        for (int b = 0; b < nblocks; b++) {
            int c0 = b * CB, c1 = S2D_MIN(dim, c0 + CB);
            double acc[16] = {0};
            for (int r = 0; r < rows; r++) {
                const float *xr = x + (size_t)r * dim, *dyr = dy + (size_t)r * dim;
                float rs = rstd[r];
                for (int c = c0; c < c1; c++) acc[c - c0] += (double)dyr[c] * xr[c] * rs;
            }
            for (int c = c0; c < c1; c++) dw[c] += (float)acc[c - c0];
        }
    }
}

static void rope_apply(float *x, const int *pos, const float *cos, const float *sin, int T, int n_heads, int hd,
                       float sign) {
    int half = hd / 2;
#pragma omp parallel for schedule(static) if ((size_t)T * n_heads * hd >= PAR_MIN)
    for (int t = 0; t < T; t++) {
        const float *c = cos + (size_t)pos[t] * half, *s = sin + (size_t)pos[t] * half;
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + ((size_t)t * n_heads + h) * hd;
            for (int i = 0; i < half; i++) {
                float x1 = xh[i], x2 = xh[i + half], si = sign * s[i];
                xh[i] = x1 * c[i] - x2 * si;
                xh[i + half] = x2 * c[i] + x1 * si;
            }
        }
    }
}

void cpu_rope_fwd(float *x, const int *pos, const float *cos, const float *sin, int T, int n_heads, int hd) {
    rope_apply(x, pos, cos, sin, T, n_heads, hd, 1.0f);
}
void cpu_rope_bwd(float *dx, const int *pos, const float *cos, const float *sin, int T, int n_heads, int hd) {
    rope_apply(dx, pos, cos, sin, T, n_heads, hd, -1.0f);
}

size_t cpu_attention_scratch_floats(int max_seq_len) {
    return (size_t)omp_get_max_threads() * 2 * QBLOCK * (size_t)S2D_MAX(max_seq_len, 1);
}

/* Scaled scores of query rows [i0, i1) (positions p0+i) against keys [0, p0+i1) into S [bq, p0+i1]; then
 * P = exp(S - lse) with the causal mask (zeros above the diagonal). When lse_out is given, lse is computed and
 * stored (forward); otherwise lse_in is used (backward recompute). */
static void attn_block_probs(float *S, const float *Qb, int ldq, const float *K, int ldk, int p0, int i0, int i1,
                             int hd, float scale, float *lse_out, int ld_lse, const float *lse_in) {
    int bq = i1 - i0, nk = p0 + i1;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, nk, hd, scale, Qb, ldq, K, ldk, 0.0f, S, nk);
    for (int r = 0; r < bq; r++) {
        float *sr = S + (size_t)r * nk;
        int valid = p0 + i0 + r + 1;
        float l;
        if (lse_out) {
            float mx = vm_max(sr, valid);
            double sum = vm_exp_sum(sr, sr, valid, mx);
            l = mx + (float)log(sum);
            lse_out[(size_t)r * ld_lse] = l;
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < valid; j++) sr[j] *= inv;
        } else {
            l = lse_in[(size_t)r * ld_lse];
            vm_exp_scale(sr, sr, valid, l, 1.0f);
        }
        for (int j = valid; j < nk; j++) sr[j] = 0.0f;
    }
}

/* Floats of attention scratch each thread uses: a QBLOCK x max_n score block and its probabilities. */
static size_t attn_scratch_per_thread(int n_seqs, const int *seq_start) {
    int max_n = 1;
    for (int s = 0; s < n_seqs; s++) max_n = S2D_MAX(max_n, seq_start[s + 1] - seq_start[s]);
    return 2 * QBLOCK * (size_t)max_n;
}

void cpu_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v, int n_seqs,
                      const int *seq_start, int nh, int nkv, int hd, float *scratch) {
    int group = nh / nkv, ldq = nh * hd, ldk = nkv * hd;
    float scale = 1.0f / sqrtf((float)hd);
    size_t per_thread = attn_scratch_per_thread(n_seqs, seq_start);
#pragma omp parallel for schedule(dynamic)
    for (int idx = 0; idx < n_seqs * nh; idx++) {
        int s = idx / nh, h = idx % nh, g = h / group;
        int b = seq_start[s], n = seq_start[s + 1] - b;
        float *S = scratch + per_thread * (size_t)omp_get_thread_num();
        const float *K = k + (size_t)b * ldk + (size_t)g * hd, *V = v + (size_t)b * ldk + (size_t)g * hd;
        float lse_tmp[QBLOCK];
        for (int i0 = 0; i0 < n; i0 += QBLOCK) {
            int i1 = S2D_MIN(n, i0 + QBLOCK), bq = i1 - i0;
            const float *Qb = q + (size_t)(b + i0) * ldq + (size_t)h * hd;
            float *lse_b = lse ? lse + (size_t)(b + i0) * nh + h : lse_tmp;
            attn_block_probs(S, Qb, ldq, K, ldk, 0, i0, i1, hd, scale, lse_b, lse ? nh : 1, NULL);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, hd, i1, 1.0f, S, i1, V, ldk, 0.0f,
                        out + (size_t)(b + i0) * ldq + (size_t)h * hd, ldq);
        }
    }
}

void cpu_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                      const float *v, const float *out, const float *lse, int n_seqs, const int *seq_start, int nh,
                      int nkv, int hd, float *scratch) {
    int group = nh / nkv, ldq = nh * hd, ldk = nkv * hd;
    float scale = 1.0f / sqrtf((float)hd);
    size_t per_thread = attn_scratch_per_thread(n_seqs, seq_start);
    /* One task per (sequence, kv head): the query heads of the group add into dK/dV in a fixed order. */
#pragma omp parallel for schedule(dynamic)
    for (int idx = 0; idx < n_seqs * nkv; idx++) {
        int s = idx / nkv, g = idx % nkv;
        int b = seq_start[s], n = seq_start[s + 1] - b;
        float *P = scratch + per_thread * (size_t)omp_get_thread_num();
        float *dP = P + per_thread / 2; /* the second half of this thread's block */
        const float *K = k + (size_t)b * ldk + (size_t)g * hd, *V = v + (size_t)b * ldk + (size_t)g * hd;
        float *dK = dk + (size_t)b * ldk + (size_t)g * hd, *dV = dv + (size_t)b * ldk + (size_t)g * hd;
        for (int i = 0; i < n; i++) {
            memset(dK + (size_t)i * ldk, 0, sizeof(float) * hd);
            memset(dV + (size_t)i * ldk, 0, sizeof(float) * hd);
        }
        for (int h = g * group; h < (g + 1) * group; h++) {
            for (int i0 = 0; i0 < n; i0 += QBLOCK) {
                int i1 = S2D_MIN(n, i0 + QBLOCK), bq = i1 - i0, nk = i1;
                size_t row0 = (size_t)(b + i0) * ldq + (size_t)h * hd;
                const float *Qb = q + row0, *dOb = dout + row0, *Ob = out + row0;
                attn_block_probs(P, Qb, ldq, K, ldk, 0, i0, i1, hd, scale, NULL, nh, lse + (size_t)(b + i0) * nh + h);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, nk, hd, 1.0f, dOb, ldq, V, ldk, 0.0f, dP,
                            nk);
                for (int r = 0; r < bq; r++) {
                    const float *dor = dOb + (size_t)r * ldq, *orow = Ob + (size_t)r * ldq;
                    float D = 0;
                    for (int d = 0; d < hd; d++) D += dor[d] * orow[d];
                    float *pr = P + (size_t)r * nk, *dpr = dP + (size_t)r * nk;
                    int valid = i0 + r + 1;
                    for (int j = 0; j < valid; j++) dpr[j] = pr[j] * (dpr[j] - D);
                    for (int j = valid; j < nk; j++) dpr[j] = 0.0f;
                }
                /* dQ = scale dS K; dK += scale dS^T Q; dV += P^T dO */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, hd, nk, scale, dP, nk, K, ldk, 0.0f,
                            dq + row0, ldq);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, bq, scale, dP, nk, Qb, ldq, 1.0f, dK,
                            ldk);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, bq, 1.0f, P, nk, dOb, ldq, 1.0f, dV,
                            ldk);
            }
        }
    }
}

void cpu_attention_prefill(float *out, const float *q, const float *k, const float *v, int n, int p0, int nh, int nkv,
                          int hd, float *scratch) {
    int group = nh / nkv, ldq = nh * hd, ldk = nkv * hd;
    float scale = 1.0f / sqrtf((float)hd);
    size_t per_thread = 2 * QBLOCK * (size_t)S2D_MAX(p0 + n, 1);
    int n_blocks = (n + QBLOCK - 1) / QBLOCK;
#pragma omp parallel for schedule(dynamic)
    for (int idx = 0; idx < nh * n_blocks; idx++) {
        int h = idx / n_blocks, i0 = (idx % n_blocks) * QBLOCK, i1 = S2D_MIN(n, i0 + QBLOCK), g = h / group;
        float *S = scratch + per_thread * (size_t)omp_get_thread_num();
        float lse_tmp[QBLOCK];
        const float *Qb = q + (size_t)i0 * ldq + (size_t)h * hd;
        attn_block_probs(S, Qb, ldq, k + (size_t)g * hd, ldk, p0, i0, i1, hd, scale, lse_tmp, 1, NULL);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i1 - i0, hd, p0 + i1, 1.0f, S, p0 + i1,
                    v + (size_t)g * hd, ldk, 0.0f, out + (size_t)i0 * ldq + (size_t)h * hd, ldq);
    }
}

/* Element blocks for the vectorised exp loops. */
#define EW_BLOCK 4096

void cpu_swiglu_fwd(float *h, const float *gate, const float *up, size_t n) {
    size_t nb = (n + EW_BLOCK - 1) / EW_BLOCK;
#pragma omp parallel for schedule(static) if (n >= 8 * EW_BLOCK)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * EW_BLOCK, len = S2D_MIN(n - i0, (size_t)EW_BLOCK);
        vm_swiglu_fwd(h + i0, gate + i0, up + i0, len);
    }
}

void cpu_swiglu_bwd(float *dgate, float *dup, const float *dh, const float *gate, const float *up, size_t n) {
    size_t nb = (n + EW_BLOCK - 1) / EW_BLOCK;
#pragma omp parallel for schedule(static) if (n >= 8 * EW_BLOCK)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * EW_BLOCK, len = S2D_MIN(n - i0, (size_t)EW_BLOCK);
        vm_swiglu_bwd(dgate + i0, dup + i0, dh + i0, gate + i0, up + i0, len);
    }
}

void cpu_embedding_fwd(float *out, const float *table, const int32_t *tokens, int T, int dim) {
#pragma omp parallel for schedule(static) if ((size_t)T * dim >= PAR_MIN)
    for (int t = 0; t < T; t++) memcpy(out + (size_t)t * dim, table + (size_t)tokens[t] * dim, sizeof(float) * dim);
}

void cpu_embedding_bwd(float *dtable, const float *dout, const int32_t *tokens, int T, int dim) {
    /* Column blocks across threads; tokens in order within a block, so repeated tokens add deterministically. */
    const int CB = 64;
    int nblocks = (dim + CB - 1) / CB;
#pragma omp parallel for schedule(static) if ((size_t)T * dim >= PAR_MIN)
    for (int b = 0; b < nblocks; b++) {
        int c0 = b * CB, c1 = S2D_MIN(dim, c0 + CB);
        for (int t = 0; t < T; t++) {
            float *dst = dtable + (size_t)tokens[t] * dim;
            const float *src = dout + (size_t)t * dim;
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}

static float row_lse(const float *x, int V) {
    float mx = vm_max(x, V);
    return mx + (float)log(vm_exp_sum(NULL, x, V, mx));
}

void cpu_logsoftmax_gather_fwd(float *logp, float *lse, const float *logits, const int32_t *target, int rows,
                              int V) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *x = logits + (size_t)r * V;
        float l = row_lse(x, V);
        if (lse) lse[r] = l;
        logp[r] = target[r] >= 0 ? x[target[r]] - l : 0.0f;
    }
}

void cpu_logsoftmax_gather_bwd(float *logits, const float *lse, const float *dlogp, const int32_t *target, int rows,
                              int V) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *x = logits + (size_t)r * V;
        if (target[r] < 0) {
            memset(x, 0, sizeof(float) * V);
            continue;
        }
        float l = lse[r], d = dlogp[r];
        vm_exp_scale(x, x, V, l, -d);
        x[target[r]] += d;
    }
}

void cpu_log_softmax(float *x, int rows, int V) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * V;
        float l = row_lse(xr, V);
        for (int j = 0; j < V; j++) xr[j] -= l;
    }
}

void cpu_add(float *y, const float *x, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
void cpu_scale(float *y, float s, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] *= s;
}
void cpu_axpy(float *y, float a, const float *x, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

void cpu_bias_add(float *y, const float *b, int rows, int n) {
#pragma omp parallel for schedule(static) if ((size_t)rows * n >= PAR_MIN)
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * n;
        for (int j = 0; j < n; j++) yr[j] += b[j];
    }
}

void cpu_bias_bwd(float *db, const float *dy, int rows, int n) {
    /* Columns split across threads; rows summed in order inside each column block (deterministic). */
    const int CB = 64;
    int nblocks = (n + CB - 1) / CB;
#pragma omp parallel for schedule(static) if ((size_t)rows * n >= PAR_MIN)
    for (int b = 0; b < nblocks; b++) {
        int c0 = b * CB, c1 = S2D_MIN(n, c0 + CB);
        double acc[64] = {0};
        for (int r = 0; r < rows; r++) {
            const float *dyr = dy + (size_t)r * n;
            for (int c = c0; c < c1; c++) acc[c - c0] += dyr[c];
        }
        for (int c = c0; c < c1; c++) db[c] += (float)acc[c - c0];
    }
}
