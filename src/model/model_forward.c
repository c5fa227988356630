/* model_forward.c: packed forward / backward of the decoder, the chunked LM head, and the KV-cache paths
 * (prefill, decode) that share the same layer code. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/timer.h"
#include "model/model.h"
#include "ops/ops.h"

/* Activations of one layer over T rows. In inference mode one set is shared by all layers and the residual
 * is updated in place (x_in == x_mid == x_out); q_raw/k_raw alias q/k. */
typedef struct {
    float *x_in;   /* [T, H] residual entering the layer */
    float *rstd1;  /* [T] */
    float *xn1;    /* [T, H] input_layernorm output */
    float *q_raw;  /* [T, nh*hd] projection before q_norm (Qwen3; == q otherwise) */
    float *k_raw;  /* [T, nkv*hd] */
    float *rstd_q; /* [T*nh] (Qwen3) */
    float *rstd_k; /* [T*nkv] (Qwen3) */
    float *q;      /* [T, nh, hd] after q_norm + RoPE */
    float *k;      /* [T, nkv, hd] after k_norm + RoPE */
    float *v;      /* [T, nkv, hd] */
    float *att;    /* [T, nh*hd] attention output before o_proj */
    float *lse;    /* [T, nh] */
    float *x_mid;  /* [T, H] residual after attention */
    float *rstd2;  /* [T] */
    float *xn2;    /* [T, H] post_attention_layernorm output */
    float *gate;   /* [T, I] */
    float *up;     /* [T, I] */
    float *act;    /* [T, I] silu(gate) * up */
} layer_acts;

struct model_ws {
    model_config cfg;
    int max_tokens, chunk_rows;
    bool training;
    arena mem;
    /* the batch of the last forward */
    int T, n_seqs;
    bool have_forward;
    int *seq_start;  /* [max_tokens + 1] */
    int32_t *tokens; /* [max_tokens] */
    int *pos;        /* [max_tokens] */
    int32_t *target; /* [max_tokens] next token in the same sequence, -1 at a sequence's last row */
    layer_acts *acts; /* [n_layers] (training) or [1] (inference) */
    float *x_final;   /* [T, H] residual after the last layer */
    float *rstd_f;    /* [T] */
    float *hf;        /* [T, H] after the final norm */
    float *logits;    /* [chunk_rows, V] */
    float *chunk_logp, *chunk_lse; /* [chunk_rows] */
    float *attn_scratch;
    /* backward (training only) */
    float *dx, *dxn, *dhf;        /* [T, H] */
    float *dq, *dq_raw, *datt;    /* [T, nh*hd] */
    float *dk, *dk_raw, *dv;      /* [T, nkv*hd] */
    float *dgate, *dup, *dact;    /* [T, I] */
};

/* Carves buffers out of base (or only counts them when base is NULL), 64-byte aligned. */
typedef struct {
    float *base;
    size_t used; /* floats */
} carver;

static float *carve(carver *c, size_t n) {
    float *p = c->base ? c->base + c->used : NULL;
    c->used += (n + 15) & ~(size_t)15;
    return p;
}

static void layout_acts(carver *c, layer_acts *a, const model_config *cfg, int T, bool training, float *x_shared) {
    size_t H = cfg->hidden, qd = (size_t)cfg->n_heads * cfg->head_dim, kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
    size_t I = cfg->intermediate, t = (size_t)T;
    bool qwen = cfg->arch == MODEL_QWEN3;
    a->x_in = training ? carve(c, t * H) : x_shared;
    a->rstd1 = carve(c, t);
    a->xn1 = carve(c, t * H);
    a->q = carve(c, t * qd);
    a->k = carve(c, t * kvd);
    a->v = carve(c, t * kvd);
    a->q_raw = training && qwen ? carve(c, t * qd) : a->q;
    a->k_raw = training && qwen ? carve(c, t * kvd) : a->k;
    a->rstd_q = qwen ? carve(c, t * cfg->n_heads) : NULL;
    a->rstd_k = qwen ? carve(c, t * cfg->n_kv_heads) : NULL;
    a->att = carve(c, t * qd);
    a->lse = training ? carve(c, t * cfg->n_heads) : NULL;
    a->x_mid = training ? carve(c, t * H) : x_shared;
    a->rstd2 = carve(c, t);
    a->xn2 = carve(c, t * H);
    a->gate = carve(c, t * I);
    a->up = carve(c, t * I);
    a->act = carve(c, t * I);
}

