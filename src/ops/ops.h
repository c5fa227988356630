/* ops.h: the one seam between model/algorithm code and hardware (DESIGN §1, §4).
 *
 * A BACKEND is a table of functions (ops_backend, below): buffers, and every op of a training, scoring and
 * sampling step. Backends are chosen at run time by name ("cpu", "cuda", "cuda:1"; ops_open). A QUEUE
 * (ops_queue) is one device of one backend and an ordered stream of work on it: every op takes the queue it
 * runs on first, ops on one queue run in the order they were issued, and a GPU backend may run them
 * asynchronously. The host waits only where it must: ops_download, ops_sync, and the few ops that return a
 * value to the host (op_sumsq, op_sample, op_bf16_mirror say so).
 *
 * Memory: tensor memory belongs to the queue's device. It is allocated with ops_alloc, moved with
 * ops_upload / ops_download / ops_copy / ops_fill, and freed with ops_free; model and algorithm code never
 * touch it with memcpy, memset, OpenMP or BLAS (a `make test` check enforces this outside src/ops). On the CPU
 * backend device memory is host memory (q->host_memory), so host code MAY read it directly where it says so
 * (loaders and savers use ops_host_ptr for that and stage otherwise).
 *
 * Every tensor argument is an ops_tensor: a pointer into device memory and its element type. Shapes are in
 * the comments (row-major, contiguous). Small per-sequence METADATA (seq_start, slots, context lengths,
 * segment tables, seeds) is passed as host arrays: a device backend stages it itself. Per-token arrays
 * (tokens, positions, targets) are device tensors.
 *
 * Conventions: "accumulate" means out += result, otherwise out = result. T = tokens (rows) of a packed batch;
 * nh = query heads, nkv = key/value heads, hd = head_dim. GQA: query head h uses kv head h / (nh / nkv).
 * The CPU backend is fp32 and deterministic: every reduction runs in a fixed order whatever the thread count.
 * Its policy (AVX-512 paths, row-exact small-M kernels, scratch sizing, the exact-bf16 weight copy) lives in
 * src/ops/ and is not part of this interface. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

/* ---- element types and tensor arguments ---- */
typedef enum { OPS_F32 = 0, OPS_BF16 = 1, OPS_I32 = 2, OPS_F64 = 3 } ops_dtype;
size_t ops_dtype_bytes(ops_dtype dt);
const char *ops_dtype_name(ops_dtype dt);

typedef struct {
    void *p;      /* device memory of the queue the op runs on; NULL = absent (optional arguments) */
    ops_dtype dt;
} ops_tensor;

static inline ops_tensor ot_f32(const float *p) { return (ops_tensor){(void *)p, OPS_F32}; }
static inline ops_tensor ot_bf16(const uint16_t *p) { return (ops_tensor){(void *)p, OPS_BF16}; }
static inline ops_tensor ot_i32(const int32_t *p) { return (ops_tensor){(void *)p, OPS_I32}; }
static inline ops_tensor ot_f64(const double *p) { return (ops_tensor){(void *)p, OPS_F64}; }
static inline ops_tensor ot_none(void) { return (ops_tensor){NULL, OPS_F32}; }
/* The tensor starting `elems` elements further (address arithmetic only: no memory is touched). */
static inline ops_tensor ot_at(ops_tensor t, size_t elems) {
    return t.p ? (ops_tensor){(char *)t.p + elems * ops_dtype_bytes(t.dt), t.dt} : t;
}

/* ---- queues and backends ---- */
typedef struct ops_backend ops_backend;
typedef struct ops_queue {
    const ops_backend *be;
    int device;          /* index among the backend's devices */
    bool host_memory;    /* device memory is ordinary host memory (the CPU backend) */
    char name[32];       /* "cpu", "cuda:0" */
    void *impl;          /* backend state: streams, handles, scratch */
} ops_queue;

/* Opens "NAME" or "NAME:N" (cpu, cuda, cuda:1). A backend that is not compiled in, or a device it cannot see,
 * is an error that says so (never a silent fallback). */
