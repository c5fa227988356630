/* gemm.cu: cuBLASLt GEMMs (op_matmul: training and scoring) and the row-exact linear kernel (op_linear_rows:
 * generation).
 *
 * Row-major through a column-major library: C[M,N] = op(A) op(B) is, read column-major, C^T[N,M] =
 * op(B)^T op(A)^T, so cuBLASLt gets B as its first operand and A as its second and nothing is transposed in
 * memory. fp32 operands: CUBLAS_COMPUTE_32F (true fp32, no TF32) for parity with the CPU. A bf16 operand: both
 * operands bf16 (the f32 one converted to scratch, round-to-nearest-even), fp32 accumulation and fp32 C. */
#include <stdlib.h>

#include "cuda_common.cuh"

/* Largest power of two dividing the address, capped at 256: what cuBLASLt may assume of the pointer. */
static uint32_t ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

/* A planned GEMM: descriptors and the heuristic's algorithm for one shape / dtype / alignment. Planning costs
 * tens of microseconds of host time (the heuristic), so plans are kept per queue and reused. */
typedef struct {
    int m, n, k, ldx, ldy;
    int tx, ty;
    cudaDataType_t xt, yt;
    uint32_t ax, ay, ad;
} gemm_key;

typedef struct {
    gemm_key key;
    bool used;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t lx, ly, ld;
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

#define GEMM_PLANS 256
struct cu_gemm_cache {
    gemm_plan p[GEMM_PLANS];
    int next; /* round-robin victim once full */
};

static void plan_destroy(gemm_plan *p) {
    if (!p->used) return;
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lx));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->ly));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->ld));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->op));
    p->used = false;
}

void cu_gemm_cache_free(cu_queue *c) {
    if (!c->gemm) return;
    for (int i = 0; i < GEMM_PLANS; i++) plan_destroy(&c->gemm->p[i]);
    free(c->gemm);
    c->gemm = NULL;
}

static bool key_eq(const gemm_key *a, const gemm_key *b) {
    return a->m == b->m && a->n == b->n && a->k == b->k && a->ldx == b->ldx && a->ldy == b->ldy && a->tx == b->tx &&
           a->ty == b->ty && a->xt == b->xt && a->yt == b->yt && a->ax == b->ax && a->ay == b->ay && a->ad == b->ad;
}

static const gemm_plan *plan_get(cu_queue *c, const gemm_key *k) {
    if (!c->gemm) c->gemm = (cu_gemm_cache *)xcalloc(1, sizeof *c->gemm);
    cu_gemm_cache *g = c->gemm;
    for (int i = 0; i < GEMM_PLANS && g->p[i].used; i++)
        if (key_eq(&g->p[i].key, k)) return &g->p[i];
    int slot = -1;
    for (int i = 0; i < GEMM_PLANS; i++)
        if (!g->p[i].used) {
            slot = i;
            break;
        }
    if (slot < 0) {
        /* Full: evict round-robin. Used slots stay a prefix, so the lookup above may stop at the first free one. */
        slot = g->next;
        g->next = (g->next + 1) % GEMM_PLANS;
        plan_destroy(&g->p[slot]);
    }
    gemm_plan *p = &g->p[slot];
    p->key = *k;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opx = k->tx ? CUBLAS_OP_T : CUBLAS_OP_N, opy = k->ty ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opx, sizeof opx));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opy, sizeof opy));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lx, k->xt, k->tx ? k->k : k->m, k->tx ? k->m : k->k, k->ldx));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->ly, k->yt, k->ty ? k->n : k->k, k->ty ? k->k : k->n, k->ldy));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->ld, CUDA_R_32F, k->m, k->n, k->m));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_bytes,
                                                      sizeof c->lt_ws_bytes));
    /* Views made with ot_at need not be 256-byte aligned: tell the heuristic what the pointers really are. */
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k->ax, sizeof k->ax));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k->ay, sizeof k->ay));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &k->ad, sizeof k->ad));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k->ad, sizeof k->ad));
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->lx, p->ly, p->ld, p->ld, pref, 1, &h, &found));
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    p->used = true;
    if (found == 0)
        die_hint("this dtype / alignment combination has no cuBLASLt kernel", "cuda gemm: no algorithm for m=%d n=%d k=%d",
                 k->m, k->n, k->k);
    p->algo = h.algo;
    return p;
}

