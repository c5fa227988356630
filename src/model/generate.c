#include "model/generate.h"

#include <stdlib.h>
#include <string.h>

#include "core/timer.h"

struct generator {
    const model *m;
    int n_slots, max_len, vocab;
    model_kv_cache kv;
    float *logits;         /* device [n_slots, V] decode-step logits, row i for active[i]; prefill logits, row i
                              for the i-th prompt of a batched prefill */
    uint64_t *row_seq, *row_pos; /* [n_slots] the random-stream keys of the rows being sampled */
    int *slot_prompt;      /* [n_slots] prompt index in the slot, -1 when free */
    int *slot_count;       /* [n_slots] tokens generated so far */
    int32_t *slot_last;    /* [n_slots] last sampled token (fed at the next decode step) */
    int *active;           /* [n_slots] slots in this decode step */
    int32_t *feed;         /* [n_slots] tokens fed in this decode step */
    int *free_slots;       /* [n_slots] slots waiting for a prompt */
    int *fill_start;       /* [n_slots + 1] token offsets of the prompts of one batched prefill */
    int32_t *row_token;    /* [n_slots] sampled per decode row */
    float *row_logprob;    /* [n_slots] */
    /* Shared prompts (the samples of one problem, a GRPO group): a prompt whose tokens some slot's cache already
     * starts with is not prefilled again; its cache rows and first-token logits are copied (the same bits). */
    bool share_prompts;    /* on unless generator_share_prompts(g, false) */
    int *slot_cached;      /* [n_slots] prompt of this run whose cache rows the slot starts with, -1 none */
    float *prompt_logits;  /* device [n_slots, V] the last-position logits of the slot's cached prompt */
    int32_t *pack_tokens;  /* [n_slots * max_len] tokens of the prompts prefilled in one round */
    int *round_slot;       /* [n_slots] slot of each prompt of a round, in prompt order */
    int *round_row;        /* [n_slots] its logits row */
    int *round_src;        /* [n_slots] the slot it copies from, -1: prefilled */
};

void generator_share_prompts(generator *g, bool on) { g->share_prompts = on; }

const char *gen_finish_name(gen_finish f) { return f == GEN_FINISH_STOP ? "stop" : "length"; }

void gen_result_free(gen_result *r) {
    free(r->start);
    free(r->tokens);
    free(r->logprobs);
    free(r->finish);
    memset(r, 0, sizeof *r);
}

bool generator_new(const model *m, int n_slots, int max_len, generator **out, s2d_err *err) {
    if (n_slots < 1) return err_set(err, "generator: batch size %d must be >= 1", n_slots);
    if (max_len < 2) return err_set(err, "generator: max length %d must be >= 2", max_len);
    if (max_len > m->cfg.max_pos)
        return err_set(err, "generator: max length %d exceeds the model's max_position_embeddings %d", max_len,
                       m->cfg.max_pos);
    generator *g = xcalloc(1, sizeof *g);
    g->m = m;
    g->n_slots = n_slots;
    g->max_len = max_len;
    g->vocab = m->cfg.vocab;
    if (!model_kv_init(&g->kv, m, n_slots, max_len, err)) {
        free(g);
        return false;
    }
    const size_t V = (size_t)g->vocab, S = (size_t)n_slots;
    g->logits = ops_alloc(m->q, OPS_F32, S * V).p;
    ops_reserve(m->q, max_len, n_slots, g->vocab, 0);
    g->row_seq = xmalloc(S * sizeof(uint64_t));
    g->row_pos = xmalloc(S * sizeof(uint64_t));
    g->slot_prompt = xmalloc(S * sizeof(int));
    g->slot_count = xmalloc(S * sizeof(int));
    g->slot_last = xmalloc(S * sizeof(int32_t));
    g->active = xmalloc(S * sizeof(int));
    g->feed = xmalloc(S * sizeof(int32_t));
    g->free_slots = xmalloc(S * sizeof(int));
    g->fill_start = xmalloc((S + 1) * sizeof(int));
    g->row_token = xmalloc(S * sizeof(int32_t));
    g->row_logprob = xmalloc(S * sizeof(float));
    g->share_prompts = true;
    g->slot_cached = xmalloc(S * sizeof(int));
    g->prompt_logits = ops_alloc(m->q, OPS_F32, S * V).p;
    g->pack_tokens = xmalloc(S * (size_t)max_len * sizeof(int32_t));
    g->round_slot = xmalloc(S * sizeof(int));
    g->round_row = xmalloc(S * sizeof(int));
    g->round_src = xmalloc(S * sizeof(int));
    *out = g;
    return true;
}

