/* rollouts.c: generation rounds of a stage and the queue of rollouts sampled ahead (see the header). */
#include "runtime/rollouts.h"

#include <stdlib.h>
#include <string.h>

#include "core/timer.h"

void pl_rollouts_init(pl_rollouts *R, transport *tp, bool generate, int P, int G, int max_prompt, int max_new, int lag,
                      long steps, int ckpt_every, const char *stage_name) {
    memset(R, 0, sizeof *R);
    R->tp = tp;
    R->is_sched = tp_plays(tp, ROLE_SCHEDULER), R->is_gen = tp_plays(tp, ROLE_GENERATOR);
    R->generate = generate;
    R->P = P, R->G = G, R->B = P * G, R->n_gen = tp->local ? 1 : tp->n_gen;
    R->lag = generate ? lag : 0; /* nothing to sample ahead in sft */
    R->steps = steps, R->ckpt_every = ckpt_every, R->stage_name = stage_name;
    int B = R->B;
    R->gstart = xmalloc((size_t)(B + 2) * sizeof(int));
    R->gstart_local = xmalloc((size_t)(B + 1) * sizeof(int));
    R->gids = xmalloc((size_t)B * S2D_MAX(max_prompt, 1) * sizeof(int32_t));
    R->seq_ids = xmalloc((size_t)B * sizeof(uint64_t));
    /* a generator's results as they travel: [n][finish n][len n][tokens][logprobs] as 4-byte words */
    R->pack_words = (size_t)B * (2 + 2 * (size_t)max_new) + 4 * (size_t)(R->n_gen + 1);
    R->pack = xmalloc(R->pack_words * sizeof(int32_t));
    R->packs = R->is_sched ? xmalloc(R->pack_words * sizeof(int32_t)) : NULL;
    R->pack_counts = xmalloc((size_t)(S2D_MAX(R->n_gen, tp->size) + 2) * sizeof(size_t));
    if (!R->is_sched) return;
    R->cap = R->lag + 1;
    R->slots = xcalloc((size_t)R->cap, sizeof(pl_rollout));
    for (int i = 0; i < R->cap; i++) {
        pl_rollout *x = &R->slots[i];
        x->idx = xmalloc((size_t)P * sizeof(int));
        x->res.start = xmalloc((size_t)(B + 1) * sizeof(int));
        x->res.tokens = xmalloc((size_t)B * max_new * sizeof(int32_t) + 4);
        x->res.logprobs = xmalloc((size_t)B * max_new * sizeof(float) + 4);
        x->res.finish = xmalloc((size_t)B * sizeof(gen_finish));
    }
}

void pl_rollouts_free(pl_rollouts *R) {
    for (int i = 0; i < R->cap; i++) {
        pl_rollout *x = &R->slots[i];
        free(x->idx), free(x->res.start), free(x->res.tokens), free(x->res.logprobs), free(x->res.finish);
    }
    free(R->slots), free(R->gstart), free(R->gstart_local), free(R->gids), free(R->seq_ids);
    free(R->pack), free(R->packs), free(R->pack_counts);
    memset(R, 0, sizeof *R);
}

long pl_rollouts_horizon(const pl_rollouts *R, long t) {
    long drain = R->steps; /* checkpoints are written after steps that are multiples of ckpt_every */
    if (R->ckpt_every > 0) drain = S2D_MIN(drain, (t / R->ckpt_every + 1) * R->ckpt_every);
    return S2D_MIN(t + R->lag, drain - 1);
}

size_t pl_pack_results(const gen_result *res, int n, int32_t *buf) {
    size_t at = 0;
    buf[at++] = n;
    for (int i = 0; i < n; i++) buf[at++] = (int32_t)res->finish[i];
    for (int i = 0; i < n; i++) buf[at++] = res->start[i + 1] - res->start[i];
    int nt = n ? res->start[n] : 0;
    memcpy(buf + at, res->tokens, (size_t)nt * sizeof(int32_t)), at += (size_t)nt;
    memcpy(buf + at, res->logprobs, (size_t)nt * sizeof(float)), at += (size_t)nt;
    return at * sizeof(int32_t);
}

int pl_unpack_results(const int32_t *packs, const size_t *counts, int n_members, gen_result *all) {
    size_t at = 0;
    int seq = 0, tokat = 0;
    all->start[0] = 0;
    for (int gi = 0; gi < n_members; gi++) {
        if (counts[gi] == 0) continue;
        const int32_t *w = packs + at;
        int n = w[0];
        const int32_t *fin = w + 1, *len = w + 1 + n, *toks = w + 1 + 2 * n;
        int nt = 0;
        for (int i = 0; i < n; i++) nt += len[i];
        const float *lps = (const float *)(toks + nt);
        for (int i = 0; i < n; i++) {
            all->finish[seq] = (gen_finish)fin[i];
            all->start[seq + 1] = all->start[seq] + len[i];
            seq++;
        }
        memcpy(all->tokens + tokat, toks, (size_t)nt * sizeof(int32_t));
        memcpy(all->logprobs + tokat, lps, (size_t)nt * sizeof(float));
        tokat += nt;
        at += counts[gi] / sizeof(int32_t);
    }
    all->n = seq, all->n_generated = tokat;
    return seq;
}

/* Round u, first half: the scheduler draws u's prompts into a new slot and (generating stages) sends them; the
 * generators sample their contiguous share and pack it. */
