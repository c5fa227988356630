/* pipeline_run.h: state shared by the stage runner (pipeline.c) and its checkpoints, resume and HDF5 logs
 * (pipeline_ckpt.c). Private to src/algo/pipeline*.c. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "algo/pipeline.h"
#include "io/dataset.h"
#include "io/h5io.h"
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
    long log_rows;
    reward_cmd *reward; /* scheduler: the running reward command (stage reward.command), NULL when none */
    double reward_timeout_s;
} run;

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
        "step_s", "tokens_per_s"
#define PL_N_METRIC_FIELDS 16

named_model *pl_find_named(run *r, const char *name);
bool pl_mkdir_p(const char *path, s2d_err *err);

/* Collective over every rank: gathers the policy's AdamW shards on the scheduler (L: this rank's learner,
 * NULL at a stage end or on ranks that are not learners) and the scheduler writes
 * OUT/checkpoints/ckpt-<si>-<steps_done>.h5 with every stage output so far, the optimizer (mid-stage), the
 * data cursor and label counters (cur, scheduler), summaries, counters and metrics.jsonl so far. */
bool pl_checkpoint(run *r, int si, long steps_done, bool mid_stage, const stage_cursor *cur, pl_learner *L,
                   s2d_err *err);
/* pipeline_run's start on --resume: the scheduler finds the newest complete checkpoint in OUT/checkpoints,
 * loads it and checks the config; every rank gets the resume point. */
bool pl_resume_begin(run *r, s2d_err *err);
/* Every rank: the output of stage si (done before the resume point) from the checkpoint. */
bool pl_resume_stage_output(run *r, int si, named_model *out, s2d_err *err);
/* Mid-stage resume of stage si: the policy's weights (every rank), the optimizer shard (learners), the cursor,
 * counters and this stage's summary so far (scheduler). */
bool pl_resume_stage(run *r, int si, named_model *out, pl_learner *L, stage_cursor *cur, s2d_err *err);
/* Scheduler: opens the HDF5 logs (fresh, or on resume cut back to the checkpoint's rows and appended to). */
bool pl_logs_open(run *r, s2d_err *err);
bool pl_logs_close(run *r, s2d_err *err);
