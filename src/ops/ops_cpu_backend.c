/* ops_cpu_backend.c: the CPU backend's table (ops.h): host memory, the fp32 kernels of ops_cpu.c / ops_rows.c /
 * ops_vocab.c, the row sampler, AdamW and the blocked sum of squares. Its queue keeps the scratch the kernels
 * need (attention blocks per thread, decode row pointers, one sampler per row, norm partials), sized by
 * ops_reserve and grown only when an op needs more than was reserved. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "ops/ops_cpu.h"
#include "ops/sampler.h"

/* Floats per block of the sum of squares: each block is summed serially in double and blocks are combined in
 * order, so the result does not depend on the number of OpenMP threads. */
#define NORM_BLOCK 16384

/* OpenBLAS's name for the kernels it chose (cblas.h declares it, but its complex.h clashes with this file's I) */
char *openblas_get_corename(void);

typedef struct {
    float *attn;          /* attention scratch (per-thread blocks) */
    size_t attn_floats;
    const float **k_rows, **v_rows; /* [rows] decode: each row's cache slot */
    int rows_cap;
    sampler *samplers;    /* [n_samplers] one per concurrently sampled row */
    int n_samplers, sampler_vocab;
    double *partials;     /* [n_partials] blocks of op_sumsq */
    size_t n_partials;
} cpu_queue;

static int cpu_device_count(void) { return 1; }

static void cpu_describe(int device, char *out, size_t cap) {
    (void)device;
    char model[128] = "CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "model name", 10) == 0) {
                const char *c = strchr(line, ':');
                if (c) snprintf(model, sizeof model, "%s", c + 2);
                model[strcspn(model, "\n")] = 0;
                break;
            }
        fclose(f);
    }
    /* the kernels decide the bits (s2d study --kernels): OpenBLAS's core (OPENBLAS_CORETYPE) and AVX-512 */
    snprintf(out, cap, "%s, %ld cores online, %d OpenMP threads, fp32 (OpenBLAS %s kernels), AVX-512 %s", model,
             sysconf(_SC_NPROCESSORS_ONLN), omp_get_max_threads(), openblas_get_corename(),
             ops_avx512_active() ? "on" : "off");
}

static bool cpu_queue_init(ops_queue *q, int device, s2d_err *err) {
    if (device != 0) return err_set(err, "device 'cpu:%d': the cpu backend has one device (cpu or cpu:0)", device);
    q->host_memory = true;
    snprintf(q->name, sizeof q->name, "cpu");
    q->impl = xcalloc(1, sizeof(cpu_queue));
    return true;
}

static void cpu_queue_free(ops_queue *q) {
    cpu_queue *c = q->impl;
    if (!c) return;
    free(c->attn);
    free(c->k_rows), free(c->v_rows);
    for (int i = 0; i < c->n_samplers; i++) sampler_free(&c->samplers[i]);
    free(c->samplers);
    free(c->partials);
    free(c);
    q->impl = NULL;
}

/* ---- scratch (grown only past what ops_reserve asked for) ---- */

/* *buf holds at least need elements of elem bytes afterwards (contents not kept: scratch). */
static void *grow(void **buf, size_t *cap, size_t need, size_t elem) {
    if (need > *cap) {
        free(*buf);
        *buf = xmalloc(S2D_MAX(need, 1) * elem);
        *cap = need;
    }
    return *buf;
}

static float *attn_scratch(cpu_queue *c, size_t floats) {
    return grow((void **)&c->attn, &c->attn_floats, floats, sizeof(float));
}

static void rows_scratch(cpu_queue *c, int rows) {
    if (rows <= c->rows_cap) return;
    c->k_rows = xrealloc(c->k_rows, (size_t)rows * sizeof *c->k_rows);
    c->v_rows = xrealloc(c->v_rows, (size_t)rows * sizeof *c->v_rows);
    c->rows_cap = rows;
}

static void samplers_scratch(cpu_queue *c, int rows, int vocab) {
    if (vocab != c->sampler_vocab) {
        for (int i = 0; i < c->n_samplers; i++) sampler_free(&c->samplers[i]);
        c->n_samplers = 0;
        c->sampler_vocab = vocab;
    }
    if (rows <= c->n_samplers) return;
    c->samplers = xrealloc(c->samplers, (size_t)rows * sizeof *c->samplers);
    for (int i = c->n_samplers; i < rows; i++) sampler_init(&c->samplers[i], vocab);
    c->n_samplers = rows;
}

