/* s2d study: the papers' comparisons (arms) of a base pipeline over several seeds, with paired statistics.
 *
 *   s2d study CONFIG.yaml [--seeds N] [--seed-base S] [--out DIR] [--jobs J]
 *
 * A study config (docs/study.md) names a base train config (a library of stages), the stages shared by all
 * seeds (pretraining / SFT), the per-seed prefix every arm shares (teacher_rl), and the arms: stage lists of
 * the base with per-stage overrides. Every arm of every seed becomes a path in a tree of single-stage runs; a
 * stage with the same parent and the same resolved config runs once (so every arm of a seed reuses that seed's
 * teacher_rl, and s2d / no-OPD / replay share their bridge_fkl). Each node is one child `s2d train` process
 * (DIR/runs/<seed>/<NN>-<stage>/), whose policies and teachers are the outputs of its ancestors, followed by
 * two child `s2d eval` runs of its output on the test set (greedy accuracy and sampled avg@k). Up to --jobs
 * children run at once. Output: DIR/study.md (also printed), DIR/study.json, DIR/study.png (gnuplot). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "algo/arith_task.h"
#include "algo/train_config.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/config.h"
#include "core/stats.h"
#include "core/threads.h"
#include "io/dataset.h"
#include "text/chat.h"

enum { ST_MAX_STAGES = 32, ST_MAX_SETS = 64, ST_MAX_ARMS = 32, ST_MAX_CLAIMS = 32, ST_MAX_SEEDS = 64 };

static void usage(FILE *out) {
    fprintf(out,
            "usage: s2d study CONFIG.yaml [--seeds N] [--seed-base S] [--out DIR] [--jobs J]\n"
            "  runs every arm of the study over N seeds (shared stages once, each seed's prefix once per seed),\n"
            "  evaluates every stage output on the test set (greedy accuracy and sampled avg@k) and writes\n"
            "  DIR/study.md (printed too), DIR/study.json and DIR/study.png; runs already complete in DIR with the\n"
            "  same config are reused\n"
            "  --seeds N      seeds per arm (default: the config's seeds:)\n"
            "  --seed-base S  first seed (default: the config's seed_base:, else 1); seeds are S .. S+N-1\n"
            "  --out DIR      output directory (default: the config's out:, else runs/<config name>)\n"
            "  --jobs J       child runs at once (default: the config's jobs:, else the number of cores)\n"
            "config keys: base, seeds, seed_base, jobs, out, set, shared, prefix, start, eval {data, samples,\n"
            "  temperature, top_p, max_new_tokens, limit, seed}, metric (sampled|greedy), reference, arms [{name,\n"
            "  stages, set, text}], claims [{id, text, paper, better, worse}]; see docs/study.md\n");
}

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
    double eval_temperature, eval_top_p;
    int64_t eval_seed;
    bool metric_greedy;
    char reference[64];
    int n_arms;
    arm_def arms[ST_MAX_ARMS];
    int n_claims;
    claim_def claims[ST_MAX_CLAIMS];
} study_def;

static bool read_name_list(cfg_node *root, const char *key, char (*out)[64], int *n, s2d_err *err) {
    cfg_node *seq;
    *n = 0;
    if (!cfg_get_seq_opt(root, key, &seq, err)) return false;
    if (!seq) return true;
    if (cfg_len(seq) > ST_MAX_STAGES) return err_set(err, "%s: more than %d stages", cfg_path(seq), ST_MAX_STAGES);
    for (int i = 0; i < cfg_len(seq); i++) {
        const char *s;
        if (!cfg_as_str(cfg_at(seq, i), &s, err)) return false;
        snprintf(out[(*n)++], 64, "%s", s);
    }
    return true;
}

static bool read_sets(cfg_node *map, const char *key, char **out, int *n, s2d_err *err) {
    cfg_node *seq;
    *n = 0;
    if (!cfg_get_seq_opt(map, key, &seq, err)) return false;
    if (!seq) return true;
    if (cfg_len(seq) > ST_MAX_SETS) return err_set(err, "%s: more than %d overrides", cfg_path(seq), ST_MAX_SETS);
    for (int i = 0; i < cfg_len(seq); i++) {
        const char *s;
        if (!cfg_as_str(cfg_at(seq, i), &s, err)) return false;
        if (!strchr(s, '=')) {
            char w[512];
            cfg_where(cfg_at(seq, i), w, sizeof w);
            return err_set(err, "%s: %s: '%s' is not KEY=VALUE", w, cfg_path(cfg_at(seq, i)), s);
        }
        out[(*n)++] = xstrdup(s);
    }
    return true;
}

#define TRY(x)                                                                                               \
    do {                                                                                                     \
        if (!(x)) return false;                                                                              \
    } while (0)

static bool study_load(const char *path, study_def *st, s2d_err *err) {
    memset(st, 0, sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    cfg_node *root;
    TRY(cfg_load_file(path, &root, err));
    bool ok = false;
    const char *base, *s;
    int64_t i64;
    if (!cfg_get_str(root, "base", &base, err)) goto done;
    /* base: relative to the study file's directory */
    if (base[0] == '/') snprintf(st->base, sizeof st->base, "%s", base);
    else {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0, snprintf(st->base, sizeof st->base, "%s/%s", dir, base);
        else snprintf(st->base, sizeof st->base, "%s", base);
    }
    if (!cfg_get_int_or(root, "seeds", 3, 1, ST_MAX_SEEDS, &st->seeds, err)) goto done;
    if (!cfg_get_int_or(root, "seed_base", 1, 0, 1000000, &st->seed_base, err)) goto done;
    if (!cfg_get_int_or(root, "jobs", 0, 0, 256, &st->jobs, err)) goto done;
    if (!cfg_get_str_or(root, "out", "", &s, err)) goto done;
    snprintf(st->out, sizeof st->out, "%s", s);
    if (!read_sets(root, "set", st->sets, &st->n_sets, err)) goto done;
    if (!read_name_list(root, "shared", st->shared, &st->n_shared, err)) goto done;
    if (!read_name_list(root, "prefix", st->prefix, &st->n_prefix, err)) goto done;
    if (!cfg_get_str_or(root, "start", "", &s, err)) goto done;
    snprintf(st->start, sizeof st->start, "%s", s);
    cfg_node *ev;
    if (!cfg_get_map(root, "eval", &ev, err)) goto done;
    if (!cfg_get_str(ev, "data", &s, err)) goto done;
    snprintf(st->eval_data, sizeof st->eval_data, "%s", s);
    if (!cfg_get_int_or(ev, "samples", 4, 1, 1024, &st->eval_samples, err)) goto done;
    if (!cfg_get_double_or(ev, "temperature", 1.0, 0.01, 10, &st->eval_temperature, err)) goto done;
    if (!cfg_get_double_or(ev, "top_p", 1.0, 0.01, 1, &st->eval_top_p, err)) goto done;
    if (!cfg_get_int(ev, "max_new_tokens", 1, 1000000, &st->eval_max_new, err)) goto done;
    if (!cfg_get_int_or(ev, "limit", 0, 0, INT32_MAX, &st->eval_limit, err)) goto done;
    if (!cfg_get_i64_or(ev, "seed", 0, 0, INT64_MAX, &i64, err)) goto done;
    st->eval_seed = i64;
    static const char *const metrics[2] = {"sampled", "greedy"};
    int m;
    if (!cfg_get_enum_or(root, "metric", metrics, 2, 0, &m, err)) goto done;
    st->metric_greedy = m == 1;
    cfg_node *arms, *claims;
    if (!cfg_get_seq(root, "arms", &arms, err)) goto done;
    if (cfg_len(arms) < 1 || cfg_len(arms) > ST_MAX_ARMS) {
        err_set(err, "%s: arms: expected 1..%d arms, got %d", path, ST_MAX_ARMS, cfg_len(arms));
        goto done;
    }
    for (int a = 0; a < cfg_len(arms); a++) {
        cfg_node *an = cfg_at(arms, a);
        arm_def *ad = &st->arms[st->n_arms++];
        if (!cfg_as_map(an, err) || !cfg_get_str(an, "name", &s, err)) goto done;
        snprintf(ad->name, sizeof ad->name, "%s", s);
        for (int b = 0; b < a; b++)
            if (strcmp(st->arms[b].name, ad->name) == 0) {
                char w[512];
                cfg_where(an, w, sizeof w);
                err_set(err, "%s: arms[%d].name: arm '%s' is defined twice", w, a, s);
                goto done;
            }
        if (!cfg_get_str_or(an, "text", "", &s, err)) goto done;
        snprintf(ad->text, sizeof ad->text, "%s", s);
        if (!read_name_list(an, "stages", ad->stages, &ad->n_stages, err)) goto done;
        if (!read_sets(an, "set", ad->sets, &ad->n_sets, err)) goto done;
    }
    if (!cfg_get_str_or(root, "reference", st->arms[0].name, &s, err)) goto done;
    snprintf(st->reference, sizeof st->reference, "%s", s);
    if (!cfg_get_seq_opt(root, "claims", &claims, err)) goto done;
    for (int c = 0; claims && c < cfg_len(claims); c++) {
        if (c >= ST_MAX_CLAIMS) {
            err_set(err, "%s: claims: more than %d", path, ST_MAX_CLAIMS);
            goto done;
        }
        cfg_node *cn = cfg_at(claims, c);
        claim_def *cd = &st->claims[st->n_claims++];
        if (!cfg_as_map(cn, err)) goto done;
        const char *id, *better, *worse, *text, *paper;
        if (!cfg_get_str(cn, "id", &id, err) || !cfg_get_str(cn, "better", &better, err) ||
            !cfg_get_str(cn, "worse", &worse, err) || !cfg_get_str_or(cn, "text", "", &text, err) ||
            !cfg_get_str_or(cn, "paper", "-", &paper, err))
            goto done;
        snprintf(cd->id, sizeof cd->id, "%s", id);
        snprintf(cd->better, sizeof cd->better, "%s", better);
        snprintf(cd->worse, sizeof cd->worse, "%s", worse);
        snprintf(cd->text, sizeof cd->text, "%s", text);
        snprintf(cd->paper, sizeof cd->paper, "%s", paper);
    }
    ok = cfg_check_unused(root, err);
