/* stage.h: one stage of a run as a context and a step protocol. Private to src/runtime/.
 *
 * stage_open sizes everything a stage's steps use once (one arena holds every host step buffer; the models,
 * workspaces, generators, learner and queues are the other resources) and stage_close is the one cleanup path,
 * safe on a context that stage_open left half-built. A step is the functions below, one per step of the data
 * flow (docs/design.md §2), each a collective over the named group it says; stage_steps drives them. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "runtime/rollouts.h"
#include "runtime/run.h"

/* A text set rendered with the chat template and tokenized (CSR). */
typedef struct {
    int n;
    int *start;      /* [n + 1] prompt ids */
    int32_t *ids;
    int *tstart;     /* [n + 1] SFT target ids (+ stop) */
    int32_t *tids;
    int max_prompt, max_target;
} enc_set;

/* Greedy accuracy of the policy on the first `n` records of an eval set (scheduler). */
typedef struct {
    generator *gen;
    enc_set enc;
    const text_set *ts;
    int n;
    gen_params gp;
    uint64_t *seq_ids;
} evaluator;

/* Per-rank timing of one step, gathered by the scheduler. */
typedef struct {
    int32_t role, pad;
    double gen, score, learn, sync;
    double wall; /* this rank's own step span: busy fractions are phases over it (so within 0..1) */
} step_times;

/* The scheduler's view of a step's phases over every rank: the slowest rank's seconds per phase and the mean
 * busy fraction of each role's ranks. */
typedef struct {
    double gen_s, score_s, learn_s, sync_s;
    double busy_generators, busy_scorers, busy_learners;
} step_phases;

typedef struct {
    pl_run *r;
    int si;
    const tc_stage *s;
    transport *tp;
    stage_summary *sum;
    bool is_sched, is_gen, is_scorer, is_learner;
    bool learner_root;         /* learner 0 (or the local process): sends stats and weights */
    int n_scorers;             /* scorer groups splitting the micro-batches (1 when local) */
    /* models */
    named_model *out;          /* the stage's output: a copy of the policy, trained in place on every rank */
    named_model *teacher, *reference;
    model *policy;             /* &out->m */
    bool need_ref;             /* the objective uses a reference (opd λ != 1, grpo kl_beta > 0) */
    model ref_copy;            /* the policy's initial weights when no reference is named (scorers) */
    bool own_ref;
    const model *ref;          /* scorers: the reference model, or NULL */
    tokenizer *tok;
    int32_t stops[GEN_MAX_STOP];
    int n_stop;
    /* data */
    int di;                    /* the stage's dataset */
    const text_set *ts;
    enc_set enc;
    /* shape of a step */
    bool generate, fkl_logits, refill, labelled, has_eval;
    int P, G, B, M, max_seq, maxT, V;
    /* every host buffer of the step loop, in one arena (sized in stage_open) */
    arena mem;
    pl_batch b;
    float *rewards, *adv;      /* [B] */
    bool *zero_var;            /* [P] */
    unsigned char *seen;       /* [n prompts] */
    int *mseq, *mb_seq;        /* [B + 2] rebased seq_start of a micro-batch / minibatch */
    int32_t *prompt_len;       /* [B] */
    float *old_all;            /* [maxT] the fixed old policy's log-probs (minibatches > 1), else NULL */
    float *ref_rows;           /* scorers of opd full at λ != 1: [maxT, V] the reference's rows, else NULL */
    step_times *times;         /* [ranks + 1] */
    size_t *time_counts;       /* [ranks + 1] */
    /* roles */
    pl_rollouts rq;
    pl_learner learner;
    bool learner_open;
    model_ws *teacher_ws, *ref_ws;
    generator *gen;
    gen_params gp;
    pl_refill rf;
    bool refill_open;
    evaluator ev;
    ds_sampler dsamp;
    stage_cursor cur;
    int64_t version;           /* policy version: optimizer steps of this stage behind the generators' weights */
    int step0;                 /* first step of this session (> 0 on a mid-stage resume) */
    double t_stage, seconds_before;
    char layout[64];
} stage_ctx;