static double *partials_scratch(cpu_queue *c, size_t blocks) {
    return grow((void **)&c->partials, &c->n_partials, blocks, sizeof(double));
}

static void cpu_reserve(ops_queue *q, int max_seq_len, int max_rows, int vocab, size_t max_elems) {
    cpu_queue *c = q->impl;
    if (max_seq_len > 0)
        attn_scratch(c, S2D_MAX(cpu_attention_scratch_floats(max_seq_len), cpu_attention_decode_scratch_floats(max_seq_len)));
    if (max_rows > 0) rows_scratch(c, max_rows);
    if (max_rows > 0 && vocab > 0) samplers_scratch(c, max_rows, vocab);
    if (max_elems > 0) partials_scratch(c, (max_elems + NORM_BLOCK - 1) / NORM_BLOCK);
}

/* ---- buffers: host memory ---- */

static void *cpu_alloc(ops_queue *q, size_t bytes) {
    (void)q;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        die("out of memory: %zu bytes (%.1f MB) of tensor memory", bytes, bytes / 1e6);
    return p;
}
static void cpu_free(ops_queue *q, void *p) { (void)q, free(p); }
static void cpu_move(ops_queue *q, void *dst, const void *src, size_t bytes) {
    (void)q;
    if (bytes && dst != src) memcpy(dst, src, bytes);
}
static void cpu_zero(ops_queue *q, void *dst, size_t bytes) { (void)q, memset(dst, 0, bytes); }
static void cpu_sync(ops_queue *q) { (void)q; }

/* ---- ops: f32 tensors (checked), adapted to the kernels ---- */

#define F(t) ((float *)(t).p)
#define I(t) ((int32_t *)(t).p)

static inline void want_f32(ops_tensor t, const char *op, const char *arg) {
    CHECK(!t.p || t.dt == OPS_F32, "cpu backend: %s: argument %s is %s, the cpu backend computes in f32", op, arg,
          ops_dtype_name(t.dt));
}

static void cpu_op_matmul(ops_queue *q, ops_tensor C, ops_tensor A, ops_tensor B, int M, int N, int K, bool ta,
                          bool tb, bool acc) {
    want_f32(C, "matmul", "C"), want_f32(A, "matmul", "A"), want_f32(B, "matmul", "B");
    cpu_matmul(F(C), F(A), F(B), M, N, K, ta, tb, acc);
}

static void cpu_op_linear_rows(ops_queue *q, ops_tensor y, ops_tensor x, ops_tensor W, int T, int in, int out,
                               bool acc) {
    want_f32(y, "linear_rows", "y"), want_f32(x, "linear_rows", "x");
    if (W.dt == OPS_BF16) cpu_linear_rows_bf16(F(y), F(x), W.p, T, in, out, acc);
    else want_f32(W, "linear_rows", "W"), cpu_linear_rows(F(y), F(x), F(W), T, in, out, acc);
}

