/* train_config.h: the schema of `s2d train` configs (YAML, strict: core/config.h), resolved and validated.
 *
 *   seed: 1
 *   prompt: {template: qwen3, instruction: ""}        # chat template (text/chat.h; absent or auto: the policies'
 *                                                    # tokenizer_config.json chat_template, else qwen3), instruction
 *   models:
 *     teacher: {path: /models/Qwen3-8B}                # HF dir (config.json, safetensors, tokenizer.json)
 *     student: {init: {preset: qwen3-tiny, seed: 2, hidden_size: 48}, tokenizer: configs/demo/tokenizer}
 *   datasets:
 *     train: {task: arith, split: train, size: 2000, seed: 1, ops: 2, max_operand: 9}
 *            (left_to_right or right_to_left: P, 0..1: that share of the worked solutions whose value in that
 *            order differs follows it, a misconception of the SFT data; io/arith_task.h)
 *     math:  {file: data/math.jsonl, format: math}  # dataset.h formats; optional limit: N (first N records)
 *   pipeline:
 *     - name: teacher_rl       # unique; output model name defaults to the stage name (output: other)
 *       algo: grpo             # sft | grpo | fkl | opd
 *       policy: teacher        # a model, or an earlier stage's output; the stage trains a copy
 *       teacher: ...           # fkl / opd: the frozen teacher (same vocabulary as the policy)
 *       reference: ...         # opd / grpo-KL: default = the policy's initial weights
 *       data: train            steps: 20   prompts_per_step: 8   group_size: 4
 *       grpo: {clip_low, clip_high, dual_clip, kl_beta, kl_estimator: k1|k2|k3,
 *              agg: token-mean|seq-mean-token-mean|seq-mean-token-sum-norm,
 *              std: unbiased|population|none   # default unbiased (verl, TRL); std_normalize: true = population,
 *                                                # false = none (the older key; give one of the two)
 *              filter_zero_variance, mask_truncated, tis_cap,
 *              dynamic_sampling: {mode: filter|refill, max_rounds: 4}} # DAPO: refill generates more rounds of
 *                                                # prompts until the step holds prompts_per_step groups with
 *                                                # non-zero reward variance (at most max_rounds rounds)
 *       labels: {max: N}       # cap on the unique labelled examples this stage may consume (runtime/budget.h)
 *       fkl: {mode: full|topk|sampled, topk: 16}
 *       opd: {lambda: 1, gamma: 0, clip_low, clip_high, agg, mode: sampled|full|topk, topk: 16}
 *       optimizer: {lr, beta1, beta2, eps, weight_decay, clip, schedule: constant|warmup|cosine, warmup, min_lr}
 *       sampling: {temperature, top_p, top_k, max_new_tokens}
 *       eval: {data, every, problems, max_new_tokens}    # greedy accuracy on the first `problems` records;
 *                              # also before and after the stage (the old name eval.samples is an error)
 *       reward: {command: "python3 r.py", timeout_s: 60}  # grpo: rewards from a long-lived command speaking
 *                              # JSON lines (text/reward_cmd.h) instead of the built-in verifier
 *       checkpoint: {every, keep_last} # OUT/models/<output>/ every N steps; always at the end of the stage;
 *                              # keep_last: N keeps the newest N checkpoint files (0 = all)
 *       minibatches: 1        # grpo / opd: N optimizer steps per step on N contiguous minibatches of its
 *                              # rollouts, log-probs of the old policy fixed before the first (PPO clipping acts)
 *       micro_batches: 1       # the step's sequences in M fixed micro-batches: gradients are summed over a fixed
 *                              # pairwise tree of micro-batches, so any number of learners gives the same bits
 *   roles: {generators: 1, scorers: 1, learners: 1}   # under mpirun/srun: world size = 1 + their sum
 *   runtime: {timeout_s: 120,  # a rank waiting longer than this for a payload ends the job with a message
 *             heartbeat_s: 30, # a worker that hears no scheduler heartbeat this long ends the job, and the
 *                              # scheduler one that hears none from a worker (0 = off)
 *             reduce: deterministic|fast, bucket_mb: 0,  # fast: buckets reduced during the backward (0 = after)
 *             max_policy_lag: 0} # rollouts sampled up to N steps ahead of the learners (0 = synchronous)
 *   fault: {rank: R, at_step: K, kind: kill|error|hang} # test only: rank R kills itself / dies / hangs at global step K
 *   fault: {stop_after_step: K} # test only: every rank stops cleanly after the checkpoint of global step K
 *   logging: {rollouts: true, metrics_h5: true, tensorboard: true}   # OUT/rollouts.h5, OUT/metrics.h5 and
 *                                                    # OUT/tensorboard/ (written by the scheduler)
 *   labels: {max: N}           # cap on the unique RL (grpo) labelled examples over the whole pipeline
 *
 * Checkpoints: OUT/checkpoints/ckpt-SS-STEP.h5 at every checkpoint.every steps of a stage and at every stage end
 * (pipeline.h); `s2d train --resume` continues from the newest one.
 *
 * train_config_load reads the file, applies --set overrides (validated like the file), reads every key
 * (typed, ranged: errors name FILE:LINE:COL and the key path), rejects unknown keys, and checks the plan:
 * model names exist by the time a stage uses them, datasets exist, teacher and policy vocabularies match.
 * Model architectures are resolved from config.json or the init preset (no weights are read). */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "io/arith_task.h"
