/* vocab.cu: op_vocab_rows, the vocabulary-wide work on a chunk of LM-head logits, one block per row.
 * Reference: ops_cpu.c op_logsoftmax_gather_fwd/bwd (VOCAB_LOGP: fp32 max, fp32 exp terms summed in fp64,
 * a float lse) and ops/ops_vocab.c (cpu_fkl_full_row, cpu_fkl_topk_row, cpu_log_softmax_row, cpu_topk_logprobs_row: fp64
 * log-sum-exp and KL). Sums are block reductions in a fixed tree (deterministic; not the CPU's order, so equal
 * within rounding, not bitwise). The teacher top-k is a radix select, never a sort of the row. */
#include <stdio.h>

#include "select.cuh"

#define VOCAB_THREADS 1024

/* fp32 max of the row, then sum of expf(x - max) in fp64 (the CPU's row_lse). */
static __device__ float row_lse_f(const float *x, int V, double *red_d, float *red_f) {
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, x[v]);
    mx = cu_block_max_f(mx, red_f);
    double s = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) s += (double)expf(x[v] - mx);
    s = cu_block_sum_d(s, red_d);
    return mx + (float)log(s);
}

/* The fp64 log-sum-exp of ops/ops_vocab.c (logsumexp_row). */
static __device__ double row_lse_d(const float *x, int V, double *red_d, float *red_f) {
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, x[v]);
    mx = cu_block_max_f(mx, red_f);
    double s = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) s += exp((double)x[v] - mx);
    s = cu_block_sum_d(s, red_d);
    return mx + log(s);
}

__global__ void __launch_bounds__(VOCAB_THREADS)
    vocab_logp_kernel(float *__restrict__ logits,          /* [rows, V]: gradient in place with want_grad */
                      const int32_t *__restrict__ target,  /* [T] */
                      float *__restrict__ logp,            /* [T] or NULL */
                      const float *__restrict__ dlogp,     /* [T] (want_grad) */
                      float *__restrict__ chunk_logp,      /* [rows] or NULL */
                      float *__restrict__ chunk_lse,       /* [rows] or NULL */
                      int V, int r0, int want_grad) {
    __shared__ double red_d[32];
    __shared__ float red_f[32];
    const int i = blockIdx.x, t = r0 + i;
    float *x = logits + (size_t)i * V;
    const int tg = target[t];
    const float l = row_lse_f(x, V, red_d, red_f);
    if (threadIdx.x == 0) {
        const float lp = tg >= 0 ? x[tg] - l : 0.0f;
        if (chunk_lse) chunk_lse[i] = l;
        if (chunk_logp) chunk_logp[i] = lp;
        if (logp) logp[t] = lp;
    }
    if (!want_grad) return;
    __syncthreads(); /* x[tg] has been read */
    if (tg < 0) {
        for (int v = threadIdx.x; v < V; v += blockDim.x) x[v] = 0.0f;
        return;
    }
    const float d = dlogp[t], a = -d;
    for (int v = threadIdx.x; v < V; v += blockDim.x) x[v] = a * expf(x[v] - l);
    __syncthreads();
    if (threadIdx.x == 0) x[tg] += d;
}

/* A row the teacher does not teach (slot < 0) contributes nothing: its gradient is zero. True when so. */
__device__ __forceinline__ bool untaught_row(float *x, int V, int slot, int want_grad) {
    if (slot >= 0) return false;
    if (want_grad)
        for (int v = threadIdx.x; v < V; v += blockDim.x) x[v] = 0.0f;
    return true;
}