static void cpu_op_rmsnorm_fwd(ops_queue *q, ops_tensor y, ops_tensor rstd, ops_tensor x, ops_tensor w, int rows,
                               int dim, float eps) {
    cpu_rmsnorm_fwd(F(y), F(rstd), F(x), F(w), rows, dim, eps);
}
static void cpu_op_rmsnorm_bwd(ops_queue *q, ops_tensor dx, ops_tensor dw, ops_tensor dy, ops_tensor x, ops_tensor w,
                               ops_tensor rstd, int rows, int dim, bool acc) {
    cpu_rmsnorm_bwd(F(dx), F(dw), F(dy), F(x), F(w), F(rstd), rows, dim, acc);
}
static void cpu_op_rope(ops_queue *q, ops_tensor x, ops_tensor pos, ops_tensor cos, ops_tensor sin, int T, int nh,
                        int hd, bool inverse) {
    if (inverse) cpu_rope_bwd(F(x), I(pos), F(cos), F(sin), T, nh, hd);
    else cpu_rope_fwd(F(x), I(pos), F(cos), F(sin), T, nh, hd);
}
static void cpu_op_attention_fwd(ops_queue *q, ops_tensor out, ops_tensor lse, ops_tensor qh, ops_tensor k,
                                 ops_tensor v, int n_seqs, const int *seq_start, int nh, int nkv, int hd) {
    float *s = attn_scratch(q->impl, cpu_attention_scratch_floats(seq_start[n_seqs]));
    cpu_attention_fwd(F(out), F(lse), F(qh), F(k), F(v), n_seqs, seq_start, nh, nkv, hd, s);
}
static void cpu_op_attention_bwd(ops_queue *q, ops_tensor dq, ops_tensor dk, ops_tensor dv, ops_tensor dout,
                                 ops_tensor qh, ops_tensor k, ops_tensor v, ops_tensor out, ops_tensor lse, int n_seqs,
                                 const int *seq_start, int nh, int nkv, int hd) {
    float *s = attn_scratch(q->impl, cpu_attention_scratch_floats(seq_start[n_seqs]));
    cpu_attention_bwd(F(dq), F(dk), F(dv), F(dout), F(qh), F(k), F(v), F(out), F(lse), n_seqs, seq_start, nh, nkv,
                      hd, s);
}
static void cpu_op_attention_prefill(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k, ops_tensor v, int n,
                                     int p0, int nh, int nkv, int hd) {
    float *s = attn_scratch(q->impl, cpu_attention_scratch_floats(p0 + n));
    cpu_attention_prefill(F(out), F(qh), F(k), F(v), n, p0, nh, nkv, hd, s);
}
static void cpu_op_attention_decode(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k_cache,
                                    ops_tensor v_cache, int slot_len, const int *slots, const int *ctx_len, int n,
                                    int nh, int nkv, int hd) {
    cpu_queue *c = q->impl;
    rows_scratch(c, n);
    int max_ctx = 1;
    const size_t slot_floats = (size_t)slot_len * nkv * hd;
    for (int r = 0; r < n; r++) {
        c->k_rows[r] = F(k_cache) + (size_t)slots[r] * slot_floats;
        c->v_rows[r] = F(v_cache) + (size_t)slots[r] * slot_floats;
        max_ctx = S2D_MAX(max_ctx, ctx_len[r]);
    }
    float *s = attn_scratch(c, cpu_attention_decode_scratch_floats(max_ctx));
    cpu_attention_decode(F(out), F(qh), c->k_rows, c->v_rows, ctx_len, n, nh, nkv, hd, s);
}
static void cpu_op_kv_write(ops_queue *q, ops_tensor cache, ops_tensor rows, int slot_len, const int *slots,
                            const int *pos, int n, int width) {
    for (int r = 0; r < n; r++)
        memcpy(F(cache) + ((size_t)slots[r] * slot_len + pos[r]) * width, F(rows) + (size_t)r * width,
               sizeof(float) * (size_t)width);
}
static void cpu_op_bias_add(ops_queue *q, ops_tensor y, ops_tensor b, int rows, int n) {
    cpu_bias_add(F(y), F(b), rows, n);
}
static void cpu_op_bias_bwd(ops_queue *q, ops_tensor db, ops_tensor dy, int rows, int n) {
    cpu_bias_bwd(F(db), F(dy), rows, n);
}
static void cpu_op_swiglu_fwd(ops_queue *q, ops_tensor h, ops_tensor gate, ops_tensor up, size_t n) {
    cpu_swiglu_fwd(F(h), F(gate), F(up), n);
}
static void cpu_op_swiglu_bwd(ops_queue *q, ops_tensor dgate, ops_tensor dup, ops_tensor dh, ops_tensor gate,
                              ops_tensor up, size_t n) {
    cpu_swiglu_bwd(F(dgate), F(dup), F(dh), F(gate), F(up), n);
}
static void cpu_op_embedding_fwd(ops_queue *q, ops_tensor out, ops_tensor table, ops_tensor tokens, int T, int dim) {
    cpu_embedding_fwd(F(out), F(table), I(tokens), T, dim);
}
static void cpu_op_embedding_bwd(ops_queue *q, ops_tensor dtable, ops_tensor dout, ops_tensor tokens, int T, int dim) {
    cpu_embedding_bwd(F(dtable), F(dout), I(tokens), T, dim);
}
static void cpu_op_vocab_rows(ops_queue *q, const ops_vocab_op *op, ops_tensor logits, int r0, int rows) {
    cpu_vocab_rows(op, F(logits), r0, rows);
}
static void cpu_op_add(ops_queue *q, ops_tensor y, ops_tensor x, size_t n) { cpu_add(F(y), F(x), n); }
static void cpu_op_scale(ops_queue *q, ops_tensor y, float s, size_t n) { cpu_scale(F(y), s, n); }