#include "algo/losses.h"
#include "algo/optim.h"
#include "runtime/transport.h"
#include "core/config.h"
#include "io/dataset.h"
#include "model/model.h"
#include "ops/sampler.h"
#include "text/chat.h"

typedef enum { ALGO_SFT = 0, ALGO_GRPO = 1, ALGO_FKL = 2, ALGO_OPD = 3 } train_algo;
typedef enum { FKL_FULL = 0, FKL_TOPK = 1, FKL_SAMPLED = 2 } fkl_mode;
/* The teacher distribution a stage's loss reads per trained row: none (per-token log-probs at most; 0, so a
 * zeroed stage has none), the full vocabulary, or the top-k ids and a tail bucket. */
typedef enum { DIST_NONE = 0, DIST_FULL = 1, DIST_TOPK = 2 } teacher_dist_kind;
/* grpo.dynamic_sampling.mode: off (keep every group), filter (mask zero-variance groups), refill (DAPO) */
typedef enum { DYN_OFF = 0, DYN_FILTER = 1, DYN_REFILL = 2 } dyn_mode;
const char *train_algo_name(train_algo a);

/* fault.kind, in the order of the config names kill, error, hang, stop. */
typedef enum {
    FAULT_KILL = 0,  /* SIGKILL itself */
    FAULT_ERROR = 1, /* die() */
    FAULT_HANG = 2,  /* sleep: the peers' receive timeouts must end the job */
    FAULT_STOP = 3,  /* SIGSTOP: the process and its heartbeat freeze, the launcher sees nothing */
} tc_fault;

typedef struct {
    char name[64];
    char where[256];    /* FILE:LINE:COL of its entry */
    char *path;         /* HF dir or NULL (init) */
    char *init_preset;  /* preset name or NULL */
    uint64_t init_seed;
    char *tokenizer;    /* tokenizer dir (default: path) or NULL */
    model_config cfg;   /* resolved architecture */
    bool cfg_known;     /* false only in a dry run when path has no readable config.json */
} tc_model;

typedef struct {
    char name[64];
    char where[256];
    bool arith;          /* the built-in task */
    arith_params arith_p;
    arith_split split;
    int size;            /* arith: problems; file: max records (0 = all) */
    char *file;
    ds_format format;
} tc_dataset;

