/* s2d study: the papers' comparisons (arms) of a base pipeline over several seeds, with paired statistics.
 *
 *   s2d study CONFIG.yaml [--seeds N] [--seed-base S] [--out DIR] [--jobs J] [--kernels portable|native]
 *
 * A study config (docs/study.md) names a base train config (a library of stages), the stages shared by all
 * seeds (pretraining / SFT), the per-seed prefix every arm shares (teacher_rl), and the arms: stage lists of
 * the base with per-stage overrides. Every arm of every seed becomes a path in a tree of single-stage runs; a
 * stage with the same parent and the same resolved config runs once (so every arm of a seed reuses that seed's
 * teacher_rl, and s2d / no-OPD / replay share their bridge_fkl). Each node is one child `s2d train` process
 * (DIR/runs/<seed>/<NN>-<stage>/), whose policies and teachers are the outputs of its ancestors, followed by
 * two child `s2d eval` runs of its output on the test set (greedy accuracy and sampled avg@k). Up to --jobs
 * children run at once. Output: DIR/study.md (also printed), DIR/study.json, DIR/study.png (gnuplot).
 * This file: the command line, the study config, the run tree and its single-stage configs; the children are
 * in study_run.c, the statistics and outputs in study_report.c. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/arith_task.h"
#include "runtime/train_config.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "cli/study.h"
#include "core/common.h"
#include "core/config.h"
#include "io/dataset.h"
#include "text/chat.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: s2d study CONFIG.yaml [--seeds N] [--seed-base S] [--out DIR] [--jobs J] [--kernels K]\n"
            "  runs every arm of the study over N seeds (shared stages once, each seed's prefix once per seed),\n"
            "  evaluates every stage output on the test set (greedy accuracy and sampled avg@k) and writes\n"
            "  DIR/study.md (printed too), DIR/study.json and DIR/study.png; runs already complete in DIR with the\n"
            "  same config are reused (also after DIR was moved or copied)\n"
            "  --seeds N      seeds per arm (default: the config's seeds:)\n"
            "  --seed-base S  first seed (default: the config's seed_base:, else 1); seeds are S .. S+N-1\n"
            "  --out DIR      output directory (default: the config's out:, else runs/<config name>)\n"
            "  --jobs J       child runs at once (default: the config's jobs:, else the number of cores)\n"
            "  --kernels K    portable (default: the config's kernels:, else portable): every child runs s2d's\n"
            "                 portable code paths (S2D_NO_AVX512=1), OpenBLAS's Haswell kernels and one thread, so\n"
            "                 every x86-64 CPU with AVX2 and FMA gives the same numbers; native: this CPU's fastest\n"
            "                 kernels and ncpu/J threads per child (faster; the numbers depend on the machine)\n"
            "config keys: base, seeds, seed_base, jobs, kernels, out, set, shared, prefix, start, eval {data,\n"
            "  samples, plot_samples, temperature, top_p, max_new_tokens, limit, seed (seed s's models are sampled with\n"
            "  eval seed seed + s)}, metric (sampled|greedy), reference, arms\n"
            "  [{name, stages, set, text}], claims [{id, text, paper, better, worse}]; see docs/study.md\n");
}

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
    if (!cfg_get_int_or(ev, "plot_samples", st->eval_samples, 1, 1024, &st->eval_plot_samples, err)) goto done;
    if (!cfg_get_double_or(ev, "temperature", 1.0, 0.01, 10, &st->eval_temperature, err)) goto done;
    if (!cfg_get_double_or(ev, "top_p", 1.0, 0.01, 1, &st->eval_top_p, err)) goto done;
    if (!cfg_get_int(ev, "max_new_tokens", 1, 1000000, &st->eval_max_new, err)) goto done;
    if (!cfg_get_int_or(ev, "limit", 0, 0, INT32_MAX, &st->eval_limit, err)) goto done;
    if (!cfg_get_i64_or(ev, "seed", 0, 0, INT64_MAX / 2, &i64, err)) goto done;
    st->eval_seed = i64;
    static const char *const metrics[2] = {"sampled", "greedy"};
    int m;
    if (!cfg_get_enum_or(root, "metric", metrics, 2, 0, &m, err)) goto done;
    st->metric_greedy = m == 1;
    static const char *const kernels[2] = {"portable", "native"};
    if (!cfg_get_enum_or(root, "kernels", kernels, 2, 0, &m, err)) goto done;
    st->kernels_native = m == 1;
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

static int node_get(node_list *tree, int parent, int seed, bool shared, cfg_node *stage, const char *stage_name) {
    char *yaml = node_to_yaml(stage);
    for (int i = 0; i < tree->n; i++)
        if (tree->v[i].parent == parent && tree->v[i].seed == seed && strcmp(tree->v[i].stage_yaml, yaml) == 0) {
            free(yaml);
            return i;
        }
    if (tree->n == tree->cap) tree->cap = tree->cap ? 2 * tree->cap : 64, tree->v = xrealloc(tree->v, (size_t)tree->cap * sizeof *tree->v);
    st_node *nd = &tree->v[tree->n];
    memset(nd, 0, sizeof *nd);
    nd->parent = parent, nd->seed = seed, nd->shared = shared;
    nd->depth = parent < 0 ? 0 : tree->v[parent].depth + 1;
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
    return tree->n++;
}

/* The single-stage train config of node ni: the base (global overrides applied), seed = 1000 * seed + depth
 * (each stage its own sampling and data streams), the outputs of the ancestors it reads as model paths, no
 * HDF5 logs. */
