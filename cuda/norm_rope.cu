/* norm_rope.cu: RMSNorm forward / backward and split-half RoPE.
 *
 * Same formulas and the same fp64 row reductions as the CPU (ops_cpu.c); element arithmetic uses explicit
 * round-to-nearest intrinsics where the CPU's C has a multiply followed by an add, so nvcc's FMA contraction
 * does not change the bits. The weight gradient dw is reduced without atomics: row chunks write fp64 partials,
 * then one pass adds the chunks in order. */
#include "cuda_common.cuh"

#define NORM_THREADS 256
/* dw: at most this many row chunks (partials of chunks x dim doubles). */
#define RMS_PART_CHUNKS 128
#define RMS_ROWS_PER_CHUNK_MIN 32

__global__ void rmsnorm_fwd_kernel(float *__restrict__ y,        /* [rows, dim] */
                                   float *__restrict__ rstd,     /* [rows] or NULL */
                                   const float *__restrict__ x,  /* [rows, dim] */
                                   const float *__restrict__ w,  /* [dim] */
                                   int dim, float eps) {
    __shared__ double red[32];
    const size_t r = blockIdx.x;
    const float *xr = x + r * dim;
    float *yr = y + r * dim;
    double ss = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = cu_block_sum_d(ss, red);
    const float rs = (float)(1.0 / sqrt(ss / dim + (double)eps));
    if (rstd && threadIdx.x == 0) rstd[r] = rs;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = __fmul_rn(w[i], __fmul_rn(xr[i], rs));
}

void cu_rmsnorm_fwd(ops_queue *q, ops_tensor y, ops_tensor rstd, ops_tensor x, ops_tensor w, int rows, int dim,
                    float eps) {
    cu_need(y, OPS_F32, "rmsnorm_fwd", "y");
    cu_need(x, OPS_F32, "rmsnorm_fwd", "x");
    cu_need(w, OPS_F32, "rmsnorm_fwd", "w");
    cu_need(rstd, OPS_F32, "rmsnorm_fwd", "rstd");
    if (rows <= 0 || dim <= 0) return;
    rmsnorm_fwd_kernel<<<rows, NORM_THREADS, 0, cus(q)>>>(f32p(y), f32p(rstd), f32p(x), f32p(w), dim, eps);
    KERNEL_CHECK();
}

/* dx = rs (w dy) - rs^3 / dim * x * sum(w dy x), one block per row. */
__global__ void rmsnorm_bwd_dx_kernel(float *__restrict__ dx,         /* [rows, dim] */
                                      const float *__restrict__ dy,   /* [rows, dim] */
                                      const float *__restrict__ x,    /* [rows, dim] */
                                      const float *__restrict__ w,    /* [dim] */
                                      const float *__restrict__ rstd, /* [rows] */
                                      int dim, int accumulate) {
    __shared__ double red[32];
    const size_t r = blockIdx.x;
    const float *xr = x + r * dim, *dyr = dy + r * dim;
    float *dxr = dx + r * dim;
    const float rs = rstd[r];
    double dot = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dot += (double)w[i] * dyr[i] * xr[i];
    dot = cu_block_sum_d(dot, red);
    const float c = (float)(dot * rs * rs * rs / dim);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float g = __fsub_rn(__fmul_rn(__fmul_rn(rs, w[i]), dyr[i]), __fmul_rn(c, xr[i]));
        dxr[i] = accumulate ? __fadd_rn(dxr[i], g) : g;
    }
}

/* Partials of dw: block (column tile of 32, row chunk); 8 row lanes per column, combined in a fixed order. */
__global__ void rmsnorm_bwd_dw_partial_kernel(double *__restrict__ part,      /* [chunks, dim] */
                                              const float *__restrict__ dy,   /* [rows, dim] */
                                              const float *__restrict__ x,    /* [rows, dim] */
                                              const float *__restrict__ rstd, /* [rows] */
                                              int rows, int dim, int rows_per_chunk) {
    __shared__ double acc_s[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    const int r0 = blockIdx.y * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
    double acc = 0;
    if (c < dim)
        for (int r = r0 + threadIdx.y; r < r1; r += 8)
            acc += (double)dy[(size_t)r * dim + c] * x[(size_t)r * dim + c] * rstd[r];
    acc_s[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < dim) {
        double s = 0;
        for (int j = 0; j < 8; j++) s += acc_s[j][threadIdx.x];
        part[(size_t)blockIdx.y * dim + c] = s;
    }
}

__global__ void rmsnorm_bwd_dw_reduce_kernel(float *__restrict__ dw,          /* [dim], accumulated */
                                             const double *__restrict__ part, /* [chunks, dim] */
                                             int chunks, int dim) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= dim) return;
    double s = 0;
    for (int j = 0; j < chunks; j++) s += part[(size_t)j * dim + c];
    dw[c] += (float)s;
}

