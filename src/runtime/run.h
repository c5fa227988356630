/* run.h: state shared by the stage runner (pipeline.c) and its checkpoints, resume and HDF5 logs
 * (ckpt.c). Private to src/runtime/. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "runtime/pipeline.h"
#include "runtime/budget.h"
#include "io/dataset.h"
#include "model/generate.h"
#include "io/h5io.h"
#include "model/model_ckpt.h"
#include "io/metrics_tb.h"
#include "text/reward_cmd.h"
#include "text/tokenizer.h"

/* ---- named models and tokenizers ---- */
typedef struct {
    char name[64];
    model m;
    bool loaded;
    tokenizer *tok;      /* borrowed from the run's tokenizer list */
    const char *tok_dir; /* copied into saved model dirs */
    int def;             /* index in tc->models, or -1 for a stage output */
} named_model;

/* A dataset as prompt / answer / SFT-target strings. */
typedef struct {
    int n;
    char **prompt, **answer, **target;
} text_set;

typedef struct {
    double acc_before, acc_after, seconds, gen_s, score_s, learn_s;
    long labelled_total, labelled_unique, unlabelled_total, unlabelled_unique;
    bool has_eval;
} stage_summary;

/* Where a resumed run picks up (identical on every rank; the rest of the state is the scheduler's). */
typedef struct {
    bool active;
    char path[4096];      /* the checkpoint */
    int stage;            /* stages before it are done (their outputs come from the checkpoint) */
    long step;            /* steps of `stage` already taken (0 = start it; == steps: the stage is done) */
    long global_step;
    ckpt_state *st;       /* scheduler only: everything in the file */
} resume_point;

typedef struct {
    const train_config *tc;
    const char *out;
    named_model *models;
    int n_models;
    tokenizer **toks;
    int n_toks;
    text_set *data;  /* [tc->n_datasets] */
    atomic_file metrics; /* scheduler only */
    tok_bytes text;  /* decode scratch */
    transport *tp;
    long global_step; /* steps over all stages so far (fault injection, stop_after_step) */
    stage_summary *sums; /* [tc->n_stages] */
    resume_point resume;
    bool stopped;        /* fault.stop_after_step reached: every rank ends cleanly */
    /* scheduler: HDF5 logs (NULL when switched off) and the rows appended so far */
    rollout_log *rollouts;
    metrics_log *metrics_h5;
    metrics_tb *tb;      /* OUT/tensorboard/: metrics.jsonl mirrored as it is written (logging.tensorboard) */
    long log_rows;
    pl_budget *budget;   /* scheduler: labels and compute (budget.h); NULL on other ranks */
    reward_cmd *reward; /* scheduler: the running reward command (stage reward.command), NULL when none */
    double reward_timeout_s;
} pl_run;

/* The scheduler's data state of a stage: the shuffling cursor and the label accounting. */
typedef struct {
    ds_sampler *dsamp;
    unsigned char *seen; /* [n] prompts handed out at least once */
    int n;
    long unique, total;
    uint64_t sampling_seed; /* generator streams are Philox(sampling_seed, sequence id): no other RNG state */
} stage_cursor;

/* Metrics-table columns (OUT/metrics.h5), in this order. */
#define PL_METRIC_FIELDS                                                                                       \
    "loss", "reward_mean", "accuracy", "kl", "grad_norm", "lr", "clip_fraction", "tokens", "trained_tokens",  \
        "generated_tokens", "policy_version", "labelled_unique", "labelled_total", "unlabelled_prompts",       \
        "step_s", "tokens_per_s", "global_step", "pg_loss", "kl_loss", "entropy", "response_length_mean",         \
        "response_length_max", "truncation_rate", "reward_std", "advantage_std", "zero_variance_fraction"
#define PL_N_METRIC_FIELDS 26

/* ---- DAPO dynamic sampling with refill (refill.c; grpo.dynamic_sampling.mode: refill) ----
 * After a step's first generation round, the scheduler keeps the groups whose rewards differ and, while fewer
 * than prompts_per_step are kept and fewer than max_rounds rounds ran, draws prompts_per_step more prompts
 * (counted as labels consumed: their answers are checked), has the generators sample them (sequence ids
 * step << 32 | round·B + i: fresh streams, so deterministic for any layout) and keeps their varied groups. The
 * step's batch is the first prompts_per_step kept groups in round order; when the rounds run out, zero-variance
 * groups of the first round fill it and are masked (the filter). Collective over the scheduler and generators. */