static void layout_ws(model_ws *ws, carver *c) {
    const model_config *cfg = &ws->cfg;
    size_t H = cfg->hidden, qd = (size_t)cfg->n_heads * cfg->head_dim, kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
    size_t I = cfg->intermediate, t = (size_t)ws->max_tokens;
    int n_sets = ws->training ? cfg->n_layers : 1;
    ws->x_final = carve(c, t * H);
    for (int l = 0; l < n_sets; l++) layout_acts(c, &ws->acts[l], cfg, ws->max_tokens, ws->training, ws->x_final);
    ws->rstd_f = carve(c, t);
    ws->hf = carve(c, t * H);
    ws->logits = carve(c, (size_t)ws->chunk_rows * cfg->vocab);
    ws->chunk_logp = carve(c, (size_t)ws->chunk_rows);
    ws->chunk_lse = carve(c, (size_t)ws->chunk_rows);
    ws->attn_scratch = carve(c, op_attention_scratch_floats(ws->max_tokens));
    if (ws->training) {
        ws->dx = carve(c, t * H);
        ws->dxn = carve(c, t * H);
        ws->dhf = carve(c, t * H);
        ws->dq = carve(c, t * qd);
        ws->dq_raw = carve(c, t * qd);
        ws->datt = carve(c, t * qd);
        ws->dk = carve(c, t * kvd);
        ws->dk_raw = carve(c, t * kvd);
        ws->dv = carve(c, t * kvd);
        ws->dgate = carve(c, t * I);
        ws->dup = carve(c, t * I);
        ws->dact = carve(c, t * I);
    }
}

static int default_chunk_rows(const model_config *cfg, int max_tokens) {
    int rows = cfg->vocab >= 32768 ? 64 : 256;
    return S2D_MAX(1, S2D_MIN(rows, max_tokens));
}

model_ws *model_ws_new(const model *m, int max_tokens, bool training) {
    CHECK(max_tokens > 0, "model_ws_new: max_tokens must be positive, got %d", max_tokens);
    model_ws *ws = xcalloc(1, sizeof *ws);
    ws->cfg = m->cfg;
    ws->max_tokens = max_tokens;
    ws->training = training;
    ws->chunk_rows = default_chunk_rows(&m->cfg, max_tokens);
    ws->acts = xcalloc((size_t)(training ? m->cfg.n_layers : 1), sizeof(layer_acts));
    ws->seq_start = xmalloc(sizeof(int) * ((size_t)max_tokens + 1));
    ws->tokens = xmalloc(sizeof(int32_t) * (size_t)max_tokens);
    ws->pos = xmalloc(sizeof(int) * (size_t)max_tokens);
    ws->target = xmalloc(sizeof(int32_t) * (size_t)max_tokens);
    carver count = {NULL, 0};
    layout_ws(ws, &count);
    arena_init(&ws->mem, count.used * sizeof(float));
    carver real = {arena_floats(&ws->mem, count.used), 0};
    layout_ws(ws, &real);
    log_info("model workspace: %d tokens, %s, %.1f MB of activations", max_tokens,
             training ? "training" : "inference", (double)ws->mem.cap / 1e6);
    return ws;
}

void model_ws_free(model_ws *ws) {
    if (!ws) return;
    arena_free(&ws->mem);
    free(ws->acts);
    free(ws->seq_start);
    free(ws->tokens);
    free(ws->pos);
    free(ws->target);
    free(ws);
}

size_t model_ws_bytes(const model_ws *ws) { return ws->mem.cap; }
int model_ws_max_tokens(const model_ws *ws) { return ws->max_tokens; }
int model_ws_chunk_rows(const model_ws *ws) { return ws->chunk_rows; }

/* ---- the layer, shared by all paths ---- */

typedef enum { ATTN_PACKED, ATTN_PREFILL, ATTN_DECODE } attn_kind;
typedef struct {
    attn_kind kind;
    int n_seqs;
    const int *seq_start; /* ATTN_PACKED */
    model_kv_cache *kv;   /* ATTN_PREFILL / ATTN_DECODE */
    /* ATTN_PREFILL: n_seqs sequences packed by seq_start (rows), sequence i appended to slot seq_slot[i] from
     * position seq_p0[i] */
    const int *seq_slot, *seq_p0;
    const int *slots;     /* ATTN_DECODE: [T] slot of each row; positions are pos[] */
    const float **k_rows, **v_rows; /* ATTN_DECODE scratch [T] */
    int *ctx_len;                   /* ATTN_DECODE scratch [T] */
    const uint16_t *w16;            /* KV paths: bf16 copy of m->params (same offsets), or NULL: fp32 weights */
} attn_mode;

static float *kv_at(const model_kv_cache *kv, const model_config *c, int layer, int which, int slot, int p) {
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t slot_floats = (size_t)kv->max_len * kvd;
    return kv->buf + (((size_t)layer * 2 + which) * kv->n_slots + slot) * slot_floats + (size_t)p * kvd;
}

/* y[T,out] (+)= x W^T: sgemm for packed batches (training, scoring); the row-exact kernel for the KV-cache
 * paths, whose rows must not depend on the batch they share a step with, reading the bf16 copy of W when the
 * cache has one (w16 mirrors m->params: W's offset in params is its offset there; bitwise the same result). */
