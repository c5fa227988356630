/* sample.cu: op_sample on the device, one block per row; ids and log-probs come back to the host.
 *
 * The CPU sampler (ops/sampler.c) is the reference: logits / T -> w = exp(x/T - max) by the CPU's own exp
 * (samp_exp: the same operations, so the same bits) -> top-k -> top-p -> inverse-CDF draw with
 * u = sampler_uniform(seed, seq_id, position) (computed on the host by that very function, so the keying
 * cannot drift). Candidates are ordered by weight descending, ties by lower id; weights that underflow to 0
 * are never drawn.
 *  - greedy: argmax (lowest id among equal maxima); log-prob of the untempered softmax.
 *  - no filter: the draw walks ids in order (block scan of fp64 prefix sums), as the CPU.
 *  - top-k (k <= 4096), with or without top-p: radix select + bitonic sort of the k candidates, then the
 *    CPU's sequential fp64 nucleus cut and draw over them (thread 0, at most 4096 steps).
 *  - top-p without top-k: no sort at all. The nucleus cut and the draw are both "the first position, in
 *    candidate order, where the cumulative weight reaches a target", found by a radix descent over the weight
 *    bits with per-bin masses in 2^-45 fixed point (integer atomics: deterministic), ties at the final key
 *    resolved by id order. Equal to the CPU's fp64 walk except where the target falls within ~1e-9 (relative)
 *    of a cumulative boundary. */
#include <math.h>

#include "select.cuh"

#define _Noreturn [[noreturn]]
extern "C" {
#include "ops/sampler.h"
}
#undef _Noreturn

#define SAMPLE_THREADS 1024
#define FIX_SCALE 35184372088832.0 /* 2^45: weights are <= 1 and V < 2^18, so sums stay below 2^63 */

size_t cu_sample_scratch_bytes(int rows, int vocab) {
    /* weights [rows, V] f32, then u [rows] f64, ids [rows] i32, logp [rows] f32 */
    return (size_t)rows * vocab * sizeof(float) + (size_t)rows * (sizeof(double) + sizeof(int) + sizeof(float)) + 1024;
}

typedef struct {
    unsigned long long hist[256];
    double dtot[32];
    double doff[32];
    int found;
    int last_pos;
    uint32_t prefix;
    unsigned long long rem, above;
    int token;
} samp_smem;

/* sampler.c's exp4 (Cephes' expf) one lane at a time, operation for operation; the _rn intrinsics keep nvcc
 * from contracting them into FMAs, so a weight has the CPU's bits. x <= 88; below -110 it counts as -110. */
__device__ __forceinline__ float samp_exp(float x) {
    x = fmaxf(x, -110.0f);
    const float nf = __fsub_rn(__fadd_rn(__fmul_rn(x, 1.44269504088896341f), 12582912.0f), 12582912.0f);
    float r = __fsub_rn(x, __fmul_rn(nf, 0.693359375f));
    r = __fsub_rn(r, __fmul_rn(nf, -2.12194440e-4f));
    const float r2 = __fmul_rn(r, r);
    float p = 1.9875691500e-4f;
    p = __fadd_rn(__fmul_rn(p, r), 1.3981999507e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 8.3334519073e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 4.1665795894e-2f);
    p = __fadd_rn(__fmul_rn(p, r), 1.6666665459e-1f);
    p = __fadd_rn(__fmul_rn(p, r), 5.0000001201e-1f);
    p = __fadd_rn(__fadd_rn(__fmul_rn(p, r2), r), 1.0f);
    const int n = (int)nf, n1 = n >> 1, n2 = n - n1; /* n1, n2 >= -80: normal scales */
    return __fmul_rn(__fmul_rn(p, __int_as_float((n1 + 127) << 23)), __int_as_float((n2 + 127) << 23));
}

__device__ __forceinline__ unsigned long long wfix(float w) { return (unsigned long long)__double2ull_rn((double)w * FIX_SCALE); }
__device__ __forceinline__ float key_weight(uint32_t key) { return __uint_as_float(key & 0x7fffffffu); } /* w >= 0 */

