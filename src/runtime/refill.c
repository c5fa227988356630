/* refill.c: DAPO dynamic sampling with refill (grpo.dynamic_sampling.mode: refill; run.h). */
#include <stdlib.h>
#include <string.h>

#include "runtime/rollouts.h"
#include "runtime/run.h"
#include "core/common.h"
#include "text/verify.h"

static void result_alloc(gen_result *g, int B, int max_new) {
    g->start = xcalloc((size_t)B + 1, sizeof(int));
    g->tokens = xmalloc((size_t)B * max_new * sizeof(int32_t) + 4);
    g->logprobs = xmalloc((size_t)B * max_new * sizeof(float) + 4);
    g->finish = xmalloc((size_t)B * sizeof(gen_finish));
}

static void result_release(gen_result *g) { free(g->start), free(g->tokens), free(g->logprobs), free(g->finish); }

void pl_refill_init(pl_refill *f) {
    if (!f->is_sched) return;
    f->keep_group = xmalloc((size_t)f->P * sizeof(int));
    f->keep_round = xmalloc((size_t)f->P * sizeof(int));
    f->keep_prompt = xmalloc((size_t)f->P * sizeof(int));
    f->idx = xmalloc((size_t)f->P * sizeof(int));
    f->rewards = xmalloc((size_t)f->B * sizeof(float));
    result_alloc(&f->round, f->B, f->max_new);
    result_alloc(&f->kept, f->B, f->max_new);
}

void pl_refill_free(pl_refill *f) {
    if (!f->is_sched) return;
    free(f->keep_group), free(f->keep_round), free(f->keep_prompt), free(f->idx), free(f->rewards);
    result_release(&f->round), result_release(&f->kept);
}

bool pl_gen_round(pl_refill *f, int step, int round, int64_t version, const int *idx, gen_result *all, s2d_err *err) {
    transport *tp = f->tp;
    const int B = f->B, G = f->G;
    if (f->is_sched) {
        f->gstart[0] = 0;
        for (int i = 0; i < B; i++) {
            int p = idx[i / G], a = f->enc_start[p], n = f->enc_start[p + 1] - a;
            for (int k = 0; k < n; k++) f->gids[f->gstart[i] + k] = f->enc_ids[a + k];
            f->gstart[i + 1] = f->gstart[i] + n;
            f->seq_ids[i] = ((uint64_t)step << 32) + (uint64_t)round * (uint64_t)B + (uint64_t)i;
        }
    }
    int64_t ver = version;
    tp->bcast(tp, TP_GEN, 0, f->gstart, (size_t)(B + 1) * sizeof(int), "refill prompt offsets");
    tp->bcast(tp, TP_GEN, 0, f->gids, (size_t)f->gstart[B] * sizeof(int32_t), "refill prompt tokens");
    tp->bcast(tp, TP_GEN, 0, f->seq_ids, (size_t)B * sizeof(uint64_t), "refill sequence ids");
    tp->bcast(tp, TP_GEN, 0, &ver, sizeof ver, "the policy version");
    size_t mine = 0;
    if (f->is_gen) {
        CHECK(ver == version, "generator holds policy version %lld, the scheduler asks for %lld", (long long)version,
              (long long)ver);
        long lo, hi;
        tp_split(B, f->n_gen, tp->local ? 0 : tp->index, &lo, &hi);
        for (long i = lo; i <= hi; i++) f->gstart_local[i - lo] = f->gstart[i] - f->gstart[lo];
        gen_result res = {0};
        if (hi > lo && !generator_run(f->gen, f->gp, (int)(hi - lo), f->gstart_local, f->gids + f->gstart[lo],
                                      f->seq_ids + lo, &res, err))
            return err_prefix(err, "refill round %d", round);
        mine = pl_pack_results(&res, (int)(hi - lo), f->pack);
        gen_result_free(&res);
    }
    tp->gatherv(tp, TP_GEN, f->pack, mine, f->packs, f->pack_words * sizeof(int32_t), f->pack_counts,
                "refill completions");
    if (f->is_sched) {
        int seq = pl_unpack_results(f->packs, f->pack_counts, tp_group_size(tp, TP_GEN), all);
        CHECK(seq == f->B, "refill: gathered %d completions, expected %d", seq, f->B);
    }
    return true;
}

/* Sparse rewards of a round's results (the pipeline's verifier): rewards[B]. */
static void score(pl_run *r, const pl_refill *f, const tokenizer *tok, const text_set *ts, const int *idx,
                  const gen_result *g, float *rewards) {
    for (int i = 0; i < f->B; i++) {
        int a = g->start[i];
        s2d_err e;
        rewards[i] = 0;
        if (!tok_decode(tok, g->tokens + a, (size_t)(g->start[i + 1] - a), &r->text, &e)) continue;
        verify_result vr;
        verify_math(r->text.bytes, ts->answer[idx[i / f->G]], &vr);
        rewards[i] = vr.correct ? 1.0f : 0.0f;
    }
}

