/* pipeline.h: the single-process training pipeline behind `s2d train` (DESIGN §2-§3).
 *
 * Every role is local: the stage runner generates rollouts (generator), scores them (verifier reward;
 * teacher / reference per-token log-probs; teacher top-k or full distributions for forward KL, chunked through
 * the LM-head callback) and learns (losses.h → model backward → clip → AdamW). All buffers are sized for the
 * stage's largest batch when the stage starts; the step loop allocates nothing of its own (generator_run
 * returns its results in arrays it allocates, see generate.h).
 *
 * Row layout: a step's batch is packed (model.h) as prompt + completion per sequence. Row t holds the
 * quantities of the token at t + 1 (model_token_logprobs_from_ws), so the per-token arrays of losses.h are
 * laid over rows with mask[t] = 1 exactly where tokens[t + 1] is a completion (or target) token. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "algo/losses.h"
#include "algo/optim.h"
#include "runtime/train_config.h"
#include "runtime/transport.h"
#include "model/model.h"

/* One step's packed batch and the per-row signals the loss needs (all [T] unless said otherwise). */
typedef struct {
    int n_seqs;
    int *seq_start;        /* [n_seqs + 1] */
    int32_t *tokens;       /* [T] prompt + completion per sequence */
    float *mask;           /* 1 where the row predicts a trained token */
    float *logp_behaviour; /* generator's log-probs (grpo tis), 0 elsewhere */
    float *adv;            /* grpo: the sequence's advantage on its rows */
    float *logp_teacher;   /* opd */
    float *logp_ref;       /* opd, grpo KL */
    float temperature;     /* log-probs (learner, teacher, reference; fkl both sides) are taken on logits / it:
                              the stage's sampling temperature (pl_stage_temperature), so TIS and the losses see
                              the distribution sampled from; 0 / 1 = untempered */
    /* fkl: teacher distribution per masked row; row_slot[t] = its index among masked rows or -1 */
    int *row_slot;
    int n_rows;
    int32_t *topk_ids;     /* [n_rows, k] */
    float *topk_logp;      /* [n_rows, k] */
    float *full_logp;      /* [n_rows, V] */
    /* fkl on device backends: device copies of row_slot and the teacher data (pl_fkl_buffers_new), NULL on
     * host-memory backends, where the host arrays above are used in place */
    struct pl_fkl_buffers *fkl_dev;
} pl_batch;

/* Device buffers for a stage's forward-KL teacher data: row slots [max_rows] and top-k [max_rows, k] or full
 * log-probs [max_rows, V]. NULL when q's memory is host memory (nothing to stage). */
typedef struct pl_fkl_buffers pl_fkl_buffers;
pl_fkl_buffers *pl_fkl_buffers_new(ops_queue *q, int max_rows, int k, int V, bool full);
void pl_fkl_buffers_free(pl_fkl_buffers *d);

typedef struct {
    double loss, kl, grad_norm, lr;
    double pg_loss, kl_loss; /* grpo: loss = pg_loss + kl_loss (= β·kl); opd: pg_loss = loss; NaN where none */
    double clip_fraction;
    long tokens;           /* trained tokens (mask sum) */
} pl_learn_stats;

/* The learner of a stage: the trained policy, its optimizer shard and per-row scratch.
 *
 * Data parallel with a layout-independent result: the step's sequences are cut into `micro_batches` fixed
 * micro-batches (tp_split), learner j owns a contiguous block of them, and gradients are summed over the fixed
 * pairwise tree of micro-batches (microbatch_tree_split): each learner sums its subtree, learners combine subtrees
 * up the same tree (send/recv), so 1, 2, 4 ... learners add the same floats in the same order. The loss is
 * computed on the whole batch on every learner from all-gathered per-token log-probs. ZeRO-1: learner j
 * keeps AdamW m/v only for its contiguous shard [shard_lo, shard_hi) of the flat parameters; learner 0 clips
 * the total gradient, sends each learner its shard, every learner updates its shard and the shards are
 * all-gathered so every learner holds the new weights. */