__global__ void __launch_bounds__(VOCAB_THREADS)
    vocab_fkl_full_kernel(float *__restrict__ logits,           /* [rows, V] */
                          const int32_t *__restrict__ row_slot, /* [T] */
                          const float *__restrict__ full_logp,  /* [n_slots, V] teacher log-probs */
                          double *__restrict__ row_kl,          /* [T] or NULL */
                          int V, int r0, float scale, int want_grad) {
    __shared__ double red_d[32];
    __shared__ float red_f[32];
    const int i = blockIdx.x, t = r0 + i, slot = row_slot[t];
    float *x = logits + (size_t)i * V;
    if (untaught_row(x, V, slot, want_grad)) return;
    const float *tl = full_logp + (size_t)slot * V;
    const double lse = row_lse_d(x, V, red_d, red_f);
    double kl = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const double lp = x[v] - lse, pt = exp((double)tl[v]);
        if (pt > 0) kl += pt * (tl[v] - lp);
    }
    kl = cu_block_sum_d(kl, red_d);
    if (row_kl && threadIdx.x == 0) row_kl[t] = kl;
    if (!want_grad) return;
    /* Every thread rewrites only the elements it read itself: no barrier needed. */
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const double lp = x[v] - lse, pt = exp((double)tl[v]);
        x[v] = (float)(scale * (exp(lp) - pt));
    }
}

__global__ void __launch_bounds__(VOCAB_THREADS)
    vocab_teacher_full_kernel(const float *__restrict__ logits,     /* [rows, V] */
                              const int32_t *__restrict__ row_slot, /* [T] */
                              float *__restrict__ full_logp,        /* [n_slots, V] */
                              int V, int r0) {
    __shared__ double red_d[32];
    __shared__ float red_f[32];
    const int i = blockIdx.x, slot = row_slot[r0 + i];
    if (slot < 0) return;
    const float *x = logits + (size_t)i * V;
    const double lse = row_lse_d(x, V, red_d, red_f);
    float *o = full_logp + (size_t)slot * V;
    for (int v = threadIdx.x; v < V; v += blockDim.x) o[v] = (float)(x[v] - lse);
}

/* The k most likely ids (best first, ties by lower id) and their log-probs. */
__global__ void __launch_bounds__(VOCAB_THREADS)
    vocab_teacher_topk_kernel(const float *__restrict__ logits,     /* [rows, V] */
                              const int32_t *__restrict__ row_slot, /* [T] */
                              int32_t *__restrict__ topk_ids,       /* [n_slots, k] */
                              float *__restrict__ topk_logp,        /* [n_slots, k] */
                              int V, int k, int r0) {
    __shared__ double red_d[32];
    __shared__ float red_f[32];
    __shared__ sel_smem ss;
    __shared__ uint32_t keys[SEL_MAX_K];
    __shared__ int ids[SEL_MAX_K];
    const int i = blockIdx.x, slot = row_slot[r0 + i];
    if (slot < 0) return;
    const float *x = logits + (size_t)i * V;
    const double lse = row_lse_d(x, V, red_d, red_f);
    int need;
    const uint32_t kth = sel_radix_kth(x, V, k, &ss, &need);
    const int P = sel_pow2(k);
    sel_gather(x, V, k, kth, need, keys, ids, P, &ss);
    sel_bitonic(keys, ids, P);
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        topk_ids[(size_t)slot * k + j] = ids[j];
        topk_logp[(size_t)slot * k + j] = (float)(x[ids[j]] - lse);
    }
}

