/* elementwise.cu: SwiGLU, embeddings, add / scale, the bf16 conversions.
 * Formulas as the CPU's portable paths (ops_vmath.c, ops_cpu.c); the embedding backward adds rows in token
 * order per column (no float atomics), which is the CPU's order, so it is deterministic and bitwise the CPU's. */
#include "cuda_common.cuh"

#define EW_THREADS 256

__global__ void swiglu_fwd_kernel(float *__restrict__ h, const float *__restrict__ g, const float *__restrict__ u,
                                  size_t n) { /* all [n] */
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float gi = g[i];
        h[i] = __fmul_rn(__fdiv_rn(gi, __fadd_rn(1.0f, expf(-gi))), u[i]);
    }
}

__global__ void swiglu_bwd_kernel(float *__restrict__ dgate, float *__restrict__ dup, const float *__restrict__ dh,
                                  const float *__restrict__ g, const float *__restrict__ u, size_t n) { /* all [n] */
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float gi = g[i], ui = u[i], d = dh[i];
        const float sg = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-gi)));
        dup[i] = __fmul_rn(__fmul_rn(d, gi), sg);
        const float t = __fadd_rn(1.0f, __fmul_rn(gi, __fsub_rn(1.0f, sg)));
        dgate[i] = __fmul_rn(__fmul_rn(__fmul_rn(d, ui), sg), t);
    }
}

void cu_swiglu_fwd(ops_queue *q, ops_tensor h, ops_tensor gate, ops_tensor up, size_t n) {
    cu_need(h, OPS_F32, "swiglu_fwd", "h");
    cu_need(gate, OPS_F32, "swiglu_fwd", "gate");
    cu_need(up, OPS_F32, "swiglu_fwd", "up");
    if (!n) return;
    swiglu_fwd_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cus(q)>>>(f32p(h), f32p(gate), f32p(up), n);
    KERNEL_CHECK();
}

void cu_swiglu_bwd(ops_queue *q, ops_tensor dgate, ops_tensor dup, ops_tensor dh, ops_tensor gate, ops_tensor up,
                   size_t n) {
    cu_need(dgate, OPS_F32, "swiglu_bwd", "dgate");
    cu_need(dup, OPS_F32, "swiglu_bwd", "dup");
    cu_need(dh, OPS_F32, "swiglu_bwd", "dh");
    cu_need(gate, OPS_F32, "swiglu_bwd", "gate");
    cu_need(up, OPS_F32, "swiglu_bwd", "up");
    if (!n) return;
    swiglu_bwd_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cus(q)>>>(f32p(dgate), f32p(dup), f32p(dh),
                                                                          f32p(gate), f32p(up), n);
    KERNEL_CHECK();
}

__global__ void embedding_fwd_kernel(float *__restrict__ out,            /* [T, dim] */
                                     const float *__restrict__ table,    /* [vocab, dim] */
                                     const int32_t *__restrict__ tokens, /* [T] */
                                     int T, int dim) {
    const size_t total = (size_t)T * dim;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / dim, c = i % dim;
        out[i] = table[(size_t)tokens[t] * dim + c];
    }
}

/* One thread per column walks the tokens in order: repeated tokens add in the CPU's order, without atomics.
 * Tokens go EMB_CHUNK at a time: the chunk's distinct rows are loaded together (independent loads), each gets
 * its chunk's gradients added in token order in a register, then stored; since the rows of a chunk are
 * distinct, that is exactly the sequential order, so the result is bitwise the CPU's. */
#define EMB_CHUNK 8
__global__ void embedding_bwd_kernel(float *__restrict__ dtable,         /* [vocab, dim], accumulated */
                                     const float *__restrict__ dout,     /* [T, dim] */
                                     const int32_t *__restrict__ tokens, /* [T] */
                                     int T, int dim) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim) return;
    for (int t0 = 0; t0 < T; t0 += EMB_CHUNK) {
        int tk[EMB_CHUNK];
        float d[EMB_CHUNK], acc[EMB_CHUNK];
        bool first[EMB_CHUNK];
#pragma unroll
        for (int j = 0; j < EMB_CHUNK; j++) {
            const bool in = t0 + j < T;
            tk[j] = in ? tokens[t0 + j] : -1;
            d[j] = in ? dout[(size_t)(t0 + j) * dim + c] : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < EMB_CHUNK; j++) {
            first[j] = tk[j] >= 0;
#pragma unroll
            for (int i = 0; i < j; i++) first[j] = first[j] && tk[i] != tk[j];
            acc[j] = first[j] ? dtable[(size_t)tk[j] * dim + c] : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < EMB_CHUNK; j++) {
            if (!first[j]) continue;
#pragma unroll
            for (int i = j; i < EMB_CHUNK; i++)
                if (tk[i] == tk[j]) acc[j] = __fadd_rn(acc[j], d[i]);
            dtable[(size_t)tk[j] * dim + c] = acc[j];
        }
    }
}

void cu_embedding_fwd(ops_queue *q, ops_tensor out, ops_tensor table, ops_tensor tokens, int T, int dim) {
    cu_need(out, OPS_F32, "embedding_fwd", "out");
    cu_need(table, OPS_F32, "embedding_fwd", "table");
    cu_need(tokens, OPS_I32, "embedding_fwd", "tokens");
    const size_t total = (size_t)T * dim;
    if (!total) return;
    embedding_fwd_kernel<<<cu_blocks(total, EW_THREADS), EW_THREADS, 0, cus(q)>>>(f32p(out), f32p(table),
                                                                                 i32p(tokens), T, dim);
    KERNEL_CHECK();
}