done:
    cfg_free(root);
    return ok;
}

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
    double greedy, sampled;
    double lab_total, lab_unique, prompts, rollout_tokens, trained_tokens, flops; /* flops NaN: unknown */
} st_node;

typedef struct {
    st_node *v;
    int n, cap;
} node_list;

static char *read_text(const char *path) {
    char *d;
    size_t len;
    s2d_err e;
    return read_file(path, &d, &len, &e) ? d : NULL;
}

static void mkdir_p(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) die("mkdir %s: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) die("mkdir %s: %s", buf, strerror(errno));
}

static bool write_text(const char *path, const char *text, s2d_err *err) {
    atomic_file af;
    if (!atomic_open(&af, path, err)) return false;
    if (fputs(text, af.fp) == EOF) {
        atomic_abort(&af);
        return err_set(err, "%s: write failed: %s", path, strerror(errno));
    }
    return atomic_commit(&af, err);
}

/* Removes a key from a map node (the study rewrites base configs; config.h has no delete). */
static void map_remove(cfg_node *map, const char *key) {
    if (!map || map->kind != CFG_MAP) return;
    for (int i = 0; i < map->n; i++)
        if (strcmp(map->keys[i], key) == 0) {
            cfg_free(map->items[i]);
            free(map->keys[i]);
            for (int j = i + 1; j < map->n; j++) {
                map->items[j - 1] = map->items[j], map->keys[j - 1] = map->keys[j];
                map->key_line[j - 1] = map->key_line[j], map->key_col[j - 1] = map->key_col[j];
            }
            map->n--;
            return;
        }
}

static char *node_to_yaml(const cfg_node *n) {
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    CHECK(fp, "open_memstream: %s", strerror(errno));
    s2d_err err;
    if (!cfg_write(n, fp, &err)) die("%s", err.msg);
    CHECK(fclose(fp) == 0, "fclose(memstream)");
    /* drop a document end marker */
    size_t l = strlen(buf);
    if (l >= 4 && strcmp(buf + l - 4, "...\n") == 0) buf[l - 4] = 0;
    return buf;
}

/* The base config with the global overrides applied. */
static bool load_base(const study_def *st, cfg_node **root, s2d_err *err) {
    TRY(cfg_load_file(st->base, root, err));
    for (int i = 0; i < st->n_sets; i++)
        if (!cfg_set_arg(*root, st->sets[i], err)) {
            cfg_free(*root);
            return err_prefix(err, "%s: set[%d]", st->path, i);
        }
    return true;
}

static int base_stage_index(cfg_node *root, const char *name) {
    cfg_node *pl = cfg_find(root, "pipeline");
    for (int i = 0; pl && pl->kind == CFG_SEQ && i < pl->n; i++) {
        cfg_node *nm = cfg_find(pl->items[i], "name");
        if (nm && nm->kind == CFG_SCALAR && strcmp(nm->value, name) == 0) return i;
    }
    return -1;
}

static const char *scalar_of(cfg_node *map, const char *key, const char *def) {
    cfg_node *n = cfg_find(map, key);
    return n && n->kind == CFG_SCALAR && n->value ? n->value : def;
}

static int node_get(node_list *L, int parent, int seed, bool shared, cfg_node *stage, const char *stage_name) {
    char *yaml = node_to_yaml(stage);
    for (int i = 0; i < L->n; i++)
        if (L->v[i].parent == parent && L->v[i].seed == seed && strcmp(L->v[i].stage_yaml, yaml) == 0) {
            free(yaml);
            return i;
        }
    if (L->n == L->cap) L->cap = L->cap ? 2 * L->cap : 64, L->v = xrealloc(L->v, (size_t)L->cap * sizeof *L->v);
    st_node *nd = &L->v[L->n];
    memset(nd, 0, sizeof *nd);
    nd->parent = parent, nd->seed = seed, nd->shared = shared;
    nd->depth = parent < 0 ? 0 : L->v[parent].depth + 1;
    snprintf(nd->stage, sizeof nd->stage, "%s", stage_name);
    snprintf(nd->output, sizeof nd->output, "%s", scalar_of(stage, "output", stage_name));
    snprintf(nd->refs[0], 64, "%s", scalar_of(stage, "policy", ""));
    snprintf(nd->refs[1], 64, "%s", scalar_of(stage, "teacher", ""));
    snprintf(nd->refs[2], 64, "%s", scalar_of(stage, "reference", ""));
    const char *algo = scalar_of(stage, "algo", "");
    nd->alg = strcmp(algo, "sft") == 0    ? ALG_SFT
              : strcmp(algo, "grpo") == 0 ? ALG_GRPO
              : strcmp(algo, "fkl") == 0  ? ALG_FKL
              : strcmp(algo, "opd") == 0  ? ALG_OPD
                                          : ALG_OTHER;
    nd->stage_yaml = yaml;
    nd->greedy = nd->sampled = NAN;
    nd->flops = NAN;
    return L->n++;
}

/* The single-stage train config of node ni: the base (global overrides applied), seed = 1000 * seed + depth
 * (each stage its own sampling and data streams), the outputs of the ancestors it reads as model paths, no
 * HDF5 logs. */
