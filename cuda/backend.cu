/* backend.cu: the CUDA backend's table (ops_cuda_backend), devices, queues (one stream + one cuBLASLt handle
 * each), buffers and scratch. Every op runs on the queue's stream in issue order; only download, sync and the
 * ops that return a value to the host wait. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

extern "C" {
#include "core/log.h"
}

/* cuBLASLt workspace: 32 MiB is what the Hopper kernels ask for at most for these shapes. */
#define LT_WORKSPACE_BYTES ((size_t)32 << 20)
/* Metadata staging to start with (seq tables of a 64k-token batch, a few thousand segments). */
#define META_DEFAULT_BYTES ((size_t)1 << 20)

static int cuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        /* No driver, no device, or a driver older than the runtime: no devices, not a failure. */
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

static void cuda_describe(int device, char *out, size_t cap) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(out, cap, "cuda:%d (not visible)", device);
        return;
    }
    snprintf(out, cap, "%s, %.1f GiB, %d SMs, sm_%d%d", p.name, (double)p.totalGlobalMem / (1024.0 * 1024 * 1024),
             p.multiProcessorCount, p.major, p.minor);
}

void *cu_scratch_get(ops_queue *q, cu_scratch *s, size_t bytes) {
    if (bytes <= s->bytes) return s->p;
    cu_queue *c = cuq(q);
    if (s->p) {
        if (!s->warned) {
            log_warn("cuda: %s scratch grown in a step (%zu -> %zu bytes): ops_reserve should size it", s->what,
                     s->bytes, bytes);
            s->warned = true;
        }
        CUDA_CHECK(cudaFreeAsync(s->p, c->stream));
    }
    bytes = (bytes + 255) & ~(size_t)255;
    cudaError_t e = cudaMallocAsync(&s->p, bytes, c->stream);
    if (e != cudaSuccess)
        die_hint("lower the batch or sequence sizes", "cuda: out of device memory for %zu bytes of %s scratch (%s)",
                 bytes, s->what, cudaGetErrorString(e));
    s->bytes = bytes;
    return s->p;
}

void cu_meta_begin(cu_meta *m, ops_queue *q, size_t max_bytes) {
    cu_queue *c = cuq(q);
    m->q = q;
    m->used = 0;
    if (c->host_meta_n < max_bytes) {
        /* Host memory only: the device staging buffer is grown in cu_meta_upload. */
        free(c->host_meta);
        c->host_meta_n = S2D_MAX(max_bytes, (size_t)4096);
        c->host_meta = (int *)xmalloc(c->host_meta_n);
    }
    m->host = (char *)c->host_meta;
}

size_t cu_meta_push(cu_meta *m, const void *src, size_t n) {
    size_t at = m->used;
    cu_queue *c = cuq(m->q);
    CHECK(at + n <= c->host_meta_n, "cu_meta_push: %zu + %zu bytes exceed the %zu announced", at, n,
          c->host_meta_n);
    if (n) memcpy(m->host + at, src, n);
    m->used = (at + n + 15) & ~(size_t)15;
    return at;
}

char *cu_meta_upload(cu_meta *m) {
    cu_queue *c = cuq(m->q);
    char *dev = (char *)cu_scratch_get(m->q, &c->meta, S2D_MAX(m->used, (size_t)16));
    /* Pageable source: the call returns once the bytes are staged, so the host area can be refilled; the
     * copy is ordered after earlier kernels that read the previous metadata. */
    if (m->used) CUDA_CHECK(cudaMemcpyAsync(dev, m->host, m->used, cudaMemcpyHostToDevice, c->stream));
    return dev;
}

static bool cuda_queue_init(ops_queue *q, int device, s2d_err *err) {
    int n = cuda_device_count();
    if (n == 0) return err_set(err, "cuda: no CUDA device is visible (no driver, or no GPU on this machine)");
    if (device < 0 || device >= n) return err_set(err, "cuda:%d: only %d CUDA device(s) are visible", device, n);
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) return err_set(err, "cuda:%d: cudaSetDevice: %s", device, cudaGetErrorString(e));
    cu_current_device() = device;
    cu_queue *c = (cu_queue *)xcalloc(1, sizeof *c);
    c->device = device;
    /* Keep freed stream-ordered memory in the pool instead of returning it at every sync: buffers of a step
     * loop are then recycled without driver calls. */
    cudaMemPool_t pool;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasLtCreate(&c->lt));
    c->lt_ws_bytes = LT_WORKSPACE_BYTES;
    CUDA_CHECK(cudaMalloc(&c->lt_ws, c->lt_ws_bytes));
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, device));
    c->n_sm = p.multiProcessorCount;
    c->smem_optin = p.sharedMemPerBlockOptin;
    c->meta.what = "metadata";
    c->bf16_a.what = "bf16 GEMM operand";
    c->bf16_b.what = "bf16 GEMM operand";
    c->norm_part.what = "reduction partials";
    c->attn.what = "attention";
    c->dec_part.what = "decode partials";
    c->samp.what = "sampling";
    q->impl = c;
    q->device = device;
    q->host_memory = false;
    snprintf(q->name, sizeof q->name, "cuda:%d", device);
    cu_scratch_get(q, &c->meta, META_DEFAULT_BYTES);
    cu_attention_setup(q);
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return true;
}

