/* ops_cpu.h: the CPU backend's kernels on raw host pointers (internal to src/ops; tests and benchmarks may use
 * them to check the kernels directly). The rest of the program reaches them only through ops.h.
 *
 * fp32, OpenBLAS sgemm and OpenMP loops, deterministic: every reduction runs in a fixed order whatever the
 * thread count (no atomics). Conventions as ops.h. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h"

/* C[M,N] (+)= op(A)[M,K] @ op(B)[K,N]; op(X) = X^T when trans_x. A is [M,K] (or [K,M] when trans_a),
 * B is [K,N] (or [N,K] when trans_b); all contiguous row-major. */
void cpu_matmul(float *C, const float *A, const float *B, int M, int N, int K, bool trans_a, bool trans_b,
               bool accumulate);
/* y[T,out] = x[T,in] @ W[out,in]^T (HF nn.Linear layout, no bias). */
void cpu_linear_fwd(float *y, const float *x, const float *W, int T, int in, int out);
/* y[T,out] (+)= x[T,in] @ W[out,in]^T (accumulate: y += ...) for the KV-cache paths (ops_rows.c): every y[t,o]
 * is one dot product computed in a fixed order, so a row's result never depends on T, on the other rows or on
 * the thread count (batch independence of generation); each weight row is read once per 4 rows of x, which
 * beats sgemm's weight repacking at small T. */
void cpu_linear_rows(float *y, const float *x, const float *W, int T, int in, int out, bool accumulate);
/* cpu_linear_rows with bf16 weights W16[out,in] (raw bf16 bits, e.g. a bf16 copy of fp32 weights that are all
 * bf16-exact): each weight is widened to fp32 in registers (exact: a 16-bit shift) and the dot products run in
 * exactly cpu_linear_rows's order, so y is BITWISE cpu_linear_rows(y, x, widen(W16)) on the same code path, while
 * each step reads half the weight bytes. */
void cpu_linear_rows_bf16(float *y, const float *x, const uint16_t *W16, int T, int in, int out, bool accumulate);

/* dst [n] = the bf16 bits (high halves) of src [n] when EVERY src word is bf16-exact (low 16 bits zero); returns
 * false as soon as one is not (dst then partly written). Rewrites only the pieces of dst that differ, or all of
 * it when fresh (dst uninitialised). Parallel, vectorised: one streaming pass. */
bool cpu_bf16_mirror(uint16_t *dst, const float *src, size_t n, bool fresh);

/* CPU code paths: the AVX-512 kernels (ops_rows.c, ops_vmath.c) run where the CPU has AVX-512F, unless the
 * environment variable S2D_NO_AVX512=1 (read once) or ops_set_portable(true) forces the portable loops, which
 * are what CPUs without AVX-512 run (so tests can check both on one machine). Not thread-safe against running
 * ops: switch between calls. */
bool ops_avx512_active(void);
void ops_set_portable(bool portable);
/* Without AVX-512, cpu_linear_rows(_bf16) and cpu_attention_decode run AVX2 code that gives the plain loops' bits;
 * true forces the plain loops themselves (tests compare the two). Not thread-safe against running ops. */
void cpu_rows_force_plain(bool plain);
/* AdamW runs AVX2 code where the CPU has it, with the plain loop's bits; true forces the plain loop (tests). */
void cpu_adamw_force_plain(bool plain);
/* dx[T,in] (+)= dy[T,out] @ W[out,in] (accumulate_dx); dW[out,in] += dy^T @ x (always accumulates). */
void cpu_linear_bwd(float *dx, float *dW, const float *dy, const float *x, const float *W, int T, int in, int out,
                   bool accumulate_dx);

/* RMSNorm over the last dim (fp32, HF convention): y = w * x / sqrt(mean(x^2) + eps).
 * x, y: [rows, dim]; w: [dim]; rstd (optional, may be NULL): [rows] = 1/sqrt(mean(x^2)+eps), kept for bwd. */