static bool node_config(const study_def *st, node_list *tree, int ni, s2d_err *err) {
    st_node *nd = &tree->v[ni];
    cfg_node *root;
    TRY(load_base(st, &root, err));
    char v[PATH_MAX + 64];
    snprintf(v, sizeof v, "%lld", 1000LL * nd->seed + nd->depth);
    bool ok = cfg_set(root, "seed", v, err) && cfg_set(root, "logging", "{rollouts: false, metrics_h5: false}", err);
    for (int a = nd->parent; ok && a >= 0; a = tree->v[a].parent) {
        bool read = false; /* only the outputs it reads: the others may not exist yet (they run in parallel) */
        for (int r = 0; r < 3; r++) read |= strcmp(nd->refs[r], tree->v[a].output) == 0;
        if (!read) continue;
        char key[128], abs[PATH_MAX], mdir[PATH_MAX + 80];
        snprintf(mdir, sizeof mdir, "%s/out/models/%s", tree->v[a].dir, tree->v[a].output);
        if (!realpath(tree->v[a].dir, abs)) snprintf(abs, sizeof abs, "%s", tree->v[a].dir);
        snprintf(mdir, sizeof mdir, "%s/out/models/%s", abs, tree->v[a].output);
        snprintf(key, sizeof key, "models.%s", tree->v[a].output);
        snprintf(v, sizeof v, "{path: \"%s\"}", mdir);
        if (cfg_find(cfg_find(root, "models"), tree->v[a].output)) {
            ok = err_set(err, "%s: stage output '%s' has the name of a model in models:", st->base, tree->v[a].output);
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
    /* nothing here may depend on the study file's name: an unchanged node is reused by any study */
    int at = snprintf(text, cap, "# s2d study: stage %s (written by s2d study; edits are overwritten)\n%s"
                      "pipeline:\n", nd->stage, head);
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
    study_mkdir_p(ddir);
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

/* start, the claims' operands and the reference name what the study has. */
static void check_names(const study_def *st) {
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
}

/* Every arm of every seed as a path of nodes of the run tree (shared stages once, prefix stages once per seed). */
static void build_tree(const study_def *st, const int *seed_of, int n_seeds, node_list *tree,
                       arm_path (*paths)[ST_MAX_SEEDS]) {
    s2d_err err;
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
                parent = node_get(tree, parent, shared ? st->seed_base : seed_of[s], shared, pl->items[bi], name);
                p->nodes[p->n_nodes++] = parent;
            }
            if (ad->n_stages == 0) p->first_arm = p->n_nodes;
        }
        cfg_free(root);
    }
}

/* Samples per problem of each node's sampled eval: the claims and tables read the shared and prefix stages and
 * every arm's last stage; the stages inside an arm only the plot reads, so they take eval.plot_samples (cheaper
 * points of the curves, the same problems and eval seed). A node that ends one arm and sits inside another is
 * an arm's last. */
static void set_eval_samples(const study_def *st, node_list *tree, arm_path (*paths)[ST_MAX_SEEDS], int n_seeds) {
    for (int i = 0; i < tree->n; i++) tree->v[i].eval_samples = st->eval_samples;
    for (int a = 0; a < st->n_arms; a++)
        for (int s = 0; s < n_seeds; s++) {
            const arm_path *p = &paths[a][s];
            for (int k = p->first_arm; k < p->n_nodes - 1; k++) tree->v[p->nodes[k]].eval_samples = st->eval_plot_samples;
        }
    for (int a = 0; a < st->n_arms; a++)
        for (int s = 0; s < n_seeds; s++) {
            const arm_path *p = &paths[a][s];
            tree->v[p->nodes[p->n_nodes - 1]].eval_samples = st->eval_samples;
        }
}

/* Each node's directory and stage.yaml (reused when unchanged and trained), validated now (dry run) so that a
 * bad arm fails before anything runs. */