/* Index of id in the ascending ids[0..k), or -1. */
__device__ __forceinline__ int find_sorted(const int *ids, int k, int id) {
    int lo = 0, hi = k - 1;
    while (lo <= hi) {
        const int mid = (lo + hi) >> 1;
        if (ids[mid] == id) return mid;
        if (ids[mid] < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* fkl against the teacher's top-k plus one tail bucket (ops/ops_vocab.c cpu_fkl_topk_row). */
__global__ void __launch_bounds__(VOCAB_THREADS)
    vocab_fkl_topk_kernel(float *__restrict__ logits,            /* [rows, V] */
                          const int32_t *__restrict__ row_slot,  /* [T] */
                          const int32_t *__restrict__ topk_ids,  /* [n_slots, k] */
                          const float *__restrict__ topk_logp,   /* [n_slots, k] */
                          double *__restrict__ row_kl,           /* [T] or NULL */
                          int V, int k, int r0, float scale, int want_grad) {
    __shared__ double red_d[32];
    __shared__ float red_f[32];
    __shared__ uint32_t sid[SEL_MAX_K]; /* the teacher's ids, ascending (as keys: ids are >= 0) */
    __shared__ int sj[SEL_MAX_K];       /* their index in the teacher's list */
    const int i = blockIdx.x, t = r0 + i, slot = row_slot[t];
    float *x = logits + (size_t)i * V;
    if (untaught_row(x, V, slot, want_grad)) return;
    const int32_t *tid = topk_ids + (size_t)slot * k;
    const float *tlp = topk_logp + (size_t)slot * k;
    const int P = sel_pow2(k);
    /* Sort by id ascending: sel_bitonic sorts "better" first, so give it the complement of the id as key. */
    for (int j = threadIdx.x; j < P; j += blockDim.x) {
        const bool real = j < k;
        const int id = real ? tid[j] : 0x7fffffff;
        if (real && (id < 0 || id >= V)) {
            printf("vocab_rows fkl_topk: teacher id %d outside the vocabulary (%d)\n", id, V);
            __trap();
        }
        sid[j] = ~(uint32_t)id;
        sj[j] = real ? j : 0x7fffffff;
    }
    __syncthreads();
    sel_bitonic(sid, sj, P);
    for (int j = threadIdx.x; j < k; j += blockDim.x) sid[j] = ~sid[j]; /* back to the ids, in place */
    __syncthreads();
    const int *sids = (const int *)sid;
    for (int j = threadIdx.x + 1; j < k; j += blockDim.x)
        if (sids[j] == sids[j - 1]) {
            printf("vocab_rows fkl_topk: teacher id %d appears twice in the top-k\n", sids[j]);
            __trap();
        }
    const double lse = row_lse_d(x, V, red_d, red_f);
    /* Student tail mass as a log-sum-exp over the tail itself (no 1 - sum cancellation). */
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        if (find_sorted(sids, k, v) < 0) mx = fmaxf(mx, x[v]);
    mx = cu_block_max_f(mx, red_f);
    double tail = 0;
    if (k < V)
        for (int v = threadIdx.x; v < V; v += blockDim.x)
            if (find_sorted(sids, k, v) < 0) tail += exp((double)x[v] - mx);
    tail = cu_block_sum_d(tail, red_d);
    const double lse_tail = k < V ? mx + log(tail) : -INFINITY;
    double in_k = 0, kl = 0;
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        const double pt = exp((double)tlp[j]);
        in_k += pt;
        if (pt > 0) kl += pt * (tlp[j] - (x[tid[j]] - lse));
    }
    in_k = cu_block_sum_d(in_k, red_d);
    kl = cu_block_sum_d(kl, red_d);
    double m_teacher = 1 - in_k;
    if (k == V || m_teacher < 1e-6) m_teacher = 0;
    if (m_teacher > 0) kl += m_teacher * (log(m_teacher) - (lse_tail - lse));
    if (row_kl && threadIdx.x == 0) row_kl[t] = kl;
    if (!want_grad) return;
    __syncthreads(); /* x[tid[j]] reads above are done before any thread rewrites x */
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const double p = exp((double)x[v] - lse);
        const int at = find_sorted(sids, k, v);
        if (at >= 0) {
            /* The CPU's two float steps: (float)(scale p), then minus (float)(scale p_T). */
            const int j = sj[at];
            x[v] = __fsub_rn((float)(scale * p), (float)(scale * exp((double)tlp[j])));
        } else {
            const double share = m_teacher > 0 ? m_teacher * exp((double)x[v] - lse_tail) : 0.0;
            x[v] = (float)(scale * (p - share));
        }
    }
}

/* x[i] /= t: the sampling temperature (ops.h ops_vocab_op.temperature; the CPU's and the sampler's float division). */
__global__ void vocab_divide_kernel(float *__restrict__ x, float t, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fdiv_rn(x[i], t);
}

static void vocab_divide(cudaStream_t st, float *x, size_t n, float t) {
    const int threads = 256;
    size_t blocks = (n + threads - 1) / threads;
    vocab_divide_kernel<<<(unsigned)(blocks < 65535 ? blocks : 65535), threads, 0, st>>>(x, t, n);
}

void cu_vocab_rows(ops_queue *q, const ops_vocab_op *op, ops_tensor logits, int r0, int rows) {
    cu_need(logits, OPS_F32, "vocab_rows", "logits");
    if (rows <= 0) return;
    const int V = op->V;
    CHECK(V > 0, "vocab_rows: V = %d", V);
    cudaStream_t st = cus(q);
    const float temp = op->temperature;
    const bool tempered = temp != 0.0f && temp != 1.0f; /* 0 / 1: the untempered op */
    CHECK(!tempered || (temp > 0 && isfinite(temp)), "vocab_rows: temperature %g must be > 0 and finite", (double)temp);
    const size_t n_logits = (size_t)rows * (size_t)V;
    if (tempered) vocab_divide(st, f32p(logits), n_logits, temp);
    switch (op->kind) {
    case VOCAB_LOGP:
        cu_need(op->target, OPS_I32, "vocab_rows", "target");
        CHECK(op->target.p, "vocab_rows logp: target is required");
        CHECK(!op->want_grad || op->dlogp.p, "vocab_rows logp: want_grad needs dlogp");
        vocab_logp_kernel<<<rows, VOCAB_THREADS, 0, st>>>(f32p(logits), i32p(op->target), f32p(op->logp),
                                                           f32p(op->dlogp), f32p(op->chunk_logp), f32p(op->chunk_lse),
                                                           V, r0, op->want_grad);
        break;
    case VOCAB_FKL_FULL:
        CHECK(op->row_slot.p && op->full_logp.p, "vocab_rows fkl_full: row_slot and full_logp are required");
        cu_need(op->row_kl, OPS_F64, "vocab_rows", "row_kl");
        vocab_fkl_full_kernel<<<rows, VOCAB_THREADS, 0, st>>>(f32p(logits), i32p(op->row_slot), f32p(op->full_logp),
                                                               (double *)op->row_kl.p, V, r0, op->scale,
                                                               op->want_grad);
        break;
    case VOCAB_FKL_TOPK:
        CHECK(op->k >= 1 && op->k <= SEL_MAX_K && op->k <= V, "vocab_rows fkl_topk: k = %d outside [1, min(%d, V=%d)]",
              op->k, SEL_MAX_K, V);
        CHECK(op->row_slot.p && op->topk_ids.p && op->topk_logp.p,
              "vocab_rows fkl_topk: row_slot, topk_ids and topk_logp are required");
        cu_need(op->row_kl, OPS_F64, "vocab_rows", "row_kl");
        vocab_fkl_topk_kernel<<<rows, VOCAB_THREADS, 0, st>>>(f32p(logits), i32p(op->row_slot), i32p(op->topk_ids),
                                                               f32p(op->topk_logp), (double *)op->row_kl.p, V, op->k, r0,
                                                               op->scale, op->want_grad);
        break;
    case VOCAB_TEACHER_FULL:
        CHECK(op->row_slot.p && op->full_logp.p, "vocab_rows teacher_full: row_slot and full_logp are required");
        vocab_teacher_full_kernel<<<rows, VOCAB_THREADS, 0, st>>>(f32p(logits), i32p(op->row_slot),
                                                                   f32p(op->full_logp), V, r0);
        break;
    case VOCAB_TEACHER_TOPK:
        CHECK(op->k >= 1 && op->k <= SEL_MAX_K && op->k <= V,
              "vocab_rows teacher_topk: k = %d outside [1, min(%d, V=%d)]", op->k, SEL_MAX_K, V);
        CHECK(op->row_slot.p && op->topk_ids.p && op->topk_logp.p,
              "vocab_rows teacher_topk: row_slot, topk_ids and topk_logp are required");
        vocab_teacher_topk_kernel<<<rows, VOCAB_THREADS, 0, st>>>(f32p(logits), i32p(op->row_slot),
                                                                   i32p(op->topk_ids), f32p(op->topk_logp), V, op->k,
                                                                   r0);
        break;
    case VOCAB_RKL_FULL:
    case VOCAB_RKL_TOPK:
        die("vocab_rows: opd.mode full / topk (the exact per-position reverse KL) has no CUDA kernel yet; use "
            "opd.mode: sampled on cuda, or run this stage on the CPU");
    default: die("vocab_rows: unknown kind %d", (int)op->kind);
    }
    if (tempered && op->want_grad) vocab_divide(st, f32p(logits), n_logits, temp); /* d/dx f(x / t) = f'(x / t) / t */
    KERNEL_CHECK();
}