static bool node_config(const study_def *st, node_list *L, int ni, s2d_err *err) {
    st_node *nd = &L->v[ni];
    cfg_node *root;
    TRY(load_base(st, &root, err));
    char v[PATH_MAX + 64];
    snprintf(v, sizeof v, "%lld", 1000LL * nd->seed + nd->depth);
    bool ok = cfg_set(root, "seed", v, err) && cfg_set(root, "logging", "{rollouts: false, metrics_h5: false}", err);
    for (int a = nd->parent; ok && a >= 0; a = L->v[a].parent) {
        bool read = false; /* only the outputs it reads: the others may not exist yet (they run in parallel) */
        for (int r = 0; r < 3; r++) read |= strcmp(nd->refs[r], L->v[a].output) == 0;
        if (!read) continue;
        char key[128], abs[PATH_MAX], mdir[PATH_MAX + 80];
        snprintf(mdir, sizeof mdir, "%s/out/models/%s", L->v[a].dir, L->v[a].output);
        if (!realpath(L->v[a].dir, abs)) snprintf(abs, sizeof abs, "%s", L->v[a].dir);
        snprintf(mdir, sizeof mdir, "%s/out/models/%s", abs, L->v[a].output);
        snprintf(key, sizeof key, "models.%s", L->v[a].output);
        snprintf(v, sizeof v, "{path: \"%s\"}", mdir);
        if (cfg_find(cfg_find(root, "models"), L->v[a].output)) {
            ok = err_set(err, "%s: stage output '%s' has the name of a model in models:", st->base, L->v[a].output);
            break;
        }
        ok = cfg_set(root, key, v, err);
    }
    if (!ok) {
        cfg_free(root);
        return err_prefix(err, "study node %s", nd->stage);
    }
    map_remove(root, "pipeline");
    map_remove(root, "out");
    map_remove(root, "defaults");
    char *head = node_to_yaml(root);
    cfg_free(root);
    /* pipeline: [the stage], indented as one block sequence item */
    size_t cap = strlen(head) + 2 * strlen(nd->stage_yaml) + 64;
    char *text = xmalloc(cap);
    int at = snprintf(text, cap, "# s2d study: stage %s of %s (written by s2d study; edits are overwritten)\n%s"
                      "pipeline:\n", nd->stage, st->path, head);
    bool first = true;
    for (const char *p = nd->stage_yaml; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0) at += snprintf(text + at, cap - (size_t)at, "%s%.*s\n", first ? "  - " : "    ", (int)len, p);
        first = false;
        p += len + (e != NULL);
    }
    free(head);
    nd->config_text = text;
    return true;
}

