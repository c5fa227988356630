/* model_forward.c: packed forward / backward of the decoder and the chunked LM head; the layer code the KV-cache
 * paths (model_kv.c) share. Every tensor operation is an ops.h call on the model's
 * queue; host arrays here are metadata (sequence starts, slots, positions before they are staged). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/timer.h"
#include "model/model.h"
#include "model/model_internal.h"
#include "ops/ops.h"


struct model_ws {
    model_config cfg;
    ops_queue *q;
    int max_tokens, chunk_rows;
    bool training;
    model_recompute recompute;
    float *mem;       /* the one device buffer every activation below is carved from */
    size_t mem_floats, act_floats; /* total; of which activations kept for the backward pass */
    /* the batch of the last forward */
    int T, n_seqs;
    bool have_forward;
    model_grad_ready_fn grad_ready; /* backward: ranges of m->grads that are final (model_ws_set_grad_hook) */
    void *grad_ready_user;
    int *seq_start;   /* host [max_tokens + 1] */
    int32_t *tokens_h, *pos_h, *target_h; /* host [max_tokens]: staged into the device copies below */
    int32_t *tokens, *pos, *target;       /* device [max_tokens]; target: next token, -1 at a sequence's last row */
    layer_acts *acts; /* [n_layers] (training), [1] (inference); recompute: x_in only, per layer */
    layer_acts shared; /* recompute: the activations of the one layer being run */
    float *x_scratch; /* [T, H] recompute: the discarded output of a recomputed layer */
    float *x_final;   /* [T, H] residual after the last layer */
    float *rstd_f;    /* [T] */
    float *hf;        /* [T, H] after the final norm */
    float *logits;    /* [chunk_rows, V] */
    float *chunk_logp, *chunk_lse; /* [chunk_rows] */
    float *logp_dev, *dlogp_dev;   /* [T] staging of the host per-token arrays */
    float *host_chunk; /* host [chunk_rows, V]: model_logits_chunks on device backends, else NULL */
    /* backward (training only) */
    float *dx, *dxn, *dhf;        /* [T, H] */
    float *dq, *dq_raw, *datt;    /* [T, nh*hd] */
    float *dk, *dk_raw, *dv;      /* [T, nkv*hd] */
    float *dgate, *dup, *dact;    /* [T, I] */
};


float *mf_carve(carver *c, size_t n) {
    float *p = c->base ? c->base + c->used : NULL;
    c->used += (n + 15) & ~(size_t)15;
    return p;
}

/* A layer's activations; x_shared != NULL: inference (residual in place). keep_x_in = false: x_in is set by the
 * caller (recompute's shared set). */
void mf_layout_acts(carver *c, layer_acts *a, const model_config *cfg, int T, bool training, float *x_shared,
                    bool keep_x_in) {
    size_t H = cfg->hidden, qd = (size_t)cfg->n_heads * cfg->head_dim, kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
    size_t I = cfg->intermediate, t = (size_t)T;
    bool qwen = model_arch_of(cfg->arch)->qk_norm; /* q/k before their norms are kept apart */
    a->x_in = training ? (keep_x_in ? mf_carve(c, t * H) : NULL) : x_shared;
    a->rstd1 = mf_carve(c, t);
    a->xn1 = mf_carve(c, t * H);
    a->q = mf_carve(c, t * qd);
    a->k = mf_carve(c, t * kvd);
    a->v = mf_carve(c, t * kvd);
    a->q_raw = training && qwen ? mf_carve(c, t * qd) : a->q;
    a->k_raw = training && qwen ? mf_carve(c, t * kvd) : a->k;
    a->rstd_q = qwen ? mf_carve(c, t * cfg->n_heads) : NULL;
    a->rstd_k = qwen ? mf_carve(c, t * cfg->n_kv_heads) : NULL;
    a->att = mf_carve(c, t * qd);
    a->lse = training ? mf_carve(c, t * cfg->n_heads) : NULL;
    a->x_mid = training ? mf_carve(c, t * H) : x_shared;
    a->rstd2 = mf_carve(c, t);
    a->xn2 = mf_carve(c, t * H);
    a->gate = mf_carve(c, t * I);
    a->up = mf_carve(c, t * I);
    a->act = mf_carve(c, t * I);
}

