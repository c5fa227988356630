/* optim.cu: the gradient norm's sum of squares and the multi-tensor AdamW step.
 * sumsq: fp64 partials over fixed 16384-element blocks (as algo/optim.c's NORM_BLOCK), summed on the host in
 * block order: the same value for any launch shape. AdamW: one launch over every segment (a host-built chunk
 * table says where each block works and its weight-decay factor); the element arithmetic is the CPU's, with
 * round-to-nearest intrinsics so that no FMA contraction changes the bits. */
#include <math.h>
#include <stdlib.h>

#include "cuda_common.cuh"

#define SUMSQ_BLOCK 16384
#define SUMSQ_THREADS 256
#define ADAMW_CHUNK 65536

__global__ void sumsq_kernel(double *__restrict__ part, const float *__restrict__ x, size_t n) { /* part [nb] */
    __shared__ double red[32];
    const size_t lo = (size_t)blockIdx.x * SUMSQ_BLOCK;
    const size_t hi = lo + SUMSQ_BLOCK < n ? lo + SUMSQ_BLOCK : n;
    double s = 0;
    for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) s += (double)x[i] * x[i];
    s = cu_block_sum_d(s, red);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

double cu_sumsq(ops_queue *q, ops_tensor x, size_t n) {
    cu_need(x, OPS_F32, "sumsq", "x");
    if (!n) return 0.0;
    cu_queue *c = cuq(q);
    const size_t nb = (n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    CHECK(nb < (1u << 31), "sumsq: %zu elements", n);
    double *part = (double *)cu_scratch_get(q, &c->norm_part, nb * sizeof(double));
    sumsq_kernel<<<(unsigned)nb, SUMSQ_THREADS, 0, c->stream>>>(part, f32p(x), n);
    KERNEL_CHECK();
    if (c->host_part_n < nb) { /* host memory only; ops_reserve(max_elems) sizes it up front */
        free(c->host_part);
        c->host_part = (double *)xmalloc(nb * sizeof(double));
        c->host_part_n = nb;
    }
    CUDA_CHECK(cudaMemcpyAsync(c->host_part, part, nb * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    double total = 0;
    for (size_t b = 0; b < nb; b++) total += c->host_part[b];
    return total;
}

typedef struct {
    unsigned long long off; /* first element */
    unsigned int len;       /* elements (<= ADAMW_CHUNK) */
    float keep;             /* 1 - lr wd for decayed segments, else 1 */
} adamw_chunk;

typedef struct {
    float b1, b2, one_minus_b1, one_minus_b2, eps, step_size, bias2_sqrt;
} adamw_consts;

__global__ void adamw_kernel(float *__restrict__ params,            /* [n] */
                             const float *__restrict__ grads,       /* [n] */
                             float *__restrict__ m,                 /* [n] */
                             float *__restrict__ v,                 /* [n] */
                             const adamw_chunk *__restrict__ chunks, /* [gridDim.x] */
                             adamw_consts k) {
    const adamw_chunk ch = chunks[blockIdx.x];
    for (unsigned j = threadIdx.x; j < ch.len; j += blockDim.x) {
        const size_t i = ch.off + j;
        const float g = grads[i], mi0 = m[i], vi0 = v[i];
        const float p = __fmul_rn(params[i], ch.keep);
        const float mi = __fadd_rn(mi0, __fmul_rn(k.one_minus_b1, __fsub_rn(g, mi0)));
        const float vi = __fadd_rn(__fmul_rn(k.b2, vi0), __fmul_rn(k.one_minus_b2, __fmul_rn(g, g)));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), k.bias2_sqrt), k.eps);
        params[i] = __fsub_rn(p, __fmul_rn(k.step_size, __fdiv_rn(mi, denom)));
        m[i] = mi;
        v[i] = vi;
    }
}

void cu_adamw(ops_queue *q, ops_tensor params, ops_tensor grads, ops_tensor m, ops_tensor v, const ops_segment *segs,
              int n_segs, const ops_adamw_step *a) {
    cu_need(params, OPS_F32, "adamw", "params");
    cu_need(grads, OPS_F32, "adamw", "grads");
    cu_need(m, OPS_F32, "adamw", "m");
    cu_need(v, OPS_F32, "adamw", "v");
    CHECK(a->step >= 1, "adamw: step %ld (steps count from 1)", a->step);
    size_t n_chunks = 0;
    for (int s = 0; s < n_segs; s++) n_chunks += (segs[s].numel + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
    if (!n_chunks) return;
    CHECK(n_chunks < (1u << 31), "adamw: %zu chunks", n_chunks);
    /* Scalars in double, then fp32, exactly as algo/optim.c's adamw_step. */
    const double t = (double)a->step;
    const double bias1 = 1.0 - pow((double)a->beta1, t), bias2 = 1.0 - pow((double)a->beta2, t);
    adamw_consts k;
    k.b1 = a->beta1;
    k.b2 = a->beta2;
    k.one_minus_b1 = 1.0f - a->beta1;
    k.one_minus_b2 = 1.0f - a->beta2;
    k.eps = a->eps;
    k.step_size = (float)((double)a->lr / bias1);
    k.bias2_sqrt = (float)sqrt(bias2);
    const float keep_decay = (float)(1.0 - (double)a->lr * a->weight_decay);
    cu_meta mt;
    cu_meta_begin(&mt, q, n_chunks * sizeof(adamw_chunk) + 16);
    adamw_chunk *h = (adamw_chunk *)mt.host;
    size_t at = 0;
    for (int s = 0; s < n_segs; s++)
        for (size_t o = 0; o < segs[s].numel; o += ADAMW_CHUNK) {
            const size_t len = S2D_MIN((size_t)ADAMW_CHUNK, segs[s].numel - o);
            h[at++] = (adamw_chunk){segs[s].offset + o, (unsigned)len, segs[s].decay ? keep_decay : 1.0f};
        }
    mt.used = n_chunks * sizeof(adamw_chunk);
    const adamw_chunk *dev = (const adamw_chunk *)cu_meta_upload(&mt);
    adamw_kernel<<<(unsigned)n_chunks, 256, 0, cus(q)>>>(f32p(params), f32p(grads), f32p(m), f32p(v), dev, k);
    KERNEL_CHECK();
}
