/* study.h: the parts of `s2d study` (cli/cmd_study.c: config and run tree; cli/study_run.c: child processes;
 * cli/study_report.c: statistics, study.md / study.json / study.png). docs/study.md describes the command. */
#pragma once
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/common.h"

enum { ST_MAX_STAGES = 32, ST_MAX_SETS = 64, ST_MAX_ARMS = 32, ST_MAX_CLAIMS = 32, ST_MAX_SEEDS = 64 };

/* ---- the study config ---- */
typedef struct {
    char name[64];
    char text[256];
    int n_stages;
    char stages[ST_MAX_STAGES][64];
    int n_sets;
    char *sets[ST_MAX_SETS];         /* "stage.key.path=value" */
} arm_def;

typedef struct {
    char id[64], better[64], worse[64];
    char text[256], paper[128];
} claim_def;

typedef struct {
    char path[PATH_MAX];
    char base[PATH_MAX];
    char out[PATH_MAX];
    int seeds, seed_base, jobs;
    int n_sets;
    char *sets[ST_MAX_SETS];
    int n_shared, n_prefix;
    char shared[ST_MAX_STAGES][64], prefix[ST_MAX_STAGES][64];
    char start[64];
    char eval_data[64];
    int eval_samples, eval_max_new, eval_limit;
    int eval_plot_samples; /* samples per problem where no claim and no table reads the node (default eval_samples) */
    double eval_temperature, eval_top_p;
    int64_t eval_seed;     /* base of the eval seeds: seed s's models are sampled with eval_seed + s (study_eval_seed) */
    bool metric_greedy;
    bool kernels_native;  /* false (portable): children pinned to CPU-independent kernels at one thread */
    char reference[64];
    int n_arms;
    arm_def arms[ST_MAX_ARMS];
    int n_claims;
    claim_def claims[ST_MAX_CLAIMS];
} study_def;

/* The sampling seed of every evaluation of seed `seed`'s models: one per training seed, shared by all of that
 * seed's arms (their paired differences share the draws), independent across seeds (one eval seed for all seeds
 * would make the seeds' sampling noise common to them, which the seeds' SE cannot see). */
static inline int64_t study_eval_seed(const study_def *st, int seed) { return st->eval_seed + seed; }

/* ---- the tree of single-stage runs ---- */
typedef enum { ALG_OTHER = 0, ALG_SFT, ALG_GRPO, ALG_FKL, ALG_OPD } alg_kind;

typedef struct {
    int parent;           /* node index or -1 */
    int seed;             /* train seed group: the study seed (shared nodes: the seed base) */
    bool shared;
    int depth;
    char stage[64], output[64];
    char refs[3][64];     /* policy, teacher, reference: the models the stage reads ("" when absent) */
    alg_kind alg;
    char *stage_yaml;     /* the resolved stage entry (YAML) */
    char dir[PATH_MAX];   /* DIR/runs/<seed>/<NN>-<stage> */
    char *config_text;    /* the single-stage train config */
    /* results */
    bool reused;
    int eval_samples;     /* samples per problem of its sampled eval: st->eval_samples, or eval_plot_samples for
                           * a stage inside an arm that is no arm's last (only the plot reads it) */
    double greedy, sampled;
    int n_problems;       /* of the eval set, in the order of eval_<kind>.problems */
    double *problems[2];  /* [n_problems] per-problem accuracy of the greedy [0] and sampled [1] evals */
    uint64_t problem_ids[2]; /* hash of the problem ids in that order: the same for every node of a study */
    double lab_total, lab_unique, prompts, rollout_tokens, trained_tokens, flops; /* flops NaN: unknown */
} st_node;

typedef struct {
    st_node *v;
    int n, cap;
} node_list;

/* ---- results ---- */
typedef struct {
    int n_nodes;           /* nodes on the path, root first */
    int nodes[2 * ST_MAX_STAGES + 8];
    int first_arm;         /* index in nodes[] of the arm's first own stage */
} arm_path;

/* What the eval children are given (the same for every model: common random numbers). */
typedef struct {
    const char *file, *format, *template_name, *instruction;
} study_eval_args;

/* study_run.c */
/* "portable" or "native" (study_def.kernels_native) */
const char *study_kernels_name(const study_def *st);
/* The content of a node's `trained` mark: a node is reused only when it was trained under the same kernels. */
void study_trained_mark(const study_def *st, char *buf, size_t n);
/* A line saying how the kernels of the children were chosen (study.md, the start line) */
const char *study_kernels_text(const study_def *st);
char *study_read_text(const char *path);                               /* NULL when unreadable */
bool study_write_text(const char *path, const char *text, s2d_err *err); /* atomic */
/* old == text, or old is text as written for this study in another directory (moved or copied): only the
 * directory after `lead` differs (lead "\"" for stage.yaml's model paths, "data=" for an eval stamp). */
bool study_same_text_moved(const char *old, const char *text, const char *lead, const char *dir);
void study_mkdir_p(const char *path);
double study_now_s(void);
/* Runs every train and eval of tree not already done (reused nodes, eval results present), up to st->jobs at
 * once; a failure stops the others and dies naming the log. Then reads every node's accuracies, labels and
 * compute. Returns the CPU seconds its children used. */
double study_run(const study_def *st, node_list *tree, const study_eval_args *ea, const char *config, const char *dir,
                 int n_seeds, int ncpu);

/* study_report.c: prints study.md and writes it, study.json and study.png into dir. */
void study_report(const study_def *st, node_list *tree, arm_path (*paths)[ST_MAX_SEEDS], const int *seeds, int n_seeds,
                  const char *dir, double wall, double cpu);