static void layout_ws(model_ws *ws, carver *c) {
    const model_config *cfg = &ws->cfg;
    size_t H = cfg->hidden, qd = (size_t)cfg->n_heads * cfg->head_dim, kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
    size_t I = cfg->intermediate, t = (size_t)ws->max_tokens;
    int n_sets = ws->training ? cfg->n_layers : 1;
    size_t act0 = c->used;
    ws->x_final = mf_carve(c, t * H);
    if (ws->recompute == RECOMPUTE_LAYER) {
        for (int l = 0; l < n_sets; l++) ws->acts[l].x_in = mf_carve(c, t * H);
        mf_layout_acts(c, &ws->shared, cfg, ws->max_tokens, true, NULL, false);
        ws->x_scratch = mf_carve(c, t * H);
    } else {
        for (int l = 0; l < n_sets; l++)
            mf_layout_acts(c, &ws->acts[l], cfg, ws->max_tokens, ws->training, ws->training ? NULL : ws->x_final, true);
    }
    ws->rstd_f = mf_carve(c, t);
    ws->hf = mf_carve(c, t * H);
    ws->act_floats = c->used - act0;
    ws->logits = mf_carve(c, (size_t)ws->chunk_rows * cfg->vocab);
    ws->chunk_logp = mf_carve(c, (size_t)ws->chunk_rows);
    ws->chunk_lse = mf_carve(c, (size_t)ws->chunk_rows);
    ws->logp_dev = mf_carve(c, t);
    ws->dlogp_dev = mf_carve(c, t);
    /* the per-token ids share the buffer: an i32 and an f32 are the same size */
    ws->tokens = (int32_t *)mf_carve(c, t);
    ws->pos = (int32_t *)mf_carve(c, t);
    ws->target = (int32_t *)mf_carve(c, t);
    if (ws->training) {
        ws->dx = mf_carve(c, t * H);
        ws->dxn = mf_carve(c, t * H);
        ws->dhf = mf_carve(c, t * H);
        ws->dq = mf_carve(c, t * qd);
        ws->dq_raw = mf_carve(c, t * qd);
        ws->datt = mf_carve(c, t * qd);
        ws->dk = mf_carve(c, t * kvd);
        ws->dk_raw = mf_carve(c, t * kvd);
        ws->dv = mf_carve(c, t * kvd);
        ws->dgate = mf_carve(c, t * I);
        ws->dup = mf_carve(c, t * I);
        ws->dact = mf_carve(c, t * I);
    }
}

static int default_chunk_rows(const model_config *cfg, int max_tokens) {
    int rows = cfg->vocab >= 32768 ? 64 : 256;
    return S2D_MAX(1, S2D_MIN(rows, max_tokens));
}

model_ws *model_ws_new_recompute(const model *m, int max_tokens, bool training, model_recompute recompute) {
    CHECK(max_tokens > 0, "model_ws_new: max_tokens must be positive, got %d", max_tokens);
    model_ws *ws = xcalloc(1, sizeof *ws);
    ws->cfg = m->cfg;
    ws->q = m->q;
    ws->max_tokens = max_tokens;
    ws->training = training;
    ws->recompute = training ? recompute : RECOMPUTE_NONE;
    ws->chunk_rows = default_chunk_rows(&m->cfg, max_tokens);
    ws->acts = xcalloc((size_t)(training ? m->cfg.n_layers : 1), sizeof(layer_acts));
    ws->seq_start = xmalloc(sizeof(int) * ((size_t)max_tokens + 1));
    ws->tokens_h = xmalloc(sizeof(int32_t) * (size_t)max_tokens);
    ws->pos_h = xmalloc(sizeof(int32_t) * (size_t)max_tokens);
    ws->target_h = xmalloc(sizeof(int32_t) * (size_t)max_tokens);
    carver count = {NULL, 0};
    layout_ws(ws, &count);
    ws->mem_floats = count.used;
    ws->mem = ops_alloc(ws->q, OPS_F32, count.used).p;
    ops_zero(ws->q, ot_f32(ws->mem), count.used);
    carver real = {ws->mem, 0};
    layout_ws(ws, &real);
    if (!ws->q->host_memory) ws->host_chunk = xmalloc((size_t)ws->chunk_rows * m->cfg.vocab * sizeof(float));
    ops_reserve(ws->q, max_tokens, 0, 0, 0);
    log_info("model workspace: %d tokens, %s%s, %.1f MB of activations (%.1f MB in all, on %s)", max_tokens,
             training ? "training" : "inference", ws->recompute == RECOMPUTE_LAYER ? " with per-layer recompute" : "",
             (double)ws->act_floats * 4 / 1e6, (double)ws->mem_floats * 4 / 1e6, ws->q->name);
    return ws;
}