/* ---- child processes ---- */
typedef enum { JOB_TRAIN = 0, JOB_GREEDY = 1, JOB_SAMPLED = 2 } job_kind;
typedef enum { JS_WAIT = 0, JS_RUN, JS_DONE } job_state;
typedef struct {
    int node;
    job_kind kind;
    job_state state;
    pid_t pid;
    double t0;
    char log[PATH_MAX + 32], out[PATH_MAX + 32]; /* out: the eval's stdout (JSON line), written to .tmp first */
} st_job;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static pid_t spawn(const char *exe, char *const argv[], const char *stdout_path, const char *log_path, int threads) {
    pid_t pid = fork();
    CHECK_SYS(pid);
    if (pid == 0) {
        FILE *lf = fopen(log_path, "w");
        if (!lf) _exit(126);
        int fd = fileno(lf);
        dup2(fd, 2);
        if (stdout_path) {
            FILE *of = fopen(stdout_path, "w");
            if (!of) _exit(126);
            dup2(fileno(of), 1);
        } else {
            dup2(fd, 1);
        }
        if (threads > 0) {
            char t[16];
            snprintf(t, sizeof t, "%d", threads);
            setenv("OMP_NUM_THREADS", t, 1);
        }
        execv(exe, argv);
        fprintf(stderr, "s2d study: exec %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    return pid;
}

static const char *const job_names[3] = {"train", "eval greedy", "eval sampled"};

static void node_label(const st_node *nd, char *buf, size_t n) {
    if (nd->shared) snprintf(buf, n, "shared %s", nd->stage);
    else snprintf(buf, n, "seed %d %s", nd->seed, nd->stage);
}

/* Accuracy ("pass@1" = avg@k, greedy with k = 1) from an eval's JSON line; NaN when unreadable. */
static double read_eval(const char *path) {
    char *t = read_text(path);
    if (!t) return NAN;
    cJSON *j = cJSON_Parse(t);
    free(t);
    double v = NAN;
    cJSON *p = j ? cJSON_GetObjectItemCaseSensitive(j, "pass@1") : NULL;
    if (cJSON_IsNumber(p)) v = p->valuedouble;
    cJSON_Delete(j);
    return v;
}

static double num_field(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Labels and compute of a finished node: OUT/budget.json when the run wrote one (its "flops", "model_flops",
 * "rollout_tokens", "trained_tokens" at the top level or under "total"), else sums over metrics.jsonl. */
static void read_node_budget(st_node *nd) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/out/metrics.jsonl", nd->dir);
    nd->lab_total = nd->lab_unique = nd->prompts = nd->rollout_tokens = nd->trained_tokens = 0;
    nd->flops = NAN;
    FILE *fp = fopen(path, "r");
    if (!fp) die("%s: cannot read the finished run's metrics: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, fp) > 0) {
        cJSON *j = cJSON_Parse(line);
        if (!j) continue;
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "event");
        if (cJSON_IsString(ev) && strcmp(ev->valuestring, "labels") == 0) {
            nd->lab_total += num_field(j, "labelled_total");
            nd->lab_unique += num_field(j, "labelled_unique");
            nd->prompts += num_field(j, "unlabelled_prompts");
        } else if (!ev) {
            double g = num_field(j, "generated_tokens"), tr = num_field(j, "trained_tokens");
            if (isfinite(g)) nd->rollout_tokens += g;
            if (isfinite(tr)) nd->trained_tokens += tr;
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(fp);
    snprintf(path, sizeof path, "%s/out/budget.json", nd->dir);
    char *t = read_text(path);
    if (!t) return;
    cJSON *b = cJSON_Parse(t);
    free(t);
    const cJSON *tot = cJSON_GetObjectItemCaseSensitive(b, "total");
    const cJSON *src = cJSON_IsObject(tot) ? tot : b;
    double f = num_field(src, "flops");
    if (!isfinite(f)) f = num_field(src, "model_flops");
    if (isfinite(f)) nd->flops = f;
    double r = num_field(src, "rollout_tokens"), tr = num_field(src, "trained_tokens");
    if (isfinite(r)) nd->rollout_tokens = r;
    if (isfinite(tr)) nd->trained_tokens = tr;
    cJSON_Delete(b);
}

typedef struct {
    const study_def *st;
    node_list *L;
    st_job *jobs;
    int n_jobs;
    const char *exe;
    char eval_file[PATH_MAX + 32];
    const char *eval_format, *template_name, *instruction;
    int threads;
    double t0;
} runner;

static void kill_running(runner *R) {
    for (int i = 0; i < R->n_jobs; i++)
        if (R->jobs[i].state == JS_RUN) kill(R->jobs[i].pid, SIGTERM);
    for (int i = 0; i < R->n_jobs; i++)
        if (R->jobs[i].state == JS_RUN) waitpid(R->jobs[i].pid, NULL, 0), R->jobs[i].state = JS_DONE;
}

static void tail_log(const char *path, int lines) {
    char *t = read_text(path);
    if (!t) return;
    size_t len = strlen(t);
    int seen = 0;
    size_t at = len;
    while (at > 0 && seen <= lines) {
        at--;
        if (t[at] == '\n' && at + 1 < len) seen++;
    }
    fprintf(stderr, "%s", t + (at > 0 ? at + 1 : 0));
    free(t);
}

static void start_job(runner *R, st_job *jb) {
    st_node *nd = &R->L->v[jb->node];
    char *argv[40];
    int a = 0;
    char a_cfg[PATH_MAX + 32], a_out[PATH_MAX + 32], a_model[PATH_MAX + 96], a_k[16], a_t[32], a_p[32], a_n[16],
        a_seed[32], a_lim[16], tmp[PATH_MAX + 64];
    argv[a++] = (char *)"s2d";
    if (jb->kind == JOB_TRAIN) {
        snprintf(a_cfg, sizeof a_cfg, "%s/stage.yaml", nd->dir);
        snprintf(a_out, sizeof a_out, "%s/out", nd->dir);
        snprintf(jb->log, sizeof jb->log, "%s/train.log", nd->dir);
        argv[a++] = (char *)"train", argv[a++] = a_cfg, argv[a++] = (char *)"--out", argv[a++] = a_out;
        argv[a++] = (char *)"--overwrite";
        argv[a] = NULL;
        jb->pid = spawn(R->exe, argv, NULL, jb->log, R->threads);
    } else {
        bool greedy = jb->kind == JOB_GREEDY;
        snprintf(a_model, sizeof a_model, "%s/out/models/%s", nd->dir, nd->output);
        snprintf(a_k, sizeof a_k, "%d", greedy ? 1 : R->st->eval_samples);
        snprintf(a_t, sizeof a_t, "%.17g", greedy ? 0.0 : R->st->eval_temperature);
        snprintf(a_p, sizeof a_p, "%.17g", greedy ? 1.0 : R->st->eval_top_p);
        snprintf(a_n, sizeof a_n, "%d", R->st->eval_max_new);
        snprintf(a_seed, sizeof a_seed, "%lld", (long long)R->st->eval_seed);
        snprintf(jb->log, sizeof jb->log, "%s/eval_%s.log", nd->dir, greedy ? "greedy" : "sampled");
        snprintf(jb->out, sizeof jb->out, "%s/eval_%s.json", nd->dir, greedy ? "greedy" : "sampled");
        snprintf(tmp, sizeof tmp, "%s.tmp", jb->out);
        argv[a++] = (char *)"eval", argv[a++] = (char *)"--model", argv[a++] = a_model;
        argv[a++] = (char *)"--tokenizer", argv[a++] = a_model, argv[a++] = (char *)"--data", argv[a++] = R->eval_file;
        argv[a++] = (char *)"--format", argv[a++] = (char *)R->eval_format;
        argv[a++] = (char *)"--samples", argv[a++] = a_k, argv[a++] = (char *)"--temperature", argv[a++] = a_t;
        argv[a++] = (char *)"--top-p", argv[a++] = a_p, argv[a++] = (char *)"--max-new-tokens", argv[a++] = a_n;
        argv[a++] = (char *)"--template", argv[a++] = (char *)R->template_name;
        argv[a++] = (char *)"--instruction", argv[a++] = (char *)R->instruction;
        argv[a++] = (char *)"--seed", argv[a++] = a_seed;
        if (R->st->eval_limit > 0) {
            snprintf(a_lim, sizeof a_lim, "%d", R->st->eval_limit);
            argv[a++] = (char *)"--limit", argv[a++] = a_lim;
        }
        argv[a] = NULL;
        jb->pid = spawn(R->exe, argv, tmp, jb->log, R->threads);
    }
    jb->state = JS_RUN;
    jb->t0 = now_s();
    char lab[160];
    node_label(nd, lab, sizeof lab);
    fprintf(stderr, "[study %6.1fs] start %-12s %-28s log %s\n", now_s() - R->t0, job_names[jb->kind], lab, jb->log);
}

static bool job_ready(runner *R, const st_job *jb) {
    if (jb->state != JS_WAIT) return false;
    const st_node *nd = &R->L->v[jb->node];
    if (jb->kind == JOB_TRAIN) {
        /* waits only for the ancestors whose outputs it reads (policy, teacher, reference), so independent
         * stages of one path (the two SFTs) run side by side */
        for (int a = nd->parent; a >= 0; a = R->L->v[a].parent) {
            const st_node *an = &R->L->v[a];
            bool read = false;
            for (int r = 0; r < 3; r++) read |= strcmp(nd->refs[r], an->output) == 0;
            if (!read) continue;
            for (int i = 0; i < R->n_jobs; i++)
                if (R->jobs[i].node == a && R->jobs[i].kind == JOB_TRAIN && R->jobs[i].state != JS_DONE) return false;
        }
        return true;
    }
    for (int i = 0; i < R->n_jobs; i++)
        if (R->jobs[i].node == jb->node && R->jobs[i].kind == JOB_TRAIN) return R->jobs[i].state == JS_DONE;
    return true;
}

/* SIGINT / SIGTERM / SIGHUP: the children are ended too (by pid), then the study dies of the same signal. */
static volatile sig_atomic_t study_signal = 0;
static void on_signal(int sig) { study_signal = sig; }
static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: waitpid returns EINTR */
    sigemptyset(&sa.sa_mask);
    const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) CHECK_SYS(sigaction(sigs[i], &sa, NULL));
}

static void run_all(runner *R, int jobs) {
    int done = 0, running = 0, total = R->n_jobs;
    for (int i = 0; i < R->n_jobs; i++) done += R->jobs[i].state == JS_DONE;
    while (done < total) {
        /* trains first (they unblock the others), then evals, in node order */
        for (int pass = 0; pass < 2 && running < jobs; pass++)
            for (int i = 0; i < R->n_jobs && running < jobs; i++) {
                st_job *jb = &R->jobs[i];
                if ((pass == 0) != (jb->kind == JOB_TRAIN) || !job_ready(R, jb)) continue;
                start_job(R, jb);
                running++;
            }
        if (running == 0) die("study: %d runs wait on runs that never started (a bug)", total - done);
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0 && errno == EINTR && study_signal) {
            int sig = study_signal;
            fprintf(stderr, "s2d study: signal %d: ending the %d running runs\n", sig, running);
            kill_running(R);
            signal(sig, SIG_DFL);
            raise(sig);
            _exit(128 + sig);
        }
        if (pid < 0) {
            if (errno == EINTR) continue;
            die_sys_at(__FILE__, __LINE__, "waitpid");
        }
        st_job *jb = NULL;
        for (int i = 0; i < R->n_jobs; i++)
            if (R->jobs[i].state == JS_RUN && R->jobs[i].pid == pid) jb = &R->jobs[i];
        if (!jb) continue;
        jb->state = JS_DONE;
        running--, done++;
        st_node *nd = &R->L->v[jb->node];
        char lab[160];
        node_label(nd, lab, sizeof lab);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            char how[64];
            if (WIFSIGNALED(status)) snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
            else snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
            fprintf(stderr, "s2d study: %s of %s failed (%s); the end of its log %s:\n", job_names[jb->kind], lab,
                    how, jb->log);
            tail_log(jb->log, 6);
            kill_running(R);
            die("study: %s of %s failed (%s): see %s", job_names[jb->kind], lab, how, jb->log);
        }
        if (jb->kind == JOB_TRAIN) {
            char mark[PATH_MAX + 32];
            snprintf(mark, sizeof mark, "%s/trained", nd->dir);
            s2d_err err;
            if (!write_text(mark, "complete\n", &err)) die("%s", err.msg);
        } else {
            char tmp[PATH_MAX + 64];
            snprintf(tmp, sizeof tmp, "%s.tmp", jb->out);
            double v = read_eval(tmp);
            if (!isfinite(v)) {
                kill_running(R);
                die("study: %s of %s: no accuracy in its output %s (log %s)", job_names[jb->kind], lab, tmp, jb->log);
            }
            CHECK_SYS(rename(tmp, jb->out));
        }
        fprintf(stderr, "[study %6.1fs] done  %-12s %-28s in %.1f s (%d of %d runs done, %d running)\n",
                now_s() - R->t0, job_names[jb->kind], lab, now_s() - jb->t0, done, total, running);
    }
}

/* ---- results ---- */
typedef struct {
    int n_nodes;           /* nodes on the path, root first */
    int nodes[2 * ST_MAX_STAGES + 8];
    int first_arm;         /* index in nodes[] of the arm's first own stage */
} arm_path;

static double acc_of(const st_node *nd, bool greedy) { return greedy ? nd->greedy : nd->sampled; }

/* The node whose output is `name` on this path (arm or prefix stage), or -1. */
static int path_find(const node_list *L, const arm_path *p, const char *name) {
    for (int i = p->n_nodes - 1; i >= 0; i--)
        if (strcmp(L->v[p->nodes[i]].output, name) == 0) return p->nodes[i];
    return -1;
}

/* used[k]: the arm's final model depends on node k of its path (its output is read, directly or through
 * later stages, as a policy, teacher or reference), so its labels and compute count for the arm. */