void cu_rmsnorm_bwd(ops_queue *q, ops_tensor dx, ops_tensor dw, ops_tensor dy, ops_tensor x, ops_tensor w,
                    ops_tensor rstd, int rows, int dim, bool accumulate_dx) {
    cu_need(dx, OPS_F32, "rmsnorm_bwd", "dx");
    cu_need(dw, OPS_F32, "rmsnorm_bwd", "dw");
    cu_need(dy, OPS_F32, "rmsnorm_bwd", "dy");
    cu_need(x, OPS_F32, "rmsnorm_bwd", "x");
    cu_need(w, OPS_F32, "rmsnorm_bwd", "w");
    cu_need(rstd, OPS_F32, "rmsnorm_bwd", "rstd");
    if (rows <= 0 || dim <= 0) return;
    CHECK(rstd.p, "rmsnorm_bwd: rstd from the forward is required");
    if (dx.p) {
        rmsnorm_bwd_dx_kernel<<<rows, NORM_THREADS, 0, cus(q)>>>(f32p(dx), f32p(dy), f32p(x), f32p(w), f32p(rstd), dim,
                                                                 accumulate_dx);
        KERNEL_CHECK();
    }
    if (dw.p) {
        /* The chunking depends only on rows: the same shapes give the same bits. */
        int chunks = (rows + RMS_ROWS_PER_CHUNK_MIN - 1) / RMS_ROWS_PER_CHUNK_MIN;
        chunks = S2D_MIN(chunks, RMS_PART_CHUNKS);
        const int per = (rows + chunks - 1) / chunks;
        chunks = (rows + per - 1) / per;
        double *part = (double *)cu_scratch_get(q, &cuq(q)->norm_part, (size_t)chunks * dim * sizeof(double));
        dim3 grid((unsigned)((dim + 31) / 32), (unsigned)chunks), block(32, 8);
        rmsnorm_bwd_dw_partial_kernel<<<grid, block, 0, cus(q)>>>(part, f32p(dy), f32p(x), f32p(rstd), rows, dim, per);
        KERNEL_CHECK();
        rmsnorm_bwd_dw_reduce_kernel<<<(dim + 255) / 256, 256, 0, cus(q)>>>(f32p(dw), part, chunks, dim);
        KERNEL_CHECK();
    }
}

/* x'[i] = x[i] c - x[i+half] s; x'[i+half] = x[i+half] c + x[i] s (s negated for the inverse). */
__global__ void rope_kernel(float *__restrict__ x,           /* [T, n_heads, hd] in place */
                            const int32_t *__restrict__ pos, /* [T] */
                            const float *__restrict__ cos_t, /* [max_pos, hd/2] */
                            const float *__restrict__ sin_t, /* [max_pos, hd/2] */
                            int T, int n_heads, int hd, float sign) {
    const int half = hd / 2;
    const size_t total = (size_t)T * n_heads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const size_t th = idx / half; /* t * n_heads + h */
        const int t = (int)(th / n_heads);
        const size_t p = (size_t)pos[t] * half + i;
        const float c = cos_t[p], s = sign * sin_t[p];
        float *xh = x + th * hd;
        const float x1 = xh[i], x2 = xh[i + half];
        xh[i] = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
        xh[i + half] = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
    }
}

void cu_rope(ops_queue *q, ops_tensor x, ops_tensor pos, ops_tensor cos, ops_tensor sin, int T, int n_heads, int hd,
             bool inverse) {
    cu_need(x, OPS_F32, "rope", "x");
    cu_need(pos, OPS_I32, "rope", "pos");
    cu_need(cos, OPS_F32, "rope", "cos");
    cu_need(sin, OPS_F32, "rope", "sin");
    const size_t total = (size_t)T * n_heads * (hd / 2);
    if (total == 0) return;
    rope_kernel<<<cu_blocks(total, 256), 256, 0, cus(q)>>>(f32p(x), i32p(pos), f32p(cos), f32p(sin), T, n_heads, hd,
                                                           inverse ? -1.0f : 1.0f);
    KERNEL_CHECK();
}