void generator_free(generator *g) {
    if (!g) return;
    model_kv_free(&g->kv);
    ops_free(g->m->q, ot_f32(g->logits));
    free(g->row_seq);
    free(g->row_pos);
    free(g->slot_prompt);
    free(g->slot_count);
    free(g->slot_last);
    free(g->active);
    free(g->feed);
    free(g->free_slots);
    free(g->fill_start);
    free(g->row_token);
    free(g->row_logprob);
    free(g->slot_cached);
    ops_free(g->m->q, ot_f32(g->prompt_logits));
    free(g->pack_tokens);
    free(g->round_slot);
    free(g->round_row);
    free(g->round_src);
    free(g);
}


/* Shared state of one run. Completions are written strided (prompt i at i * max_new) and packed at the end. */
typedef struct {
    generator *g;
    const gen_params *params;
    int n, next;
    const int *prompt_start;
    const int32_t *prompt_tokens;
    const uint64_t *seq_ids;
    int *count;      /* [n] tokens generated per prompt */
    gen_result *out;
} run_state;

static bool is_stop(const gen_params *p, int32_t id) {
    for (int i = 0; i < p->n_stop; i++)
        if (p->stop_ids[i] == id) return true;
    return false;
}

/* Records token k of prompt p; returns true when the prompt is finished (and sets its finish reason). */
static bool record_token(run_state *st, int slot, int32_t id, float logprob) {
    generator *g = st->g;
    int p = g->slot_prompt[slot];
    const int max_new = st->params->max_new_tokens;
    int k = g->slot_count[slot]++;
    st->out->tokens[(size_t)p * max_new + k] = id;
    st->out->logprobs[(size_t)p * max_new + k] = logprob;
    st->count[p] = k + 1;
    g->slot_last[slot] = id;
    if (is_stop(st->params, id)) {
        st->out->finish[p] = GEN_FINISH_STOP;
        return true;
    }
    /* Another token needs this one fed into the cache: finished by length when there is no room. */
    if (k + 1 >= max_new || g->kv.len[slot] >= g->max_len) {
        st->out->finish[p] = GEN_FINISH_LENGTH;
        return true;
    }
    return false;
}

static uint64_t seq_id_of(const run_state *st, int p) { return st->seq_ids ? st->seq_ids[p] : (uint64_t)p; }

static bool same_prompt(const run_state *st, int p, int q) {
    const int lp = st->prompt_start[p + 1] - st->prompt_start[p], lq = st->prompt_start[q + 1] - st->prompt_start[q];
    return lp == lq && memcmp(st->prompt_tokens + st->prompt_start[p], st->prompt_tokens + st->prompt_start[q],
                              sizeof(int32_t) * (size_t)lp) == 0;
}

/* Puts waiting prompts into the n_free slots listed in g->free_slots, a round of up to n_free prompts at a time.
 * A prompt that some slot's cache already starts with (an earlier sample of the same prompt, still cached), or
 * that an earlier prompt of the round has, copies that slot's cache rows and first-token logits; the others get
 * one batched prefill (a pass over the weights serves every prompt; each row is computed as if alone, model.h).
 * Then each samples its first token; slots whose prompt is finished at once take the next waiting prompts, until
 * every listed slot runs or no prompt waits. Prompts go to slots in order. */