static void path_lineage(const node_list *L, const arm_path *p, bool *used) {
    char need[2 * ST_MAX_STAGES * 3 + 8][64];
    int n_need = 0;
    snprintf(need[n_need++], 64, "%s", L->v[p->nodes[p->n_nodes - 1]].output);
    for (int k = p->n_nodes - 1; k >= 0; k--) {
        const st_node *nd = &L->v[p->nodes[k]];
        used[k] = false;
        for (int i = 0; i < n_need && !used[k]; i++) used[k] = strcmp(need[i], nd->output) == 0;
        if (!used[k]) continue;
        for (int r = 0; r < 3; r++)
            if (nd->refs[r][0]) snprintf(need[n_need++], 64, "%s", nd->refs[r]);
    }
}

static void fmt_ms(char *buf, size_t n, const double *x, int k) {
    double m = stats_mean(x, k), s = stats_sd(x, k);
    if (isfinite(s)) snprintf(buf, n, "%.1f ± %.1f", 100 * m, 100 * s);
    else snprintf(buf, n, "%.1f", 100 * m);
}

/* Percentage points for printing: rounding noise such as -1e-16 prints as +0.0, not -0.0. */
static double pp(double x) { return fabs(x) < 5e-5 ? 0.0 : 100 * x; }

static void fmt_big(char *buf, size_t n, double v) {
    if (!isfinite(v)) snprintf(buf, n, "-");
    else if (v >= 1e9) snprintf(buf, n, "%.2fG", v / 1e9);
    else if (v >= 1e6) snprintf(buf, n, "%.2fM", v / 1e6);
    else if (v >= 1e4) snprintf(buf, n, "%.1fk", v / 1e3);
    else snprintf(buf, n, "%.0f", v);
}

static cJSON *json_array(const double *x, int n, double scale) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, isfinite(x[i]) ? cJSON_CreateNumber(scale * x[i]) : cJSON_CreateNull());
    return a;
}

/* Per-seed value of a claim operand: an arm (its final accuracy) or a shared/prefix stage output. */
static bool operand_values(const study_def *st, const node_list *L, arm_path (*paths)[ST_MAX_SEEDS], int n_seeds,
                           const char *name, bool greedy, double *out) {
    for (int a = 0; a < st->n_arms; a++)
        if (strcmp(st->arms[a].name, name) == 0) {
            for (int s = 0; s < n_seeds; s++) {
                const arm_path *p = &paths[a][s];
                out[s] = acc_of(&L->v[p->nodes[p->n_nodes - 1]], greedy);
            }
            return true;
        }
    for (int s = 0; s < n_seeds; s++) {
        const arm_path *p = &paths[0][s];
        int found = -1;
        for (int i = 0; i < p->first_arm; i++)
            if (strcmp(L->v[p->nodes[i]].output, name) == 0) found = p->nodes[i];
        if (found < 0) return false;
        out[s] = acc_of(&L->v[found], greedy);
    }
    return true;
}

static int max_stages(const study_def *st) {
    int n = 1;
    for (int a = 0; a < st->n_arms; a++) n = S2D_MAX(n, st->arms[a].n_stages);
    return n;
}

static void write_plot(const study_def *st, const node_list *L, arm_path (*paths)[ST_MAX_SEEDS], int n_seeds,
                       const char *dir) {
    char dat[PATH_MAX + 32], png[PATH_MAX + 32], gp[PATH_MAX + 32];
    snprintf(dat, sizeof dat, "%s/study_curves.dat", dir);
    snprintf(png, sizeof png, "%s/study.png", dir);
    snprintf(gp, sizeof gp, "%s/study.gp", dir);
    FILE *f = fopen(dat, "w");
    if (!f) die("%s: %s", dat, strerror(errno));
    bool greedy = st->metric_greedy;
    fprintf(f, "# s2d study: %s accuracy (%%) after each stage per arm; x = 0 is the start model (%s)\n",
            greedy ? "greedy" : "sampled", st->start[0] ? st->start : "none");
    fprintf(f, "# columns: x mean sd stage\n");
    for (int a = 0; a < st->n_arms; a++) {
        fprintf(f, "# arm %s\n", st->arms[a].name);
        double v[ST_MAX_SEEDS];
        if (st->start[0]) {
            bool have = true;
            for (int s = 0; s < n_seeds; s++) {
                int ni = path_find(L, &paths[a][s], st->start);
                if (ni < 0) have = false;
                else v[s] = acc_of(&L->v[ni], greedy);
            }
            if (have) {
                double sd = stats_sd(v, n_seeds);
                fprintf(f, "0 %.4f %.4f %s\n", 100 * stats_mean(v, n_seeds), isfinite(sd) ? 100 * sd : 0, st->start);
            }
        }
        const arm_path *p0 = &paths[a][0];
        for (int k = p0->first_arm; k < p0->n_nodes; k++) {
            for (int s = 0; s < n_seeds; s++) v[s] = acc_of(&L->v[paths[a][s].nodes[k]], greedy);
            double sd = stats_sd(v, n_seeds);
            fprintf(f, "%d %.4f %.4f %s\n", k - p0->first_arm + 1, 100 * stats_mean(v, n_seeds),
                    isfinite(sd) ? 100 * sd : 0, L->v[p0->nodes[k]].stage);
        }
        fprintf(f, "\n\n");
    }
    fclose(f);
    f = fopen(gp, "w");
    if (!f) die("%s: %s", gp, strerror(errno));
    fprintf(f,
            "set terminal pngcairo noenhanced size 1100,650 font 'sans,10'\nset output '%s'\n"
            "set title 's2d study: %s test accuracy after each stage (mean ± sd over %d seeds)'\n"
            "set xlabel 'stage of the arm (0 = %s)'\nset ylabel 'accuracy (%%)'\nset key outside right\n"
            "set grid\nset xtics 1\nset xrange [-0.3:%d.3]\nplot ",
            png, greedy ? "greedy" : "sampled avg@k", n_seeds, st->start[0] ? st->start : "-", max_stages(st));
    for (int a = 0; a < st->n_arms; a++)
        fprintf(f, "%s'%s' index %d using ($1+%.3f):2:3 with yerrorlines lw 2 title '%s'", a ? ", " : "", dat, a,
                0.03 * (a - st->n_arms / 2.0), st->arms[a].name);
    fprintf(f, "\n");
    fclose(f);
    char cmd[2 * PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>'%s/study_gnuplot.log'", gp, dir);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "s2d study: warning: gnuplot failed (status %d, see %s/study_gnuplot.log): no %s\n", rc, dir,
                png);
}

