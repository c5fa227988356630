/* gemm.cu: cuBLASLt GEMMs (op_matmul: training and scoring) and the row-exact linear kernel (op_linear_rows:
 * generation).
 *
 * Row-major through a column-major library: C[M,N] = op(A) op(B) is, read column-major, C^T[N,M] =
 * op(B)^T op(A)^T, so cuBLASLt gets B as its first operand and A as its second and nothing is transposed in
 * memory. fp32 operands: CUBLAS_COMPUTE_32F (true fp32, no TF32) for parity with the CPU. A bf16 operand: both
 * operands bf16 (the f32 one converted to scratch, round-to-nearest-even), fp32 accumulation and fp32 C. */
#include "cuda_common.cuh"

/* Largest power of two dividing the address, capped at 256: what cuBLASLt may assume of the pointer. */
static uint32_t ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

/* One cuBLASLt matmul in column-major terms: D[m,n] = alpha op(X)[m,k] op(Y)[k,n] + beta D, X stored
 * (tx ? k x m : m x k) with leading dimension ldx, Y stored (ty ? n x k : k x n) with ldy. */
static void lt_matmul(ops_queue *q, float *D, const void *X, cudaDataType_t xt, int ldx, bool tx, const void *Y,
                      cudaDataType_t yt, int ldy, bool ty, int m, int n, int k, float beta) {
    cu_queue *c = cuq(q);
    cublasLtMatmulDesc_t op;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opx = tx ? CUBLAS_OP_T : CUBLAS_OP_N, opy = ty ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opx, sizeof opx));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opy, sizeof opy));
    cublasLtMatrixLayout_t lx, ly, ld;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lx, xt, tx ? k : m, tx ? m : k, ldx));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ly, yt, ty ? n : k, ty ? k : n, ldy));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, m));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_bytes,
                                                      sizeof c->lt_ws_bytes));
    /* Views made with ot_at need not be 256-byte aligned: tell the heuristic what the pointers really are. */
    uint32_t ax = ptr_align(X), ay = ptr_align(Y), ad = ptr_align(D);
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &ax, sizeof ax));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ay, sizeof ay));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ad, sizeof ad));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad, sizeof ad));
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(c->lt, op, lx, ly, ld, ld, pref, 1, &h, &found));
    if (found == 0)
        die_hint("this dtype / alignment combination has no cuBLASLt kernel", "cuda gemm: no algorithm for m=%d n=%d k=%d",
                 m, n, k);
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasLtMatmul(c->lt, op, &alpha, X, lx, Y, ly, &beta, D, ld, D, ld, &h.algo, c->lt_ws,
                                c->lt_ws_bytes, c->stream));
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lx));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(ly));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(ld));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));
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
 * One warp per output o; lane l sums k = l, l+32, l+64, ... in order (fp32 fma), then a fixed xor-butterfly
 * reduction. Nothing depends on T, on which rows share a launch, or on the grid: row-invariant by
 * construction. Rows go in groups of ROWS_R so each weight element is loaded once per group. */
#define ROWS_R 4
#define ROWS_WARPS 8

__device__ __forceinline__ float load_w(const float *W, size_t i) { return __ldg(W + i); }
__device__ __forceinline__ float load_w(const __nv_bfloat16 *W, size_t i) { return __bfloat162float(W[i]); }

template <typename WT>
__global__ void linear_rows_kernel(float *__restrict__ y,       /* [T, out] */
                                   const float *__restrict__ x, /* [T, in] */
                                   const WT *__restrict__ W,    /* [out, in] */
                                   int T, int in, int out, int accumulate) {
    const int lane = threadIdx.x & 31;
    const int o = blockIdx.x * ROWS_WARPS + (threadIdx.x >> 5);
    if (o >= out) return;
    const size_t w0 = (size_t)o * in;
    for (int t0 = 0; t0 < T; t0 += ROWS_R) {
        const int nr = min(ROWS_R, T - t0);
        float acc[ROWS_R] = {0.f, 0.f, 0.f, 0.f};
        for (int k = lane; k < in; k += 32) {
            const float w = load_w(W, w0 + k);
#pragma unroll
            for (int r = 0; r < ROWS_R; r++)
                if (r < nr) acc[r] = fmaf(x[(size_t)(t0 + r) * in + k], w, acc[r]);
        }
#pragma unroll
        for (int r = 0; r < ROWS_R; r++) {
            float d = cu_warp_sum_f(acc[r]);
            if (r < nr && lane == 0) {
                float *dst = y + (size_t)(t0 + r) * out + o;
                *dst = accumulate ? *dst + d : d;
            }
        }
    }
}

void cu_linear_rows(ops_queue *q, ops_tensor y, ops_tensor x, ops_tensor W, int T, int in, int out, bool accumulate) {
    cu_need(y, OPS_F32, "linear_rows", "y");
    cu_need(x, OPS_F32, "linear_rows", "x");
    if (T <= 0 || out <= 0) return;
    dim3 grid((unsigned)((out + ROWS_WARPS - 1) / ROWS_WARPS)), block(32 * ROWS_WARPS);
    if (W.dt == OPS_BF16)
        linear_rows_kernel<__nv_bfloat16><<<grid, block, 0, cus(q)>>>(f32p(y), f32p(x), (const __nv_bfloat16 *)W.p, T,
                                                                     in, out, accumulate);
    else if (W.dt == OPS_F32)
        linear_rows_kernel<float><<<grid, block, 0, cus(q)>>>(f32p(y), f32p(x), f32p(W), T, in, out, accumulate);
    else
        die("linear_rows: W is %s (f32 or bf16)", ops_dtype_name(W.dt));
    KERNEL_CHECK();
}