void cpu_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int rows, int dim, float eps);
/* dx[rows,dim] (+)= (accumulate_dx); dw[dim] += (always accumulates). rstd from the forward. */
void cpu_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd,
                    int rows, int dim, bool accumulate_dx);

/* Split-half ("rotate_half") RoPE in place, as HF: for i < hd/2, with c = cos[pos[t], i], s = sin[pos[t], i]:
 * x'[i] = x[i] c - x[i+hd/2] s;  x'[i+hd/2] = x[i+hd/2] c + x[i] s.
 * x: [T, n_heads, hd]; pos: [T] positions; cos, sin: [max_pos, hd/2]. */
void cpu_rope_fwd(float *x, const int *pos, const float *cos, const float *sin, int T, int n_heads, int hd);
/* The transpose (inverse rotation) applied in place to a gradient dx: [T, n_heads, hd]. */
void cpu_rope_bwd(float *dx, const int *pos, const float *cos, const float *sin, int T, int n_heads, int hd);

/* Causal attention over a packed batch: sequence s is rows [seq_start[s], seq_start[s+1]); query row i of a
 * sequence attends to its keys 0..i. Scale 1/sqrt(hd).
 * q: [T, nh, hd]; k, v: [T, nkv, hd]; out: [T, nh, hd]; lse: [T, nh] log-sum-exp of the scaled scores per
 * (row, head), kept for bwd (may be NULL when no backward follows).
 * scratch: cpu_attention_scratch_floats(max_seq_len) floats. */
size_t cpu_attention_scratch_floats(int max_seq_len);
void cpu_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v, int n_seqs,
                      const int *seq_start, int nh, int nkv, int hd, float *scratch);
/* dq: [T, nh, hd], dk, dv: [T, nkv, hd] are OVERWRITTEN. out and lse from the forward. */
void cpu_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                      const float *v, const float *out, const float *lse, int n_seqs, const int *seq_start, int nh,
                      int nkv, int hd, float *scratch);
/* One sequence continuing a cached prefix: query row i (position p0+i) attends to keys 0..p0+i.
 * q, out: [n, nh, hd]; k, v: [>= p0+n, nkv, hd] (the cache of that sequence, new rows already written).
 * scratch: cpu_attention_scratch_floats(p0+n) floats. */
void cpu_attention_prefill(float *out, const float *q, const float *k, const float *v, int n, int p0, int nh, int nkv,
                          int hd, float *scratch);
/* Attention of single query rows against caches (decode / prefill onto a cached prefix): row r attends to the
 * first ctx_len[r] positions of k_rows[r], v_rows[r] (each [>= ctx_len[r], nkv, hd], contiguous).
 * q, out: [n, nh, hd]. scratch: cpu_attention_decode_scratch_floats(max_ctx) floats. */
size_t cpu_attention_decode_scratch_floats(int max_ctx);
void cpu_attention_decode(float *out, const float *q, const float *const *k_rows, const float *const *v_rows,
                         const int *ctx_len, int n, int nh, int nkv, int hd, float *scratch);

/* SwiGLU: h = silu(gate) * up; all [n] (flattened [T, I]). */
void cpu_swiglu_fwd(float *h, const float *gate, const float *up, size_t n);
/* dgate, dup: [n] OVERWRITTEN. */
void cpu_swiglu_bwd(float *dgate, float *dup, const float *dh, const float *gate, const float *up, size_t n);

/* out[T, dim] = table[tokens[t], :]; tokens must be in [0, rows of table) (checked by the caller). */
void cpu_embedding_fwd(float *out, const float *table, const int32_t *tokens, int T, int dim);
/* dtable[tokens[t], :] += dout[t, :] for t in token order (deterministic). */
void cpu_embedding_bwd(float *dtable, const float *dout, const int32_t *tokens, int T, int dim);

/* Per row of logits [rows, V]: lse[r] = logsumexp(logits[r]); logp[r] = logits[r, target[r]] - lse[r];
 * rows with target[r] < 0 get logp 0 (lse still written). logp, lse: [rows]. */
void cpu_logsoftmax_gather_fwd(float *logp, float *lse, const float *logits, const int32_t *target, int rows,
                              int V);