static void scratch_free(cu_queue *c, cu_scratch *s) {
    if (s->p) CUDA_CHECK(cudaFreeAsync(s->p, c->stream));
    s->p = NULL;
    s->bytes = 0;
}

static void cuda_queue_free(ops_queue *q) {
    cu_queue *c = cuq(q);
    if (!c) return;
    cu_set_device(c->device);
    cu_gemm_cache_free(c);
    scratch_free(c, &c->meta);
    scratch_free(c, &c->bf16_a);
    scratch_free(c, &c->bf16_b);
    scratch_free(c, &c->norm_part);
    scratch_free(c, &c->attn);
    scratch_free(c, &c->dec_part);
    scratch_free(c, &c->samp);
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    CUDA_CHECK(cudaFree(c->lt_ws));
    CUBLAS_CHECK(cublasLtDestroy(c->lt));
    CUDA_CHECK(cudaStreamDestroy(c->stream));
    free(c->host_part);
    free(c->host_meta);
    free(c);
    q->impl = NULL;
}

/* Norm / sumsq partials: 16384-element blocks of sumsq, and up to RMS_PART_ROWS row chunks of rmsnorm dw. */
#define SUMSQ_BLOCK 16384
#define RMS_PART_CHUNKS 128
/* Elements of bf16 GEMM operand scratch reserved up front (64 MiB). */
#define BF16_OPERAND_RESERVE ((size_t)32 << 20)

static void cuda_reserve(ops_queue *q, int max_seq_len, int max_rows, int vocab, size_t max_elems) {
    cu_queue *c = cuq(q);
    if (max_elems) {
        size_t nb = (max_elems + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
        /* rmsnorm dw partials are chunks x dim <= 128 x max_elems / rows; bound them by max_elems too. */
        size_t need = S2D_MAX(nb, S2D_MIN((size_t)RMS_PART_CHUNKS * 16384, max_elems)) * sizeof(double);
        cu_scratch_get(q, &c->norm_part, need);
        if (c->host_part_n < nb) {
            free(c->host_part);
            c->host_part = (double *)xmalloc(nb * sizeof(double));
            c->host_part_n = nb;
        }
        /* A mixed-precision GEMM converts its f32 operand (activations, not weights). max_elems may be the
         * parameter count (the gradient norm), so cap the up-front size; a larger operand grows it once. */
        cu_scratch_get(q, &c->bf16_a, S2D_MIN(max_elems, BF16_OPERAND_RESERVE) * sizeof(__nv_bfloat16));
    }
    if (max_rows && vocab) cu_scratch_get(q, &c->samp, cu_sample_scratch_bytes(max_rows, vocab));
    if (max_seq_len) {
        /* Attention backward's D [T, nh]: T up to max_rows tokens (or one max_seq_len sequence) x 128 heads. */
        size_t T = (size_t)S2D_MAX(max_seq_len, max_rows);
        cu_scratch_get(q, &c->attn, T * 128 * sizeof(float));
        cu_meta m;
        cu_meta_begin(&m, q, (size_t)(T + 1024) * 5 * sizeof(int)); /* tile tables */
    }
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

static void *cuda_alloc(ops_queue *q, size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64; /* a distinct valid pointer, as malloc(0) is not */
    cudaError_t e = cudaMallocAsync(&p, bytes, cus(q));
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        die_hint("lower batch sizes or use precision: bf16", "cuda: out of device memory allocating %zu bytes (%s; %zu of %zu MiB free)",
                 bytes, cudaGetErrorString(e), free_b >> 20, total_b >> 20);
    }
    return p; /* cudaMallocAsync returns at least 256-byte aligned memory */
}

static void cuda_free(ops_queue *q, void *p) {
    if (p) CUDA_CHECK(cudaFreeAsync(p, cus(q)));
}

static void cuda_upload(ops_queue *q, void *dst, const void *src_host, size_t bytes) {
    if (!bytes) return;
    /* Synchronous with respect to the host buffer (pageable memory is staged before this returns). */
    CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, cus(q)));
}