static bool varied(const float *r, int G) {
    for (int i = 1; i < G; i++)
        if (r[i] != r[0]) return true;
    return false;
}

/* Appends group g of results src (prompt p) to the kept sequences. */
static void keep(pl_refill *f, int *kept, const gen_result *src, int g, int round, int p) {
    gen_result *k = &f->kept;
    int at = *kept * f->G;
    for (int i = 0; i < f->G; i++) {
        int s = g * f->G + i, a = src->start[s], n = src->start[s + 1] - a, o = k->start[at + i];
        for (int t = 0; t < n; t++) k->tokens[o + t] = src->tokens[a + t], k->logprobs[o + t] = src->logprobs[a + t];
        k->finish[at + i] = src->finish[s];
        k->start[at + i + 1] = o + n;
    }
    f->keep_group[*kept] = g, f->keep_round[*kept] = round, f->keep_prompt[*kept] = p;
    (*kept)++;
}

/* Stage cursor and budget: n more prompts idx[] handed out. */
static bool hand_out(pl_run *r, int si, stage_cursor *cur, const int *idx, int n, s2d_err *err) {
    for (int p = 0; p < n; p++) {
        cur->total++;
        if (!cur->seen[idx[p]]) cur->seen[idx[p]] = 1, cur->unique++;
    }
    const train_config *tc = r->tc;
    return !r->budget ||
           pl_budget_prompts(r->budget, tc, si, tc_find_dataset(tc, tc->stages[si].data), idx, n, cur->unique,
                             cur->total, err);
}

bool pl_refill_step(pl_refill *f, pl_run *r, int si, int step, int64_t version, stage_cursor *cur, const tokenizer *tok,
                    const text_set *ts, int *idx, gen_result *all, long *gen_tokens, s2d_err *err) {
    const tc_stage *s = &r->tc->stages[si];
    transport *tp = f->tp;
    int32_t more = 0;
    if (!f->is_sched) { /* generators: as many rounds as the scheduler asks for */
        for (;;) {
            tp->bcast(tp, TP_GEN, 0, &more, sizeof more, "refill: another round?");
            if (!more) return true;
            if (!pl_gen_round(f, step, (int)more, version, NULL, &f->round, err)) return false;
        }
    }
    const int P = f->P, G = f->G;
    int kept = 0, rounds = 1;
    f->kept.start[0] = 0;
    score(r, f, tok, ts, idx, all, f->rewards);
    for (int g = 0; g < P && kept < P; g++)
        if (varied(f->rewards + g * G, G)) keep(f, &kept, all, g, 0, idx[g]);
    while (kept < P && rounds < s->dyn_max_rounds) {
        more = rounds;
        tp->bcast(tp, TP_GEN, 0, &more, sizeof more, "refill: another round?");
        ds_sampler_next(cur->dsamp, P, f->idx);
        if (!hand_out(r, si, cur, f->idx, P, err)) return false;
        if (!pl_gen_round(f, step, rounds, version, f->idx, &f->round, err)) return false;
        if (r->budget) pl_budget_round(r->budget, si, f->B, f->gstart[f->B], f->round.n_generated);
        *gen_tokens += f->round.n_generated;
        score(r, f, tok, ts, f->idx, &f->round, f->rewards);
        for (int g = 0; g < P && kept < P; g++)
            if (varied(f->rewards + g * G, G)) keep(f, &kept, &f->round, g, rounds, f->idx[g]);
        rounds++;
    }
    more = 0;
    tp->bcast(tp, TP_GEN, 0, &more, sizeof more, "refill: another round?");
    if (kept < P) { /* rounds ran out: the first round's zero-variance groups fill the batch (masked by the filter) */
        score(r, f, tok, ts, idx, all, f->rewards);
        for (int g = 0; g < P && kept < P; g++)
            if (!varied(f->rewards + g * G, G)) keep(f, &kept, all, g, 0, idx[g]);
    }
    CHECK(kept == P, "refill: %d groups for %d prompts", kept, P);
    /* the kept groups become the step's results and prompts */
    const gen_result *k = &f->kept;
    for (int i = 0; i <= f->B; i++) all->start[i] = k->start[i];
    for (int t = 0; t < k->start[f->B]; t++) all->tokens[t] = k->tokens[t], all->logprobs[t] = k->logprobs[t];
    for (int i = 0; i < f->B; i++) all->finish[i] = k->finish[i];
    all->n = f->B, all->n_generated = k->start[f->B];
    for (int p = 0; p < P; p++) idx[p] = f->keep_prompt[p];
    return true;
}