/* One cuBLASLt matmul in column-major terms: D[m,n] = op(X)[m,k] op(Y)[k,n] + beta D, X stored
 * (tx ? k x m : m x k) with leading dimension ldx, Y stored (ty ? n x k : k x n) with ldy. */
static void lt_matmul(ops_queue *q, float *D, const void *X, cudaDataType_t xt, int ldx, bool tx, const void *Y,
                      cudaDataType_t yt, int ldy, bool ty, int m, int n, int k, float beta) {
    cu_queue *c = cuq(q);
    gemm_key key = {m, n, k, ldx, ldy, tx, ty, xt, yt, ptr_align(X), ptr_align(Y), ptr_align(D)};
    const gemm_plan *p = plan_get(c, &key);
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasLtMatmul(c->lt, p->op, &alpha, X, p->lx, Y, p->ly, &beta, D, p->ld, D, p->ld, &p->algo,
                                c->lt_ws, c->lt_ws_bytes, cus(q)));
}

void cu_matmul(ops_queue *q, ops_tensor C, ops_tensor A, ops_tensor B, int M, int N, int K, bool trans_a,
               bool trans_b, bool accumulate) {
    cu_need(C, OPS_F32, "matmul", "C");
    CHECK(A.dt == OPS_F32 || A.dt == OPS_BF16, "matmul: A is %s (f32 or bf16)", ops_dtype_name(A.dt));
    CHECK(B.dt == OPS_F32 || B.dt == OPS_BF16, "matmul: B is %s (f32 or bf16)", ops_dtype_name(B.dt));
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (!accumulate) CUDA_CHECK(cudaMemsetAsync(C.p, 0, sizeof(float) * (size_t)M * N, cus(q)));
        return;
    }
    cu_queue *c = cuq(q);
    const void *a = A.p, *b = B.p;
    cudaDataType_t ta = CUDA_R_32F, tb = CUDA_R_32F;
    if (A.dt == OPS_BF16 || B.dt == OPS_BF16) {
        /* cuBLASLt has no f32 x bf16 kernel: the f32 side is rounded to bf16 (the bf16 precision mode). */
        if (A.dt == OPS_F32) {
            __nv_bfloat16 *s = (__nv_bfloat16 *)cu_scratch_get(q, &c->bf16_a, (size_t)M * K * sizeof(__nv_bfloat16));
            cu_f32_to_bf16(q, s, (const float *)A.p, (size_t)M * K);
            a = s;
        }
        if (B.dt == OPS_F32) {
            __nv_bfloat16 *s = (__nv_bfloat16 *)cu_scratch_get(q, &c->bf16_b, (size_t)K * N * sizeof(__nv_bfloat16));
            cu_f32_to_bf16(q, s, (const float *)B.p, (size_t)K * N);
            b = s;
        }
        ta = tb = CUDA_R_16BF;
    }
    /* Column-major: D^T[N,M] = op(B)^T[N,K] op(A)^T[K,M]. Row-major B [K,N] is column-major N x K (ld N), so
     * "not transposed" in row-major stays "not transposed" here; likewise for A. */
    lt_matmul(q, f32p(C), b, tb, trans_b ? K : N, trans_b, a, ta, trans_a ? M : K, trans_a, N, M, K,
              accumulate ? 1.0f : 0.0f);
}

/* ---- row-exact linear: y[t,o] = x[t,:] . W[o,:], one fixed-order dot per element ----
 * Lane l of a warp sums k = l, l+32, l+64, ... in increasing order (fp32 fma), then a fixed xor-butterfly
 * reduction adds the 32 lane sums. That order depends on nothing but `in`: not on T, on which rows share a
 * launch or a pass, nor on the grid, so every row's result is row-invariant by construction (and a bf16 W,
 * widened exactly, gives bitwise what the f32 W with the same values gives).
 * Work: a block of ROWS_WARPS warps owns ROWS_OPW x ROWS_WARPS outputs; a pass takes ROWS_R rows of x, staged
 * in shared memory ROWS_KC columns at a time and reused by every warp; each lane keeps ROWS_R x ROWS_OPW
 * partial sums. Weights stream from HBM once per pass (later passes hit L2 for decode-sized T). */
