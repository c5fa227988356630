/* cuda_common.cuh: what every CUDA source in cuda/ shares: the C headers (with C linkage), checked-call macros, the
 * queue's state (stream, cuBLASLt handle, scratch), and the entry points each .cu defines for backend.cu's
 * table. Internal to cuda/: nothing here is part of ops.h. */
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* common.h is C11: _Noreturn is not a C++ keyword, so spell it as the C++ attribute while it is included. */
#define _Noreturn [[noreturn]]
extern "C" {
#include "core/common.h"
#include "ops/ops.h"
}
#undef _Noreturn

/* ---- checked calls: die() names the call, the CUDA error and what to look at ---- */
#define CUDA_CHECK(call)                                                                                     \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess)                                                                               \
            die_at(__FILE__, __LINE__, "check the device (nvidia-smi), its memory and the driver version",   \
                   "%s: %s (%s)", #call, cudaGetErrorString(e_), cudaGetErrorName(e_));                      \
    } while (0)
#define CUBLAS_CHECK(call)                                                                                   \
    do {                                                                                                     \
        cublasStatus_t s_ = (call);                                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                     \
            die_at(__FILE__, __LINE__, "cuBLASLt rejected the GEMM: check shapes, dtypes and alignment",     \
                   "%s: %s (%d)", #call, cublasGetStatusString(s_), (int)s_);                                \
    } while (0)
/* After every kernel launch: launch-configuration errors surface here, at the op that caused them. */
#define KERNEL_CHECK() CUDA_CHECK(cudaGetLastError())

/* A grow-only device buffer. Sized by reserve() so that steps never allocate; an op that finds it too small
 * grows it (stream-ordered free + malloc) rather than failing, and that is logged once per buffer. */
typedef struct {
    void *p;
    size_t bytes;
    const char *what;
    bool warned;
} cu_scratch;

struct cu_gemm_cache; /* gemm.cu: planned cuBLASLt GEMMs */

typedef struct {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws;          /* cuBLASLt workspace */
    size_t lt_ws_bytes;
    int n_sm;
    size_t smem_optin;    /* max dynamic shared memory per block */
    cu_scratch meta;      /* staged host metadata (seq tables, slots, segments) */
    cu_scratch bf16_a;    /* f32 operand converted to bf16 for a mixed GEMM */
    cu_scratch bf16_b;
    cu_scratch norm_part; /* rmsnorm dw partials, sumsq partials (double) */
    cu_scratch attn;      /* attention backward D = rowsum(dO * O) */
    cu_scratch dec_part;  /* decode split partials */
    cu_scratch samp;      /* sampling weights [rows, V] and results */
    double *host_part;    /* host copy of sumsq partials */
    size_t host_part_n;
    int *host_meta;       /* host-side build area for tile tables */
    size_t host_meta_n;
    struct cu_gemm_cache *gemm;
} cu_queue;

/* The CUDA device is per host thread: every op makes its queue's device current (a cached check, so the
 * common one-device case costs nothing). One definition program-wide (C++ inline), so every file shares it. */
inline int &cu_current_device(void) {
    static thread_local int cur = -1;
    return cur;
}
inline void cu_set_device(int d) {
    CUDA_CHECK(cudaSetDevice(d));
    cu_current_device() = d;
}
inline void cu_use_device(int d) {
    if (cu_current_device() != d) cu_set_device(d);
}
static inline cu_queue *cuq(ops_queue *q) {
    cu_queue *c = (cu_queue *)q->impl;
    cu_use_device(c->device);
    return c;
}
static inline cudaStream_t cus(ops_queue *q) { return cuq(q)->stream; }
void cu_gemm_cache_free(cu_queue *c); /* gemm.cu */

/* Ensures s holds at least `bytes`; returns its device pointer (backend.cu). */
void *cu_scratch_get(ops_queue *q, cu_scratch *s, size_t bytes);
/* Copies host metadata into the queue's staging buffer at byte offset `at` (16-byte aligned pieces); the
 * caller lays out several arrays with cu_meta_begin / cu_meta_push and gets device pointers back. The
 * copy is stream-ordered, so the host array may be reused as soon as this returns. */
typedef struct {
    ops_queue *q;
    size_t used;
    char *host; /* the queue's host build area */
} cu_meta;
void cu_meta_begin(cu_meta *m, ops_queue *q, size_t max_bytes);
/* Appends n bytes (copied into the host area) and returns the offset to pass to cu_meta_dev. */
size_t cu_meta_push(cu_meta *m, const void *src, size_t n);
/* Uploads everything pushed; returns the device base; element pointers are base + offset. */
char *cu_meta_upload(cu_meta *m);

/* dtype guards: a wrong dtype is a caller bug, named. */
static inline void cu_need(ops_tensor t, ops_dtype dt, const char *op, const char *arg) {
    if (t.p && t.dt != dt) die("%s: %s is %s, the CUDA backend needs %s here", op, arg, ops_dtype_name(t.dt),
                               ops_dtype_name(dt));
}
static inline float *f32p(ops_tensor t) { return (float *)t.p; }
static inline int32_t *i32p(ops_tensor t) { return (int32_t *)t.p; }

static inline unsigned cu_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535u * 32u ? 65535u * 32u : b); /* kernels are grid-stride where this caps */
}