static double cpu_op_sumsq(ops_queue *q, ops_tensor x, size_t n) {
    const long nb = (long)((n + NORM_BLOCK - 1) / NORM_BLOCK);
    double *partial = partials_scratch(q->impl, (size_t)nb);
    const float *g = F(x);
#pragma omp parallel for schedule(static)
    for (long b = 0; b < nb; b++) {
        size_t lo = (size_t)b * NORM_BLOCK, hi = S2D_MIN(n, lo + NORM_BLOCK);
        double s = 0;
        for (size_t i = lo; i < hi; i++) s += (double)g[i] * g[i];
        partial[b] = s;
    }
    double total = 0;
    for (long b = 0; b < nb; b++) total += partial[b];
    return total;
}

/* The AdamW element update's constants, fp32 as the element loop uses them. */
typedef struct {
    float keep, b1c, b2, b2c, bias2_sqrt, eps, step_size; /* b1c = 1 - beta1, b2c = 1 - beta2 */
} adamw_consts;

/* Elements [lo, hi) of one segment, one at a time. */
static void adamw_range_plain(float *params, float *m, float *v, const float *grads, long lo, long hi,
                              const adamw_consts *k) {
    for (long i = lo; i < hi; i++) {
        float g = grads[i];
        float p = params[i] * k->keep;
        float mi = m[i] + k->b1c * (g - m[i]);
        float vi = k->b2 * v[i] + k->b2c * (g * g);
        float denom = sqrtf(vi) / k->bias2_sqrt + k->eps;
        params[i] = p - k->step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

/* The same operations in the same order, 8 elements at a time: IEEE add, mul, div and sqrt round alike in either
 * width and nothing is fused, so the bits are adamw_range_plain's (the scalar loop is bound by its divides). */
__attribute__((target("avx2"))) static void adamw_range_avx2(float *params, float *m, float *v, const float *grads,
                                                              long lo, long hi, const adamw_consts *k) {
    const __m256 keep = _mm256_set1_ps(k->keep), b1c = _mm256_set1_ps(k->b1c), b2 = _mm256_set1_ps(k->b2),
                 b2c = _mm256_set1_ps(k->b2c), bias2_sqrt = _mm256_set1_ps(k->bias2_sqrt),
                 eps = _mm256_set1_ps(k->eps), step = _mm256_set1_ps(k->step_size);
    long i = lo;
    for (; i + 8 <= hi; i += 8) {
        const __m256 g = _mm256_loadu_ps(grads + i), m0 = _mm256_loadu_ps(m + i), v0 = _mm256_loadu_ps(v + i);
        const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(params + i), keep);
        const __m256 mi = _mm256_add_ps(m0, _mm256_mul_ps(b1c, _mm256_sub_ps(g, m0)));
        const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, v0), _mm256_mul_ps(b2c, _mm256_mul_ps(g, g)));
        const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bias2_sqrt), eps);
        _mm256_storeu_ps(params + i, _mm256_sub_ps(p, _mm256_mul_ps(step, _mm256_div_ps(mi, denom))));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
    }
    adamw_range_plain(params, m, v, grads, i, hi, k);
}

/* Elements per OpenMP block of the AdamW update (blocks are independent: any thread count gives the same bits). */
#define ADAMW_BLOCK 8192

/* -1: not decided yet; 0: plain; 1: AVX2 (same bits). */
static int g_adamw_avx2 = -1;

void cpu_adamw_force_plain(bool plain) {
    __builtin_cpu_init();
    __atomic_store_n(&g_adamw_avx2, !plain && __builtin_cpu_supports("avx2") ? 1 : 0, __ATOMIC_RELEASE);
}