typedef struct {
    transport *tp;
    generator *gen;          /* generators: this rank's */
    const gen_params *gp;
    int P, G, B, n_gen, max_new;
    bool is_sched, is_gen;
    const int *enc_start;    /* the stage's encoded prompts (CSR) */
    const int32_t *enc_ids;
    int *gstart, *gstart_local; /* [B + 1] */
    int32_t *gids;           /* [B * max prompt] */
    uint64_t *seq_ids;       /* [B] */
    int32_t *pack, *packs;   /* [pack_words] packed results: this generator's, the scheduler's gathered */
    size_t pack_words;
    size_t *pack_counts;     /* [ranks + 2] */
    /* scheduler: refill state, sized once per stage */
    int *keep_group;         /* [P] kept groups: index into the round's results */
    int *keep_round;         /* [P] */
    int *keep_prompt;        /* [P] their prompts */
    gen_result first, round; /* copies of the first round's results and of the latest round's, [B] sequences */
    gen_result kept;         /* the kept groups' sequences (becomes the step's results) */
    float *rewards;          /* [B] */
    int *idx;                /* [P] prompts of a round */
} pl_refill;

void pl_refill_init(pl_refill *f);
void pl_refill_free(pl_refill *f);
/* One generation round: the scheduler's prompts idx[P] (scheduler) out, every generator's share sampled, the
 * results gathered into *all (scheduler). seq ids step << 32 | (round·B + i). Collective over TP_GEN. */
bool pl_gen_round(pl_refill *f, int step, int round, int64_t version, const int *idx, gen_result *all, s2d_err *err);
/* After the first round (in *all, prompts idx): the refill rounds. Scheduler: *all and idx become the step's P
 * groups; *gen_tokens adds the extra rounds' generated tokens; the cursor, label counts and budget count the
 * extra prompts. Generators follow the scheduler's rounds. */
bool pl_refill_step(pl_refill *f, pl_run *r, int si, int step, int64_t version, stage_cursor *cur, const tokenizer *tok,
                    const text_set *ts, int *idx, gen_result *all, long *gen_tokens, s2d_err *err);

/* Scheduler: the run's budget from its datasets (checked against the caps before training) and, on --resume,
 * its state from the checkpoint. */
bool pl_budget_open(pl_run *r, pl_budget *b, s2d_err *err);

named_model *pl_find_named(pl_run *r, const char *name);
bool pl_mkdir_p(const char *path, s2d_err *err);

/* Collective over every rank: gathers the policy's AdamW shards on the scheduler (learner: this rank's learner,
 * NULL at a stage end or on ranks that are not learners) and the scheduler writes
 * OUT/checkpoints/ckpt-<si>-<steps_done>.h5 with every stage output so far, the optimizer (mid-stage), the
 * data cursor and label counters (cur, scheduler), summaries, counters and metrics.jsonl so far. */
bool pl_checkpoint(pl_run *r, int si, long steps_done, bool mid_stage, const stage_cursor *cur, pl_learner *learner,
                   s2d_err *err);
/* pipeline_run's start on --resume: the scheduler finds the newest complete checkpoint in OUT/checkpoints,
 * loads it and checks the config; every rank gets the resume point. */
bool pl_resume_begin(pl_run *r, s2d_err *err);
/* Every rank: the output of stage si (done before the resume point) from the checkpoint. */
bool pl_resume_stage_output(pl_run *r, int si, named_model *out, s2d_err *err);
/* Mid-stage resume of stage si: the policy's weights (every rank), the optimizer shard (learners), the cursor,
 * counters and this stage's summary so far (scheduler). */
bool pl_resume_stage(pl_run *r, int si, named_model *out, pl_learner *learner, stage_cursor *cur, s2d_err *err);
/* Scheduler: opens the HDF5 logs (fresh, or on resume cut back to the checkpoint's rows and appended to). */
bool pl_logs_open(pl_run *r, s2d_err *err);
bool pl_logs_close(pl_run *r, s2d_err *err);
/* Scheduler: flushes metrics.jsonl and mirrors its new lines into OUT/tensorboard/ (no-op when switched off). */
bool pl_tb_sync(pl_run *r, s2d_err *err);