void cu_embedding_bwd(ops_queue *q, ops_tensor dtable, ops_tensor dout, ops_tensor tokens, int T, int dim) {
    cu_need(dtable, OPS_F32, "embedding_bwd", "dtable");
    cu_need(dout, OPS_F32, "embedding_bwd", "dout");
    cu_need(tokens, OPS_I32, "embedding_bwd", "tokens");
    if (T <= 0 || dim <= 0) return;
    /* 64 columns a block: more blocks than SMs for dim >= 8448, at least dim/64 otherwise. */
    embedding_bwd_kernel<<<(dim + 63) / 64, 64, 0, cus(q)>>>(f32p(dtable), f32p(dout), i32p(tokens), T, dim);
    KERNEL_CHECK();
}

/* y[r, j] += b[j]. */
__global__ void bias_add_kernel(float *__restrict__ y, const float *__restrict__ b, int rows, int n) {
    const size_t total = (size_t)rows * n;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] += b[i % (size_t)n];
}

/* db[j] += Σ_r dy[r, j]: one thread per column sums the rows in order in double, as the CPU does (bitwise). */
__global__ void bias_bwd_kernel(float *__restrict__ db, const float *__restrict__ dy, int rows, int n) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    double acc = 0;
    for (int r = 0; r < rows; r++) acc += (double)dy[(size_t)r * n + j];
    db[j] += (float)acc;
}

void cu_bias_add(ops_queue *q, ops_tensor y, ops_tensor b, int rows, int n) {
    cu_need(y, OPS_F32, "bias_add", "y");
    cu_need(b, OPS_F32, "bias_add", "b");
    const size_t total = (size_t)rows * n;
    if (!total) return;
    bias_add_kernel<<<cu_blocks(total, EW_THREADS), EW_THREADS, 0, cus(q)>>>(f32p(y), f32p(b), rows, n);
    KERNEL_CHECK();
}

void cu_bias_bwd(ops_queue *q, ops_tensor db, ops_tensor dy, int rows, int n) {
    cu_need(db, OPS_F32, "bias_bwd", "db");
    cu_need(dy, OPS_F32, "bias_bwd", "dy");
    if (rows <= 0 || n <= 0) return;
    bias_bwd_kernel<<<(n + 127) / 128, 128, 0, cus(q)>>>(f32p(db), f32p(dy), rows, n);
    KERNEL_CHECK();
}

__global__ void add_kernel(float *__restrict__ y, const float *__restrict__ x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}
__global__ void scale_kernel(float *__restrict__ y, float s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] *= s;
}

void cu_add(ops_queue *q, ops_tensor y, ops_tensor x, size_t n) {
    cu_need(y, OPS_F32, "add", "y");
    cu_need(x, OPS_F32, "add", "x");
    if (!n) return;
    add_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cus(q)>>>(f32p(y), f32p(x), n);
    KERNEL_CHECK();
}

void cu_scale(ops_queue *q, ops_tensor y, float s, size_t n) {
    cu_need(y, OPS_F32, "scale", "y");
    if (!n) return;
    scale_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cus(q)>>>(f32p(y), s, n);
    KERNEL_CHECK();
}

__global__ void f32_to_bf16_kernel(__nv_bfloat16 *__restrict__ dst, const float *__restrict__ src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

void cu_f32_to_bf16(ops_queue *q, __nv_bfloat16 *dst, const float *src, size_t n) {
    if (!n) return;
    f32_to_bf16_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cus(q)>>>(dst, src, n);
    KERNEL_CHECK();
}

/* dst = high halves of src; *bad |= 1 when some word has non-zero low bits (not bf16-exact). */
__global__ void bf16_mirror_kernel(uint16_t *__restrict__ dst, const uint32_t *__restrict__ src, size_t n,
                                   int *__restrict__ bad) {
    uint32_t low = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint32_t w = src[i];
        low |= w & 0xFFFFu;
        dst[i] = (uint16_t)(w >> 16);
    }
    /* An integer flag: any order of the atomics gives the same value. */
    if (__any_sync(0xffffffffu, low != 0) && (threadIdx.x & 31) == 0) atomicOr(bad, 1);
}

/* The GPU always rewrites dst (fresh or not): comparing first would read as much as writing. */
bool cu_bf16_mirror(ops_queue *q, ops_tensor dst, ops_tensor src, size_t n, bool fresh) {
    (void)fresh;
    cu_need(dst, OPS_BF16, "bf16_mirror", "dst");
    cu_need(src, OPS_F32, "bf16_mirror", "src");
    if (!n) return true;
    int *bad = (int *)cu_scratch_get(q, &cuq(q)->norm_part, sizeof(int));
    CUDA_CHECK(cudaMemsetAsync(bad, 0, sizeof(int), cus(q)));
    bf16_mirror_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cus(q)>>>((uint16_t *)dst.p, (const uint32_t *)src.p,
                                                                           n, bad);
    KERNEL_CHECK();
    int h = 0;
    CUDA_CHECK(cudaMemcpyAsync(&h, bad, sizeof h, cudaMemcpyDeviceToHost, cus(q)));
    CUDA_CHECK(cudaStreamSynchronize(cus(q)));
    return h == 0;
}