static void cuda_download(ops_queue *q, void *dst_host, const void *src, size_t bytes) {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, cus(q)));
    CUDA_CHECK(cudaStreamSynchronize(cus(q)));
}

static void cuda_copy(ops_queue *q, void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cus(q)));
}

static void cuda_zero(ops_queue *q, void *dst, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, cus(q)));
}

static void cuda_sync(ops_queue *q) { CUDA_CHECK(cudaStreamSynchronize(cus(q))); }

/* Attention entry points are wrapped so that a mismatched head layout dies before any kernel runs. */
static void check_heads(int nh, int nkv, int hd, const char *op) {
    CHECK(nh > 0 && nkv > 0 && nh % nkv == 0, "%s: %d query heads are not a multiple of %d kv heads", op, nh, nkv);
    CHECK(hd > 0 && hd <= 256 && hd % 2 == 0, "%s: head_dim %d outside the CUDA kernels' range (even, <= 256)", op,
          hd);
}
static void att_fwd(ops_queue *q, ops_tensor out, ops_tensor lse, ops_tensor qh, ops_tensor k, ops_tensor v,
                    int n_seqs, const int *seq_start, int nh, int nkv, int hd) {
    check_heads(nh, nkv, hd, "attention_fwd");
    cu_attention_fwd(q, out, lse, qh, k, v, n_seqs, seq_start, nh, nkv, hd);
}
static void att_bwd(ops_queue *q, ops_tensor dq, ops_tensor dk, ops_tensor dv, ops_tensor dout, ops_tensor qh,
                    ops_tensor k, ops_tensor v, ops_tensor out, ops_tensor lse, int n_seqs, const int *seq_start,
                    int nh, int nkv, int hd) {
    check_heads(nh, nkv, hd, "attention_bwd");
    cu_attention_bwd(q, dq, dk, dv, dout, qh, k, v, out, lse, n_seqs, seq_start, nh, nkv, hd);
}
static void att_prefill(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k, ops_tensor v, int n, int p0,
                        int nh, int nkv, int hd) {
    check_heads(nh, nkv, hd, "attention_prefill");
    cu_attention_prefill(q, out, qh, k, v, n, p0, nh, nkv, hd);
}
static void att_decode(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k_cache, ops_tensor v_cache,
                       int slot_len, const int *slots, const int *ctx_len, int n, int nh, int nkv, int hd) {
    check_heads(nh, nkv, hd, "attention_decode");
    cu_attention_decode(q, out, qh, k_cache, v_cache, slot_len, slots, ctx_len, n, nh, nkv, hd);
}

/* The registry (src/ops/ops.c) finds this table through a weak reference: C linkage, this exact name. */
extern "C" {
extern const ops_backend ops_cuda_backend;
const ops_backend ops_cuda_backend = {
    /* name */ "cuda",
    /* device_count */ cuda_device_count,
    /* describe */ cuda_describe,
    /* queue_init */ cuda_queue_init,
    /* queue_free */ cuda_queue_free,
    /* reserve */ cuda_reserve,
    /* alloc */ cuda_alloc,
    /* free */ cuda_free,
    /* upload */ cuda_upload,
    /* download */ cuda_download,
    /* copy */ cuda_copy,
    /* zero */ cuda_zero,
    /* sync */ cuda_sync,
    /* matmul */ cu_matmul,
    /* linear_rows */ cu_linear_rows,
    /* rmsnorm_fwd */ cu_rmsnorm_fwd,
    /* rmsnorm_bwd */ cu_rmsnorm_bwd,
    /* rope */ cu_rope,
    /* attention_fwd */ att_fwd,
    /* attention_bwd */ att_bwd,
    /* attention_prefill */ att_prefill,
    /* attention_decode */ att_decode,
    /* kv_write */ cu_kv_write,
    /* bias_add */ cu_bias_add,
    /* bias_bwd */ cu_bias_bwd,
    /* swiglu_fwd */ cu_swiglu_fwd,
    /* swiglu_bwd */ cu_swiglu_bwd,
    /* embedding_fwd */ cu_embedding_fwd,
    /* embedding_bwd */ cu_embedding_bwd,
    /* vocab_rows */ cu_vocab_rows,
    /* add */ cu_add,
    /* scale */ cu_scale,
    /* sumsq */ cu_sumsq,
    /* adamw */ cu_adamw,
    /* sample */ cu_sample,
    /* bf16_mirror */ cu_bf16_mirror,
};
}