bool ops_open(const char *spec, ops_queue **out, s2d_err *err);
void ops_close(ops_queue *q);
/* The process's CPU queue (opened on first use; never closed). */
ops_queue *ops_cpu(void);
/* The queue new models, workspaces and caches go on: the one set by the command line / config (`--device`,
 * `device:`), else the environment's S2D_DEVICE (opened on first use; a bad one dies naming it), else
 * ops_cpu(). */
ops_queue *ops_default(void);
void ops_set_default(ops_queue *q);
/* Backends compiled into this binary: [*n], CPU first. */
const ops_backend *const *ops_backends(int *n);
const char *ops_backend_name(const ops_backend *be);
/* Devices the backend sees now, and a one-line description of device i ("AMD EPYC, 2 threads"). */
int ops_backend_devices(const ops_backend *be);
void ops_backend_describe(const ops_backend *be, int device, char *out, size_t cap);

/* Sizes the queue's internal scratch for ops up to these sizes (attention over sequences of max_seq_len,
 * sampling of max_rows rows of vocab, norms of max_elems elements), so that no op allocates in a step loop.
 * Monotonic: the scratch only grows. Any argument may be 0. */
void ops_reserve(ops_queue *q, int max_seq_len, int max_rows, int vocab, size_t max_elems);

/* ---- buffers (counts are ELEMENTS of the tensor's dtype) ---- */
/* Uninitialised device memory for n elements, 64-byte aligned; dies naming the size when out of memory. */
ops_tensor ops_alloc(ops_queue *q, ops_dtype dt, size_t n);
void ops_free(ops_queue *q, ops_tensor t);
void ops_upload(ops_queue *q, ops_tensor dst, const void *src_host, size_t n);
/* Waits for the queue's earlier work, then copies. */
void ops_download(ops_queue *q, void *dst_host, ops_tensor src, size_t n);
void ops_copy(ops_queue *q, ops_tensor dst, ops_tensor src, size_t n); /* same dtype; may not overlap */
void ops_zero(ops_queue *q, ops_tensor dst, size_t n);
void ops_sync(ops_queue *q);
/* Host address of device memory when the backend's memory is host memory, else NULL (callers then stage). */
void *ops_host_ptr(ops_queue *q, ops_tensor t);
/* Host data [n] as a tensor of the queue: on host-memory backends the host array itself (no copy), otherwise
 * uploaded into dev (which must hold n elements) and dev returned. */
ops_tensor ops_stage(ops_queue *q, ops_tensor dev, const void *host, size_t n);

/* ---- parameters of the composite ops ---- */

/* Sampling of one row: logits / temperature → softmax → top-k → renormalise → top-p → draw with u from
 * Philox(seed, seq_id, position) (ops/sampler.h documents the order and the tie rules). The draw is an
 * inverse-CDF walk: over the token ids in id order when no filter applies (top_k 0 or >= V, top_p 1), over the
 * surviving candidates most likely first (ties: lower id) when one does; a backend must walk the same way to
 * draw the same tokens from the same logits. */
typedef struct {
    float temperature; /* 0 = greedy; > 0 divides the logits */
    int top_k;         /* 0 = off */
    float top_p;       /* (0, 1]; 1 = off */
    uint64_t seed;
} ops_sampling;

/* A range of the flat parameter buffer with its own weight-decay flag (AdamW). */
typedef struct {
    size_t offset, numel;
    bool decay;
} ops_segment;

/* One AdamW step (torch.optim.AdamW, single-tensor numerics; algo/optim.h has the formulas). */
typedef struct {
    long step;          /* the step being taken, from 1 (bias correction) */
    float lr, beta1, beta2, eps, weight_decay;
} ops_adamw_step;

/* What the vocabulary-wide op does with each row of a chunk of LM-head logits. Rows are rows of the packed
 * batch; the chunk covers rows [r0, r0 + rows). */