static bool fill_slots(run_state *st, int n_free, s2d_err *err) {
    generator *g = st->g;
    const size_t V = (size_t)g->vocab;
    for (int i = 0; i < n_free; i++) g->slot_prompt[g->free_slots[i]] = -1;
    while (n_free > 0 && st->next < st->n) {
        const int k = S2D_MIN(n_free, st->n - st->next), p0 = st->next;
        st->next += k;
        /* the round's slots are refilled now: none is a source for another prompt, but a slot that cached this
         * very prompt keeps its rows (the K samples of a prompt passing through one slot) */
        for (int i = 0; i < k; i++) {
            const int slot = g->free_slots[i], old = g->slot_cached[slot];
            g->round_slot[i] = slot;
            g->round_src[i] = g->share_prompts && old >= 0 && same_prompt(st, p0 + i, old) ? slot : -1;
            g->slot_cached[slot] = -1;
        }
        int n_fill = 0;
        g->fill_start[0] = 0;
        for (int i = 0; i < k; i++) {
            const int p = p0 + i;
            for (int s = 0; g->share_prompts && s < g->n_slots && g->round_src[i] < 0; s++)
                if (g->slot_cached[s] >= 0 && same_prompt(st, p, g->slot_cached[s])) g->round_src[i] = s;
            for (int j = 0; g->share_prompts && j < i && g->round_src[i] < 0; j++)
                if (g->round_src[j] == -1 && same_prompt(st, p, p0 + j)) g->round_src[i] = -2 - j; /* after its prefill */
            if (g->round_src[i] != -1) continue;
            model_kv_reset(&g->kv, g->round_slot[i]);
            const int len = st->prompt_start[p + 1] - st->prompt_start[p];
            memcpy(g->pack_tokens + g->fill_start[n_fill], st->prompt_tokens + st->prompt_start[p],
                   sizeof(int32_t) * (size_t)len);
            g->fill_start[n_fill + 1] = g->fill_start[n_fill] + len;
            g->free_slots[n_fill] = g->round_slot[i]; /* the prefill's slot list (round_slot keeps the round's) */
            g->round_row[i] = n_fill++;
        }
        double t0 = time_now();
        if (n_fill > 0 &&
            !model_prefill_batch(g->m, &g->kv, n_fill, g->free_slots, g->fill_start, g->pack_tokens, g->logits, err))
            return err_prefix(err, "prompts %d..%d", p0, p0 + k - 1);
        /* prefilled prompts cache their logits; copies take cache rows and logits (rows after the prefilled) */
        int row = n_fill;
        for (int i = 0; i < k; i++) {
            const int slot = g->round_slot[i], p = p0 + i;
            if (g->round_src[i] == -1) {
                ops_copy(g->m->q, ot_f32(g->prompt_logits + (size_t)slot * V),
                         ot_f32(g->logits + (size_t)g->round_row[i] * V), V);
            } else {
                const int src = g->round_src[i] >= 0 ? g->round_src[i] : g->round_slot[-2 - g->round_src[i]];
                model_kv_copy_prefix(g->m, &g->kv, slot, src, st->prompt_start[p + 1] - st->prompt_start[p]);
                if (src != slot)
                    ops_copy(g->m->q, ot_f32(g->prompt_logits + (size_t)slot * V),
                             ot_f32(g->prompt_logits + (size_t)src * V), V);
                ops_copy(g->m->q, ot_f32(g->logits + (size_t)row * V), ot_f32(g->prompt_logits + (size_t)src * V), V);
                g->round_row[i] = row++;
                st->out->n_shared_prompts++;
            }
            g->slot_cached[slot] = p;
        }
        double t1 = time_now();
        st->out->prefill_seconds += t1 - t0;
        for (int i = 0; i < k; i++) {
            const int r = g->round_row[i], p = p0 + i;
            g->row_seq[r] = seq_id_of(st, p);
            g->row_pos[r] = (uint64_t)(st->prompt_start[p + 1] - st->prompt_start[p]);
        }
        op_sample(g->m->q, ot_f32(g->logits), k, g->vocab, &st->params->sampling, g->row_seq, g->row_pos, g->row_token,
                  g->row_logprob);
        int still_free = 0;
        for (int i = 0; i < k; i++) {
            const int slot = g->round_slot[i], p = p0 + i, r = g->round_row[i];
            g->slot_prompt[slot] = p;
            g->slot_count[slot] = 0;
            if (record_token(st, slot, g->row_token[r], g->row_logprob[r])) {
                g->slot_prompt[slot] = -1;
                g->free_slots[still_free++] = slot;
            }
        }
        /* slots beyond the k filled this round stay free for the next round (still_free <= i: in place is safe) */
        for (int i = k; i < n_free; i++) g->free_slots[still_free++] = g->free_slots[i];
        st->out->sample_seconds += time_now() - t1;
        n_free = still_free;
    }
    return true;
}

static bool check_inputs(const generator *g, const gen_params *params, int n, const int *prompt_start,
                         const int32_t *prompt_tokens, s2d_err *err) {
    if (!sampler_params_check(&params->sampling, err)) return err_prefix(err, "sampling");
    if (params->max_new_tokens < 1) return err_set(err, "max_new_tokens %d must be >= 1", params->max_new_tokens);
    if (params->n_stop < 0 || params->n_stop > GEN_MAX_STOP)
        return err_set(err, "%d stop tokens (at most %d)", params->n_stop, GEN_MAX_STOP);
    for (int i = 0; i < params->n_stop; i++)
        if (params->stop_ids[i] < 0 || params->stop_ids[i] >= g->vocab)
            return err_set(err, "stop token %d is outside the vocabulary [0, %d)", params->stop_ids[i], g->vocab);
    if (n < 0 || (n > 0 && prompt_start[0] != 0)) return err_set(err, "bad prompt offsets");
    for (int p = 0; p < n; p++) {
        int len = prompt_start[p + 1] - prompt_start[p];
        if (len < 1) return err_set(err, "prompt %d is empty", p);
        if (len > g->max_len)
            return err_set(err, "prompt %d has %d tokens, more than the maximum length %d", p, len, g->max_len);
        for (int t = 0; t < len; t++) {
            int32_t id = prompt_tokens[prompt_start[p] + t];
            if (id < 0 || id >= g->vocab)
                return err_set(err, "prompt %d, token %d: id %d is outside the vocabulary [0, %d)", p, t, id,
                               g->vocab);
        }
    }
    return true;
}