static void report(const study_def *st, node_list *L, arm_path (*paths)[ST_MAX_SEEDS], const int *seeds,
                   int n_seeds, const char *dir, double wall) {
    char *md = NULL;
    size_t md_len = 0;
    FILE *m = open_memstream(&md, &md_len);
    CHECK(m, "open_memstream");
    bool greedy = st->metric_greedy;
    const char *metric = greedy ? "greedy accuracy" : "sampled avg@k";
    fprintf(m, "# s2d study: %s\n\n", st->path);
    fprintf(m, "Base pipeline %s; %d seeds (%d", st->base, n_seeds, seeds[0]);
    for (int s = 1; s < n_seeds; s++) fprintf(m, ", %d", seeds[s]);
    fprintf(m, "); test set `%s`, greedy accuracy and sampled avg@%d (temperature %g, top-p %g). Accuracies in %%. "
               "Wall time %.0f s.\n\n", st->eval_data, st->eval_samples, st->eval_temperature, st->eval_top_p, wall);
    fprintf(m, "Verdict rule: a claim's difference d (per seed, paired: the same seed's runs share the teacher and "
               "the data order) has mean D and standard error SE = sd(d)/sqrt(seeds); it **holds** when D > 2 SE, is "
               "**reversed** when D < -2 SE, and is **within noise** otherwise (undetermined with one seed). Claims "
               "compare the %s.\n\n", metric);
    /* shared and prefix stages */
    fprintf(m, "## Shared stages (every arm of a seed starts from these)\n\n| stage | greedy | sampled |\n|---|---|---|\n");
    const arm_path *p0 = &paths[0][0];
    for (int k = 0; k < p0->first_arm; k++) {
        double g[ST_MAX_SEEDS], sm[ST_MAX_SEEDS];
        for (int s = 0; s < n_seeds; s++) {
            const st_node *nd = &L->v[paths[0][s].nodes[k]];
            g[s] = nd->greedy, sm[s] = nd->sampled;
        }
        char b1[64], b2[64];
        fmt_ms(b1, sizeof b1, g, n_seeds), fmt_ms(b2, sizeof b2, sm, n_seeds);
        const st_node *nd = &L->v[p0->nodes[k]];
        fprintf(m, "| %s%s | %s | %s |\n", nd->stage, nd->shared ? " (once, all seeds)" : "", b1, b2);
    }
    /* arms */
    int ref = 0;
    for (int a = 0; a < st->n_arms; a++)
        if (strcmp(st->arms[a].name, st->reference) == 0) ref = a;
    fprintf(m, "\n## Arms (final accuracy, mean ± sd over seeds; Δ = arm − %s, paired, ± SE, on the %s)\n\n",
            st->arms[ref].name, metric);
    fprintf(m, "| arm | stages | greedy | sampled | Δ vs %s | SFT labels | RL labels (unique) | bridge prompts | "
               "rollout tokens | trained tokens | FLOPs |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
            st->arms[ref].name);
    cJSON *J = cJSON_CreateObject();
    cJSON_AddStringToObject(J, "study", st->path);
    cJSON_AddStringToObject(J, "base", st->base);
    cJSON *js = cJSON_AddArrayToObject(J, "seeds");
    for (int s = 0; s < n_seeds; s++) cJSON_AddItemToArray(js, cJSON_CreateNumber(seeds[s]));
    cJSON_AddStringToObject(J, "metric", greedy ? "greedy" : "sampled");
    cJSON_AddNumberToObject(J, "eval_samples", st->eval_samples);
    cJSON_AddStringToObject(J, "reference", st->arms[ref].name);
    cJSON_AddStringToObject(J, "rule", "holds: difference > 2 SE; reversed: difference < -2 SE; otherwise within "
                                       "noise; SE = sd of the per-seed paired differences / sqrt(seeds)");
    cJSON_AddStringToObject(J, "units", "accuracies and differences in percentage points");
    cJSON *jarms = cJSON_AddObjectToObject(J, "arms");
    double ref_g[ST_MAX_SEEDS], ref_s[ST_MAX_SEEDS];
    for (int s = 0; s < n_seeds; s++) {
        const arm_path *p = &paths[ref][s];
        ref_g[s] = L->v[p->nodes[p->n_nodes - 1]].greedy, ref_s[s] = L->v[p->nodes[p->n_nodes - 1]].sampled;
    }
    for (int a = 0; a < st->n_arms; a++) {
        double g[ST_MAX_SEEDS], sm[ST_MAX_SEEDS], sft[ST_MAX_SEEDS], rl[ST_MAX_SEEDS], rlu[ST_MAX_SEEDS],
            pr[ST_MAX_SEEDS], rt[ST_MAX_SEEDS], tt[ST_MAX_SEEDS], fl[ST_MAX_SEEDS];
        for (int s = 0; s < n_seeds; s++) {
            const arm_path *p = &paths[a][s];
            const st_node *last = &L->v[p->nodes[p->n_nodes - 1]];
            g[s] = last->greedy, sm[s] = last->sampled;
            sft[s] = rl[s] = rlu[s] = pr[s] = rt[s] = tt[s] = fl[s] = 0;
            bool used[2 * ST_MAX_STAGES + 8];
            path_lineage(L, p, used);
            for (int k = 0; k < p->n_nodes; k++) {
                if (!used[k]) continue;
                const st_node *nd = &L->v[p->nodes[k]];
                if (nd->alg == ALG_SFT) sft[s] += nd->lab_total;
                else if (nd->alg == ALG_GRPO) rl[s] += nd->lab_total, rlu[s] += nd->lab_unique;
                pr[s] += nd->prompts, rt[s] += nd->rollout_tokens, tt[s] += nd->trained_tokens, fl[s] += nd->flops;
            }
        }
        stats_paired d = stats_paired_diff(greedy ? g : sm, greedy ? ref_g : ref_s, n_seeds);
        char bg[64], bs[64], bd[64], b1[32], b2[32], b3[32], b4[32], b5[32], b6[32], b7[32];
        fmt_ms(bg, sizeof bg, g, n_seeds), fmt_ms(bs, sizeof bs, sm, n_seeds);
        if (a == ref) snprintf(bd, sizeof bd, "—");
        else if (isfinite(d.se)) snprintf(bd, sizeof bd, "%+.1f ± %.1f", pp(d.mean), 100 * d.se);
        else snprintf(bd, sizeof bd, "%+.1f", pp(d.mean));
        fmt_big(b1, sizeof b1, stats_mean(sft, n_seeds)), fmt_big(b2, sizeof b2, stats_mean(rl, n_seeds));
        fmt_big(b3, sizeof b3, stats_mean(rlu, n_seeds)), fmt_big(b4, sizeof b4, stats_mean(pr, n_seeds));
        fmt_big(b5, sizeof b5, stats_mean(rt, n_seeds)), fmt_big(b6, sizeof b6, stats_mean(tt, n_seeds));
        fmt_big(b7, sizeof b7, stats_mean(fl, n_seeds));
        fprintf(m, "| %s | ", st->arms[a].name);
        for (int k = 0; k < st->arms[a].n_stages; k++) fprintf(m, "%s%s", k ? " → " : "", st->arms[a].stages[k]);
        fprintf(m, " | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s |\n", bg, bs, bd, b1, b2, b3, b4, b5, b6, b7);
        cJSON *ja = cJSON_AddObjectToObject(jarms, st->arms[a].name);
        cJSON *jst = cJSON_AddArrayToObject(ja, "stages");
        for (int k = 0; k < st->arms[a].n_stages; k++) cJSON_AddItemToArray(jst, cJSON_CreateString(st->arms[a].stages[k]));
        cJSON_AddItemToObject(ja, "greedy", json_array(g, n_seeds, 100));
        cJSON_AddItemToObject(ja, "sampled", json_array(sm, n_seeds, 100));
        /* accuracy after every stage of the arm, per seed */
        cJSON *jc = cJSON_AddArrayToObject(ja, "after_stage");
        const arm_path *pa = &paths[a][0];
        for (int k = pa->first_arm; k < pa->n_nodes; k++) {
            double cg[ST_MAX_SEEDS], cs[ST_MAX_SEEDS];
            for (int s = 0; s < n_seeds; s++) {
                const st_node *nd = &L->v[paths[a][s].nodes[k]];
                cg[s] = nd->greedy, cs[s] = nd->sampled;
            }
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "stage", L->v[pa->nodes[k]].stage);
            cJSON_AddItemToObject(e, "greedy", json_array(cg, n_seeds, 100));
            cJSON_AddItemToObject(e, "sampled", json_array(cs, n_seeds, 100));
            cJSON_AddItemToArray(jc, e);
        }
        cJSON *jd = cJSON_AddObjectToObject(ja, "vs_reference");
        cJSON_AddNumberToObject(jd, "difference", 100 * d.mean);
        if (isfinite(d.se)) cJSON_AddNumberToObject(jd, "se", 100 * d.se);
        else cJSON_AddNullToObject(jd, "se");
        cJSON *jl = cJSON_AddObjectToObject(ja, "labels");
        cJSON_AddItemToObject(jl, "sft", json_array(sft, n_seeds, 1));
        cJSON_AddItemToObject(jl, "rl_total", json_array(rl, n_seeds, 1));
        cJSON_AddItemToObject(jl, "rl_unique", json_array(rlu, n_seeds, 1));
        cJSON_AddItemToObject(jl, "unlabelled_prompts", json_array(pr, n_seeds, 1));
        cJSON *jco = cJSON_AddObjectToObject(ja, "compute");
        cJSON_AddItemToObject(jco, "rollout_tokens", json_array(rt, n_seeds, 1));
        cJSON_AddItemToObject(jco, "trained_tokens", json_array(tt, n_seeds, 1));
        cJSON_AddItemToObject(jco, "flops", json_array(fl, n_seeds, 1));
    }
    fprintf(m, "\nLabels and compute count every stage the arm's final model depends on (as policy, teacher or "
               "reference, through earlier stages too: shared SFT and teacher_rl included where used); RL "
               "labels are the labelled examples GRPO stages drew (unique: per stage, summed); FLOPs come from "
               "OUT/budget.json when the runs write one (`-` otherwise).\n");
    /* claims */
    fprintf(m, "\n## Claims (difference = better − worse, %s, percentage points)\n\n"
               "| claim | paper | measured | SE | verdict |\n|---|---|---|---|---|\n", metric);
    cJSON *jcl = cJSON_AddArrayToObject(J, "claims");
    int n_hold = 0, n_rev = 0, n_noise = 0;
    for (int c = 0; c < st->n_claims; c++) {
        const claim_def *cd = &st->claims[c];
        double b[ST_MAX_SEEDS], w[ST_MAX_SEEDS];
        operand_values(st, L, paths, n_seeds, cd->better, greedy, b);
        operand_values(st, L, paths, n_seeds, cd->worse, greedy, w);
        stats_paired d = stats_paired_diff(b, w, n_seeds);
        stats_verdict v = stats_verdict_of(d.mean, d.se);
        n_hold += v == VERDICT_HOLDS, n_rev += v == VERDICT_REVERSED, n_noise += v == VERDICT_NOISE;
        char se[32];
        if (isfinite(d.se)) snprintf(se, sizeof se, "%.1f", 100 * d.se);
        else snprintf(se, sizeof se, "-");
        fprintf(m, "| %s: %s (%s vs %s) | %s | %+.1f | %s | %s |\n", cd->id, cd->text, cd->better, cd->worse, cd->paper,
                pp(d.mean), se, stats_verdict_name(v));
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "id", cd->id);
        cJSON_AddStringToObject(e, "text", cd->text);
        cJSON_AddStringToObject(e, "paper", cd->paper);
        cJSON_AddStringToObject(e, "better", cd->better);
        cJSON_AddStringToObject(e, "worse", cd->worse);
        cJSON_AddNumberToObject(e, "difference", 100 * d.mean);
        if (isfinite(d.se)) cJSON_AddNumberToObject(e, "se", 100 * d.se);
        else cJSON_AddNullToObject(e, "se");
        double dd[ST_MAX_SEEDS];
        for (int s = 0; s < n_seeds; s++) dd[s] = b[s] - w[s];
        cJSON_AddItemToObject(e, "per_seed", json_array(dd, n_seeds, 100));
        cJSON_AddStringToObject(e, "verdict", stats_verdict_name(v));
        cJSON_AddItemToArray(jcl, e);
    }
    fprintf(m, "\n%d of %d claims hold, %d reversed, %d within noise at this scale (%d seeds).\n", n_hold, st->n_claims,
            n_rev, n_noise, n_seeds);
    fclose(m);
    fputs(md, stdout);
    fflush(stdout);
    char path[PATH_MAX + 32];
    s2d_err err;
    snprintf(path, sizeof path, "%s/study.md", dir);
    if (!write_text(path, md, &err)) die("%s", err.msg);
    free(md);
    char *js_text = cJSON_Print(J);
    size_t jl = strlen(js_text);
    js_text = xrealloc(js_text, jl + 2);
    js_text[jl] = '\n', js_text[jl + 1] = 0;
    snprintf(path, sizeof path, "%s/study.json", dir);
    if (!write_text(path, js_text, &err)) die("%s", err.msg);
    free(js_text);
    cJSON_Delete(J);
    write_plot(st, L, paths, n_seeds, dir);
}