/* Inclusive prefix of v over the block in thread order (fp64, fixed tree); *total = the block's sum. */
static __device__ double block_scan_d(double v, samp_smem *s, double *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        const double t = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += t;
    }
    __syncthreads();
    if (lane == 31) s->dtot[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        double acc = 0;
        for (int w = 0; w < nw; w++) {
            s->doff[w] = acc;
            acc += s->dtot[w];
        }
        s->dtot[0] = acc; /* read below, after the barrier, as the total */
    }
    __syncthreads();
    *total = s->dtot[0];
    return s->doff[warp] + v;
}

/* The key K* of the first candidate-order position whose cumulative fixed-point weight reaches target
 * (1 <= target <= total), and in *m how many elements with key K* (lowest ids first) that position takes. */
static __device__ uint32_t mass_select(const float *w, int V, unsigned long long target, samp_smem *s,
                                unsigned long long *m) {
    uint32_t prefix = 0, mask = 0;
    unsigned long long rem = target;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) s->hist[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            const uint32_t key = sel_key(w[i]);
            if ((key & mask) == prefix) atomicAdd(&s->hist[(key >> shift) & 255u], wfix(w[i]));
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned long long cum = 0;
            int b = 255;
            for (; b > 0; b--) {
                if (cum + s->hist[b] >= rem) break;
                cum += s->hist[b];
            }
            s->prefix = prefix | ((uint32_t)b << shift);
            s->rem = rem - cum;
        }
        __syncthreads();
        prefix = s->prefix;
        rem = s->rem;
        mask |= 255u << shift;
        __syncthreads();
    }
    const unsigned long long unit = wfix(key_weight(prefix));
    *m = unit ? (rem + unit - 1) / unit : 1;
    return prefix;
}