typedef enum {
    VOCAB_LOGP,         /* log p(target): logp[t] = logits[target[t]] − lse (0 when target < 0); with want_grad the
                           chunk becomes dlogp[t]·(onehot(target) − softmax) (0 where target < 0) */
    VOCAB_FKL_FULL,     /* KL(p_T ‖ pθ) against full teacher log-probs; grad scale·(pθ − p_T) */
    VOCAB_FKL_TOPK,     /* teacher top-k + one tail bucket (DESIGN §3); grad on K and off K */
    VOCAB_TEACHER_FULL, /* teacher side: full_logp[slot] = log_softmax(row) */
    VOCAB_TEACHER_TOPK, /* teacher side: its k most likely ids (descending, ties by lower id) and log-probs */
    VOCAB_RKL_FULL,     /* opd.mode full: per-position Σ_v pθ(v)(log pθ(v) − λ log p_T(v)) against full teacher
                           log-probs (its value at λ = 1, the reverse KL, goes to row_kl); grad scale·pθ(a − Σ pθ a) */
    VOCAB_RKL_TOPK,     /* opd.mode topk: the same over the teacher's top-k ids and one tail bucket */
} ops_vocab_kind;

typedef struct {
    ops_vocab_kind kind;
    bool want_grad;       /* overwrite the chunk's logits with d(loss)/d(logits) (zero for rows that do not count);
                             without it the chunk is scratch for the fkl kinds (its contents afterwards undefined)
                             and untouched for VOCAB_LOGP and the teacher kinds (divided by a temperature ≠ 1) */
    int V, k;             /* vocabulary; top-k size */
    float scale;          /* fkl, rkl: gradient scale (1 / taught rows for a token mean) */
    float lambda;         /* rkl: G-OPD's reward scale λ on the teacher's log-probs */
    float temperature;    /* every kind: the chunk's logits are divided by it first (in place), so log-probs, KL
                             and top-k are those of the tempered distribution the generator sampled from, and a
                             gradient is d(loss)/d(raw logits) (chain rule: divided by it once more). 0 or 1 =
                             logits as they are, bitwise the untempered op */
    ops_tensor target;    /* i32 [T] VOCAB_LOGP: next token of the row's sequence, −1 at its last row */
    ops_tensor logp;      /* f32 [T] VOCAB_LOGP forward output, with or without want_grad (absent: chunk_logp only) */
    ops_tensor dlogp;     /* f32 [T] VOCAB_LOGP with want_grad: d(loss)/d(logp); rkl: optional (NULL = none), a
                             sampled-token term dlogp[t]·(onehot(target) − pθ) added to the row's gradient */
    ops_tensor chunk_logp, chunk_lse; /* f32 [rows] scratch */
    ops_tensor row_slot;  /* i32 [T] fkl / teacher: index of the row's teacher data, −1 = row not taught */
    ops_tensor full_logp; /* f32 [n_rows, V] */
    ops_tensor topk_ids;  /* i32 [n_rows, k] */
    ops_tensor topk_logp; /* f32 [n_rows, k] */
    ops_tensor row_kl;    /* f64 [T] fkl: KL of each taught row (written only for taught rows) */
} ops_vocab_op;

/* ---- the backend table ---- */
struct ops_backend {
    const char *name;
    int (*device_count)(void);
    void (*describe)(int device, char *out, size_t cap);
    bool (*queue_init)(ops_queue *q, int device, s2d_err *err);
    void (*queue_free)(ops_queue *q);
    void (*reserve)(ops_queue *q, int max_seq_len, int max_rows, int vocab, size_t max_elems);

    void *(*alloc)(ops_queue *q, size_t bytes);
    void (*free)(ops_queue *q, void *p);
    void (*upload)(ops_queue *q, void *dst, const void *src_host, size_t bytes);
    void (*download)(ops_queue *q, void *dst_host, const void *src, size_t bytes);
    void (*copy)(ops_queue *q, void *dst, const void *src, size_t bytes);
    void (*zero)(ops_queue *q, void *dst, size_t bytes);
    void (*sync)(ops_queue *q);