static void layer_linear(const model *m, const attn_mode *mode, float *y, const float *x, const float *W, int T,
                         int in, int out, bool accumulate) {
    if (mode->kind == ATTN_PACKED)
        op_matmul(y, x, W, T, out, in, false, true, accumulate);
    else if (mode->w16)
        op_linear_rows_bf16(y, x, mode->w16 + (W - m->params), T, in, out, accumulate);
    else
        op_linear_rows(y, x, W, T, in, out, accumulate);
}

static void layer_forward(const model *m, int l, const layer_acts *a, float *x_out, int T, const int *pos,
                          const attn_mode *mode, float *attn_scratch) {
    const model_config *c = &m->cfg;
    const model_layer_view *W = &m->w.layers[l];
    int H = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, I = c->intermediate;
    int qd = nh * hd, kvd = nkv * hd;
    op_rmsnorm_fwd(a->xn1, a->rstd1, a->x_in, W->attn_norm, T, H, c->rms_eps);
    layer_linear(m, mode, a->q_raw, a->xn1, W->wq, T, H, qd, false);
    layer_linear(m, mode, a->k_raw, a->xn1, W->wk, T, H, kvd, false);
    layer_linear(m, mode, a->v, a->xn1, W->wv, T, H, kvd, false);
    if (c->arch == MODEL_QWEN3) { /* per-head RMSNorm over head_dim, before RoPE */
        op_rmsnorm_fwd(a->q, a->rstd_q, a->q_raw, W->q_norm, T * nh, hd, c->rms_eps);
        op_rmsnorm_fwd(a->k, a->rstd_k, a->k_raw, W->k_norm, T * nkv, hd, c->rms_eps);
    }
    op_rope_fwd(a->q, pos, m->rope_cos, m->rope_sin, T, nh, hd);
    op_rope_fwd(a->k, pos, m->rope_cos, m->rope_sin, T, nkv, hd);
    if (mode->kind == ATTN_PACKED) {
        op_attention_fwd(a->att, a->lse, a->q, a->k, a->v, mode->n_seqs, mode->seq_start, nh, nkv, hd, attn_scratch);
    } else if (mode->kind == ATTN_PREFILL) {
        for (int i = 0; i < mode->n_seqs; i++) {
            int r0 = mode->seq_start[i], n = mode->seq_start[i + 1] - r0, slot = mode->seq_slot[i], p0 = mode->seq_p0[i];
            memcpy(kv_at(mode->kv, c, l, 0, slot, p0), a->k + (size_t)r0 * kvd, sizeof(float) * (size_t)n * kvd);
            memcpy(kv_at(mode->kv, c, l, 1, slot, p0), a->v + (size_t)r0 * kvd, sizeof(float) * (size_t)n * kvd);
            op_attention_prefill(a->att + (size_t)r0 * qd, a->q + (size_t)r0 * qd, kv_at(mode->kv, c, l, 0, slot, 0),
                                 kv_at(mode->kv, c, l, 1, slot, 0), n, p0, nh, nkv, hd, attn_scratch);
        }
    } else {
        for (int r = 0; r < T; r++) {
            memcpy(kv_at(mode->kv, c, l, 0, mode->slots[r], pos[r]), a->k + (size_t)r * kvd, sizeof(float) * kvd);
            memcpy(kv_at(mode->kv, c, l, 1, mode->slots[r], pos[r]), a->v + (size_t)r * kvd, sizeof(float) * kvd);
            mode->k_rows[r] = kv_at(mode->kv, c, l, 0, mode->slots[r], 0);
            mode->v_rows[r] = kv_at(mode->kv, c, l, 1, mode->slots[r], 0);
            mode->ctx_len[r] = pos[r] + 1;
        }
        op_attention_decode(a->att, a->q, mode->k_rows, mode->v_rows, mode->ctx_len, T, nh, nkv, hd, attn_scratch);
    }
    if (a->x_mid != a->x_in) memcpy(a->x_mid, a->x_in, sizeof(float) * (size_t)T * H);
    layer_linear(m, mode, a->x_mid, a->att, W->wo, T, qd, H, true); /* x_mid = x_in + att Wo^T */
    op_rmsnorm_fwd(a->xn2, a->rstd2, a->x_mid, W->mlp_norm, T, H, c->rms_eps);
    layer_linear(m, mode, a->gate, a->xn2, W->w_gate, T, H, I, false);
    layer_linear(m, mode, a->up, a->xn2, W->w_up, T, H, I, false);
    op_swiglu_fwd(a->act, a->gate, a->up, (size_t)T * I);
    if (x_out != a->x_mid) memcpy(x_out, a->x_mid, sizeof(float) * (size_t)T * H);
    layer_linear(m, mode, x_out, a->act, W->w_down, T, I, H, true); /* x_out = x_mid + act Wd^T */
}

static bool check_tokens(const model_config *c, const int32_t *tokens, int T, const char *what, s2d_err *err) {
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab)
            return err_set(err, "%s: token id %d at position %d is out of range [0, %d)", what, tokens[t], t,
                           c->vocab);
    return true;
}