/* The eval set as JSON lines in DIR/data/: arithmetic sets are generated (problem, answer), files are used as
 * they are. Sets *file and *format. */
static void eval_data_file(const study_def *st, const train_config *tc, const char *dir, char *file, size_t n,
                           const char **format) {
    int di = tc_find_dataset(tc, st->eval_data);
    if (di < 0) die("%s: eval.data: no dataset '%s' in %s", st->path, st->eval_data, st->base);
    const tc_dataset *d = &tc->datasets[di];
    if (!d->arith) {
        snprintf(file, n, "%s", d->file);
        *format = ds_format_name(d->format);
        return;
    }
    char ddir[PATH_MAX + 16];
    snprintf(ddir, sizeof ddir, "%s/data", dir);
    mkdir_p(ddir);
    snprintf(file, n, "%s/%s.jsonl", ddir, st->eval_data);
    arith_set set;
    s2d_err err;
    if (!arith_make(&d->arith_p, d->split, d->size, &set, &err)) die("%s: datasets.%s: %s", st->base, d->name, err.msg);
    atomic_file af;
    if (!atomic_open(&af, file, &err)) die("%s", err.msg);
    for (int i = 0; i < set.n; i++) fprintf(af.fp, "{\"problem\": \"%s\", \"answer\": \"%s\"}\n", set.problem[i], set.answer[i]);
    if (!atomic_commit(&af, &err)) die("%s", err.msg);
    arith_free(&set);
    *format = "math";
}