    /* layers: see the op_* wrappers below for contracts */
    void (*matmul)(ops_queue *q, ops_tensor C, ops_tensor A, ops_tensor B, int M, int N, int K, bool trans_a,
                   bool trans_b, bool accumulate);
    void (*linear_rows)(ops_queue *q, ops_tensor y, ops_tensor x, ops_tensor W, int T, int in, int out,
                        bool accumulate);
    void (*rmsnorm_fwd)(ops_queue *q, ops_tensor y, ops_tensor rstd, ops_tensor x, ops_tensor w, int rows, int dim,
                        float eps);
    void (*rmsnorm_bwd)(ops_queue *q, ops_tensor dx, ops_tensor dw, ops_tensor dy, ops_tensor x, ops_tensor w,
                        ops_tensor rstd, int rows, int dim, bool accumulate_dx);
    void (*rope)(ops_queue *q, ops_tensor x, ops_tensor pos, ops_tensor cos, ops_tensor sin, int T, int n_heads,
                 int hd, bool inverse);
    void (*attention_fwd)(ops_queue *q, ops_tensor out, ops_tensor lse, ops_tensor qh, ops_tensor k, ops_tensor v,
                          int n_seqs, const int *seq_start, int nh, int nkv, int hd);
    void (*attention_bwd)(ops_queue *q, ops_tensor dq, ops_tensor dk, ops_tensor dv, ops_tensor dout,
                          ops_tensor qh, ops_tensor k, ops_tensor v, ops_tensor out, ops_tensor lse, int n_seqs,
                          const int *seq_start, int nh, int nkv, int hd);
    void (*attention_prefill)(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k, ops_tensor v, int n, int p0,
                              int nh, int nkv, int hd);
    void (*attention_decode)(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k_cache, ops_tensor v_cache,
                             int slot_len, const int *slots, const int *ctx_len, int n, int nh, int nkv, int hd);
    void (*kv_write)(ops_queue *q, ops_tensor cache, ops_tensor rows, int slot_len, const int *slots,
                     const int *pos, int n, int width);
    void (*bias_add)(ops_queue *q, ops_tensor y, ops_tensor b, int rows, int n);
    void (*bias_bwd)(ops_queue *q, ops_tensor db, ops_tensor dy, int rows, int n);
    void (*swiglu_fwd)(ops_queue *q, ops_tensor h, ops_tensor gate, ops_tensor up, size_t n);
    void (*swiglu_bwd)(ops_queue *q, ops_tensor dgate, ops_tensor dup, ops_tensor dh, ops_tensor gate,
                       ops_tensor up, size_t n);
    void (*embedding_fwd)(ops_queue *q, ops_tensor out, ops_tensor table, ops_tensor tokens, int T, int dim);
    void (*embedding_bwd)(ops_queue *q, ops_tensor dtable, ops_tensor dout, ops_tensor tokens, int T, int dim);
    void (*vocab_rows)(ops_queue *q, const ops_vocab_op *op, ops_tensor logits, int r0, int rows);
    void (*add)(ops_queue *q, ops_tensor y, ops_tensor x, size_t n);
    void (*scale)(ops_queue *q, ops_tensor y, float s, size_t n);
    double (*sumsq)(ops_queue *q, ops_tensor x, size_t n);
    void (*adamw)(ops_queue *q, ops_tensor params, ops_tensor grads, ops_tensor m, ops_tensor v,
                  const ops_segment *segs, int n_segs, const ops_adamw_step *a);
    void (*sample)(ops_queue *q, ops_tensor logits, int n, int V, const ops_sampling *sp, const uint64_t *seq_ids,
                   const uint64_t *positions, int32_t *ids_out, float *logp_out);
    bool (*bf16_mirror)(ops_queue *q, ops_tensor dst, ops_tensor src, size_t n, bool fresh);
};

/* ---- ops (each dispatches to q->be) ---- */

/* C[M,N] (+)= op(A)[M,K] @ op(B)[K,N]; op(X) = X^T when trans_x. A is [M,K] (or [K,M] when trans_a), B is [K,N]
 * (or [N,K] when trans_b); all contiguous row-major. Training and scoring GEMMs (results may depend on M). */
void op_matmul(ops_queue *q, ops_tensor C, ops_tensor A, ops_tensor B, int M, int N, int K, bool trans_a,
               bool trans_b, bool accumulate);