model_ws *model_ws_new(const model *m, int max_tokens, bool training) {
    return model_ws_new_recompute(m, max_tokens, training, RECOMPUTE_NONE);
}

void model_ws_set_grad_hook(model_ws *ws, model_grad_ready_fn fn, void *user) {
    ws->grad_ready = fn, ws->grad_ready_user = user;
}

/* Float range [*lo, *hi) of m's tensors of layer l (-1: every tensor outside the layers before them when
 * before, after them otherwise); the table is ordered before-layers, layer 0..L-1, after-layers. */
static void tensor_range(const model *m, int l, bool before, size_t *lo, size_t *hi) {
    size_t first_layer = m->n_params;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].layer >= 0) first_layer = S2D_MIN(first_layer, m->tensors[i].offset);
    *lo = SIZE_MAX, *hi = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        bool in = l >= 0 ? t->layer == l : t->layer < 0 && (t->offset < first_layer) == before;
        if (in) *lo = S2D_MIN(*lo, t->offset), *hi = S2D_MAX(*hi, t->offset + t->span);
    }
    if (*lo > *hi) *lo = *hi = 0;
}

static void grad_ready(model *m, model_ws *ws, int l, bool before) {
    if (!ws->grad_ready) return;
    size_t lo, hi;
    tensor_range(m, l, before, &lo, &hi);
    if (hi > lo) ws->grad_ready(ws->grad_ready_user, lo, hi);
}

void model_ws_free(model_ws *ws) {
    if (!ws) return;
    ops_free(ws->q, ot_f32(ws->mem));
    free(ws->acts);
    free(ws->seq_start);
    free(ws->tokens_h);
    free(ws->pos_h);
    free(ws->target_h);
    free(ws->host_chunk);
    free(ws);
}

size_t model_ws_activation_bytes(const model_ws *ws) { return ws->act_floats * sizeof(float); }

/* ---- the layer, shared by all paths ---- */


/* One layer's K (which 0) or V (1) cache: [n_slots, max_len, nkv, hd]. */
static float *kv_layer(const model_kv_cache *kv, const model_config *c, int layer, int which) {
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim;
    return kv->buf + ((size_t)layer * 2 + which) * kv->n_slots * (size_t)kv->max_len * kvd;
}

/* y[T,out] (+)= x W^T: a GEMM for packed batches (training, scoring); the row-invariant linear for the KV-cache
 * paths, whose rows must not depend on the batch they share a step with, on the bf16 weights when the cache
 * has them (bitwise the same result). */
static void layer_linear(const model *m, const attn_mode *mode, float *y, const float *x, const float *W,
                         const uint16_t *W16, int T, int in, int out, bool accumulate) {
    if (mode->kind == ATTN_PACKED)
        op_matmul(m->q, ot_f32(y), ot_f32(x), ot_f32(W), T, out, in, false, true, accumulate);
    else if (mode->w16)
        op_linear_rows(m->q, ot_f32(y), ot_f32(x), ot_bf16(W16), T, in, out, accumulate);
    else
        op_linear_rows(m->q, ot_f32(y), ot_f32(x), ot_f32(W), T, in, out, accumulate);
}