bool generator_run(generator *g, const gen_params *params, int n, const int *prompt_start,
                   const int32_t *prompt_tokens, const uint64_t *seq_ids, gen_result *out, s2d_err *err) {
    memset(out, 0, sizeof *out);
    if (!check_inputs(g, params, n, prompt_start, prompt_tokens, err)) return false;
    const int max_new = params->max_new_tokens;
    const size_t cap = (size_t)n * (size_t)max_new;
    out->n = n;
    out->start = xcalloc((size_t)n + 1, sizeof(int));
    out->tokens = xmalloc(S2D_MAX(cap, 1) * sizeof(int32_t));
    out->logprobs = xmalloc(S2D_MAX(cap, 1) * sizeof(float));
    out->finish = xcalloc(S2D_MAX((size_t)n, 1), sizeof(gen_finish));
    int *count = xcalloc(S2D_MAX((size_t)n, 1), sizeof(int));
    run_state st = {.g = g, .params = params, .n = n, .next = 0, .prompt_start = prompt_start,
                    .prompt_tokens = prompt_tokens, .seq_ids = seq_ids, .count = count, .out = out};
    bool ok = true;
    /* The caller may have changed the model's weights since the last run (the pipeline updates the policy in
     * place): re-check bf16 exactness and refresh the bf16 copy every run, so it is never stale (model.h). */
    double tw = time_now();
    model_kv_refresh_weights(&g->kv, g->m);
    out->weights_seconds = time_now() - tw;
    for (int s = 0; s < g->n_slots; s++) g->free_slots[s] = s, g->slot_cached[s] = -1; /* new prompts, maybe new weights */
    ok = fill_slots(&st, g->n_slots, err);
    while (ok) {
        int n_active = 0;
        for (int s = 0; s < g->n_slots; s++)
            if (g->slot_prompt[s] >= 0) {
                g->active[n_active] = s;
                g->feed[n_active] = g->slot_last[s];
                n_active++;
            }
        if (n_active == 0) break;
        double t0 = time_now();
        if (!model_decode_step(g->m, &g->kv, n_active, g->active, g->feed, g->logits, err)) {
            ok = false;
            break;
        }
        double t1 = time_now();
        out->decode_seconds += t1 - t0;
        out->n_decode_steps++;
        out->n_decode_rows += n_active;
        for (int i = 0; i < n_active; i++) {
            int s = g->active[i];
            g->row_seq[i] = seq_id_of(&st, g->slot_prompt[s]);
            g->row_pos[i] = (uint64_t)g->kv.len[s]; /* tokens already in the sequence */
        }
        op_sample(g->m->q, ot_f32(g->logits), n_active, g->vocab, &params->sampling, g->row_seq, g->row_pos,
                  g->row_token, g->row_logprob);
        out->sample_seconds += time_now() - t1;
        int n_free = 0;
        for (int i = 0; i < n_active; i++) {
            int s = g->active[i];
            if (record_token(&st, s, g->row_token[i], g->row_logprob[i])) g->free_slots[n_free++] = s;
        }
        if (n_free > 0) ok = fill_slots(&st, n_free, err);
    }
    if (!ok) {
        free(count);
        gen_result_free(out);
        return false;
    }
    /* Pack the strided completions into CSR (in place: destinations never pass their sources). */
    int at = 0;
    for (int p = 0; p < n; p++) {
        out->start[p] = at;
        memmove(out->tokens + at, out->tokens + (size_t)p * max_new, (size_t)count[p] * sizeof(int32_t));
        memmove(out->logprobs + at, out->logprobs + (size_t)p * max_new, (size_t)count[p] * sizeof(float));
        at += count[p];
    }
    out->start[n] = at;
    out->n_generated = at;
    free(count);
    return true;
}