/* ---- entry points (one .cu each; backend.cu puts them in the table) ---- */
/* gemm.cu */
void cu_matmul(ops_queue *q, ops_tensor C, ops_tensor A, ops_tensor B, int M, int N, int K, bool trans_a,
               bool trans_b, bool accumulate);
void cu_linear_rows(ops_queue *q, ops_tensor y, ops_tensor x, ops_tensor W, int T, int in, int out, bool accumulate);
/* norm_rope.cu */
void cu_rmsnorm_fwd(ops_queue *q, ops_tensor y, ops_tensor rstd, ops_tensor x, ops_tensor w, int rows, int dim,
                    float eps);
void cu_rmsnorm_bwd(ops_queue *q, ops_tensor dx, ops_tensor dw, ops_tensor dy, ops_tensor x, ops_tensor w,
                    ops_tensor rstd, int rows, int dim, bool accumulate_dx);
void cu_rope(ops_queue *q, ops_tensor x, ops_tensor pos, ops_tensor cos, ops_tensor sin, int T, int n_heads, int hd,
             bool inverse);
/* attention.cu */
void cu_attention_fwd(ops_queue *q, ops_tensor out, ops_tensor lse, ops_tensor qh, ops_tensor k, ops_tensor v,
                      int n_seqs, const int *seq_start, int nh, int nkv, int hd);
void cu_attention_bwd(ops_queue *q, ops_tensor dq, ops_tensor dk, ops_tensor dv, ops_tensor dout, ops_tensor qh,
                      ops_tensor k, ops_tensor v, ops_tensor out, ops_tensor lse, int n_seqs, const int *seq_start,
                      int nh, int nkv, int hd);
void cu_attention_prefill(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k, ops_tensor v, int n, int p0,
                          int nh, int nkv, int hd);
void cu_attention_decode(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k_cache, ops_tensor v_cache,
                         int slot_len, const int *slots, const int *ctx_len, int n, int nh, int nkv, int hd);
void cu_kv_write(ops_queue *q, ops_tensor cache, ops_tensor rows, int slot_len, const int *slots, const int *pos,
                 int n, int width);
void cu_attention_setup(ops_queue *q); /* opts the kernels into large shared memory */
/* elementwise.cu */
void cu_bias_add(ops_queue *q, ops_tensor y, ops_tensor b, int rows, int n);
void cu_bias_bwd(ops_queue *q, ops_tensor db, ops_tensor dy, int rows, int n);
void cu_swiglu_fwd(ops_queue *q, ops_tensor h, ops_tensor gate, ops_tensor up, size_t n);
void cu_swiglu_bwd(ops_queue *q, ops_tensor dgate, ops_tensor dup, ops_tensor dh, ops_tensor gate, ops_tensor up,
                   size_t n);
void cu_embedding_fwd(ops_queue *q, ops_tensor out, ops_tensor table, ops_tensor tokens, int T, int dim);
void cu_embedding_bwd(ops_queue *q, ops_tensor dtable, ops_tensor dout, ops_tensor tokens, int T, int dim);
void cu_add(ops_queue *q, ops_tensor y, ops_tensor x, size_t n);
void cu_scale(ops_queue *q, ops_tensor y, float s, size_t n);
bool cu_bf16_mirror(ops_queue *q, ops_tensor dst, ops_tensor src, size_t n, bool fresh);
void cu_f32_to_bf16(ops_queue *q, __nv_bfloat16 *dst, const float *src, size_t n);
/* vocab.cu */
void cu_vocab_rows(ops_queue *q, const ops_vocab_op *op, ops_tensor logits, int r0, int rows);
/* optim.cu */
double cu_sumsq(ops_queue *q, ops_tensor x, size_t n);
void cu_adamw(ops_queue *q, ops_tensor params, ops_tensor grads, ops_tensor m, ops_tensor v, const ops_segment *segs,
              int n_segs, const ops_adamw_step *a);
/* sample.cu */
void cu_sample(ops_queue *q, ops_tensor logits, int n, int V, const ops_sampling *sp, const uint64_t *seq_ids,
               const uint64_t *positions, int32_t *ids_out, float *logp_out);
size_t cu_sample_scratch_bytes(int rows, int vocab);

/* ---- device helpers shared by several kernels ---- */
/* Block-wide sum of a double (fixed tree: deterministic for a given blockDim). `red` holds 32 doubles. Every
 * thread gets the result. */
__device__ __forceinline__ double cu_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float cu_warp_sum_f(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float cu_warp_max_f(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ double cu_block_sum_d(double v, double *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = cu_warp_sum_d(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0) red[warp] = v;
    __syncthreads();
    double t = lane < nw ? red[lane] : 0.0;
    return cu_warp_sum_d(t);
}
__device__ __forceinline__ float cu_block_max_f(float v, float *red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = cu_warp_max_f(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : -INFINITY;
    return cu_warp_max_f(t);
}