typedef struct {
    model *policy;         /* trained in place */
    model_ws *ws;          /* training workspace for the largest micro-batch */
    adamw opt;             /* shard of the optimizer state: n = shard_hi - shard_lo */
    adamw norm;            /* only n, n_blocks, norm_partials: the full-gradient norm on learner 0 */
    transport *tp;         /* NULL: one local learner */
    int micro_batches, n_learners, index;
    tp_reduce_mode reduce; /* runtime.reduce (set by the caller after init; default deterministic) */
    size_t bucket_floats;  /* fast mode: reduce-scatter buckets of at least this many floats during the backward
                              (pl_learner_set_buckets; 0 = one reduce-scatter after it) */
    float **spine;         /* [tree_depth] bucketed fast mode: the tree buffers on the path of the last leaf */
    int n_spine;
    size_t pend_lo, pend_hi; /* gradient floats [pend_lo, pend_hi) final but not yet in a bucket */
    int n_buckets;         /* buckets started in the current step */
    long shard_lo, shard_hi;
    float *tree_bufs;      /* [depth, n_params] device: partial sums of the gradient tree */
    int tree_depth;
    float *recv;           /* [n_params] device: a partial sum from another learner */
    double *row_kl;        /* host [max_tokens] fkl: KL per row of a micro-batch */
    double *row_kl_dev;    /* device copy on device backends, else NULL */
    int ws_holds;          /* micro-batch whose forward is in ws, -1 none */
    int *mseq;             /* [max_tokens + 1] rebased seq_start of a micro-batch */
    double *kl_part;       /* [micro_batches] fkl sums per micro-batch */
    int max_tokens;
    float *logp, *logp_old, *dlogp; /* [max_tokens] */
    const float *fixed_old; /* [rows of the batch] the old policy's log-probs when set (minibatches), else NULL */
    float fkl_scale;       /* fkl: gradient scale of the step (token mean over taught rows) */
} pl_learner;

/* One local learner, one micro-batch (tests). */
void pl_learner_init(pl_learner *learner, model *policy, int max_tokens, const tc_stage *s);
/* Learner `tp->index` of tp->n_learn (tp NULL or local: the only one); max_tokens: the whole step's tokens. */
void pl_learner_init_dist(pl_learner *learner, model *policy, int max_tokens, const tc_stage *s, transport *tp,
                          int micro_batches);
/* View of micro-batch mb of M over b (rebased seq_start in seq_scratch [>= its seqs + 1]); *row0 = its first row. */
void pl_micro_view(const pl_batch *b, int M, int mb, pl_batch *v, int *seq_scratch, int *row0);
void pl_learner_free(pl_learner *learner);
/* runtime.bucket_mb: fast-mode buckets of bucket_mb MB (merged so that at most TP_MAX_BUCKETS / 2 are needed);
 * 0 = off. */
void pl_learner_set_buckets(pl_learner *learner, double bucket_mb);
/* One optimizer step on b with the stage's objective; step is 0-based (learning-rate schedule). Collective
 * over the learners; st is complete on learner 0 (loss and token counts on all). */
void pl_learn_step(pl_learner *learner, const tc_stage *s, const pl_batch *b, long step, pl_learn_stats *st);

/* Per-row log-probs of b's tokens under the current policy, on every learner (collective over the learners;
 * the same micro-batches and ranks as pl_learn_step): the fixed old policy of a step's minibatches. */
void pl_learn_logprobs(pl_learner *learner, const pl_batch *b, float *out);

/* The temperature of stage s's log-probs: its sampling temperature when it generates (0, greedy, and sft: 1). */
float pl_stage_temperature(const tc_stage *s);

/* Scoring: per-row log-probs of b's tokens under a frozen model (ws: inference workspace of that model), at
 * b->temperature. */