bool model_forward(const model *m, model_ws *ws, const model_batch *b, s2d_err *err) {
    const model_config *c = &m->cfg;
    ws->have_forward = false;
    if (b->n_seqs < 0 || b->seq_start[0] != 0) return err_set(err, "batch: seq_start[0] must be 0");
    for (int s = 0; s < b->n_seqs; s++)
        if (b->seq_start[s + 1] < b->seq_start[s]) return err_set(err, "batch: seq_start decreases at sequence %d", s);
    int T = b->seq_start[b->n_seqs];
    if (T > ws->max_tokens)
        return err_set(err, "batch: %d tokens exceed the workspace's %d (raise max_tokens)", T, ws->max_tokens);
    if (!check_tokens(c, b->tokens, T, "batch", err)) return false;
    for (int s = 0; s < b->n_seqs; s++)
        if (b->seq_start[s + 1] - b->seq_start[s] > c->max_pos)
            return err_set(err, "batch: sequence %d has %d tokens, more than max_position_embeddings %d", s,
                           b->seq_start[s + 1] - b->seq_start[s], c->max_pos);
    ws->T = T;
    ws->n_seqs = b->n_seqs;
    memcpy(ws->seq_start, b->seq_start, sizeof(int) * ((size_t)b->n_seqs + 1));
    memcpy(ws->tokens, b->tokens, sizeof(int32_t) * (size_t)T);
    for (int s = 0; s < b->n_seqs; s++)
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            ws->pos[t] = t - b->seq_start[s];
            ws->target[t] = t + 1 < b->seq_start[s + 1] ? b->tokens[t + 1] : -1;
        }
    attn_mode mode = {.kind = ATTN_PACKED, .n_seqs = b->n_seqs, .seq_start = ws->seq_start};
    int L = c->n_layers, H = c->hidden;
    op_embedding_fwd(ws->acts[0].x_in, m->w.embed, ws->tokens, T, H);
    for (int l = 0; l < L; l++) {
        const layer_acts *a = &ws->acts[ws->training ? l : 0];
        float *x_out = !ws->training ? ws->x_final : (l + 1 < L ? ws->acts[l + 1].x_in : ws->x_final);
        layer_forward(m, l, a, x_out, T, ws->pos, &mode, ws->attn_scratch);
    }
    op_rmsnorm_fwd(ws->hf, ws->rstd_f, ws->x_final, m->w.final_norm, T, H, c->rms_eps);
    ws->have_forward = true;
    return true;
}

void model_logits_chunks(const model *m, model_ws *ws, model_logits_fn fn, void *user) {
    CHECK(ws->have_forward, "model_logits_chunks: no forward pass in this workspace");
    int H = m->cfg.hidden, V = m->cfg.vocab;
    for (int r0 = 0; r0 < ws->T; r0 += ws->chunk_rows) {
        int r1 = S2D_MIN(ws->T, r0 + ws->chunk_rows);
        op_linear_fwd(ws->logits, ws->hf + (size_t)r0 * H, m->w.lm_head, r1 - r0, H, V);
        fn(user, r0, r1, ws->logits, false);
    }
}

typedef struct {
    model_ws *ws;
    int V;
    float *logp;        /* forward output [T] */
    const float *dlogp; /* backward input [T] */
} logprob_ctx;

static void logprob_cb(void *user, int r0, int r1, float *logits, bool want_grad) {
    logprob_ctx *x = user;
    model_ws *ws = x->ws;
    const int32_t *target = ws->target + r0;
    float *logp = want_grad ? ws->chunk_logp : x->logp + r0;
    op_logsoftmax_gather_fwd(logp, ws->chunk_lse, logits, target, r1 - r0, x->V);
    if (want_grad) op_logsoftmax_gather_bwd(logits, ws->chunk_lse, x->dlogp + r0, target, r1 - r0, x->V);
}

void model_token_logprobs_from_ws(const model *m, model_ws *ws, float *logp) {
    logprob_ctx x = {ws, m->cfg.vocab, logp, NULL};
    model_logits_chunks(m, ws, logprob_cb, &x);
}

bool model_token_logprobs(const model *m, model_ws *ws, const model_batch *batch, float *logp, s2d_err *err) {
    if (!model_forward(m, ws, batch, err)) return false;
    model_token_logprobs_from_ws(m, ws, logp);
    return true;
}