static void cpu_op_adamw(ops_queue *q, ops_tensor params_t, ops_tensor grads_t, ops_tensor m_t, ops_tensor v_t,
                         const ops_segment *segs, int n_segs, const ops_adamw_step *a) {
    if (__atomic_load_n(&g_adamw_avx2, __ATOMIC_ACQUIRE) < 0) cpu_adamw_force_plain(false);
    const bool avx2 = __atomic_load_n(&g_adamw_avx2, __ATOMIC_ACQUIRE) == 1;
    const double t = (double)a->step;
    const float b1 = a->beta1, b2 = a->beta2;
    /* Scalars in double as torch computes them in Python, then used as fp32 in the element loop. */
    const double bias1 = 1.0 - pow((double)b1, t);
    const double bias2 = 1.0 - pow((double)b2, t);
    adamw_consts k = {.b1c = 1.0f - b1, .b2 = b2, .b2c = 1.0f - b2, .bias2_sqrt = (float)sqrt(bias2), .eps = a->eps,
                      .step_size = (float)((double)a->lr / bias1)};
    float *params = F(params_t), *m = F(m_t), *v = F(v_t);
    const float *grads = F(grads_t);
    for (int s = 0; s < n_segs; s++) {
        const ops_segment *seg = &segs[s];
        k.keep = seg->decay ? (float)(1.0 - (double)a->lr * a->weight_decay) : 1.0f;
        const long lo = (long)seg->offset, hi = (long)(seg->offset + seg->numel);
        const long nb = (hi - lo + ADAMW_BLOCK - 1) / ADAMW_BLOCK;
#pragma omp parallel for schedule(static) if (nb > 1)
        for (long b = 0; b < nb; b++) {
            const long b0 = lo + b * ADAMW_BLOCK, b1e = S2D_MIN(hi, b0 + ADAMW_BLOCK);
            if (avx2)
                adamw_range_avx2(params, m, v, grads, b0, b1e, &k);
            else
                adamw_range_plain(params, m, v, grads, b0, b1e, &k);
        }
    }
}

static void cpu_op_sample(ops_queue *q, ops_tensor logits, int n, int V, const ops_sampling *sp,
                          const uint64_t *seq_ids, const uint64_t *positions, int32_t *ids_out, float *logp_out) {
    cpu_queue *c = q->impl;
    samplers_scratch(c, n, V);
    const float *L = F(logits);
    /* Rows are independent: sample them in parallel, each with its own scratch (small rows: a parallel region
     * costs more than it saves). */
    const bool parallel_rows = n > 1 && (size_t)n * V >= ((size_t)1 << 17);
#pragma omp parallel for schedule(dynamic, 1) if (parallel_rows)
    for (int i = 0; i < n; i++)
        ids_out[i] = sampler_sample(&c->samplers[i], sp, L + (size_t)i * V, seq_ids[i], positions[i], &logp_out[i]);
}

static bool cpu_op_bf16_mirror(ops_queue *q, ops_tensor dst, ops_tensor src, size_t n, bool fresh) {
    return cpu_bf16_mirror(dst.p, F(src), n, fresh);
}

const ops_backend ops_cpu_backend = {
    .name = "cpu",
    .device_count = cpu_device_count,
    .describe = cpu_describe,
    .queue_init = cpu_queue_init,
    .queue_free = cpu_queue_free,
    .reserve = cpu_reserve,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_move,
    .download = cpu_move,
    .copy = cpu_move,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .matmul = cpu_op_matmul,
    .linear_rows = cpu_op_linear_rows,
    .rmsnorm_fwd = cpu_op_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_op_rmsnorm_bwd,
    .rope = cpu_op_rope,
    .attention_fwd = cpu_op_attention_fwd,
    .attention_bwd = cpu_op_attention_bwd,
    .attention_prefill = cpu_op_attention_prefill,
    .attention_decode = cpu_op_attention_decode,
    .kv_write = cpu_op_kv_write,
    .bias_add = cpu_op_bias_add,
    .bias_bwd = cpu_op_bias_bwd,
    .swiglu_fwd = cpu_op_swiglu_fwd,
    .swiglu_bwd = cpu_op_swiglu_bwd,
    .embedding_fwd = cpu_op_embedding_fwd,
    .embedding_bwd = cpu_op_embedding_bwd,
    .vocab_rows = cpu_op_vocab_rows,
    .add = cpu_op_add,
    .scale = cpu_op_scale,
    .sumsq = cpu_op_sumsq,
    .adamw = cpu_op_adamw,
    .sample = cpu_op_sample,
    .bf16_mirror = cpu_op_bf16_mirror,
};
