/* model_kv.c: the KV cache, its bf16 copy of the weights, and the inference paths (prefill, batched prefill,
 * decode) over the same layer code as training (model_internal.h). Every tensor operation is an ops.h call. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/timer.h"
#include "model/model.h"
#include "model/model_internal.h"
#include "ops/ops.h"

/* ---- KV cache ---- */

struct model_kv_scratch {
    int rows;
    float *mem;     /* device: the buffers below */
    size_t mem_floats;
    layer_acts acts;
    float *x;       /* [rows, H] residual */
    float *hf;      /* [rows, H] */
    float *rstd_f;  /* [rows] */
    int32_t *pos;   /* device [rows] */
    int32_t *pos_h; /* host [rows] */
    int *slots, *ctx_len; /* host [rows] */
    int *seq_start, *seq_slot, *seq_p0; /* host [rows + 1] packed prefill: row offsets, slot, first position */
    int32_t *tok_dev; /* device [rows] token ids of one pass */
    /* bf16 copy of the weights (model_kv_refresh_weights) */
    uint16_t *w16;       /* device [w16_n] raw bf16 bits of params, same offsets, or NULL */
    size_t w16_n;
    const float *w16_src; /* the params it was copied from */
    model_layer_view16 *w16_layers; /* [n_layers] views into w16 */
    const uint16_t *w16_lm_head;
    int logged_path;      /* -1 nothing logged yet, 0 fp32, 1 bf16: the path is logged when it changes */
};

/* Prompts are prefilled in pieces of this many tokens, which bounds the scratch. */
#define PREFILL_CHUNK 256

static void layout_kv_scratch(model_kv_scratch *s, const model_config *c, carver *cv) {
    size_t H = c->hidden;
    s->x = mf_carve(cv, (size_t)s->rows * H);
    mf_layout_acts(cv, &s->acts, c, s->rows, false, s->x, true);
    s->hf = mf_carve(cv, (size_t)s->rows * H);
    s->rstd_f = mf_carve(cv, (size_t)s->rows);
    s->pos = (int32_t *)mf_carve(cv, (size_t)s->rows);
    s->tok_dev = (int32_t *)mf_carve(cv, (size_t)s->rows);
}

bool model_kv_init(model_kv_cache *kv, const model *m, int n_slots, int max_len, s2d_err *err) {
    const model_config *c = &m->cfg;
    memset(kv, 0, sizeof *kv);
    if (n_slots < 1) return err_set(err, "kv cache: n_slots must be >= 1, got %d", n_slots);
    if (max_len < 1 || max_len > c->max_pos)
        return err_set(err, "kv cache: max_len %d must be in [1, max_position_embeddings %d]", max_len, c->max_pos);
    kv->q = m->q;
    kv->n_slots = n_slots;
    kv->max_len = max_len;
    kv->len = xcalloc((size_t)n_slots, sizeof(int));
    size_t floats = (size_t)c->n_layers * 2 * n_slots * (size_t)max_len * c->n_kv_heads * c->head_dim;
    kv->bytes = floats * sizeof(float);
    kv->buf = ops_alloc(kv->q, OPS_F32, floats).p;
    model_kv_scratch *s = xcalloc(1, sizeof *s);
    s->rows = S2D_MAX(n_slots, S2D_MIN(PREFILL_CHUNK, max_len));
    carver count = {NULL, 0};
    layout_kv_scratch(s, c, &count);
    s->mem_floats = count.used;
    s->mem = ops_alloc(kv->q, OPS_F32, count.used).p;
    carver real = {s->mem, 0};
    layout_kv_scratch(s, c, &real);
    s->pos_h = xmalloc(sizeof(int32_t) * (size_t)s->rows);
    s->slots = xmalloc(sizeof(int) * (size_t)s->rows);
    s->ctx_len = xmalloc(sizeof(int) * (size_t)s->rows);
    s->seq_start = xmalloc(sizeof(int) * ((size_t)s->rows + 1));
    s->seq_slot = xmalloc(sizeof(int) * ((size_t)s->rows + 1));
    s->seq_p0 = xmalloc(sizeof(int) * ((size_t)s->rows + 1));
    s->w16_layers = xcalloc((size_t)c->n_layers, sizeof *s->w16_layers);
    s->logged_path = -1;
    kv->scratch = s;
    ops_reserve(kv->q, max_len, s->rows, 0, 0);
    log_info("kv cache: %d slots x %d positions, %.1f MB (+%.1f MB scratch) on %s", n_slots, max_len, kv->bytes / 1e6,
             (double)s->mem_floats * 4 / 1e6, kv->q->name);
    return true;
}