static void layer_backward(model *m, int l, const layer_acts *a, model_ws *ws, float *dx) {
    const model_config *c = &m->cfg;
    const model_layer_view *W = &m->w.layers[l], *G = &m->g.layers[l];
    int T = ws->T, H = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, I = c->intermediate;
    int qd = nh * hd, kvd = nkv * hd;
    /* MLP: x_out = x_mid + swiglu(xn2 Wg^T, xn2 Wu^T) Wd^T */
    op_linear_bwd(ws->dact, G->w_down, dx, a->act, W->w_down, T, I, H, false);
    op_swiglu_bwd(ws->dgate, ws->dup, ws->dact, a->gate, a->up, (size_t)T * I);
    op_linear_bwd(ws->dxn, G->w_gate, ws->dgate, a->xn2, W->w_gate, T, H, I, false);
    op_linear_bwd(ws->dxn, G->w_up, ws->dup, a->xn2, W->w_up, T, H, I, true);
    op_rmsnorm_bwd(dx, G->mlp_norm, ws->dxn, a->x_mid, W->mlp_norm, a->rstd2, T, H, true);
    /* attention: x_mid = x_in + attn(q, k, v) Wo^T */
    op_linear_bwd(ws->datt, G->wo, dx, a->att, W->wo, T, qd, H, false);
    op_attention_bwd(ws->dq, ws->dk, ws->dv, ws->datt, a->q, a->k, a->v, a->att, a->lse, ws->n_seqs, ws->seq_start,
                     nh, nkv, hd, ws->attn_scratch);
    op_rope_bwd(ws->dq, ws->pos, m->rope_cos, m->rope_sin, T, nh, hd);
    op_rope_bwd(ws->dk, ws->pos, m->rope_cos, m->rope_sin, T, nkv, hd);
    const float *dq_raw = ws->dq, *dk_raw = ws->dk;
    if (c->arch == MODEL_QWEN3) {
        op_rmsnorm_bwd(ws->dq_raw, G->q_norm, ws->dq, a->q_raw, W->q_norm, a->rstd_q, T * nh, hd, false);
        op_rmsnorm_bwd(ws->dk_raw, G->k_norm, ws->dk, a->k_raw, W->k_norm, a->rstd_k, T * nkv, hd, false);
        dq_raw = ws->dq_raw, dk_raw = ws->dk_raw;
    }
    op_linear_bwd(ws->dxn, G->wq, dq_raw, a->xn1, W->wq, T, H, qd, false);
    op_linear_bwd(ws->dxn, G->wk, dk_raw, a->xn1, W->wk, T, H, kvd, true);
    op_linear_bwd(ws->dxn, G->wv, ws->dv, a->xn1, W->wv, T, H, kvd, true);
    op_rmsnorm_bwd(dx, G->attn_norm, ws->dxn, a->x_in, W->attn_norm, a->rstd1, T, H, true);
}

void model_backward_logits(model *m, model_ws *ws, model_logits_fn fn, void *user) {
    CHECK(ws->have_forward, "model_backward_logits: no forward pass in this workspace");
    CHECK(ws->training, "model_backward_logits: the workspace was made without training activations");
    CHECK(m->grads, "model_backward_logits: call model_alloc_grads first");
    const model_config *c = &m->cfg;
    int T = ws->T, H = c->hidden, V = c->vocab;
    /* LM head, chunk by chunk: logits recomputed, never stored whole. */
    for (int r0 = 0; r0 < T; r0 += ws->chunk_rows) {
        int r1 = S2D_MIN(T, r0 + ws->chunk_rows);
        const float *h = ws->hf + (size_t)r0 * H;
        op_linear_fwd(ws->logits, h, m->w.lm_head, r1 - r0, H, V);
        fn(user, r0, r1, ws->logits, true);
        op_linear_bwd(ws->dhf + (size_t)r0 * H, m->g.lm_head, ws->logits, h, m->w.lm_head, r1 - r0, H, V, false);
    }
    op_rmsnorm_bwd(ws->dx, m->g.final_norm, ws->dhf, ws->x_final, m->w.final_norm, ws->rstd_f, T, H, false);
    for (int l = c->n_layers - 1; l >= 0; l--) layer_backward(m, l, &ws->acts[l], ws, ws->dx);
    op_embedding_bwd(m->g.embed, ws->dx, ws->tokens, T, H);
}

void model_backward_logprobs(model *m, model_ws *ws, const float *dlogp) {
    logprob_ctx x = {ws, m->cfg.vocab, NULL, dlogp};
    model_backward_logits(m, ws, logprob_cb, &x);
}

/* ---- KV cache ---- */

struct model_kv_scratch {
    int rows;
    arena mem;
    layer_acts acts;
    float *x;       /* [rows, H] residual */
    float *hf;      /* [rows, H] */
    float *rstd_f;  /* [rows] */
    float *attn_scratch;
    int *pos, *slots, *ctx_len; /* [rows] */
    int *seq_start, *seq_slot, *seq_p0; /* [rows + 1] packed prefill: row offsets, slot, first position */
    const float **k_rows, **v_rows;
    /* bf16 copy of the weights (model_kv_refresh_weights) */
    uint16_t *w16;       /* [w16_n] raw bf16 bits of params, same offsets, or NULL */
    size_t w16_n;
    const float *w16_src; /* the params it was copied from */
    int logged_path;      /* -1 nothing logged yet, 0 fp32, 1 bf16: the path is logged when it changes */
};

/* Prompts are prefilled in pieces of this many tokens, which bounds the scratch. */
#define PREFILL_CHUNK 256