void mf_layer_forward(const model *m, int l, const layer_acts *a, float *x_out, int T, const int32_t *pos,
                      const attn_mode *mode) {
    ops_queue *q = m->q;
    const model_config *c = &m->cfg;
    const model_layer_view *W = &m->w.layers[l];
    const model_layer_view16 *W16 = mode->w16 ? &mode->w16[l] : &(model_layer_view16){0};
    int H = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, I = c->intermediate;
    int qd = nh * hd, kvd = nkv * hd;
    op_rmsnorm_fwd(q, ot_f32(a->xn1), ot_f32(a->rstd1), ot_f32(a->x_in), ot_f32(W->attn_norm), T, H, c->rms_eps);
    layer_linear(m, mode, a->q_raw, a->xn1, W->wq, W16->wq, T, H, qd, false);
    layer_linear(m, mode, a->k_raw, a->xn1, W->wk, W16->wk, T, H, kvd, false);
    layer_linear(m, mode, a->v, a->xn1, W->wv, W16->wv, T, H, kvd, false);
    if (W->bq) { /* q/k/v biases (Qwen2) */
        op_bias_add(q, ot_f32(a->q_raw), ot_f32(W->bq), T, qd);
        op_bias_add(q, ot_f32(a->k_raw), ot_f32(W->bk), T, kvd);
        op_bias_add(q, ot_f32(a->v), ot_f32(W->bv), T, kvd);
    }
    if (W->q_norm) { /* per-head RMSNorm over head_dim, before RoPE (Qwen3) */
        op_rmsnorm_fwd(q, ot_f32(a->q), ot_f32(a->rstd_q), ot_f32(a->q_raw), ot_f32(W->q_norm), T * nh, hd, c->rms_eps);
        op_rmsnorm_fwd(q, ot_f32(a->k), ot_f32(a->rstd_k), ot_f32(a->k_raw), ot_f32(W->k_norm), T * nkv, hd,
                       c->rms_eps);
    }
    op_rope_fwd(q, ot_f32(a->q), ot_i32(pos), ot_f32(m->rope_cos), ot_f32(m->rope_sin), T, nh, hd);
    op_rope_fwd(q, ot_f32(a->k), ot_i32(pos), ot_f32(m->rope_cos), ot_f32(m->rope_sin), T, nkv, hd);
    if (mode->kind == ATTN_PACKED) {
        op_attention_fwd(q, ot_f32(a->att), ot_f32(a->lse), ot_f32(a->q), ot_f32(a->k), ot_f32(a->v), mode->n_seqs,
                         mode->seq_start, nh, nkv, hd);
    } else if (mode->kind == ATTN_PREFILL) {
        model_kv_cache *kv = mode->kv;
        const size_t slot_floats = (size_t)kv->max_len * kvd;
        float *kc = kv_layer(kv, c, l, 0), *vc = kv_layer(kv, c, l, 1);
        for (int i = 0; i < mode->n_seqs; i++) {
            int r0 = mode->seq_start[i], n = mode->seq_start[i + 1] - r0, slot = mode->seq_slot[i], p0 = mode->seq_p0[i];
            ops_tensor k_slot = ot_at(ot_f32(kc), (size_t)slot * slot_floats);
            ops_tensor v_slot = ot_at(ot_f32(vc), (size_t)slot * slot_floats);
            ops_copy(q, ot_at(k_slot, (size_t)p0 * kvd), ot_f32(a->k + (size_t)r0 * kvd), (size_t)n * kvd);
            ops_copy(q, ot_at(v_slot, (size_t)p0 * kvd), ot_f32(a->v + (size_t)r0 * kvd), (size_t)n * kvd);
            op_attention_prefill(q, ot_f32(a->att + (size_t)r0 * qd), ot_f32(a->q + (size_t)r0 * qd), k_slot, v_slot, n,
                                 p0, nh, nkv, hd);
        }
    } else {
        model_kv_cache *kv = mode->kv;
        op_kv_write(q, ot_f32(kv_layer(kv, c, l, 0)), ot_f32(a->k), kv->max_len, mode->slots, mode->pos_h, T, kvd);
        op_kv_write(q, ot_f32(kv_layer(kv, c, l, 1)), ot_f32(a->v), kv->max_len, mode->slots, mode->pos_h, T, kvd);
        for (int r = 0; r < T; r++) mode->ctx_len[r] = mode->pos_h[r] + 1;
        op_attention_decode(q, ot_f32(a->att), ot_f32(a->q), ot_f32(kv_layer(kv, c, l, 0)), ot_f32(kv_layer(kv, c, l, 1)),
                            kv->max_len, mode->slots, mode->ctx_len, T, nh, nkv, hd);
    }
    if (a->x_mid != a->x_in) ops_copy(q, ot_f32(a->x_mid), ot_f32(a->x_in), (size_t)T * H);
    layer_linear(m, mode, a->x_mid, a->att, W->wo, W16->wo, T, qd, H, true); /* x_mid = x_in + att Wo^T */
    op_rmsnorm_fwd(q, ot_f32(a->xn2), ot_f32(a->rstd2), ot_f32(a->x_mid), ot_f32(W->mlp_norm), T, H, c->rms_eps);
    layer_linear(m, mode, a->gate, a->xn2, W->w_gate, W16->w_gate, T, H, I, false);
    layer_linear(m, mode, a->up, a->xn2, W->w_up, W16->w_up, T, H, I, false);
    op_swiglu_fwd(q, ot_f32(a->act), ot_f32(a->gate), ot_f32(a->up), (size_t)T * I);
    if (x_out != a->x_mid) ops_copy(q, ot_f32(x_out), ot_f32(a->x_mid), (size_t)T * H);
    layer_linear(m, mode, x_out, a->act, W->w_down, W16->w_down, T, I, H, true); /* x_out = x_mid + act Wd^T */
}