/* The id of the m-th (1-based) element with key `key`, in id order. */
static __device__ int nth_with_key(const float *w, int V, uint32_t key, unsigned long long m, samp_smem *s, sel_smem *ss) {
    if (threadIdx.x == 0) s->token = -1;
    __syncthreads();
    long long base = 0;
    for (int c0 = 0; c0 < V; c0 += blockDim.x) {
        const int i = c0 + threadIdx.x;
        const bool eq = i < V && sel_key(w[i]) == key;
        int tot;
        const int pe = sel_scan_flag(eq, ss, &tot);
        if (eq && (unsigned long long)(base + pe + 1) == m) s->token = i;
        base += tot;
        if ((unsigned long long)base >= m) break;
    }
    __syncthreads();
    return s->token;
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_kernel(const float *__restrict__ logits, /* [n, V] */
                  float *__restrict__ wbuf,         /* [n, V] scratch: tempered weights */
                  const double *__restrict__ u,     /* [n] */
                  int32_t *__restrict__ ids_out,    /* [n] */
                  float *__restrict__ logp_out,     /* [n] */
                  int V, float temperature, int top_k, float top_p) {
    __shared__ double red_d[32];
    __shared__ float red_f[32];
    __shared__ samp_smem s;
    __shared__ sel_smem ss;
    __shared__ uint32_t keys[SEL_MAX_K];
    __shared__ int cids[SEL_MAX_K];
    const int row = blockIdx.x;
    const float *x = logits + (size_t)row * V;
    if (temperature == 0.0f) {
        /* argmax, lowest id among equal maxima (a thread's ids ascend, so strict > keeps the lowest) */
        float bv = -INFINITY;
        int bi = 0x7fffffff;
        for (int v = threadIdx.x; v < V; v += blockDim.x)
            if (bi == 0x7fffffff || x[v] > bv) {
                bv = x[v];
                bi = v;
            }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) {
                bv = ov;
                bi = oi;
            }
        }
        __shared__ float wv[32];
        __shared__ int wi[32];
        if ((threadIdx.x & 31) == 0) {
            wv[threadIdx.x >> 5] = bv;
            wi[threadIdx.x >> 5] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < (int)(blockDim.x >> 5); w++)
                if (wv[w] > wv[0] || (wv[w] == wv[0] && wi[w] < wi[0])) {
                    wv[0] = wv[w];
                    wi[0] = wi[w];
                }
        }
        __syncthreads();
        const float best = wv[0];
        double sum = 0;
        for (int v = threadIdx.x; v < V; v += blockDim.x) sum += (double)expf(x[v] - best);
        sum = cu_block_sum_d(sum, red_d);
        if (threadIdx.x == 0) {
            ids_out[row] = wi[0];
            logp_out[row] = (float)-log(sum);
        }
        return;
    }
    float *w = wbuf + (size_t)row * V;
    float mx = -INFINITY;
    int bad = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        bad |= !isfinite(x[v]);
        mx = fmaxf(mx, x[v] / temperature);
    }
    if (__syncthreads_or(bad)) { /* the CPU dies on a non-finite logit; the host does, seeing -1 */
        if (threadIdx.x == 0) ids_out[row] = -1, logp_out[row] = NAN;
        return;
    }
    mx = cu_block_max_f(mx, red_f);
    double z = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        const float wi = samp_exp(x[v] / temperature - mx);
        w[v] = wi;
        z += wi;
    }
    z = cu_block_sum_d(z, red_d); /* its barriers also publish w to the block */
    const bool use_k = top_k > 0 && top_k < V, use_p = top_p < 1.0f;
    const double ur = u[row];
    int id = -1;
    double total = z;
    if (!use_k && !use_p) {
        /* ids in order: the first positive weight where the cumulative sum passes u z; else the last positive */
        if (threadIdx.x == 0) {
            s.found = 0x7fffffff;
            s.last_pos = -1;
        }
        const double target = ur * z;
        double base = 0;
        for (int c0 = 0; c0 < V; c0 += blockDim.x) {
            const int i = c0 + threadIdx.x;
            const float wi = i < V ? w[i] : 0.0f;
            double tot;
            const double cum = base + block_scan_d(wi, &s, &tot);
            if (wi > 0) {
                atomicMax(&s.last_pos, i); /* integer atomics: the result does not depend on their order */
                if (cum > target) atomicMin(&s.found, i);
            }
            __syncthreads();
            if (s.found != 0x7fffffff) break; /* uniform after the barrier */
            base += tot;
        }
        __syncthreads();
        id = s.found != 0x7fffffff ? s.found : s.last_pos;
    } else if (use_k) {
        int need;
        const uint32_t kth = sel_radix_kth(w, V, top_k, &ss, &need);
        const int P = sel_pow2(top_k);
        sel_gather(w, V, top_k, kth, need, keys, cids, P, &ss);
        sel_bitonic(keys, cids, P);
        if (threadIdx.x == 0) {
            /* The CPU's sequential fp64 walk over at most 4096 sorted candidates. */
            int n = top_k;
            while (n > 1 && w[cids[n - 1]] <= 0) n--; /* underflowed weights are never candidates */
            double mass = 0;
            for (int i = 0; i < n; i++) mass += w[cids[i]];
            if (use_p) {
                const double target = (double)top_p * mass;
                double cum = 0;
                int keep = n;
                for (int i = 0; i < n; i++) {
                    cum += w[cids[i]];
                    if (cum >= target) {
                        keep = i + 1;
                        break;
                    }
                }
                n = keep;
            }
            double tot = 0;
            for (int i = 0; i < n; i++) tot += w[cids[i]];
            const double target = ur * tot;
            double cum = 0;
            int pick = -1;
            for (int i = 0; i < n; i++) {
                cum += w[cids[i]];
                pick = cids[i];
                if (cum > target) break;
            }
            s.token = pick;
            red_d[0] = tot;
        }
        __syncthreads();
        id = s.token;
        total = red_d[0];
    } else {
        /* top-p alone: two fixed-point mass selects, no sort */
        unsigned long long zf = 0;
        for (int v = threadIdx.x; v < V; v += blockDim.x) zf += wfix(w[v]);
        for (int o = 16; o > 0; o >>= 1) zf += __shfl_xor_sync(0xffffffffu, zf, o);
        if (threadIdx.x == 0) s.above = 0;
        __syncthreads();
        if ((threadIdx.x & 31) == 0) atomicAdd(&s.above, zf);
        __syncthreads();
        zf = s.above;
        __syncthreads();
        unsigned long long t1 = (unsigned long long)ceil((double)top_p * (double)zf);
        t1 = t1 < 1 ? 1 : (t1 > zf ? zf : t1);
        unsigned long long m1;
        const uint32_t k1 = mass_select(w, V, t1, &s, &m1);
        /* the nucleus: every key above k1 plus m1 of the ties; its mass is what the cut reached */
        const unsigned long long above1 = t1 - s.rem; /* s.rem: what was left at the final key */
        const unsigned long long nuc = above1 + m1 * wfix(key_weight(k1));
        unsigned long long t2 = (unsigned long long)floor(ur * (double)nuc) + 1;
        t2 = t2 > nuc ? nuc : t2;
        unsigned long long m2;
        const uint32_t k2 = mass_select(w, V, t2, &s, &m2);
        id = nth_with_key(w, V, k2, m2, &s, &ss);
        total = (double)nuc / FIX_SCALE;
    }
    if (threadIdx.x == 0) {
        ids_out[row] = id;
        /* log w_id = logit/T - max, recomputed rather than log(expf(..)), as the CPU */
        const double lw = (double)(x[id] / temperature) - mx;
        logp_out[row] = (float)(lw - log(total));
    }
}

