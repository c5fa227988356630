/* budget.h: the label and compute budget of a `s2d train` run (scheduler only), so that arms of a study
 * can be matched on labels and on compute. Written to OUT/budget.json (schema: docs/design.md §7) and printed
 * under the end-of-run table.
 *
 * Labels: a grpo or sft stage consumes one labelled example per prompt it hands out (grpo: the answer its
 * reward checks, sft: the target it trains on); fkl and opd stages use prompts only. Examples are identified
 * by content (prompt and answer text), so one problem in two datasets or two stages counts once in the
 * pipeline's unique counts. RL labels (grpo: the scarce ones) and SFT labels are counted apart.
 *
 * Caps: labels: {max: N} on a stage caps its unique labelled examples; at the top level it caps the pipeline's
 * unique RL labelled examples. Both are checked before training from the config and the dataset sizes (a
 * stage hands out steps × prompts_per_step prompts, more only with grpo.dynamic_sampling.mode: refill) and
 * again whenever prompts are handed out; either way the run stops with an error naming the key.
 *
 * Compute (model FLOPs, the usual estimate 2·N per token forward and 6·N forward + backward, N = the model's
 * parameters): generation 2·N_gen·(prompt + completion tokens of every rollout, refill rounds included),
 * scoring 2·(N_teacher + N_reference)·(batch tokens) for the models a stage scores with, training
 * 6·N_policy·(batch tokens), + 2·N_policy·(batch tokens) for the old-policy pass when minibatches > 1. Batch
 * tokens are every token of the packed step (prompt + completion), which the learner and scorers run. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "runtime/train_config.h"

typedef struct {
    long labels_total, labels_unique;   /* labelled examples handed out (grpo / sft stages), with repeats / once */
    long prompts_total, prompts_unique; /* prompts handed out, labelled or not */
    long steps, rounds;                 /* steps taken; generation rounds (> steps only with refill) */
    long rollouts;                      /* sequences generated (every round) */
    long prompt_tokens, rollout_tokens; /* their prompt tokens, their generated tokens */
    long batch_tokens, trained_tokens;  /* tokens of the trained batches (packed), of those the loss counts */
    double flops_generate, flops_score, flops_train;
    double params_policy, params_generator, params_scorers; /* model sizes the FLOPs use (0: no such model) */
} stage_budget;

#define PL_BUDGET_WORDS 17 /* stage_budget as 64-bit words (checkpoints) */

typedef struct {
    int n_stages, n_datasets;
    int *ds_first;            /* [n_datasets + 1] offsets of each dataset's records in canon */
    int32_t *canon;           /* [records] example id by content: equal prompt + answer, equal id */
    int n_canon;
    unsigned char *seen;      /* [n_canon] bit 0: handed out by a grpo stage, bit 1: by an sft stage */
    stage_budget *st;         /* [n_stages] */
    long rl_cap;              /* top-level labels.max, -1 = none */
} pl_budget;

/* Builds the content ids of every dataset's records (prompt[d][i], answer[d][i]; n[d] records). */
void pl_budget_init(pl_budget *b, const train_config *tc, char **const *prompt, char **const *answer, const int *n);
void pl_budget_free(pl_budget *b);
/* Before training: the caps against what the config will consume (false + err naming the key). */
bool pl_budget_check_plan(const pl_budget *b, const train_config *tc, s2d_err *err);
/* Stage si starts: the parameter counts of its policy, its generator's model (0: none) and its scorers' models. */
void pl_budget_stage(pl_budget *b, int si, double policy, double generator, double scorers);
/* Stage si (dataset di) hands out n prompts idx[]; stage_unique / stage_total: the stage's counts after them.
 * False + err when a cap is exceeded. */
bool pl_budget_prompts(pl_budget *b, const train_config *tc, int si, int di, const int *idx, int n, long stage_unique,
                       long stage_total, s2d_err *err);
/* One generation round of stage si: rollouts sequences with prompt_tokens + rollout_tokens tokens. */
void pl_budget_round(pl_budget *b, int si, long rollouts, long prompt_tokens, long rollout_tokens);
/* One trained step of stage si: batch_tokens packed tokens, trained_tokens of them counted by the loss. */
void pl_budget_step(pl_budget *b, const train_config *tc, int si, long batch_tokens, long trained_tokens);
/* Pipeline totals over stages [0, n_stages): RL / SFT labels total and unique (by content), all labels unique. */
void pl_budget_totals(const pl_budget *b, const train_config *tc, long *rl_total, long *rl_unique, long *sft_total,
                      long *sft_unique, long *all_unique);
/* OUT/budget.json, atomically (stages [0, done) finished; the rest as far as they got). */
bool pl_budget_write(const pl_budget *b, const train_config *tc, const char *out_dir, s2d_err *err);
/* The budget table (one line per stage and a total line). */
void pl_budget_print(const pl_budget *b, const train_config *tc, FILE *f);
void pl_budget_pack(const stage_budget *s, uint64_t w[PL_BUDGET_WORDS]);
void pl_budget_unpack(const uint64_t w[PL_BUDGET_WORDS], stage_budget *s);