/* y[T,out] = x[T,in] @ W[out,in]^T (HF nn.Linear layout, no bias). */
void op_linear_fwd(ops_queue *q, ops_tensor y, ops_tensor x, ops_tensor W, int T, int in, int out);
/* dx[T,in] (+)= dy[T,out] @ W[out,in] (accumulate_dx; dx may be absent); dW[out,in] += dy^T @ x (always
 * accumulates; may be absent). */
void op_linear_bwd(ops_queue *q, ops_tensor dx, ops_tensor dW, ops_tensor dy, ops_tensor x, ops_tensor W, int T,
                   int in, int out, bool accumulate_dx);
/* y[T,out] (+)= x[T,in] @ W[out,in]^T, ROW-INVARIANT: every row's result depends only on that row of x and on
 * W (never on T, the other rows or the thread count), which generation needs (a prompt's output must not depend
 * on its batch). W may be f32 or bf16 (bf16 is widened exactly; a bf16 W holding the bf16 bits of an f32 W
 * gives bitwise the f32 result). */
void op_linear_rows(ops_queue *q, ops_tensor y, ops_tensor x, ops_tensor W, int T, int in, int out,
                    bool accumulate);

/* RMSNorm over the last dim (fp32, HF convention): y = w * x / sqrt(mean(x^2) + eps).
 * x, y: [rows, dim]; w: [dim]; rstd (may be absent): [rows] = 1/sqrt(mean(x^2)+eps), kept for bwd. */
void op_rmsnorm_fwd(ops_queue *q, ops_tensor y, ops_tensor rstd, ops_tensor x, ops_tensor w, int rows, int dim,
                    float eps);
/* dx[rows,dim] (+)= (accumulate_dx; may be absent); dw[dim] += (always accumulates; may be absent). */
void op_rmsnorm_bwd(ops_queue *q, ops_tensor dx, ops_tensor dw, ops_tensor dy, ops_tensor x, ops_tensor w,
                    ops_tensor rstd, int rows, int dim, bool accumulate_dx);

/* Split-half ("rotate_half") RoPE in place, as HF: for i < hd/2, with c = cos[pos[t], i], s = sin[pos[t], i]:
 * x'[i] = x[i] c - x[i+hd/2] s;  x'[i+hd/2] = x[i+hd/2] c + x[i] s.
 * x: [T, n_heads, hd]; pos: i32 [T]; cos, sin: [max_pos, hd/2]. bwd applies the inverse rotation to a gradient. */
void op_rope_fwd(ops_queue *q, ops_tensor x, ops_tensor pos, ops_tensor cos, ops_tensor sin, int T, int n_heads,
                 int hd);
void op_rope_bwd(ops_queue *q, ops_tensor dx, ops_tensor pos, ops_tensor cos, ops_tensor sin, int T, int n_heads,
                 int hd);

/* Causal attention over a packed batch: sequence s is rows [seq_start[s], seq_start[s+1]) (host metadata);
 * query row i of a sequence attends to its keys 0..i. Scale 1/sqrt(hd). No [T, T] score matrix is stored.
 * q: [T, nh, hd]; k, v: [T, nkv, hd]; out: [T, nh, hd]; lse: [T, nh] log-sum-exp of the scaled scores per
 * (row, head), kept for bwd (may be absent when no backward follows). */
void op_attention_fwd(ops_queue *q, ops_tensor out, ops_tensor lse, ops_tensor qh, ops_tensor k, ops_tensor v,
                      int n_seqs, const int *seq_start, int nh, int nkv, int hd);
/* dq: [T, nh, hd], dk, dv: [T, nkv, hd] are OVERWRITTEN. out and lse from the forward. */
void op_attention_bwd(ops_queue *q, ops_tensor dq, ops_tensor dk, ops_tensor dv, ops_tensor dout, ops_tensor qh,
                      ops_tensor k, ops_tensor v, ops_tensor out, ops_tensor lse, int n_seqs, const int *seq_start,
                      int nh, int nkv, int hd);
/* One sequence continuing a cached prefix: query row i (position p0+i) attends to keys 0..p0+i.
 * q, out: [n, nh, hd]; k, v: [>= p0+n, nkv, hd] (the cache of that sequence, new rows already written). */