static bool round_start(pl_rollouts *R, long u, int64_t version, double *gen_s, s2d_err *err) {
    transport *tp = R->tp;
    int B = R->B, G = R->G;
    pl_rollout *x = NULL;
    if (R->is_sched) {
        CHECK(R->n < R->cap, "rollout queue full (%d pending)", R->n);
        x = &R->slots[(R->head + R->n) % R->cap];
        R->n++;
        stage_cursor *cur = R->cur;
        ds_sampler_next(cur->dsamp, R->P, x->idx);
        for (int p = 0; p < R->P; p++) {
            cur->total++;
            if (!cur->seen[x->idx[p]]) cur->seen[x->idx[p]] = 1, cur->unique++;
        }
        x->step = u, x->version = version, x->gen_tokens = 0;
        x->unique = cur->unique, x->total = cur->total;
    }
    R->pack_mine = 0;
    if (!R->generate || !(R->is_sched || R->is_gen)) return true;
    /* 1. scheduler -> generators: prompts, seq ids (sampling streams), policy version */
    if (R->is_sched) {
        R->gstart[0] = 0;
        for (int i = 0; i < B; i++) {
            int p = x->idx[i / G], a = R->pstart[p], n = R->pstart[p + 1] - a;
            memcpy(R->gids + R->gstart[i], R->pids + a, (size_t)n * sizeof(int32_t));
            R->gstart[i + 1] = R->gstart[i] + n;
            R->seq_ids[i] = ((uint64_t)u << 32) + (uint64_t)i;
        }
    }
    int64_t ver = version;
    tp->bcast(tp, TP_GEN, 0, R->gstart, (size_t)(B + 1) * sizeof(int), "prompt offsets");
    tp->bcast(tp, TP_GEN, 0, R->gids, (size_t)R->gstart[B] * sizeof(int32_t), "prompt tokens");
    tp->bcast(tp, TP_GEN, 0, R->seq_ids, (size_t)B * sizeof(uint64_t), "sequence ids");
    tp->bcast(tp, TP_GEN, 0, &ver, sizeof ver, "the policy version");
    if (!R->is_gen) return true;
    /* 2. generators: this generator's contiguous share of the sequences */
    double tg = time_now();
    CHECK(ver == version, "generator holds policy version %lld, the scheduler asks for %lld", (long long)version,
          (long long)ver);
    long lo, hi;
    tp_split(B, R->n_gen, tp->local ? 0 : tp->index, &lo, &hi);
    for (long i = lo; i <= hi; i++) R->gstart_local[i - lo] = R->gstart[i] - R->gstart[lo];
    gen_result res = {0};
    if (hi > lo && !generator_run(R->gen, R->gp, (int)(hi - lo), R->gstart_local, R->gids + R->gstart[lo],
                                  R->seq_ids + lo, &res, err))
        return err_prefix(err, "stage %s", R->stage_name);
    R->pack_mine = pl_pack_results(&res, (int)(hi - lo), R->pack);
    gen_result_free(&res);
    *gen_s += time_now() - tg;
    return true;
}

/* Round, second half: the generators' results -> the scheduler's newest slot (generator order = sequence order). */
static void round_finish(pl_rollouts *R) {
    transport *tp = R->tp;
    if (!R->generate || !(R->is_sched || R->is_gen)) return;
    tp->gatherv(tp, TP_GEN, R->pack, R->pack_mine, R->packs, R->pack_words * sizeof(int32_t), R->pack_counts, "completions");
    if (!R->is_sched) return;
    gen_result *all = &R->slots[(R->head + R->n - 1) % R->cap].res;
    int seq = pl_unpack_results(R->packs, R->pack_counts, tp_group_size(tp, TP_GEN), all);
    CHECK(seq == R->B, "gathered %d completions, expected %d", seq, R->B);
    int tokat = all->n_generated;
    R->slots[(R->head + R->n - 1) % R->cap].gen_tokens = tokat;
}

bool pl_rollouts_advance(pl_rollouts *R, long t, int64_t version, double *gen_s, s2d_err *err) {
    CHECK(!R->deferred, "a generation round is still open at step %ld", t);
    CHECK(R->next >= t, "step %ld has no rollouts (next to generate: %ld)", t, R->next);
    if (R->next == t) { /* drained: this step's own rollouts, synchronously */
        if (!round_start(R, t, version, gen_s, err)) return false;
        round_finish(R);
        R->next = t + 1;
    }
    long h = pl_rollouts_horizon(R, t);
    for (; R->next <= h; R->next++) { /* ahead: the last one stays open while the learners work */
        if (!round_start(R, R->next, version, gen_s, err)) return false;
        if (R->next < h) round_finish(R);
        else R->deferred = true;
    }
    return true;
}

void pl_rollouts_finish_deferred(pl_rollouts *R) {
    if (!R->deferred) return;
    round_finish(R);
    R->deferred = false;
}

pl_rollout *pl_rollouts_front(pl_rollouts *R, long t) {
    CHECK(R->n > 0 && R->slots[R->head].step == t, "the rollout queue does not start at step %ld", t);
    return &R->slots[R->head];
}

void pl_rollouts_pop(pl_rollouts *R) {
    CHECK(R->n > 0, "pop from an empty rollout queue");
    R->head = (R->head + 1) % R->cap, R->n--;
}