bool mf_check_tokens(const model_config *c, const int32_t *tokens, int T, const char *what, s2d_err *err) {
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= c->vocab)
            return err_set(err, "%s: token id %d at position %d is out of range [0, %d)", what, tokens[t], t,
                           c->vocab);
    return true;
}

/* The activations layer l runs on and the residual it writes. */
static const layer_acts *layer_set(model_ws *ws, int l, float **x_out) {
    const int L = ws->cfg.n_layers;
    if (!ws->training) {
        *x_out = ws->x_final;
        return &ws->acts[0];
    }
    *x_out = l + 1 < L ? ws->acts[l + 1].x_in : ws->x_final;
    if (ws->recompute != RECOMPUTE_LAYER) return &ws->acts[l];
    ws->shared.x_in = ws->acts[l].x_in;
    return &ws->shared;
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
    if (!mf_check_tokens(c, b->tokens, T, "batch", err)) return false;
    for (int s = 0; s < b->n_seqs; s++)
        if (b->seq_start[s + 1] - b->seq_start[s] > c->max_pos)
            return err_set(err, "batch: sequence %d has %d tokens, more than max_position_embeddings %d", s,
                           b->seq_start[s + 1] - b->seq_start[s], c->max_pos);
    ops_queue *q = m->q;
    ws->T = T;
    ws->n_seqs = b->n_seqs;
    memcpy(ws->seq_start, b->seq_start, sizeof(int) * ((size_t)b->n_seqs + 1)); /* host metadata */
    memcpy(ws->tokens_h, b->tokens, sizeof(int32_t) * (size_t)T);                /* host token ids */
    for (int s = 0; s < b->n_seqs; s++)
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            ws->pos_h[t] = t - b->seq_start[s];
            ws->target_h[t] = t + 1 < b->seq_start[s + 1] ? b->tokens[t + 1] : -1;
        }
    ops_upload(q, ot_i32(ws->tokens), ws->tokens_h, (size_t)T);
    ops_upload(q, ot_i32(ws->pos), ws->pos_h, (size_t)T);
    ops_upload(q, ot_i32(ws->target), ws->target_h, (size_t)T);
    attn_mode mode = {.kind = ATTN_PACKED, .n_seqs = b->n_seqs, .seq_start = ws->seq_start};
    int L = c->n_layers, H = c->hidden;
    float *x0 = ws->training ? ws->acts[0].x_in : ws->x_final;
    op_embedding_fwd(q, ot_f32(x0), ot_f32(m->w.embed), ot_i32(ws->tokens), T, H);
    for (int l = 0; l < L; l++) {
        float *x_out;
        const layer_acts *a = layer_set(ws, l, &x_out);
        mf_layer_forward(m, l, a, x_out, T, ws->pos, &mode);
    }
    op_rmsnorm_fwd(q, ot_f32(ws->hf), ot_f32(ws->rstd_f), ot_f32(ws->x_final), ot_f32(m->w.final_norm), T, H, c->rms_eps);
    ws->have_forward = true;
    return true;
}