typedef struct {
    char name[64], output[64];
    char where[256];        /* FILE:LINE:COL of the stage */
    train_algo algo;
    char policy[64], teacher[64], reference[64]; /* "" when absent */
    char data[64];
    int steps, prompts_per_step, group_size;
    /* grpo */
    grpo_opts grpo;
    grpo_std std;          /* grpo.std */
    bool filter_zero_variance, mask_truncated; /* filter_zero_variance = dyn != DYN_OFF */
    dyn_mode dyn;          /* grpo.dynamic_sampling.mode */
    int dyn_max_rounds;    /* grpo.dynamic_sampling.max_rounds: generation rounds per step at most (refill) */
    long labels_max;       /* labels.max: unique labelled examples this stage may consume; -1 = no cap */
    /* fkl */
    fkl_mode fkl;
    int topk;
    /* opd */
    opd_opts opd;
    fkl_mode opd_mode;     /* opd.mode: sampled (the sampled token's weight), full or topk (the per-position
                              reverse KL against the teacher's distribution, docs/design.md) */
    int opd_topk;          /* opd.topk */
    /* the teacher distribution the loss reads at every trained row (fkl.mode of fkl, opd.mode of opd; none
       otherwise and for mode sampled); teacher_topk its top-k size */
    teacher_dist_kind teacher_dist;
    int teacher_topk;
    /* optimizer */
    adamw_hparams adam;
    lr_schedule sched;
    float clip;
    /* sampling */
    sampler_params sampling;
    int max_new_tokens;
    /* eval */
    char eval_data[64];     /* "" = no eval */
    int eval_every, eval_problems, eval_max_new_tokens; /* eval.problems: the first N records, greedy */
    /* reward: {command, timeout_s}: grpo rewards from a command (text/reward_cmd.h); NULL = built-in verifier */
    char *reward_command;
    double reward_timeout_s;
    int ckpt_every;         /* 0 = only at the end */
    model_recompute recompute; /* training.recompute: per-layer activation recomputation in the learner */
    int ckpt_keep_last;     /* checkpoint.keep_last: keep the newest N checkpoints in OUT/checkpoints (0 = all) */
    int minibatches;        /* grpo/opd: optimizer steps per step, on contiguous minibatches, old policy fixed */
    int micro_batches;      /* fixed split of the step's sequences (layout-independent gradient sums) */
} tc_stage;

typedef struct {
    cfg_node *root;
    char *path;
    char device[32];     /* device: (default cpu; --device overrides): the backend of every model here */
    uint64_t seed;
    chat_template chat;
    char *instruction;      /* "" = the problem alone */
    tc_model *models;
    int n_models;
    tc_dataset *datasets;
    int n_datasets;
    tc_stage *stages;
    int n_stages;
    int n_generators, n_scorers, n_learners; /* roles: (used under a launcher) */
    double timeout_s;       /* runtime.timeout_s */
    double heartbeat_s;     /* runtime.heartbeat_s: scheduler and worker liveness under MPI; 0 = off */
    tp_reduce_mode reduce;  /* runtime.reduce: deterministic (fixed tree, any learner count bitwise) | fast */
    double bucket_mb;       /* runtime.bucket_mb: fast mode, gradients reduce-scattered in buckets of this many MB
                               while the backward runs (layers last to first); 0 = one reduce-scatter after it */
    int max_policy_lag;     /* runtime.max_policy_lag: generators sample up to this many steps ahead of the
                               learners (0 = synchronous steps) */
    int fault_rank, fault_step; /* test-only fault injection; fault_rank -1 = none */
    tc_fault fault_kind;    /* fault.kind (test only) */
    long stop_after_step;   /* test only: stop cleanly after the checkpoint of this global step; 0 = never */
    bool log_rollouts, log_metrics_h5, log_tensorboard; /* logging: */
    long labels_max;        /* labels.max: unique RL labelled examples over the pipeline; -1 = no cap */
} train_config;

/* The pairwise tree over micro-batches [lo, hi): children [lo, mid) and [mid, hi). */
static inline int microbatch_tree_split(int lo, int hi) { return lo + (hi - lo + 1) / 2; }
/* True when every learner's contiguous block of micro-batches (tp_split) is a node of that tree, so each learner
 * sums a whole subtree and the cross-learner sums follow the same tree. */
bool tc_tree_aligned(int micro_batches, int learners);

/* Loads, overrides (sets[i] = "a.b=value"), reads and validates. dry_run: a model path without a readable
 * config.json is allowed (architecture unknown, vocabulary unchecked). */
bool train_config_load(const char *path, char *const *sets, int n_sets, bool dry_run, train_config *tc,
                       s2d_err *err);
void train_config_free(train_config *tc);
int tc_find_dataset(const train_config *tc, const char *name);
/* Does the resolved config b describe the same run as a (the checkpoint's)? Keys that do not change the math
 * (roles, runtime, fault, out) may differ; false + err naming the first differing key otherwise. */
bool train_config_same_run(cfg_node *a, cfg_node *b, s2d_err *err);
/* Human-readable plan (one block per stage) for --dry-run. */
void train_config_print_plan(const train_config *tc, FILE *out);
