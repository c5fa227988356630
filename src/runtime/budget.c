/* budget.c: labels and compute per stage and per pipeline (budget.h). */
#include "runtime/budget.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

enum { SEEN_RL = 1, SEEN_SFT = 2 };

static bool is_labelled(train_algo a) { return a == ALGO_GRPO || a == ALGO_SFT; }

/* FNV-1a over prompt, a separator and answer: the content key of an example. */
static uint64_t content_hash(const char *prompt, const char *answer) {
    uint64_t h = 1469598103934665603ull;
    for (const char *p = prompt; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ 0x1f) * 1099511628211ull;
    for (const char *p = answer; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

typedef struct {
    uint64_t h;
    const char *prompt, *answer;
    int at; /* index over all records */
} rec_key;

static int cmp_rec(const void *a, const void *b) {
    const rec_key *x = a, *y = b;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    int c = strcmp(x->prompt, y->prompt);
    if (c) return c;
    c = strcmp(x->answer, y->answer);
    return c ? c : (x->at > y->at) - (x->at < y->at); /* stable: the first record names the example */
}

void pl_budget_init(pl_budget *b, const train_config *tc, char **const *prompt, char **const *answer, const int *n) {
    memset(b, 0, sizeof *b);
    b->n_stages = tc->n_stages, b->n_datasets = tc->n_datasets, b->rl_cap = tc->labels_max;
    b->ds_first = xmalloc((size_t)(tc->n_datasets + 1) * sizeof(int));
    b->ds_first[0] = 0;
    for (int d = 0; d < tc->n_datasets; d++) b->ds_first[d + 1] = b->ds_first[d] + n[d];
    int total = b->ds_first[tc->n_datasets];
    rec_key *keys = xmalloc((size_t)S2D_MAX(total, 1) * sizeof *keys);
    for (int d = 0; d < tc->n_datasets; d++)
        for (int i = 0; i < n[d]; i++) {
            int at = b->ds_first[d] + i;
            keys[at] = (rec_key){content_hash(prompt[d][i], answer[d][i]), prompt[d][i], answer[d][i], at};
        }
    qsort(keys, (size_t)total, sizeof *keys, cmp_rec);
    b->canon = xmalloc((size_t)S2D_MAX(total, 1) * sizeof(int32_t));
    for (int i = 0; i < total; i++) {
        bool same = i > 0 && keys[i].h == keys[i - 1].h && strcmp(keys[i].prompt, keys[i - 1].prompt) == 0 &&
                    strcmp(keys[i].answer, keys[i - 1].answer) == 0;
        if (!same) b->n_canon++;
        b->canon[keys[i].at] = b->n_canon - 1;
    }
    free(keys);
    b->seen = xcalloc((size_t)S2D_MAX(b->n_canon, 1), 1);
    b->st = xcalloc((size_t)S2D_MAX(tc->n_stages, 1), sizeof(stage_budget));
}

void pl_budget_free(pl_budget *b) {
    free(b->ds_first), free(b->canon), free(b->seen), free(b->st);
    memset(b, 0, sizeof *b);
}

/* Prompts stage s hands out at least (exactly, unless refill draws more rounds). */
static long planned_prompts(const tc_stage *s) { return (long)s->steps * s->prompts_per_step; }

bool pl_budget_check_plan(const pl_budget *b, const train_config *tc, s2d_err *err) {
    long rl_lower = 0;
    unsigned char *full = xcalloc((size_t)S2D_MAX(b->n_canon, 1), 1); /* examples of fully covered RL datasets */
    long full_count = 0;
    for (int si = 0; si < tc->n_stages; si++) {
        const tc_stage *s = &tc->stages[si];
        if (!is_labelled(s->algo)) continue;
        int di = tc_find_dataset(tc, s->data), n = b->ds_first[di + 1] - b->ds_first[di];
        long unique = S2D_MIN(planned_prompts(s), (long)n); /* the shuffler covers the data once per epoch */
        if (s->labels_max >= 0 && unique > s->labels_max) {
            free(full);
            return err_set(err, "%s: pipeline[%d].labels.max: stage %s hands out %ld unique labelled examples "
                                "(steps %d x prompts_per_step %d over the %d of dataset %s) but labels.max is %ld",
                           s->where, si, s->name, unique, s->steps, s->prompts_per_step, n, s->data, s->labels_max);
        }
        if (s->algo != ALGO_GRPO) continue;
        rl_lower = S2D_MAX(rl_lower, unique);
        if (unique == n)
            for (int i = b->ds_first[di]; i < b->ds_first[di + 1]; i++)
                if (!full[b->canon[i]]) full[b->canon[i]] = 1, full_count++;
    }
    free(full);
    rl_lower = S2D_MAX(rl_lower, full_count);
    if (b->rl_cap >= 0 && rl_lower > b->rl_cap)
        return err_set(err, "%s: labels.max: the grpo stages hand out at least %ld unique labelled examples (by "
                            "content, over stages and datasets) but labels.max is %ld",
                       tc->path, rl_lower, b->rl_cap);
    return true;
}

void pl_budget_stage(pl_budget *b, int si, double policy, double generator, double scorers) {
    stage_budget *st = &b->st[si];
    st->params_policy = policy, st->params_generator = generator, st->params_scorers = scorers;
}

static long count_seen(const pl_budget *b, unsigned mask) {
    long n = 0;
    for (int i = 0; i < b->n_canon; i++) n += (b->seen[i] & mask) != 0;
    return n;
}

bool pl_budget_prompts(pl_budget *b, const train_config *tc, int si, int di, const int *idx, int n, long stage_unique,
                       long stage_total, s2d_err *err) {
    const tc_stage *s = &tc->stages[si];
    stage_budget *st = &b->st[si];
    bool labelled = is_labelled(s->algo);
    st->prompts_total = stage_total, st->prompts_unique = stage_unique;
    st->labels_total = labelled ? stage_total : 0, st->labels_unique = labelled ? stage_unique : 0;
    if (labelled) {
        unsigned char bit = s->algo == ALGO_GRPO ? SEEN_RL : SEEN_SFT;
        for (int i = 0; i < n; i++) b->seen[b->canon[b->ds_first[di] + idx[i]]] |= bit;
    }
    if (labelled && s->labels_max >= 0 && stage_unique > s->labels_max)
        return err_set(err, "%s: pipeline[%d].labels.max: stage %s has handed out %ld unique labelled examples, over "
                            "its cap of %ld (grpo.dynamic_sampling refill rounds draw more prompts); stopped before "
                            "training on them", s->where, si, s->name, stage_unique, s->labels_max);
    if (s->algo == ALGO_GRPO && b->rl_cap >= 0) {
        long rl = count_seen(b, SEEN_RL);
        if (rl > b->rl_cap)
            return err_set(err, "%s: labels.max: stage %s brings the pipeline's unique RL labelled examples to %ld, "
                                "over the cap of %ld; stopped before training on them", tc->path, s->name, rl, b->rl_cap);
    }
    return true;
}

void pl_budget_round(pl_budget *b, int si, long rollouts, long prompt_tokens, long rollout_tokens) {
    stage_budget *st = &b->st[si];
    st->rounds++, st->rollouts += rollouts, st->prompt_tokens += prompt_tokens, st->rollout_tokens += rollout_tokens;
    st->flops_generate += 2.0 * st->params_generator * (double)(prompt_tokens + rollout_tokens);
}

void pl_budget_step(pl_budget *b, const train_config *tc, int si, long batch_tokens, long trained_tokens) {
    stage_budget *st = &b->st[si];
    const double T = (double)batch_tokens, N = st->params_policy;
    st->steps++, st->batch_tokens += batch_tokens, st->trained_tokens += trained_tokens;
    st->flops_score += 2.0 * st->params_scorers * T;
    st->flops_train += 6.0 * N * T + (tc->stages[si].minibatches > 1 ? 2.0 * N * T : 0.0);
}

void pl_budget_totals(const pl_budget *b, const train_config *tc, long *rl_total, long *rl_unique, long *sft_total,
                      long *sft_unique, long *all_unique) {
    *rl_total = *sft_total = 0;
    for (int si = 0; si < tc->n_stages; si++) {
        if (tc->stages[si].algo == ALGO_GRPO) *rl_total += b->st[si].labels_total;
        if (tc->stages[si].algo == ALGO_SFT) *sft_total += b->st[si].labels_total;
    }
    *rl_unique = count_seen(b, SEEN_RL), *sft_unique = count_seen(b, SEEN_SFT);
    *all_unique = count_seen(b, SEEN_RL | SEEN_SFT);
}

static const char *label_kind(train_algo a) { return a == ALGO_GRPO ? "rl" : a == ALGO_SFT ? "sft" : "none"; }

/* A JSON string of a config name (names are printable; quotes and backslashes escaped). */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", (unsigned char)*s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

bool pl_budget_write(const pl_budget *b, const train_config *tc, const char *out_dir, s2d_err *err) {
    char path[4096];
    path_join(path, sizeof path, out_dir, "budget.json");
    atomic_file af;
    if (!atomic_open(&af, path, err)) return false;
    FILE *f = af.fp;
    fprintf(f, "{\n  \"version\": 1,\n  \"flops_formula\": \"generate 2*N_gen*(prompt+rollout tokens), score "
               "2*N_scorers*batch_tokens, train 6*N_policy*batch_tokens (+2*N_policy*batch_tokens when minibatches > 1)\",\n");
    fprintf(f, "  \"stages\": [");
    double tot[3] = {0};
    long rollouts = 0, rtok = 0, ptok = 0, btok = 0, ttok = 0;
    for (int si = 0; si < tc->n_stages; si++) {
        const tc_stage *s = &tc->stages[si];
        const stage_budget *u = &b->st[si];
        fprintf(f, "%s\n    {\"name\": ", si ? "," : "");
        json_str(f, s->name);
        fprintf(f, ", \"algo\": \"%s\", \"dataset\": ", train_algo_name(s->algo));
        json_str(f, s->data);
        fprintf(f, ", \"label_kind\": \"%s\", \"labels_total\": %ld, \"labels_unique\": %ld, \"labels_max\": ",
                label_kind(s->algo), u->labels_total, u->labels_unique);
        if (s->labels_max >= 0) fprintf(f, "%ld", s->labels_max);
        else fprintf(f, "null");
        fprintf(f, ", \"prompts_total\": %ld, \"prompts_unique\": %ld, \"steps\": %ld, \"generation_rounds\": %ld",
                u->prompts_total, u->prompts_unique, u->steps, u->rounds);
        fprintf(f, ", \"rollouts\": %ld, \"prompt_tokens\": %ld, \"rollout_tokens\": %ld, \"batch_tokens\": %ld, "
                   "\"trained_tokens\": %ld", u->rollouts, u->prompt_tokens, u->rollout_tokens, u->batch_tokens,
                u->trained_tokens);
        fprintf(f, ", \"params_policy\": %.0f, \"params_generator\": %.0f, \"params_scorers\": %.0f", u->params_policy,
                u->params_generator, u->params_scorers);
        fprintf(f, ", \"flops_generate\": %.6e, \"flops_score\": %.6e, \"flops_train\": %.6e, \"flops_total\": %.6e}",
                u->flops_generate, u->flops_score, u->flops_train, u->flops_generate + u->flops_score + u->flops_train);
        tot[0] += u->flops_generate, tot[1] += u->flops_score, tot[2] += u->flops_train;
        rollouts += u->rollouts, rtok += u->rollout_tokens, ptok += u->prompt_tokens, btok += u->batch_tokens;
        ttok += u->trained_tokens;
    }
    long rl_t, rl_u, sft_t, sft_u, all_u;
    pl_budget_totals(b, tc, &rl_t, &rl_u, &sft_t, &sft_u, &all_u);
    fprintf(f, "\n  ],\n  \"total\": {\"rl_labels_total\": %ld, \"rl_labels_unique\": %ld, \"sft_labels_total\": %ld, "
               "\"sft_labels_unique\": %ld, \"labels_unique\": %ld, \"labels_max\": ",
            rl_t, rl_u, sft_t, sft_u, all_u);
    if (b->rl_cap >= 0) fprintf(f, "%ld", b->rl_cap);
    else fprintf(f, "null");
    fprintf(f, ", \"rollouts\": %ld, \"prompt_tokens\": %ld, \"rollout_tokens\": %ld, \"batch_tokens\": %ld, "
               "\"trained_tokens\": %ld, \"flops_generate\": %.6e, \"flops_score\": %.6e, \"flops_train\": %.6e, "
               "\"flops_total\": %.6e},\n",
            rollouts, ptok, rtok, btok, ttok, tot[0], tot[1], tot[2], tot[0] + tot[1] + tot[2]);
    fprintf(f, "  \"datasets\": {");
    for (int d = 0; d < tc->n_datasets; d++) {
        long used = 0;
        for (int i = b->ds_first[d]; i < b->ds_first[d + 1]; i++) used += b->seen[b->canon[i]] != 0;
        fprintf(f, "%s\n    ", d ? "," : "");
        json_str(f, tc->datasets[d].name);
        fprintf(f, ": {\"records\": %d, \"labelled_unique\": %ld}", b->ds_first[d + 1] - b->ds_first[d], used);
    }
    fprintf(f, "\n  }\n}\n");
    if (ferror(f)) return atomic_abort(&af), err_set(err, "%s: write failed", path);
    return atomic_commit(&af, err);
}

void pl_budget_print(const pl_budget *b, const train_config *tc, FILE *f) {
    /* rows indented under the header: lines that start with a stage name belong to the summary table */
    fprintf(f, "budget:\n  %-12s %-5s %-4s %8s %8s %9s %12s %12s %11s %11s %11s\n", "stage", "algo", "kind", "labels",
            "unique", "rollouts", "rollout_tok", "trained_tok", "gen_flops", "score_flops", "train_flops");
    double tot[3] = {0};
    long rollouts = 0, rtok = 0, ttok = 0;
    for (int si = 0; si < tc->n_stages; si++) {
        const tc_stage *s = &tc->stages[si];
        const stage_budget *u = &b->st[si];
        fprintf(f, "  %-12s %-5s %-4s %8ld %8ld %9ld %12ld %12ld %11.3e %11.3e %11.3e\n", s->name, train_algo_name(s->algo),
                label_kind(s->algo), u->labels_total, u->labels_unique, u->rollouts, u->rollout_tokens,
                u->trained_tokens, u->flops_generate, u->flops_score, u->flops_train);
        tot[0] += u->flops_generate, tot[1] += u->flops_score, tot[2] += u->flops_train;
        rollouts += u->rollouts, rtok += u->rollout_tokens, ttok += u->trained_tokens;
    }
    long rl_t, rl_u, sft_t, sft_u, all_u;
    pl_budget_totals(b, tc, &rl_t, &rl_u, &sft_t, &sft_u, &all_u);
    fprintf(f, "  %-12s %-5s %-4s %8ld %8ld %9ld %12ld %12ld %11.3e %11.3e %11.3e\n", "total", "", "rl", rl_t, rl_u,
            rollouts, rtok, ttok, tot[0], tot[1], tot[2]);
    fprintf(f, "  labels: %ld RL (%ld unique), %ld SFT (%ld unique), %ld unique labelled examples in all (by content, "
               "across stages and datasets); compute %.3e FLOPs (OUT/budget.json)\n",
            rl_t, rl_u, sft_t, sft_u, all_u, tot[0] + tot[1] + tot[2]);
}

/* Doubles travel as their bits. */
static uint64_t dbits(double d) {
    union { double d; uint64_t u; } x = {.d = d};
    return x.u;
}
static double bitsd(uint64_t u) {
    union { double d; uint64_t u; } x = {.u = u};
    return x.d;
}

void pl_budget_pack(const stage_budget *s, uint64_t w[PL_BUDGET_WORDS]) {
    const long v[11] = {s->labels_total, s->labels_unique, s->prompts_total, s->prompts_unique, s->steps, s->rounds,
                        s->rollouts, s->prompt_tokens, s->rollout_tokens, s->batch_tokens, s->trained_tokens};
    for (int i = 0; i < 11; i++) w[i] = (uint64_t)v[i];
    w[11] = dbits(s->flops_generate), w[12] = dbits(s->flops_score), w[13] = dbits(s->flops_train);
    w[14] = dbits(s->params_policy), w[15] = dbits(s->params_generator), w[16] = dbits(s->params_scorers);
}

void pl_budget_unpack(const uint64_t w[PL_BUDGET_WORDS], stage_budget *s) {
    long *v[11] = {&s->labels_total, &s->labels_unique, &s->prompts_total, &s->prompts_unique, &s->steps, &s->rounds,
                   &s->rollouts, &s->prompt_tokens, &s->rollout_tokens, &s->batch_tokens, &s->trained_tokens};
    for (int i = 0; i < 11; i++) *v[i] = (long)w[i];
    s->flops_generate = bitsd(w[11]), s->flops_score = bitsd(w[12]), s->flops_train = bitsd(w[13]);
    s->params_policy = bitsd(w[14]), s->params_generator = bitsd(w[15]), s->params_scorers = bitsd(w[16]);
}