#define ROWS_R 4
#define ROWS_OPW 8
#define ROWS_WARPS 8
#define ROWS_KC 256

__device__ __forceinline__ float load_w(const float *W, size_t i) { return __ldg(W + i); }
__device__ __forceinline__ float load_w(const __nv_bfloat16 *W, size_t i) { return __bfloat162float(W[i]); }

template <typename WT>
__global__ void __launch_bounds__(32 * ROWS_WARPS)
    linear_rows_kernel(float *__restrict__ y,       /* [T, out] */
                       const float *__restrict__ x, /* [T, in] */
                       const WT *__restrict__ W,    /* [out, in] */
                       int T, int in, int out, int accumulate) {
    __shared__ float xs[ROWS_R][ROWS_KC];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int o0 = (blockIdx.x * ROWS_WARPS + warp) * ROWS_OPW; /* this warp's first output */
    for (int t0 = 0; t0 < T; t0 += ROWS_R) {
        const int nr = min(ROWS_R, T - t0);
        float acc[ROWS_R][ROWS_OPW];
#pragma unroll
        for (int r = 0; r < ROWS_R; r++)
#pragma unroll
            for (int j = 0; j < ROWS_OPW; j++) acc[r][j] = 0.0f;
        for (int k0 = 0; k0 < in; k0 += ROWS_KC) {
            const int kc = min(ROWS_KC, in - k0);
            __syncthreads(); /* the previous chunk has been read */
            for (int idx = threadIdx.x; idx < ROWS_R * ROWS_KC; idx += blockDim.x) {
                const int r = idx / ROWS_KC, kk = idx % ROWS_KC;
                xs[r][kk] = r < nr && kk < kc ? x[(size_t)(t0 + r) * in + k0 + kk] : 0.0f;
            }
            __syncthreads();
            for (int kk = lane; kk < kc; kk += 32) {
                float w[ROWS_OPW];
#pragma unroll
                for (int j = 0; j < ROWS_OPW; j++)
                    w[j] = o0 + j < out ? load_w(W, (size_t)(o0 + j) * in + k0 + kk) : 0.0f;
#pragma unroll
                for (int r = 0; r < ROWS_R; r++) {
                    const float xv = xs[r][kk];
#pragma unroll
                    for (int j = 0; j < ROWS_OPW; j++) acc[r][j] = fmaf(xv, w[j], acc[r][j]);
                }
            }
        }
#pragma unroll
        for (int r = 0; r < ROWS_R; r++)
#pragma unroll
            for (int j = 0; j < ROWS_OPW; j++) {
                const float d = cu_warp_sum_f(acc[r][j]);
                if (lane == 0 && r < nr && o0 + j < out) {
                    float *dst = y + (size_t)(t0 + r) * out + o0 + j;
                    *dst = accumulate ? *dst + d : d;
                }
            }
    }
}

void cu_linear_rows(ops_queue *q, ops_tensor y, ops_tensor x, ops_tensor W, int T, int in, int out, bool accumulate) {
    cu_need(y, OPS_F32, "linear_rows", "y");
    cu_need(x, OPS_F32, "linear_rows", "x");
    if (T <= 0 || out <= 0) return;
    const int per_block = ROWS_WARPS * ROWS_OPW;
    dim3 grid((unsigned)((out + per_block - 1) / per_block)), block(32 * ROWS_WARPS);
    if (W.dt == OPS_BF16)
        linear_rows_kernel<__nv_bfloat16><<<grid, block, 0, cus(q)>>>(f32p(y), f32p(x), (const __nv_bfloat16 *)W.p, T,
                                                                     in, out, accumulate);
    else if (W.dt == OPS_F32)
        linear_rows_kernel<float><<<grid, block, 0, cus(q)>>>(f32p(y), f32p(x), f32p(W), T, in, out, accumulate);
    else
        die("linear_rows: W is %s (f32 or bf16)", ops_dtype_name(W.dt));
    KERNEL_CHECK();
}