static void prepare_nodes(const study_def *st, node_list *tree, const char *dir) {
    s2d_err err;
    study_mkdir_p(dir);
    char abs_dir[PATH_MAX]; /* as node_config spells the ancestors' directories */
    if (!realpath(dir, abs_dir)) die("study: %s: %s", dir, strerror(errno));
    for (int i = 0; i < tree->n; i++) {
        st_node *nd = &tree->v[i];
        char group[32];
        if (nd->shared) snprintf(group, sizeof group, "shared");
        else snprintf(group, sizeof group, "seed%d", nd->seed);
        /* numbered within its group (shared, or its seed), so another --seeds keeps every directory's name */
        int local = 0;
        for (int j = 0; j < i; j++)
            local += tree->v[j].shared == nd->shared && (nd->shared || tree->v[j].seed == nd->seed);
        snprintf(nd->dir, sizeof nd->dir, "%s/runs/%s/%02d-%s", dir, group, local, nd->stage);
        study_mkdir_p(nd->dir);
        if (!node_config(st, tree, i, &err)) die("%s", err.msg);
        char cfgp[PATH_MAX + 32];
        snprintf(cfgp, sizeof cfgp, "%s/stage.yaml", nd->dir);
        char *old = study_read_text(cfgp);
        char mark[PATH_MAX + 32], want[64];
        snprintf(mark, sizeof mark, "%s/trained", nd->dir);
        study_trained_mark(st, want, sizeof want);
        char *got = study_read_text(mark);
        /* a study directory moved or copied elsewhere is still reused: its ancestors' model paths differ */
        nd->reused = study_same_text_moved(old, nd->config_text, "\"", abs_dir) && got && strcmp(got, want) == 0 &&
                     (nd->parent < 0 || tree->v[nd->parent].reused);
        if (!nd->reused) unlink(mark);
        if ((!nd->reused || strcmp(old, nd->config_text) != 0) && !study_write_text(cfgp, nd->config_text, &err))
            die("%s", err.msg);
        free(old), free(got);
        train_config ntc;
        if (!train_config_load(cfgp, NULL, 0, true, &ntc, &err)) die("study: %s", err.msg);
        train_config_free(&ntc);
    }
}

int cmd_study(int argc, char **argv) {
    const char *config = NULL, *out = NULL;
    int seeds = 0, jobs = 0, seed_base = -1, kernels = -1;
    enum { O_SEEDS = 256, O_SEED_BASE, O_JOBS, O_OUT, O_KERNELS };
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {"seeds", required_argument, 0, O_SEEDS},
                                         {"seed-base", required_argument, 0, O_SEED_BASE},
                                         {"jobs", required_argument, 0, O_JOBS}, {"out", required_argument, 0, O_OUT},
                                         {"kernels", required_argument, 0, O_KERNELS}, {0, 0, 0, 0}};
    cli_options_reset();
    const char *val, *opt;
    for (int o; (o = cli_option("study", argc, argv, opts, usage, &val, &opt)) != -1;) {
        switch (o) {
        case 'h': usage(stdout); return 0;
        case O_SEEDS: seeds = (int)flag_long(opt, val, 1, ST_MAX_SEEDS); break;
        case O_SEED_BASE: seed_base = (int)flag_long(opt, val, 0, 1000000); break;
        case O_JOBS: jobs = (int)flag_long(opt, val, 1, 256); break;
        case O_OUT: out = val; break;
        case O_KERNELS:
            if (strcmp(val, "portable") == 0) kernels = 0;
            else if (strcmp(val, "native") == 0) kernels = 1;
            else die_hint("s2d study --help", "study: %s: '%s': expected portable or native", opt, val);
            break;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (config) die("study: one config file expected, got '%s' and '%s'", config, argv[i]);
        config = argv[i];
    }
    if (!config) die_hint("s2d study --help", "study: CONFIG.yaml is required");
    study_def *st = xcalloc(1, sizeof *st);
    s2d_err err;
    if (!study_load(config, st, &err)) die("%s", err.msg);
    if (seeds) st->seeds = seeds;
    if (seed_base >= 0) st->seed_base = seed_base;
    if (kernels >= 0) st->kernels_native = kernels == 1;
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
    check_names(st);
    /* the tree: every arm of every seed as a path of nodes */
    int n_seeds = st->seeds;
    int seed_of[ST_MAX_SEEDS];
    for (int s = 0; s < n_seeds; s++) seed_of[s] = st->seed_base + s;
    node_list tree = {0};
    arm_path (*paths)[ST_MAX_SEEDS] = xcalloc((size_t)st->n_arms, sizeof *paths);
    build_tree(st, seed_of, n_seeds, &tree, paths);
    set_eval_samples(st, &tree, paths, n_seeds);
    prepare_nodes(st, &tree, dir);
    char eval_file[PATH_MAX + 32];
    const char *eval_format;
    eval_data_file(st, &tc, dir, eval_file, sizeof eval_file, &eval_format);

    study_eval_args ea = {.file = eval_file, .format = eval_format, .template_name = chat_template_name(tc.chat),
                          .instruction = tc.instruction};
    double t0 = study_now_s();
    double cpu = study_run(st, &tree, &ea, config, dir, n_seeds, ncpu);
    study_report(st, &tree, paths, seed_of, n_seeds, dir, study_now_s() - t0, cpu);
    fprintf(stderr, "[study] wrote %s/study.md, %s/study.json, %s/study.png\n", dir, dir, dir);
    for (int i = 0; i < tree.n; i++)
        free(tree.v[i].stage_yaml), free(tree.v[i].config_text), free(tree.v[i].problems[0]), free(tree.v[i].problems[1]);
    free(tree.v), free(paths);
    for (int a = 0; a < st->n_arms; a++)
        for (int i = 0; i < st->arms[a].n_sets; i++) free(st->arms[a].sets[i]);
    for (int i = 0; i < st->n_sets; i++) free(st->sets[i]);
    free(st);
    train_config_free(&tc);
    return 0;
}