/* Logits of rows [r0, r1) into ws->logits. */
static void chunk_logits(const model *m, model_ws *ws, int r0, int r1) {
    op_linear_fwd(m->q, ot_f32(ws->logits), ot_f32(ws->hf + (size_t)r0 * m->cfg.hidden), ot_f32(m->w.lm_head), r1 - r0,
                  m->cfg.hidden, m->cfg.vocab);
}

static void vocab_scratch(model_ws *ws, ops_vocab_op *op, const model *m) {
    op->V = m->cfg.vocab;
    op->chunk_logp = ot_f32(ws->chunk_logp);
    op->chunk_lse = ot_f32(ws->chunk_lse);
}

void model_vocab_forward(const model *m, model_ws *ws, ops_vocab_op *op) {
    CHECK(ws->have_forward, "model_vocab_forward: no forward pass in this workspace");
    vocab_scratch(ws, op, m);
    op->want_grad = false;
    for (int r0 = 0; r0 < ws->T; r0 += ws->chunk_rows) {
        int r1 = S2D_MIN(ws->T, r0 + ws->chunk_rows);
        chunk_logits(m, ws, r0, r1);
        op_vocab_rows(m->q, op, ot_f32(ws->logits), r0, r1 - r0);
    }
}

void model_logits_chunks(const model *m, model_ws *ws, model_logits_fn fn, void *user) {
    CHECK(ws->have_forward, "model_logits_chunks: no forward pass in this workspace");
    const size_t V = (size_t)m->cfg.vocab;
    for (int r0 = 0; r0 < ws->T; r0 += ws->chunk_rows) {
        int r1 = S2D_MIN(ws->T, r0 + ws->chunk_rows);
        chunk_logits(m, ws, r0, r1);
        float *host = ops_host_ptr(m->q, ot_f32(ws->logits));
        if (!host) ops_download(m->q, host = ws->host_chunk, ot_f32(ws->logits), (size_t)(r1 - r0) * V);
        fn(user, r0, r1, host, false);
    }
}

void model_token_logprobs_temp(const model *m, model_ws *ws, float temperature, float *logp) {
    ops_vocab_op op = {.kind = VOCAB_LOGP, .temperature = temperature, .target = ot_i32(ws->target),
                       .logp = ot_f32(ws->logp_dev)};
    model_vocab_forward(m, ws, &op);
    ops_download(m->q, logp, ot_f32(ws->logp_dev), (size_t)ws->T);
}

void model_token_logprobs_from_ws(const model *m, model_ws *ws, float *logp) {
    model_token_logprobs_temp(m, ws, 1.0f, logp);
}

bool model_token_logprobs(const model *m, model_ws *ws, const model_batch *batch, float *logp, s2d_err *err) {
    if (!model_forward(m, ws, batch, err)) return false;
    model_token_logprobs_from_ws(m, ws, logp);
    return true;
}

