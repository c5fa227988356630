/* ops.h: the one seam between model code and hardware. Every tensor is a raw float pointer to a row-major,
 * contiguous array; shapes are in the comments. The CPU backend (ops_cpu.c) is fp32, OpenBLAS sgemm and
 * OpenMP loops, and deterministic: every reduction runs in a fixed order whatever the thread count's timing
 * (no atomics). A CUDA backend implements the same functions.
 *
 * Conventions: "accumulate" means out += result, otherwise out = result. Backward functions follow the same
 * rule per output as documented. T = tokens (rows) of a packed batch; nh = query heads, nkv = key/value heads,
 * hd = head_dim. GQA: query head h uses kv head h / (nh / nkv). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* C[M,N] (+)= op(A)[M,K] @ op(B)[K,N]; op(X) = X^T when trans_x. A is [M,K] (or [K,M] when trans_a),
 * B is [K,N] (or [N,K] when trans_b); all contiguous row-major. */
void op_matmul(float *C, const float *A, const float *B, int M, int N, int K, bool trans_a, bool trans_b,
               bool accumulate);
/* y[T,out] = x[T,in] @ W[out,in]^T (HF nn.Linear layout, no bias). */
void op_linear_fwd(float *y, const float *x, const float *W, int T, int in, int out);
/* y[T,out] (+)= x[T,in] @ W[out,in]^T (accumulate: y += ...) for the KV-cache paths (ops_rows.c): every y[t,o]
 * is one dot product computed in a fixed order, so a row's result never depends on T, on the other rows or on
 * the thread count (batch independence of generation); each weight row is read once per 4 rows of x, which
 * beats sgemm's weight repacking at small T. */
void op_linear_rows(float *y, const float *x, const float *W, int T, int in, int out, bool accumulate);
/* op_linear_rows with bf16 weights W16[out,in] (raw bf16 bits, e.g. a bf16 copy of fp32 weights that are all
 * bf16-exact): each weight is widened to fp32 in registers (exact: a 16-bit shift) and the dot products run in
 * exactly op_linear_rows's order, so y is BITWISE op_linear_rows(y, x, widen(W16)) on the same code path, while
 * each step reads half the weight bytes. */
void op_linear_rows_bf16(float *y, const float *x, const uint16_t *W16, int T, int in, int out, bool accumulate);

/* dst [n] = the bf16 bits (high halves) of src [n] when EVERY src word is bf16-exact (low 16 bits zero); returns
 * false as soon as one is not (dst then partly written). Rewrites only the pieces of dst that differ, or all of
 * it when fresh (dst uninitialised). Parallel, vectorised: one streaming pass. */
bool op_bf16_mirror(uint16_t *dst, const float *src, size_t n, bool fresh);

/* CPU code paths: the AVX-512 kernels (ops_rows.c, ops_vmath.c) run where the CPU has AVX-512F, unless the
 * environment variable S2D_NO_AVX512=1 (read once) or ops_set_portable(true) forces the portable loops, which
 * are what CPUs without AVX-512 run (so tests can check both on one machine). Not thread-safe against running
 * ops: switch between calls. */
bool ops_avx512_active(void);
void ops_set_portable(bool portable);
/* dx[T,in] (+)= dy[T,out] @ W[out,in] (accumulate_dx); dW[out,in] += dy^T @ x (always accumulates). */
void op_linear_bwd(float *dx, float *dW, const float *dy, const float *x, const float *W, int T, int in, int out,
                   bool accumulate_dx);

/* RMSNorm over the last dim (fp32, HF convention): y = w * x / sqrt(mean(x^2) + eps).
 * x, y: [rows, dim]; w: [dim]; rstd (optional, may be NULL): [rows] = 1/sqrt(mean(x^2)+eps), kept for bwd. */
void op_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int rows, int dim, float eps);
/* dx[rows,dim] (+)= (accumulate_dx); dw[dim] += (always accumulates). rstd from the forward. */
void op_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                    int rows, int dim, bool accumulate_dx);

/* Split-half ("rotate_half") RoPE in place, as HF: for i < hd/2, with c = cos[pos[t], i], s = sin[pos[t], i]:
 * x'[i] = x[i] c - x[i+hd/2] s;  x'[i+hd/2] = x[i+hd/2] c + x[i] s.
 * x: [T, n_heads, hd]; pos: [T] positions; cos, sin: [max_pos, hd/2]. */