void model_kv_free(model_kv_cache *kv) {
    if (kv->scratch) {
        model_kv_scratch *s = kv->scratch;
        ops_free(kv->q, ot_f32(s->mem));
        free(s->pos_h);
        free(s->slots);
        free(s->ctx_len);
        free(s->seq_start);
        free(s->seq_slot);
        free(s->seq_p0);
        ops_free(kv->q, ot_bf16(s->w16));
        free(s->w16_layers);
        free(s);
    }
    if (kv->q) ops_free(kv->q, ot_f32(kv->buf));
    free(kv->len);
    memset(kv, 0, sizeof *kv);
}

void model_kv_reset(model_kv_cache *kv, int slot) {
    CHECK(slot >= 0 && slot < kv->n_slots, "model_kv_reset: slot %d out of [0, %d)", slot, kv->n_slots);
    kv->len[slot] = 0;
}

void model_kv_copy_prefix(const model *m, model_kv_cache *kv, int dst, int src, int n) {
    CHECK(dst >= 0 && dst < kv->n_slots && src >= 0 && src < kv->n_slots,
          "model_kv_copy_prefix: slots %d <- %d (of %d)", dst, src, kv->n_slots);
    CHECK(n >= 0 && n <= kv->len[src], "model_kv_copy_prefix: %d positions, slot %d holds %d", n, src, kv->len[src]);
    if (dst == src) { /* the slot keeps its first n positions */
        kv->len[dst] = n;
        return;
    }
    const model_config *c = &m->cfg;
    const size_t row = (size_t)c->n_kv_heads * c->head_dim, slot_floats = (size_t)kv->max_len * row;
    for (int l = 0; l < c->n_layers; l++)
        for (int kvi = 0; kvi < 2; kvi++) { /* K then V: [n_layers][2][n_slots][max_len][n_kv_heads][head_dim] */
            float *part = kv->buf + ((size_t)l * 2 + kvi) * kv->n_slots * slot_floats;
            ops_copy(kv->q, ot_f32(part + (size_t)dst * slot_floats), ot_f32(part + (size_t)src * slot_floats),
                     (size_t)n * row);
        }
    kv->len[dst] = n;
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

/* Views of the bf16 copy from the tensor table (the same offsets as params). */
static void w16_views(model_kv_scratch *s, const model *m) {
    for (int i = 0; i < m->n_tensors; i++) {
        const model_tensor *t = &m->tensors[i];
        const uint16_t *p = s->w16 + t->offset;
        if (strcmp(t->name, m->cfg.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight") == 0)
            s->w16_lm_head = p;
        if (t->layer < 0 || t->kind != TENSOR_LINEAR) continue;
        model_layer_view16 *v = &s->w16_layers[t->layer];
        const char *suffix = strrchr(t->name, '.') ? t->name : t->name; /* full name: match the projection */
        if (strstr(suffix, ".q_proj.")) v->wq = p;
        else if (strstr(suffix, ".k_proj.")) v->wk = p;
        else if (strstr(suffix, ".v_proj.")) v->wv = p;
        else if (strstr(suffix, ".o_proj.")) v->wo = p;
        else if (strstr(suffix, ".gate_proj.")) v->w_gate = p;
        else if (strstr(suffix, ".up_proj.")) v->w_up = p;
        else if (strstr(suffix, ".down_proj.")) v->w_down = p;
    }
}

bool model_kv_refresh_weights(model_kv_cache *kv, const model *m) {
    model_kv_scratch *s = kv->scratch;
    CHECK(s, "model_kv_refresh_weights: cache not initialised");
    const double t0 = time_now();
    kv->bf16_weights = false;
    bool fresh = false;
    if (s->w16 && s->w16_n != m->n_params) ops_free(kv->q, ot_bf16(s->w16)), s->w16 = NULL;
    if (!s->w16) {
        /* Untouched until the pass writes it, so a trained fp32 policy (which fails on its first pieces) costs no
         * page faults. (MADV_HUGEPAGE made the first copy 4x slower here: direct compaction on fault.) */
        s->w16 = ops_alloc(kv->q, OPS_BF16, S2D_MAX(m->n_params, 1)).p;
        s->w16_n = m->n_params;
        fresh = true;
        w16_views(s, m);
    }
    if (!op_bf16_mirror(kv->q, ot_bf16(s->w16), ot_f32(m->params), m->n_params, fresh)) {
        ops_free(kv->q, ot_bf16(s->w16)), s->w16 = NULL; /* partly rewritten; and the memory is better spent elsewhere */
        log_weight_path(s, 0, m->n_params, time_now() - t0);
        return false;
    }
    s->w16_src = m->params;
    kv->bf16_weights = true;
    log_weight_path(s, 1, m->n_params, time_now() - t0);
    return true;
}

/* The bf16 views when the copy was made from m's params, else NULL (fp32 weights). */
static const model_layer_view16 *kv_w16(const model_kv_cache *kv, const model *m) {
    const model_kv_scratch *s = kv->scratch;
    return kv->bf16_weights && s->w16 && s->w16_src == m->params && s->w16_n == m->n_params ? s->w16_layers : NULL;
}

/* The LM head of the KV-cache paths: logits [T, V] of final-normed rows hf [T, H]. */
static void kv_lm_head(const model *m, const model_kv_cache *kv, float *logits, const float *hf, int T) {
    const model_config *c = &m->cfg;
    const model_kv_scratch *s = kv->scratch;
    ops_tensor W = kv_w16(kv, m) ? ot_bf16(s->w16_lm_head) : ot_f32(m->w.lm_head);
    op_linear_rows(m->q, ot_f32(logits), ot_f32(hf), W, T, c->hidden, c->vocab, false);
}

/* Runs all layers over rows already embedded in s->x (positions staged in s->pos). */
static void kv_run_layers(const model *m, model_kv_scratch *s, int T, const attn_mode *mode) {
    for (int l = 0; l < m->cfg.n_layers; l++) mf_layer_forward(m, l, &s->acts, s->x, T, s->pos, mode);
}

/* Embeds tokens (host [n]) into s->x rows [row0, row0 + n). */
static void kv_embed(const model *m, model_kv_scratch *s, const int32_t *tokens, int row0, int n) {
    ops_tensor ids = ops_stage(m->q, ot_i32(s->tok_dev), tokens, (size_t)n);
    op_embedding_fwd(m->q, ot_f32(s->x + (size_t)row0 * m->cfg.hidden), ot_f32(m->w.embed), ids, n, m->cfg.hidden);
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
    if (!mf_check_tokens(c, tokens, n, "prompt", err)) return false;
    int H = c->hidden;
    for (int i0 = 0; i0 < n; i0 += s->rows) {
        int rows = S2D_MIN(s->rows, n - i0), p0 = kv->len[slot];
        for (int r = 0; r < rows; r++) s->pos_h[r] = p0 + r;
        ops_upload(m->q, ot_i32(s->pos), s->pos_h, (size_t)rows);
        kv_embed(m, s, tokens + i0, 0, rows);
        s->seq_start[0] = 0, s->seq_start[1] = rows, s->seq_slot[0] = slot, s->seq_p0[0] = p0;
        attn_mode mode = {.kind = ATTN_PREFILL, .kv = kv, .n_seqs = 1, .seq_start = s->seq_start,
                          .seq_slot = s->seq_slot, .seq_p0 = s->seq_p0, .w16 = kv_w16(kv, m)};
        kv_run_layers(m, s, rows, &mode);
        kv->len[slot] += rows;
        if (i0 + rows == n) { /* logits of the last position only */
            const float *last = s->x + (size_t)(rows - 1) * H;
            op_rmsnorm_fwd(m->q, ot_f32(s->hf), ot_f32(s->rstd_f), ot_f32(last), ot_f32(m->w.final_norm), 1, H,
                           c->rms_eps);
            kv_lm_head(m, kv, logits, s->hf, 1);
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
        for (int j = 0; j < len; j++) s->pos_h[T + j] = p0 + j;
        T += len;
    }
    s->seq_start[n_seqs] = T;
    ops_upload(m->q, ot_i32(s->pos), s->pos_h, (size_t)T);
    kv_embed(m, s, tokens + start[p_begin], 0, T); /* the prompts' tokens are contiguous */
    attn_mode mode = {.kind = ATTN_PREFILL, .kv = kv, .n_seqs = n_seqs, .seq_start = s->seq_start,
                      .seq_slot = s->seq_slot, .seq_p0 = s->seq_p0, .w16 = kv_w16(kv, m)};
    kv_run_layers(m, s, T, &mode);
    for (int i = 0; i < n_seqs; i++) {
        kv->len[slots[p_begin + i]] += s->seq_start[i + 1] - s->seq_start[i];
        /* the last position of each prompt, gathered; row-wise ops, so a row is as if prefilled alone */
        op_rmsnorm_fwd(m->q, ot_f32(s->hf + (size_t)i * H), ot_f32(s->rstd_f + i),
                       ot_f32(s->x + (size_t)(s->seq_start[i + 1] - 1) * H), ot_f32(m->w.final_norm), 1, H, c->rms_eps);
    }
    kv_lm_head(m, kv, logits + (size_t)p_begin * c->vocab, s->hf, n_seqs);
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
        if (!mf_check_tokens(c, tokens + start[i], len, "prompt", err)) return err_prefix(err, "prefill: prompt %d", i);
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
    if (!mf_check_tokens(c, tokens, n, "decode", err)) return false;
    for (int i = 0; i < n; i++) {
        if (slots[i] < 0 || slots[i] >= kv->n_slots)
            return err_set(err, "decode: slot %d out of [0, %d)", slots[i], kv->n_slots);
        if (kv->len[slots[i]] >= kv->max_len)
            return err_set(err, "decode: slot %d is full (%d positions)", slots[i], kv->max_len);
        for (int j = 0; j < i; j++)
            if (slots[j] == slots[i]) return err_set(err, "decode: slot %d appears twice", slots[i]);
        s->pos_h[i] = kv->len[slots[i]];
        s->slots[i] = slots[i];
    }
    int H = c->hidden;
    ops_upload(m->q, ot_i32(s->pos), s->pos_h, (size_t)n);
    kv_embed(m, s, tokens, 0, n);
    attn_mode mode = {.kind = ATTN_DECODE, .kv = kv, .slots = s->slots, .pos_h = s->pos_h, .ctx_len = s->ctx_len,
                      .w16 = kv_w16(kv, m)};
    kv_run_layers(m, s, n, &mode);
    for (int i = 0; i < n; i++) kv->len[slots[i]]++;
    op_rmsnorm_fwd(m->q, ot_f32(s->hf), ot_f32(s->rstd_f), ot_f32(s->x), ot_f32(m->w.final_norm), n, H, c->rms_eps);
    kv_lm_head(m, kv, logits, s->hf, n);
    return true;
}