/* In place: logits [rows, V] becomes d(loss)/d(logits) = dlogp[r] * (onehot(target[r]) - softmax(logits[r]));
 * rows with target < 0 become 0. lse from the forward. */
void cpu_logsoftmax_gather_bwd(float *logits, const float *lse, const float *dlogp, const int32_t *target, int rows,
                              int V);
/* In place log-softmax of each row of x [rows, V] (used for full-vocabulary losses). */
void cpu_log_softmax(float *x, int rows, int V);

void cpu_add(float *y, const float *x, size_t n);          /* y += x */
void cpu_scale(float *y, float s, size_t n);                /* y *= s */
void cpu_axpy(float *y, float a, const float *x, size_t n); /* y += a x */

/* ---- vocabulary rows (ops_vocab.c): the row functions behind op_vocab_rows ---- */
/* full: teacher log-probs over the whole vocabulary. Returns KL(p_T ‖ pθ); dlogits[v] = scale·(pθ(v) − p_T(v)). */
double cpu_fkl_full_row(const float *teacher_logp /* [V] */, const float *logits /* [V] */, int V, float scale,
                        float *dlogits /* [V] */);
/* topk: teacher top-k ids and log-probs plus one tail bucket m = 1 − Σ_K p:
 * KL = Σ_{v∈K} p_T(v) log(p_T(v)/pθ(v)) + m_T log(m_T/mθ). dlogits[v] = scale·(pθ(v) − p_T(v)) on K and
 * scale·pθ(v)(1 − m_T/mθ) off K. Duplicate ids in K are an error (checked). */
double cpu_fkl_topk_row(const int32_t *topk_ids /* [k] */, const float *topk_logp /* [k] */, int k,
                        const float *logits /* [V] */, int V, float scale, float *dlogits /* [V] */);
/* opd.mode full / topk (G-OPD's per-position objective, exact instead of the sampled token's weight): over the
 * teacher's categories c (full: each id; topk: each id of K and one tail bucket), with Pθ(c) and P_T(c) their
 * masses, a_c = log Pθ(c) − λ log P_T(c):
 *   loss = Σ_c Pθ(c) a_c,  dlogits[v] = scale·pθ(v)(a_c(v) − loss) + dl·(onehot(target) − pθ)(v)
 * (the +1 of d(P log P) sums to zero over the categories). The dl term is an optional sampled-token gradient
 * (0 = none; target < 0 = none). Returns the reverse KL Σ_c Pθ(c) log(Pθ(c)/P_T(c)) (λ = 1's loss). topk: the
 * teacher's tail mass is floored at 1e-6 (below it, its float sum's rounding) unless k = V (no tail). logits
 * and dlogits may be the same array. */
double cpu_rkl_full_row(const float *teacher_logp /* [V] */, const float *logits /* [V] */, int V, float lambda,
                        float scale, float dl, int32_t target, float *dlogits /* [V] */);
double cpu_rkl_topk_row(const int32_t *topk_ids /* [k] */, const float *topk_logp /* [k] */, int k,
                        const float *logits /* [V] */, int V, float lambda, float scale, float dl, int32_t target,
                        float *dlogits /* [V] */);
/* Teacher side of fkl topk: the k largest entries of log_softmax(logits) (descending, ties by lower id);
 * O(V log k). */
void cpu_topk_logprobs_row(const float *logits /* [V] */, int V, int k, int32_t *ids /* [k] */,
                           float *logp /* [k] */);
/* Full log-softmax of one row, log-sum-exp in double. */
void cpu_log_softmax_row(const float *logits /* [V] */, int V, float *logp /* [V] */);
void cpu_vocab_rows(const ops_vocab_op *op, float *logits, int r0, int rows); /* op_vocab_rows */
/* y[rows, n] += b[n]; db[n] += column sums of dy[rows, n] (rows in order, in double). */
void cpu_bias_add(float *y, const float *b, int rows, int n);
void cpu_bias_bwd(float *db, const float *dy, int rows, int n);