bool pl_score_logprobs(const model *m, model_ws *ws, const pl_batch *b, float *logp, s2d_err *err);
/* fkl teacher side: fills b->topk_* (mode topk, k ids per masked row) or b->full_logp (mode full). */
bool pl_score_fkl(const model *teacher, model_ws *ws, const tc_stage *s, pl_batch *b, s2d_err *err);
/* opd.mode full / topk: pl_score_fkl and, from the same forward, the teacher's log-probs of the batch's tokens
 * (logp [T], for the metrics and the rollout log). */
bool pl_score_teacher_dist(const model *teacher, model_ws *ws, const tc_stage *s, pl_batch *b, float *logp,
                           s2d_err *err);
/* opd.mode full at λ ≠ 1: the reference's part of G-OPD's per-position objective is exact too. The scorer ships
 * one target row per position, λ log p_T + (1 − λ) log p_ref (pl_score_opd_target), and the learner's
 * vocabulary op takes it with λ = 1 and no sampled-token term. */
bool pl_opd_exact_reference(const tc_stage *s);
/* pl_score_teacher_dist for the teacher and for the reference (whose rows go to ref_rows [b->n_rows, V] and its
 * token log-probs to logp_ref [T]), then b->full_logp's rows of this view = λ·teacher + (1 − λ)·reference. */
bool pl_score_opd_target(const model *teacher, model_ws *tws, const model *ref, model_ws *rws, const tc_stage *s,
                         pl_batch *b, float *logp_teacher, float *logp_ref, float *ref_rows, s2d_err *err);
/* The vocabulary op (ops.h) of stage s's forward KL on rows [0, T) of b, whose teacher data it points at (the
 * host arrays, or b->fkl_dev's device copies, uploaded here when upload is set). */
void pl_fkl_op(ops_queue *q, const tc_stage *s, const pl_batch *b, int T, float scale, bool upload, ops_vocab_op *op);
/* Mean forward KL(teacher ‖ m) over b's masked rows from b's teacher data (for tests and metrics). */
double pl_fkl_value(const model *m, model_ws *ws, const tc_stage *s, const pl_batch *b);

/* Runs the whole pipeline of tc; writes OUT/config.yaml, OUT/metrics.jsonl, OUT/budget.json, OUT/models/<name>/,
 * OUT/checkpoints/ckpt-SS-STEP.h5 (every checkpoint.every steps and at every stage end), OUT/rollouts.h5 and
 * OUT/metrics.h5 (logging:), and prints the summary table on stdout. False + err on bad input found while
 * loading (models, tokenizers, data, the checkpoint).
 *
 * resume: continue from the newest complete checkpoint in OUT/checkpoints (every rank restores what it holds:
 * stage outputs, the policy, learners their ZeRO-1 slice of the AdamW moments, so the learner count may
 * differ from the run that wrote it); metrics.jsonl restarts from the checkpoint's copy and the HDF5 logs are
 * cut back to the checkpoint's rows, so the finished files equal an uninterrupted run's.
 * *stopped: the run ended at fault.stop_after_step (a checkpoint was written there). */
/* Before a run (scheduler only): a fresh run (no resume) into a non-empty OUT is refused unless overwrite
 * (which removes the earlier run's checkpoints, logs and config.yaml); dead temp files in OUT are removed. */
bool pl_prepare_out(const char *out, bool resume, bool overwrite, s2d_err *err);
/* The input files a run reads (tokenizers, dataset files) exist and are regular files: checked before anything
 * is written. warn_only (--dry-run, whose configs may name files of another machine): warnings, true. */
bool pl_check_inputs(const train_config *tc, bool warn_only, s2d_err *err);
bool pipeline_run(const train_config *tc, const char *out_dir, transport *tp, bool resume, bool *stopped,
                  s2d_err *err);
/* Decay segments of m's tensor table (no decay on norms and embeddings) intersected with [lo, hi) of the flat
 * parameters and shifted to start at 0: a ZeRO-1 shard's optimizer, or the whole one (0, n_params). */
void pl_optim_segments(adamw *opt, const model *m, long lo, long hi);