static void layout_kv_scratch(model_kv_scratch *s, const model_config *c, int max_len, carver *cv) {
    size_t H = c->hidden;
    s->x = carve(cv, (size_t)s->rows * H);
    layout_acts(cv, &s->acts, c, s->rows, false, s->x);
    s->hf = carve(cv, (size_t)s->rows * H);
    s->rstd_f = carve(cv, (size_t)s->rows);
    size_t a1 = op_attention_scratch_floats(max_len), a2 = op_attention_decode_scratch_floats(max_len);
    s->attn_scratch = carve(cv, S2D_MAX(a1, a2));
}

bool model_kv_init(model_kv_cache *kv, const model *m, int n_slots, int max_len, s2d_err *err) {
    const model_config *c = &m->cfg;
    memset(kv, 0, sizeof *kv);
    if (n_slots < 1) return err_set(err, "kv cache: n_slots must be >= 1, got %d", n_slots);
    if (max_len < 1 || max_len > c->max_pos)
        return err_set(err, "kv cache: max_len %d must be in [1, max_position_embeddings %d]", max_len, c->max_pos);
    kv->n_slots = n_slots;
    kv->max_len = max_len;
    kv->len = xcalloc((size_t)n_slots, sizeof(int));
    size_t floats = (size_t)c->n_layers * 2 * n_slots * (size_t)max_len * c->n_kv_heads * c->head_dim;
    kv->bytes = floats * sizeof(float);
    if (posix_memalign((void **)&kv->buf, 64, kv->bytes ? kv->bytes : 64) != 0)
        die("out of memory: kv cache of %.1f MB", kv->bytes / 1e6);
    model_kv_scratch *s = xcalloc(1, sizeof *s);
    s->rows = S2D_MAX(n_slots, S2D_MIN(PREFILL_CHUNK, max_len));
    carver count = {NULL, 0};
    layout_kv_scratch(s, c, max_len, &count);
    arena_init(&s->mem, count.used * sizeof(float));
    carver real = {arena_floats(&s->mem, count.used), 0};
    layout_kv_scratch(s, c, max_len, &real);
    s->pos = xmalloc(sizeof(int) * (size_t)s->rows);
    s->slots = xmalloc(sizeof(int) * (size_t)s->rows);
    s->ctx_len = xmalloc(sizeof(int) * (size_t)s->rows);
    s->seq_start = xmalloc(sizeof(int) * ((size_t)s->rows + 1));
    s->seq_slot = xmalloc(sizeof(int) * ((size_t)s->rows + 1));
    s->seq_p0 = xmalloc(sizeof(int) * ((size_t)s->rows + 1));
    s->k_rows = xmalloc(sizeof(float *) * (size_t)s->rows);
    s->v_rows = xmalloc(sizeof(float *) * (size_t)s->rows);
    s->logged_path = -1;
    kv->scratch = s;
    log_info("kv cache: %d slots x %d positions, %.1f MB (+%.1f MB scratch)", n_slots, max_len, kv->bytes / 1e6,
             s->mem.cap / 1e6);
    return true;
}

void model_kv_free(model_kv_cache *kv) {
    if (kv->scratch) {
        model_kv_scratch *s = kv->scratch;
        arena_free(&s->mem);
        free(s->pos);
        free(s->slots);
        free(s->ctx_len);
        free(s->seq_start);
        free(s->seq_slot);
        free(s->seq_p0);
        free(s->k_rows);
        free(s->v_rows);
        free(s->w16);
        free(s);
    }
    free(kv->buf);
    free(kv->len);
    memset(kv, 0, sizeof *kv);
}

void model_kv_reset(model_kv_cache *kv, int slot) {
    CHECK(slot >= 0 && slot < kv->n_slots, "model_kv_reset: slot %d out of [0, %d)", slot, kv->n_slots);
    kv->len[slot] = 0;
}

/* ---- bf16 copy of the weights ---- */

static void log_weight_path(model_kv_scratch *s, int path, size_t n, double seconds) {
    if (s->logged_path == path) {
        log_debug("kv cache: weights re-checked in %.3f s (%s)", seconds, path ? "bf16 copy" : "fp32");
        return;
    }
    s->logged_path = path;
    if (path)
        log_info("kv cache: every weight is bf16-exact: prefill/decode read a bf16 copy (%.1f MB, made in %.3f s; "
                 "results bitwise those of the fp32 weights)", (double)n * 2 / 1e6, seconds);
    else
        log_info("kv cache: weights are not all bf16-exact: prefill/decode read the fp32 weights");
}