void cu_sample(ops_queue *q, ops_tensor logits, int n, int V, const ops_sampling *sp, const uint64_t *seq_ids,
               const uint64_t *positions, int32_t *ids_out, float *logp_out) {
    cu_need(logits, OPS_F32, "sample", "logits");
    if (n <= 0) return;
    CHECK(sp->temperature >= 0 && isfinite(sp->temperature), "sample: temperature %g", sp->temperature);
    CHECK(sp->top_p > 0 && sp->top_p <= 1, "sample: top_p %g outside (0, 1]", sp->top_p);
    CHECK(sp->top_k >= 0, "sample: top_k %d", sp->top_k);
    CHECK(sp->temperature == 0 || sp->top_k == 0 || sp->top_k >= V || sp->top_k <= SEL_MAX_K,
          "sample: the CUDA sampler supports top_k up to %d (got %d)", SEL_MAX_K, sp->top_k);
    CHECK(V > 0 && V < (1 << 18), "sample: vocabulary %d outside the CUDA sampler's range (< 2^18)", V);
    cu_queue *c = cuq(q);
    char *base = (char *)cu_scratch_get(q, &c->samp, cu_sample_scratch_bytes(n, V));
    float *wbuf = (float *)base;
    double *u = (double *)(base + (((size_t)n * V * sizeof(float) + 255) & ~(size_t)255));
    int32_t *ids = (int32_t *)(u + n);
    float *lp = (float *)(ids + n);
    /* u per row on the host, by the CPU sampler's own function: the same keying by construction. */
    cu_meta m;
    cu_meta_begin(&m, q, (size_t)n * sizeof(double) + 16);
    double *uh = (double *)m.host;
    for (int i = 0; i < n; i++) uh[i] = sampler_uniform(sp->seed, seq_ids[i], positions[i]);
    CUDA_CHECK(cudaMemcpyAsync(u, uh, (size_t)n * sizeof(double), cudaMemcpyHostToDevice, c->stream));
    sample_kernel<<<n, SAMPLE_THREADS, 0, c->stream>>>(f32p(logits), wbuf, u, ids, lp, V, sp->temperature, sp->top_k,
                                                       sp->top_p);
    KERNEL_CHECK();
    CUDA_CHECK(cudaMemcpyAsync(ids_out, ids, (size_t)n * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream));
    if (logp_out) CUDA_CHECK(cudaMemcpyAsync(logp_out, lp, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    for (int i = 0; i < n; i++) CHECK(ids_out[i] >= 0, "sampler: row %d has a non-finite logit", i);
}