int cmd_study(int argc, char **argv) {
    const char *config = NULL, *out = NULL;
    int seeds = 0, jobs = 0, seed_base = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--seeds") == 0 && i + 1 < argc) {
            seeds = (int)flag_long("--seeds", argv[++i], 1, ST_MAX_SEEDS);
        } else if (strcmp(a, "--seed-base") == 0 && i + 1 < argc) {
            seed_base = (int)flag_long("--seed-base", argv[++i], 0, 1000000);
        } else if (strcmp(a, "--jobs") == 0 && i + 1 < argc) {
            jobs = (int)flag_long("--jobs", argv[++i], 1, 256);
        } else if (strcmp(a, "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (a[0] == '-') {
            usage(stderr);
            die("study: unknown option or missing value '%s'", a);
        } else if (!config) {
            config = a;
        } else {
            die("study: one config file expected, got '%s' and '%s'", config, a);
        }
    }
    if (!config) die_hint("s2d study --help", "study: CONFIG.yaml is required");
    study_def *st = xcalloc(1, sizeof *st);
    s2d_err err;
    if (!study_load(config, st, &err)) die("%s", err.msg);
    if (seeds) st->seeds = seeds;
    if (seed_base >= 0) st->seed_base = seed_base;
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1) ncpu = 1;
    if (jobs) st->jobs = jobs;
    if (st->jobs <= 0) st->jobs = ncpu;
    char dir[PATH_MAX];
    if (out) snprintf(dir, sizeof dir, "%s", out);
    else if (st->out[0]) snprintf(dir, sizeof dir, "%s", st->out);
    else {
        const char *b = strrchr(config, '/');
        b = b ? b + 1 : config;
        snprintf(dir, sizeof dir, "runs/%.*s", (int)strcspn(b, "."), b);
    }
    /* the base, validated as a whole (dry run: no weights are read) for its datasets and prompt */
    train_config tc;
    if (!train_config_load(st->base, st->sets, st->n_sets, true, &tc, &err)) die("%s", err.msg);
    if (st->start[0]) {
        bool found = false;
        for (int i = 0; i < st->n_shared; i++) found |= strcmp(st->shared[i], st->start) == 0;
        for (int i = 0; i < st->n_prefix; i++) found |= strcmp(st->prefix[i], st->start) == 0;
        if (!found) die("%s: start: '%s' is not a shared or prefix stage", st->path, st->start);
    }
    for (int c = 0; c < st->n_claims; c++)
        for (int k = 0; k < 2; k++) {
            const char *nm = k ? st->claims[c].worse : st->claims[c].better;
            bool found = false;
            for (int a = 0; a < st->n_arms; a++) found |= strcmp(st->arms[a].name, nm) == 0;
            for (int i = 0; i < st->n_shared; i++) found |= strcmp(st->shared[i], nm) == 0;
            for (int i = 0; i < st->n_prefix; i++) found |= strcmp(st->prefix[i], nm) == 0;
            if (!found)
                die("%s: claims[%d].%s: '%s' is not an arm nor a shared or prefix stage", st->path, c,
                    k ? "worse" : "better", nm);
        }
    bool ref_ok = false;
    for (int a = 0; a < st->n_arms; a++) ref_ok |= strcmp(st->arms[a].name, st->reference) == 0;
    if (!ref_ok) die("%s: reference: no arm named '%s'", st->path, st->reference);

    /* the tree: every arm of every seed as a path of nodes */
    int n_seeds = st->seeds;
    int seed_of[ST_MAX_SEEDS];
    for (int s = 0; s < n_seeds; s++) seed_of[s] = st->seed_base + s;
    node_list L = {0};
    arm_path (*paths)[ST_MAX_SEEDS] = xcalloc((size_t)st->n_arms, sizeof *paths);
    for (int a = 0; a < st->n_arms; a++) {
        const arm_def *ad = &st->arms[a];
        cfg_node *root;
        if (!load_base(st, &root, &err)) die("%s", err.msg);
        for (int i = 0; i < ad->n_sets; i++) {
            /* "stage.key=value" → "pipeline[i].key=value", only for the arm's own stages */
            const char *s = ad->sets[i];
            size_t dot = strcspn(s, ".=");
            char stage[64];
            snprintf(stage, sizeof stage, "%.*s", (int)S2D_MIN(dot, 63), s);
            bool own = false;
            for (int k = 0; k < ad->n_stages; k++) own |= strcmp(ad->stages[k], stage) == 0;
            if (!own || s[dot] != '.')
                die("%s: arms[%d] (%s): set[%d] '%s' must start with one of the arm's stages (%s...)", st->path, a,
                    ad->name, i, s, ad->n_stages ? ad->stages[0] : "none");
            char path[600];
            snprintf(path, sizeof path, "pipeline[%d].%s", base_stage_index(root, stage), s + dot + 1);
            if (!cfg_set_arg(root, path, &err)) die("%s: arms[%d] (%s): set[%d]: %s", st->path, a, ad->name, i, err.msg);
        }
        cfg_node *pl = cfg_find(root, "pipeline");
        for (int s = 0; s < n_seeds; s++) {
            arm_path *p = &paths[a][s];
            int parent = -1;
            p->n_nodes = 0;
            for (int k = 0; k < st->n_shared + st->n_prefix + ad->n_stages; k++) {
                bool shared = k < st->n_shared;
                const char *name = shared                      ? st->shared[k]
                                   : k < st->n_shared + st->n_prefix ? st->prefix[k - st->n_shared]
                                                                    : ad->stages[k - st->n_shared - st->n_prefix];
                int bi = base_stage_index(root, name);
                if (bi < 0) die("%s: arm %s: stage '%s' is not in the pipeline of %s", st->path, ad->name, name, st->base);
                if (k == st->n_shared + st->n_prefix) p->first_arm = p->n_nodes;
                parent = node_get(&L, parent, shared ? st->seed_base : seed_of[s], shared, pl->items[bi], name);
                p->nodes[p->n_nodes++] = parent;
            }
            if (ad->n_stages == 0) p->first_arm = p->n_nodes;
        }
        cfg_free(root);
    }
    /* directories and configs, each validated now (dry run) so a bad arm fails before anything runs */
    mkdir_p(dir);
    for (int i = 0; i < L.n; i++) {
        st_node *nd = &L.v[i];
        char group[32];
        if (nd->shared) snprintf(group, sizeof group, "shared");
        else snprintf(group, sizeof group, "seed%d", nd->seed);
        snprintf(nd->dir, sizeof nd->dir, "%s/runs/%s/%02d-%s", dir, group, i, nd->stage);
        mkdir_p(nd->dir);
        if (!node_config(st, &L, i, &err)) die("%s", err.msg);
        char cfgp[PATH_MAX + 32];
        snprintf(cfgp, sizeof cfgp, "%s/stage.yaml", nd->dir);
        char *old = read_text(cfgp);
        char mark[PATH_MAX + 32];
        snprintf(mark, sizeof mark, "%s/trained", nd->dir);
        nd->reused = old && strcmp(old, nd->config_text) == 0 && access(mark, F_OK) == 0 &&
                     (nd->parent < 0 || L.v[nd->parent].reused);
        free(old);
        if (!nd->reused) {
            unlink(mark);
            if (!write_text(cfgp, nd->config_text, &err)) die("%s", err.msg);
        }
        train_config ntc;
        if (!train_config_load(cfgp, NULL, 0, true, &ntc, &err)) die("study: %s", err.msg);
        train_config_free(&ntc);
    }
    char eval_file[PATH_MAX + 32];
    const char *eval_format;
    eval_data_file(st, &tc, dir, eval_file, sizeof eval_file, &eval_format);

    /* jobs: train (unless reused), then greedy and sampled evals (unless their results are there) */
    st_job *jobsv = xcalloc((size_t)L.n * 3, sizeof *jobsv);
    int n_jobs = 0, n_reused = 0;
    for (int i = 0; i < L.n; i++)
        for (int k = 0; k < 3; k++) {
            st_job *jb = &jobsv[n_jobs++];
            jb->node = i, jb->kind = (job_kind)k;
            char res[PATH_MAX + 32];
            snprintf(res, sizeof res, "%s/eval_%s.json", L.v[i].dir, k == JOB_GREEDY ? "greedy" : "sampled");
            bool have = L.v[i].reused && (k == JOB_TRAIN || access(res, F_OK) == 0);
            jb->state = have ? JS_DONE : JS_WAIT;
            n_reused += have;
            if (k != JOB_TRAIN) snprintf(jb->out, sizeof jb->out, "%s", res);
        }
    char exe[PATH_MAX];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    CHECK_SYS(el);
    exe[el] = 0;
    runner R = {.st = st, .L = &L, .jobs = jobsv, .n_jobs = n_jobs, .exe = exe, .eval_format = eval_format,
                .template_name = chat_template_name(tc.chat), .instruction = tc.instruction, .t0 = now_s()};
    snprintf(R.eval_file, sizeof R.eval_file, "%s", eval_file);
    /* cores split between the children unless the user fixed OMP_NUM_THREADS */
    R.threads = getenv("OMP_NUM_THREADS") ? 0 : S2D_MAX(1, ncpu / st->jobs);
    fprintf(stderr,
            "[study] %s: %d arms x %d seeds -> %d distinct stage runs, %d evals; %d of %d jobs reused from %s; "
            "%d at once\n",
            config, st->n_arms, n_seeds, L.n, 2 * L.n, n_reused, n_jobs, dir, st->jobs);
    install_signals();
    run_all(&R, st->jobs);
    for (int i = 0; i < L.n; i++) {
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/eval_greedy.json", L.v[i].dir);
        L.v[i].greedy = read_eval(p);
        snprintf(p, sizeof p, "%s/eval_sampled.json", L.v[i].dir);
        L.v[i].sampled = read_eval(p);
        if (!isfinite(L.v[i].greedy) || !isfinite(L.v[i].sampled)) die("study: %s: unreadable eval results", L.v[i].dir);
        read_node_budget(&L.v[i]);
    }
    report(st, &L, paths, seed_of, n_seeds, dir, now_s() - R.t0);
    fprintf(stderr, "[study] wrote %s/study.md, %s/study.json, %s/study.png\n", dir, dir, dir);
    for (int i = 0; i < L.n; i++) free(L.v[i].stage_yaml), free(L.v[i].config_text);
    free(L.v), free(paths), free(jobsv);
    for (int a = 0; a < st->n_arms; a++)
        for (int i = 0; i < st->arms[a].n_sets; i++) free(st->arms[a].sets[i]);
    for (int i = 0; i < st->n_sets; i++) free(st->sets[i]);
    free(st);
    train_config_free(&tc);
    return 0;
}