bool model_kv_refresh_weights(model_kv_cache *kv, const model *m) {
    model_kv_scratch *s = kv->scratch;
    CHECK(s, "model_kv_refresh_weights: cache not initialised");
    const double t0 = time_now();
    kv->bf16_weights = false;
    bool fresh = false;
    if (s->w16 && s->w16_n != m->n_params) free(s->w16), s->w16 = NULL;
    if (!s->w16) {
        /* Untouched until the pass writes it, so a trained fp32 policy (which fails on its first pieces) costs no
         * page faults. (MADV_HUGEPAGE made the first copy 4x slower here: direct compaction on fault.) */
        const size_t bytes = S2D_MAX(m->n_params, 1) * sizeof(uint16_t);
        if (posix_memalign((void **)&s->w16, 64, bytes) != 0)
            die("out of memory: bf16 weight copy of %.1f MB", (double)bytes / 1e6);
        s->w16_n = m->n_params;
        fresh = true;
    }
    if (!op_bf16_mirror(s->w16, m->params, m->n_params, fresh)) {
        free(s->w16), s->w16 = NULL; /* partly rewritten; and the memory is better spent elsewhere */
        log_weight_path(s, 0, m->n_params, time_now() - t0);
        return false;
    }
    s->w16_src = m->params;
    kv->bf16_weights = true;
    log_weight_path(s, 1, m->n_params, time_now() - t0);
    return true;
}

/* The bf16 copy when it was made from m's params, else NULL (fp32 weights). */
static const uint16_t *kv_w16(const model_kv_cache *kv, const model *m) {
    const model_kv_scratch *s = kv->scratch;
    return kv->bf16_weights && s->w16 && s->w16_src == m->params && s->w16_n == m->n_params ? s->w16 : NULL;
}

/* The LM head of the KV-cache paths: logits [T, V] of final-normed rows hf [T, H]. */
static void kv_lm_head(const model *m, const uint16_t *w16, float *logits, const float *hf, int T) {
    const model_config *c = &m->cfg;
    if (w16)
        op_linear_rows_bf16(logits, hf, w16 + (m->w.lm_head - m->params), T, c->hidden, c->vocab, false);
    else
        op_linear_rows(logits, hf, m->w.lm_head, T, c->hidden, c->vocab, false);
}

/* Runs all layers over rows already embedded in s->x, then final norm of the rows listed. */
static void kv_run_layers(const model *m, model_kv_scratch *s, int T, const attn_mode *mode) {
    for (int l = 0; l < m->cfg.n_layers; l++) layer_forward(m, l, &s->acts, s->x, T, s->pos, mode, s->attn_scratch);
}

bool model_prefill(const model *m, model_kv_cache *kv, int slot, const int32_t *tokens, int n, float *logits,
                   s2d_err *err) {
    const model_config *c = &m->cfg;
    model_kv_scratch *s = kv->scratch;
    if (slot < 0 || slot >= kv->n_slots) return err_set(err, "prefill: slot %d out of [0, %d)", slot, kv->n_slots);
    if (n < 1) return err_set(err, "prefill: empty prompt for slot %d", slot);
    if (kv->len[slot] + n > kv->max_len)
        return err_set(err, "prefill: slot %d would hold %d positions, more than the cache's %d", slot,
                       kv->len[slot] + n, kv->max_len);
    if (!check_tokens(c, tokens, n, "prompt", err)) return false;
    int H = c->hidden;
    for (int i0 = 0; i0 < n; i0 += s->rows) {
        int rows = S2D_MIN(s->rows, n - i0), p0 = kv->len[slot];
        for (int r = 0; r < rows; r++) s->pos[r] = p0 + r;
        op_embedding_fwd(s->x, m->w.embed, tokens + i0, rows, H);
        s->seq_start[0] = 0, s->seq_start[1] = rows, s->seq_slot[0] = slot, s->seq_p0[0] = p0;
        attn_mode mode = {.kind = ATTN_PREFILL, .kv = kv, .n_seqs = 1, .seq_start = s->seq_start,
                          .seq_slot = s->seq_slot, .seq_p0 = s->seq_p0, .w16 = kv_w16(kv, m)};
        kv_run_layers(m, s, rows, &mode);
        kv->len[slot] += rows;
        if (i0 + rows == n) { /* logits of the last position only */
            const float *last = s->x + (size_t)(rows - 1) * H;
            op_rmsnorm_fwd(s->hf, s->rstd_f, last, m->w.final_norm, 1, H, c->rms_eps);
            kv_lm_head(m, kv_w16(kv, m), logits, s->hf, 1);
        }
    }
    return true;
}