/* One step in flight. */
typedef struct {
    int step;                  /* 0-based */
    double t0;
    step_times me;
    pl_rollout *rx;            /* scheduler: the step's rollouts (queue front) */
    const int *idx;            /* scheduler: [P] its prompts */
    gen_result res;            /* scheduler: [B] its completions */
    long gen_tokens;
    int T;                     /* tokens in the batch */
    double reward_mean, acc;   /* grpo; NaN elsewhere */
    pl_learn_stats st;
    double wall;
} step_state;

/* stage.c */
bool stage_open(stage_ctx *c, pl_run *r, int si, stage_summary *sum, s2d_err *err);
void stage_close(stage_ctx *c);
/* Scheduler: greedy accuracy of the policy on the eval set, and its metrics.jsonl line at `step`. */
typedef enum { EVAL_BEFORE, EVAL_DURING, EVAL_AFTER } stage_eval_when; /* names the log line */
bool stage_eval(stage_ctx *c, int step, stage_eval_when when, double *acc, s2d_err *err);
/* Scheduler: sequence i's reward from the stage's reward command (its problem is record p). */
bool stage_command_reward(stage_ctx *c, int p, int sample, int step, float *reward, s2d_err *err);

/* step.c: the step protocol, in order */
/* 1-2. TP_GEN (scheduler, generators): prompts out, completions back (now, or sampled ahead); refill rounds. */
bool step_rollouts(stage_ctx *c, step_state *x, s2d_err *err);
/* 3. scheduler: the packed batch, verified rewards and group advantages. */
bool step_build_batch(stage_ctx *c, step_state *x, s2d_err *err);
/* 4. TP_BATCH (scheduler → scorers, learners): the batch; TP_PAYLOAD (scorers → learners): scored log-probs. */
void step_send_batch(stage_ctx *c, step_state *x);
bool step_score(stage_ctx *c, step_state *x, s2d_err *err);
/* 5. learners: loss, backward, gradient reduction, AdamW. */
void step_learn(stage_ctx *c, step_state *x);
/* 6. TP_WEIGHTS (learner root → scheduler, generators): statistics and the new weights. */
void step_publish(stage_ctx *c, step_state *x);
/* 7. TP_WORLD: timings to the scheduler; scheduler: metrics, logs, periodic eval and model saves. */
bool step_log(stage_ctx *c, step_state *x, s2d_err *err);
/* End of a step (TP_WORLD): the checkpoint at the cadence; *stop when fault.stop_after_step is reached. */
bool step_end(stage_ctx *c, step_state *x, bool *stop, s2d_err *err);
/* The stage's steps from c->step0, then its end: final weights to every rank, eval, labels, save, checkpoint. */
bool stage_steps(stage_ctx *c, s2d_err *err);

/* resources.c: the run's named models, data and encodings */
bool pl_ensure_loaded(pl_run *r, named_model *nm, s2d_err *err);
void pl_model_copy(model *dst, const model *src);
const model_config *pl_cfg_of(pl_run *r, const named_model *nm);
bool pl_save_model(pl_run *r, const named_model *nm, s2d_err *err);
bool pl_load_text_set(const tc_dataset *d, text_set *ts, s2d_err *err);
void pl_free_text_set(text_set *ts);
int pl_stop_ids(const train_config *tc, const tokenizer *tok, int32_t *ids, int max);
bool pl_encode_set(const train_config *tc, const tokenizer *tok, const text_set *ts, int32_t stop, enc_set *e,
                   s2d_err *err);
void pl_free_enc_set(enc_set *e);

/* One stage, start to end (collective over every rank): stage_open, stage_steps, stage_close. */
bool pl_run_stage(pl_run *r, int si, stage_summary *sum, s2d_err *err);