static void layer_backward(model *m, int l, const layer_acts *a, model_ws *ws, float *dx) {
    ops_queue *q = m->q;
    const model_config *c = &m->cfg;
    const model_layer_view *W = &m->w.layers[l], *G = &m->g.layers[l];
    int T = ws->T, H = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, I = c->intermediate;
    int qd = nh * hd, kvd = nkv * hd;
    /* MLP: x_out = x_mid + swiglu(xn2 Wg^T, xn2 Wu^T) Wd^T */
    op_linear_bwd(q, ot_f32(ws->dact), ot_f32(G->w_down), ot_f32(dx), ot_f32(a->act), ot_f32(W->w_down), T, I, H, false);
    op_swiglu_bwd(q, ot_f32(ws->dgate), ot_f32(ws->dup), ot_f32(ws->dact), ot_f32(a->gate), ot_f32(a->up), (size_t)T * I);
    op_linear_bwd(q, ot_f32(ws->dxn), ot_f32(G->w_gate), ot_f32(ws->dgate), ot_f32(a->xn2), ot_f32(W->w_gate), T, H, I,
                  false);
    op_linear_bwd(q, ot_f32(ws->dxn), ot_f32(G->w_up), ot_f32(ws->dup), ot_f32(a->xn2), ot_f32(W->w_up), T, H, I, true);
    op_rmsnorm_bwd(q, ot_f32(dx), ot_f32(G->mlp_norm), ot_f32(ws->dxn), ot_f32(a->x_mid), ot_f32(W->mlp_norm),
                   ot_f32(a->rstd2), T, H, true);
    /* attention: x_mid = x_in + attn(q, k, v) Wo^T */
    op_linear_bwd(q, ot_f32(ws->datt), ot_f32(G->wo), ot_f32(dx), ot_f32(a->att), ot_f32(W->wo), T, qd, H, false);
    op_attention_bwd(q, ot_f32(ws->dq), ot_f32(ws->dk), ot_f32(ws->dv), ot_f32(ws->datt), ot_f32(a->q), ot_f32(a->k),
                     ot_f32(a->v), ot_f32(a->att), ot_f32(a->lse), ws->n_seqs, ws->seq_start, nh, nkv, hd);
    op_rope_bwd(q, ot_f32(ws->dq), ot_i32(ws->pos), ot_f32(m->rope_cos), ot_f32(m->rope_sin), T, nh, hd);
    op_rope_bwd(q, ot_f32(ws->dk), ot_i32(ws->pos), ot_f32(m->rope_cos), ot_f32(m->rope_sin), T, nkv, hd);
    const float *dq_raw = ws->dq, *dk_raw = ws->dk;
    if (W->q_norm) {
        op_rmsnorm_bwd(q, ot_f32(ws->dq_raw), ot_f32(G->q_norm), ot_f32(ws->dq), ot_f32(a->q_raw), ot_f32(W->q_norm),
                       ot_f32(a->rstd_q), T * nh, hd, false);
        op_rmsnorm_bwd(q, ot_f32(ws->dk_raw), ot_f32(G->k_norm), ot_f32(ws->dk), ot_f32(a->k_raw), ot_f32(W->k_norm),
                       ot_f32(a->rstd_k), T * nkv, hd, false);
        dq_raw = ws->dq_raw, dk_raw = ws->dk_raw;
    }
    if (G->bq) { /* bias gradients: column sums over the rows */
        op_bias_bwd(q, ot_f32(G->bq), ot_f32(dq_raw), T, qd);
        op_bias_bwd(q, ot_f32(G->bk), ot_f32(dk_raw), T, kvd);
        op_bias_bwd(q, ot_f32(G->bv), ot_f32(ws->dv), T, kvd);
    }
    op_linear_bwd(q, ot_f32(ws->dxn), ot_f32(G->wq), ot_f32(dq_raw), ot_f32(a->xn1), ot_f32(W->wq), T, H, qd, false);
    op_linear_bwd(q, ot_f32(ws->dxn), ot_f32(G->wk), ot_f32(dk_raw), ot_f32(a->xn1), ot_f32(W->wk), T, H, kvd, true);
    op_linear_bwd(q, ot_f32(ws->dxn), ot_f32(G->wv), ot_f32(ws->dv), ot_f32(a->xn1), ot_f32(W->wv), T, H, kvd, true);
    op_rmsnorm_bwd(q, ot_f32(dx), ot_f32(G->attn_norm), ot_f32(ws->dxn), ot_f32(a->x_in), ot_f32(W->attn_norm),
                   ot_f32(a->rstd1), T, H, true);
}

/* The layers' backward after the LM head's (ws->dhf holds d(loss)/d(hf)), accumulating into m->grads. With
 * per-layer recompute each layer's activations are rebuilt from its saved input first (the same ops in the
 * same order as the forward, so the gradients are bitwise those without recompute). */