/* One packed pass over prompts [p_begin, p_end) of a model_prefill_batch call (their tokens fit the scratch). */
static void prefill_pack(const model *m, model_kv_cache *kv, int p_begin, int p_end, const int *slots,
                         const int *start, const int32_t *tokens, float *logits) {
    const model_config *c = &m->cfg;
    model_kv_scratch *s = kv->scratch;
    int H = c->hidden, n_seqs = p_end - p_begin, T = 0;
    for (int i = 0; i < n_seqs; i++) {
        int p = p_begin + i, len = start[p + 1] - start[p], p0 = kv->len[slots[p]];
        s->seq_start[i] = T, s->seq_slot[i] = slots[p], s->seq_p0[i] = p0;
        op_embedding_fwd(s->x + (size_t)T * H, m->w.embed, tokens + start[p], len, H);
        for (int j = 0; j < len; j++) s->pos[T + j] = p0 + j;
        T += len;
    }
    s->seq_start[n_seqs] = T;
    attn_mode mode = {.kind = ATTN_PREFILL, .kv = kv, .n_seqs = n_seqs, .seq_start = s->seq_start,
                      .seq_slot = s->seq_slot, .seq_p0 = s->seq_p0, .w16 = kv_w16(kv, m)};
    kv_run_layers(m, s, T, &mode);
    for (int i = 0; i < n_seqs; i++) {
        kv->len[slots[p_begin + i]] += s->seq_start[i + 1] - s->seq_start[i];
        /* the last position of each prompt, gathered; row-wise ops, so a row is as if prefilled alone */
        op_rmsnorm_fwd(s->hf + (size_t)i * H, s->rstd_f + i, s->x + (size_t)(s->seq_start[i + 1] - 1) * H,
                       m->w.final_norm, 1, H, c->rms_eps);
    }
    kv_lm_head(m, mode.w16, logits + (size_t)p_begin * c->vocab, s->hf, n_seqs);
}

bool model_prefill_batch(const model *m, model_kv_cache *kv, int n, const int *slots, const int *start,
                         const int32_t *tokens, float *logits, s2d_err *err) {
    const model_config *c = &m->cfg;
    model_kv_scratch *s = kv->scratch;
    if (n < 0 || n > kv->n_slots) return err_set(err, "prefill: %d prompts, must be in [0, %d]", n, kv->n_slots);
    for (int i = 0; i < n; i++) {
        int len = start[i + 1] - start[i];
        if (slots[i] < 0 || slots[i] >= kv->n_slots)
            return err_set(err, "prefill: prompt %d: slot %d out of [0, %d)", i, slots[i], kv->n_slots);
        for (int j = 0; j < i; j++)
            if (slots[j] == slots[i]) return err_set(err, "prefill: slot %d appears twice", slots[i]);
        if (len < 1) return err_set(err, "prefill: prompt %d is empty", i);
        if (kv->len[slots[i]] + len > kv->max_len)
            return err_set(err, "prefill: prompt %d: slot %d would hold %d positions, more than the cache's %d", i,
                           slots[i], kv->len[slots[i]] + len, kv->max_len);
        if (!check_tokens(c, tokens + start[i], len, "prompt", err)) return err_prefix(err, "prefill: prompt %d", i);
    }
    /* Consecutive prompts are packed while their tokens fit the scratch; a longer prompt goes alone through
     * model_prefill's chunks. Either way every row's arithmetic is that of prefilling its prompt alone. */
    int p = 0;
    while (p < n) {
        int len = start[p + 1] - start[p];
        if (len > s->rows) {
            if (!model_prefill(m, kv, slots[p], tokens + start[p], len, logits + (size_t)p * c->vocab, err))
                return false;
            p++;
            continue;
        }
        int q = p, T = 0;
        while (q < n && T + (start[q + 1] - start[q]) <= s->rows) T += start[q + 1] - start[q], q++;
        prefill_pack(m, kv, p, q, slots, start, tokens, logits);
        p = q;
    }
    return true;
}

bool model_decode_step(const model *m, model_kv_cache *kv, int n, const int *slots, const int32_t *tokens,
                       float *logits, s2d_err *err) {
    const model_config *c = &m->cfg;
    model_kv_scratch *s = kv->scratch;
    if (n < 1 || n > kv->n_slots) return err_set(err, "decode: %d rows, must be in [1, %d]", n, kv->n_slots);
    if (!check_tokens(c, tokens, n, "decode", err)) return false;
    for (int i = 0; i < n; i++) {
        if (slots[i] < 0 || slots[i] >= kv->n_slots)
            return err_set(err, "decode: slot %d out of [0, %d)", slots[i], kv->n_slots);
        if (kv->len[slots[i]] >= kv->max_len)
            return err_set(err, "decode: slot %d is full (%d positions)", slots[i], kv->max_len);
        for (int j = 0; j < i; j++)
            if (slots[j] == slots[i]) return err_set(err, "decode: slot %d appears twice", slots[i]);
        s->pos[i] = kv->len[slots[i]];
        s->slots[i] = slots[i];
    }
    int H = c->hidden;
    op_embedding_fwd(s->x, m->w.embed, tokens, n, H);
    attn_mode mode = {.kind = ATTN_DECODE, .kv = kv, .slots = s->slots, .k_rows = s->k_rows, .v_rows = s->v_rows,
                      .ctx_len = s->ctx_len, .w16 = kv_w16(kv, m)};
    kv_run_layers(m, s, n, &mode);
    for (int i = 0; i < n; i++) kv->len[slots[i]]++;
    op_rmsnorm_fwd(s->hf, s->rstd_f, s->x, m->w.final_norm, n, H, c->rms_eps);
    kv_lm_head(m, mode.w16, logits, s->hf, n);
    return true;
}