void op_attention_prefill(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k, ops_tensor v, int n, int p0,
                          int nh, int nkv, int hd);
/* Single query rows against a slotted cache: k_cache, v_cache: [n_slots, slot_len, nkv, hd] (one layer's);
 * row r attends to the first ctx_len[r] positions of slot slots[r] (host metadata). q, out: [n, nh, hd]. */
void op_attention_decode(ops_queue *q, ops_tensor out, ops_tensor qh, ops_tensor k_cache, ops_tensor v_cache,
                         int slot_len, const int *slots, const int *ctx_len, int n, int nh, int nkv, int hd);
/* KV-cache write: row r of rows [n, width] goes to position pos[r] of slot slots[r] of cache
 * [n_slots, slot_len, width] (host metadata). */
void op_kv_write(ops_queue *q, ops_tensor cache, ops_tensor rows, int slot_len, const int *slots, const int *pos,
                 int n, int width);

/* y[rows, n] += b[n] on every row (a linear's bias). bwd: db[n] += Σ_rows dy[r, :], rows summed in order. */
void op_bias_add(ops_queue *q, ops_tensor y, ops_tensor b, int rows, int n);
void op_bias_bwd(ops_queue *q, ops_tensor db, ops_tensor dy, int rows, int n);

/* SwiGLU: h = silu(gate) * up; all [n] (flattened [T, I]). bwd: dgate, dup [n] OVERWRITTEN. */
void op_swiglu_fwd(ops_queue *q, ops_tensor h, ops_tensor gate, ops_tensor up, size_t n);
void op_swiglu_bwd(ops_queue *q, ops_tensor dgate, ops_tensor dup, ops_tensor dh, ops_tensor gate, ops_tensor up,
                   size_t n);

/* out[T, dim] = table[tokens[t], :] (tokens i32 [T], in range: checked by the caller).
 * bwd: dtable[tokens[t], :] += dout[t, :] in token order (deterministic). */
void op_embedding_fwd(ops_queue *q, ops_tensor out, ops_tensor table, ops_tensor tokens, int T, int dim);
void op_embedding_bwd(ops_queue *q, ops_tensor dtable, ops_tensor dout, ops_tensor tokens, int T, int dim);

/* The vocabulary-wide work on one chunk of LM-head logits [rows, V] (rows r0.. of the batch): see
 * ops_vocab_kind. The loss is DESCRIBED (kind, targets, weights, teacher data); no host code reads logits. */
void op_vocab_rows(ops_queue *q, const ops_vocab_op *op, ops_tensor logits, int r0, int rows);

void op_add(ops_queue *q, ops_tensor y, ops_tensor x, size_t n);   /* y += x */
void op_scale(ops_queue *q, ops_tensor y, float s, size_t n);      /* y *= s */
/* Σ x² over n elements in double, summed in fixed blocks combined in order (the same value for any thread
 * count); returns to the host (waits). */
double op_sumsq(ops_queue *q, ops_tensor x, size_t n);
/* AdamW on every segment (one pass; segments cover the buffers); params, grads, m, v: f32 [n]. */
void op_adamw(ops_queue *q, ops_tensor params, ops_tensor grads, ops_tensor m, ops_tensor v, const ops_segment *segs,
              int n_segs, const ops_adamw_step *a);
/* Samples one token per row of logits [n, V] (row i keyed by seq_ids[i], positions[i]); writes the token ids and
 * their behaviour log-probs to HOST arrays (waits). Rows are independent. Call ops_reserve(q, 0, n, V, 0) first. */
void op_sample(ops_queue *q, ops_tensor logits, int n, int V, const ops_sampling *sp, const uint64_t *seq_ids,
               const uint64_t *positions, int32_t *ids_out, float *logp_out);
/* Inference copy of fp32 weights src [n] in bf16 dst [n] when the backend can run decode from it with results
 * bitwise equal to src's: returns false (dst partly written) when it cannot. fresh: dst holds nothing yet.
 * Waits. */
bool op_bf16_mirror(ops_queue *q, ops_tensor dst, ops_tensor src, size_t n, bool fresh);