static void backward_layers(model *m, model_ws *ws) {
    ops_queue *q = m->q;
    const model_config *c = &m->cfg;
    int T = ws->T, H = c->hidden;
    op_rmsnorm_bwd(q, ot_f32(ws->dx), ot_f32(m->g.final_norm), ot_f32(ws->dhf), ot_f32(ws->x_final),
                   ot_f32(m->w.final_norm), ot_f32(ws->rstd_f), T, H, false);
    grad_ready(m, ws, -1, false); /* final norm, untied LM head */
    attn_mode mode = {.kind = ATTN_PACKED, .n_seqs = ws->n_seqs, .seq_start = ws->seq_start};
    for (int l = c->n_layers - 1; l >= 0; l--) {
        float *x_out;
        const layer_acts *a = layer_set(ws, l, &x_out);
        /* the last layer's activations are still in the shared set from the forward pass */
        if (ws->recompute == RECOMPUTE_LAYER && l + 1 < c->n_layers) mf_layer_forward(m, l, a, ws->x_scratch, T, ws->pos, &mode);
        layer_backward(m, l, a, ws, ws->dx);
        grad_ready(m, ws, l, false);
    }
    op_embedding_bwd(q, ot_f32(m->g.embed), ot_f32(ws->dx), ot_i32(ws->tokens), T, H);
    grad_ready(m, ws, -1, true); /* the embedding (and a tied LM head) */
}

static void backward_checks(const model *m, const model_ws *ws, const char *what) {
    CHECK(ws->have_forward, "%s: no forward pass in this workspace", what);
    CHECK(ws->training, "%s: the workspace was made without training activations", what);
    CHECK(m->grads, "%s: call model_alloc_grads first", what);
}

void model_vocab_backward(model *m, model_ws *ws, ops_vocab_op *op) {
    backward_checks(m, ws, "model_vocab_backward");
    int T = ws->T, H = m->cfg.hidden, V = m->cfg.vocab;
    vocab_scratch(ws, op, m);
    op->want_grad = true;
    /* LM head, chunk by chunk: logits recomputed, never stored whole. */
    for (int r0 = 0; r0 < T; r0 += ws->chunk_rows) {
        int r1 = S2D_MIN(T, r0 + ws->chunk_rows);
        chunk_logits(m, ws, r0, r1);
        op_vocab_rows(m->q, op, ot_f32(ws->logits), r0, r1 - r0);
        op_linear_bwd(m->q, ot_f32(ws->dhf + (size_t)r0 * H), ot_f32(m->g.lm_head), ot_f32(ws->logits),
                      ot_f32(ws->hf + (size_t)r0 * H), ot_f32(m->w.lm_head), r1 - r0, H, V, false);
    }
    backward_layers(m, ws);
}

void model_vocab_backward_dlogp(model *m, model_ws *ws, ops_vocab_op *op, const float *dlogp) {
    op->target = ot_i32(ws->target);
    op->dlogp = ops_stage(m->q, ot_f32(ws->dlogp_dev), dlogp, (size_t)ws->T);
    model_vocab_backward(m, ws, op);
}

void model_backward_logits(model *m, model_ws *ws, model_logits_fn fn, void *user) {
    backward_checks(m, ws, "model_backward_logits");
    int T = ws->T, H = m->cfg.hidden, V = m->cfg.vocab;
    for (int r0 = 0; r0 < T; r0 += ws->chunk_rows) {
        int r1 = S2D_MIN(T, r0 + ws->chunk_rows);
        chunk_logits(m, ws, r0, r1);
        float *host = ops_host_ptr(m->q, ot_f32(ws->logits));
        size_t n = (size_t)(r1 - r0) * V;
        if (!host) ops_download(m->q, host = ws->host_chunk, ot_f32(ws->logits), n);
        fn(user, r0, r1, host, true);
        if (host == ws->host_chunk) ops_upload(m->q, ot_f32(ws->logits), host, n);
        op_linear_bwd(m->q, ot_f32(ws->dhf + (size_t)r0 * H), ot_f32(m->g.lm_head), ot_f32(ws->logits),
                      ot_f32(ws->hf + (size_t)r0 * H), ot_f32(m->w.lm_head), r1 - r0, H, V, false);
    }
    backward_layers(m, ws);
}

void model_backward_logprobs_temp(model *m, model_ws *ws, float temperature, const float *dlogp) {
    ops_vocab_op op = {.kind = VOCAB_LOGP, .temperature = temperature, .target = ot_i32(ws->target),
                       .dlogp = ops_stage(m->q, ot_f32(ws->dlogp_dev), dlogp, (size_t)ws->T)};
    model_vocab_backward(m, ws, &op);
}

void model_backward_logprobs(model *m, model_ws *ws, const float *dlogp) { model_backward_logprobs_temp(m, ws, 1.0f, dlogp); }