void op_rope_fwd(float *x, const int *pos, const float *cos, const float *sin, int T, int n_heads, int hd);
/* The transpose (inverse rotation) applied in place to a gradient dx: [T, n_heads, hd]. */
void op_rope_bwd(float *dx, const int *pos, const float *cos, const float *sin, int T, int n_heads, int hd);

/* Causal attention over a packed batch: sequence s is rows [seq_start[s], seq_start[s+1]); query row i of a
 * sequence attends to its keys 0..i. Scale 1/sqrt(hd).
 * q: [T, nh, hd]; k, v: [T, nkv, hd]; out: [T, nh, hd]; lse: [T, nh] log-sum-exp of the scaled scores per
 * (row, head), kept for bwd (may be NULL when no backward follows).
 * scratch: op_attention_scratch_floats(max_seq_len) floats. */
size_t op_attention_scratch_floats(int max_seq_len);
void op_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v, int n_seqs,
                      const int *seq_start, int nh, int nkv, int hd, float *scratch);
/* dq: [T, nh, hd], dk, dv: [T, nkv, hd] are OVERWRITTEN. out and lse from the forward. */
void op_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                      const float *v, const float *out, const float *lse, int n_seqs, const int *seq_start, int nh,
                      int nkv, int hd, float *scratch);
/* One sequence continuing a cached prefix: query row i (position p0+i) attends to keys 0..p0+i.
 * q, out: [n, nh, hd]; k, v: [>= p0+n, nkv, hd] (the cache of that sequence, new rows already written).
 * scratch: op_attention_scratch_floats(p0+n) floats. */
void op_attention_prefill(float *out, const float *q, const float *k, const float *v, int n, int p0, int nh, int nkv,
                          int hd, float *scratch);
/* Attention of single query rows against caches (decode / prefill onto a cached prefix): row r attends to the
 * first ctx_len[r] positions of k_rows[r], v_rows[r] (each [>= ctx_len[r], nkv, hd], contiguous).
 * q, out: [n, nh, hd]. scratch: op_attention_decode_scratch_floats(max_ctx) floats. */
size_t op_attention_decode_scratch_floats(int max_ctx);
void op_attention_decode(float *out, const float *q, const float *const *k_rows, const float *const *v_rows,
                         const int *ctx_len, int n, int nh, int nkv, int hd, float *scratch);

/* SwiGLU: h = silu(gate) * up; all [n] (flattened [T, I]). */
void op_swiglu_fwd(float *h, const float *gate, const float *up, size_t n);
/* dgate, dup: [n] OVERWRITTEN. */
void op_swiglu_bwd(float *dgate, float *dup, const float *dh, const float *gate, const float *up, size_t n);

/* out[T, dim] = table[tokens[t], :]; tokens must be in [0, rows of table) (checked by the caller). */
void op_embedding_fwd(float *out, const float *table, const int32_t *tokens, int T, int dim);
/* dtable[tokens[t], :] += dout[t, :] for t in token order (deterministic). */
void op_embedding_bwd(float *dtable, const float *dout, const int32_t *tokens, int T, int dim);

/* Per row of logits [rows, V]: lse[r] = logsumexp(logits[r]); logp[r] = logits[r, target[r]] - lse[r];
 * rows with target[r] < 0 get logp 0 (lse still written). logp, lse: [rows]. */
void op_logsoftmax_gather_fwd(float *logp, float *lse, const float *logits, const int32_t *target, int rows,
                              int V);
/* In place: logits [rows, V] becomes d(loss)/d(logits) = dlogp[r] * (onehot(target[r]) - softmax(logits[r]));
 * rows with target < 0 become 0. lse from the forward. */
void op_logsoftmax_gather_bwd(float *logits, const float *lse, const float *dlogp, const int32_t *target, int rows,
                              int V);
/* In place log-softmax of each row of x [rows, V] (used for full-vocabulary losses). */
void op_log_softmax(float *x, int rows, int V);

void op_add(float *y, const float *x, size_t n);          /* y += x */
void op_scale(float *y, float s, size_t n);                /* y *= s */
void op_axpy(float *y, float a, const float *x, size_t n); /* y += a x */
