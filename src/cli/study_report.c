/* study_report.c: the statistics and outputs of `s2d study`: study.md (printed too), study.json, study.png. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/study.h"
#include "core/common.h"
#include "core/stats.h"

static double acc_of(const st_node *nd, bool greedy) { return greedy ? nd->greedy : nd->sampled; }

/* The node whose output is `name` on this path (arm or prefix stage), or -1. */
static int path_find(const node_list *tree, const arm_path *p, const char *name) {
    for (int i = p->n_nodes - 1; i >= 0; i--)
        if (strcmp(tree->v[p->nodes[i]].output, name) == 0) return p->nodes[i];
    return -1;
}

/* used[k]: the arm's final model depends on node k of its path (its output is read, directly or through
 * later stages, as a policy, teacher or reference), so its labels and compute count for the arm. */
static void path_lineage(const node_list *tree, const arm_path *p, bool *used) {
    char need[2 * ST_MAX_STAGES * 3 + 8][64];
    int n_need = 0;
    snprintf(need[n_need++], 64, "%s", tree->v[p->nodes[p->n_nodes - 1]].output);
    for (int k = p->n_nodes - 1; k >= 0; k--) {
        const st_node *nd = &tree->v[p->nodes[k]];
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
static bool operand_values(const study_def *st, const node_list *tree, arm_path (*paths)[ST_MAX_SEEDS], int n_seeds,
                           const char *name, bool greedy, double *out, int *node) {
    for (int a = 0; a < st->n_arms; a++)
        if (strcmp(st->arms[a].name, name) == 0) {
            for (int s = 0; s < n_seeds; s++) {
                const arm_path *p = &paths[a][s];
                node[s] = p->nodes[p->n_nodes - 1];
                out[s] = acc_of(&tree->v[node[s]], greedy);
            }
            return true;
        }
    for (int s = 0; s < n_seeds; s++) {
        const arm_path *p = &paths[0][s];
        int found = -1;
        for (int i = 0; i < p->first_arm; i++)
            if (strcmp(tree->v[p->nodes[i]].output, name) == 0) found = p->nodes[i];
        if (found < 0) return false;
        node[s] = found;
        out[s] = acc_of(&tree->v[found], greedy);
    }
    return true;
}

/* The paired difference of nodes better[s] - worse[s] over seeds and test problems (stats_paired_twoway), on
 * the metric's per-problem accuracies; every node was scored on the same problems in the same order. */
static stats_twoway twoway_of(const node_list *tree, const int *better, const int *worse, int n_seeds, bool greedy) {
    const double *a[ST_MAX_SEEDS], *b[ST_MAX_SEEDS];
    int k = greedy ? 0 : 1, m = tree->v[better[0]].n_problems;
    for (int s = 0; s < n_seeds; s++) {
        const st_node *x = &tree->v[better[s]], *y = &tree->v[worse[s]];
        const st_node *first = &tree->v[better[0]];
        if (x->n_problems != m || y->n_problems != m || x->problem_ids[k] != first->problem_ids[k] ||
            y->problem_ids[k] != first->problem_ids[k])
            die("study: %s and %s were not scored on the same problems in the same order", x->dir, y->dir);
        a[s] = x->problems[k], b[s] = y->problems[k];
    }
    return stats_paired_twoway(a, b, n_seeds, m);
}

static void json_number_or_null(cJSON *o, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

static int max_stages(const study_def *st) {
    int n = 1;
    for (int a = 0; a < st->n_arms; a++) n = S2D_MAX(n, st->arms[a].n_stages);
    return n;
}

static void write_plot(const study_def *st, const node_list *tree, arm_path (*paths)[ST_MAX_SEEDS], int n_seeds,
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
                int ni = path_find(tree, &paths[a][s], st->start);
                if (ni < 0) have = false;
                else v[s] = acc_of(&tree->v[ni], greedy);
            }
            if (have) {
                double sd = stats_sd(v, n_seeds);
                fprintf(f, "0 %.4f %.4f %s\n", 100 * stats_mean(v, n_seeds), isfinite(sd) ? 100 * sd : 0, st->start);
            }
        }
        const arm_path *p0 = &paths[a][0];
        for (int k = p0->first_arm; k < p0->n_nodes; k++) {
            for (int s = 0; s < n_seeds; s++) v[s] = acc_of(&tree->v[paths[a][s].nodes[k]], greedy);
            double sd = stats_sd(v, n_seeds);
            fprintf(f, "%d %.4f %.4f %s\n", k - p0->first_arm + 1, 100 * stats_mean(v, n_seeds),
                    isfinite(sd) ? 100 * sd : 0, tree->v[p0->nodes[k]].stage);
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
        fprintf(f, "%s'%s' index %d using ($1+%.3f):2:3 with yerrorlines lw 2 dt %d title '%s'", a ? ", " : "", dat,
                a, 0.03 * (a - st->n_arms / 2.0), 1 + a / 8, st->arms[a].name); /* gnuplot has 8 colours: dash the rest */
    fprintf(f, "\n");
    fclose(f);
    char cmd[2 * PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>'%s/study_gnuplot.log'", gp, dir);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "s2d study: warning: gnuplot failed (status %d, see %s/study_gnuplot.log): no %s\n", rc, dir,
                png);
}

/* What the parts of the report share: the study, its run tree and paths, and the two outputs being built. */
typedef struct {
    const study_def *st;
    const node_list *tree;
    arm_path (*paths)[ST_MAX_SEEDS];
    int n_seeds;
    bool greedy;               /* the metric of differences and verdicts */
    FILE *md;                  /* study.md */
    cJSON *json, *jarms;       /* study.json and its "arms" */
    int ref;                   /* the reference arm */
    int ref_node[ST_MAX_SEEDS]; /* its final node per seed */
} report_ctx;

/* The shared and prefix stages' accuracies. */
static void report_shared(const report_ctx *R) {
    fprintf(R->md, "## Shared stages (every arm of a seed starts from these)\n\n| stage | greedy | sampled |\n|---|---|---|\n");
    const arm_path *p0 = &R->paths[0][0];
    for (int k = 0; k < p0->first_arm; k++) {
        double g[ST_MAX_SEEDS], sm[ST_MAX_SEEDS];
        for (int s = 0; s < R->n_seeds; s++) {
            const st_node *nd = &R->tree->v[R->paths[0][s].nodes[k]];
            g[s] = nd->greedy, sm[s] = nd->sampled;
        }
        char b1[64], b2[64];
        fmt_ms(b1, sizeof b1, g, R->n_seeds), fmt_ms(b2, sizeof b2, sm, R->n_seeds);
        const st_node *nd = &R->tree->v[p0->nodes[k]];
        fprintf(R->md, "| %s%s | %s | %s |\n", nd->stage, nd->shared ? " (once, all seeds)" : "", b1, b2);
    }
}

/* Arm a: its row of study.md (accuracies, Δ against the reference, labels, compute) and its study.json entry. */
static void report_arm(report_ctx *R, int a) {
    double g[ST_MAX_SEEDS], sm[ST_MAX_SEEDS], sft[ST_MAX_SEEDS], rl[ST_MAX_SEEDS], rlu[ST_MAX_SEEDS],
        pr[ST_MAX_SEEDS], rt[ST_MAX_SEEDS], tt[ST_MAX_SEEDS], fl[ST_MAX_SEEDS];
    int last_node[ST_MAX_SEEDS];
    for (int s = 0; s < R->n_seeds; s++) {
        const arm_path *p = &R->paths[a][s];
        last_node[s] = p->nodes[p->n_nodes - 1];
        const st_node *last = &R->tree->v[last_node[s]];
        g[s] = last->greedy, sm[s] = last->sampled;
        sft[s] = rl[s] = rlu[s] = pr[s] = rt[s] = tt[s] = fl[s] = 0;
        bool used[2 * ST_MAX_STAGES + 8];
        path_lineage(R->tree, p, used);
        for (int k = 0; k < p->n_nodes; k++) {
            if (!used[k]) continue;
            const st_node *nd = &R->tree->v[p->nodes[k]];
            if (nd->alg == ALG_SFT) sft[s] += nd->lab_total;
            else if (nd->alg == ALG_GRPO) rl[s] += nd->lab_total, rlu[s] += nd->lab_unique;
            pr[s] += nd->prompts, rt[s] += nd->rollout_tokens, tt[s] += nd->trained_tokens, fl[s] += nd->flops;
        }
    }
    stats_twoway d = twoway_of(R->tree, last_node, R->ref_node, R->n_seeds, R->greedy);
    char bg[64], bs[64], bd[64], b1[32], b2[32], b3[32], b4[32], b5[32], b6[32], b7[32];
    fmt_ms(bg, sizeof bg, g, R->n_seeds), fmt_ms(bs, sizeof bs, sm, R->n_seeds);
    if (a == R->ref) snprintf(bd, sizeof bd, "—");
    else if (isfinite(d.se)) snprintf(bd, sizeof bd, "%+.1f ± %.1f", pp(d.mean), 100 * d.se);
    else snprintf(bd, sizeof bd, "%+.1f", pp(d.mean));
    fmt_big(b1, sizeof b1, stats_mean(sft, R->n_seeds)), fmt_big(b2, sizeof b2, stats_mean(rl, R->n_seeds));
    fmt_big(b3, sizeof b3, stats_mean(rlu, R->n_seeds)), fmt_big(b4, sizeof b4, stats_mean(pr, R->n_seeds));
    fmt_big(b5, sizeof b5, stats_mean(rt, R->n_seeds)), fmt_big(b6, sizeof b6, stats_mean(tt, R->n_seeds));
    fmt_big(b7, sizeof b7, stats_mean(fl, R->n_seeds));
    fprintf(R->md, "| %s | ", R->st->arms[a].name);
    for (int k = 0; k < R->st->arms[a].n_stages; k++) fprintf(R->md, "%s%s", k ? " → " : "", R->st->arms[a].stages[k]);
    fprintf(R->md, " | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s |\n", bg, bs, bd, b1, b2, b3, b4, b5, b6, b7);
    cJSON *ja = cJSON_AddObjectToObject(R->jarms, R->st->arms[a].name);
    cJSON *jst = cJSON_AddArrayToObject(ja, "stages");
    for (int k = 0; k < R->st->arms[a].n_stages; k++) cJSON_AddItemToArray(jst, cJSON_CreateString(R->st->arms[a].stages[k]));
    cJSON_AddItemToObject(ja, "greedy", json_array(g, R->n_seeds, 100));
    cJSON_AddItemToObject(ja, "sampled", json_array(sm, R->n_seeds, 100));
    /* accuracy after every stage of the arm, per seed */
    cJSON *jc = cJSON_AddArrayToObject(ja, "after_stage");
    const arm_path *pa = &R->paths[a][0];
    for (int k = pa->first_arm; k < pa->n_nodes; k++) {
        double cg[ST_MAX_SEEDS], cs[ST_MAX_SEEDS];
        for (int s = 0; s < R->n_seeds; s++) {
            const st_node *nd = &R->tree->v[R->paths[a][s].nodes[k]];
            cg[s] = nd->greedy, cs[s] = nd->sampled;
        }
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "stage", R->tree->v[pa->nodes[k]].stage);
        cJSON_AddNumberToObject(e, "samples", R->tree->v[pa->nodes[k]].eval_samples);
        cJSON_AddItemToObject(e, "greedy", json_array(cg, R->n_seeds, 100));
        cJSON_AddItemToObject(e, "sampled", json_array(cs, R->n_seeds, 100));
        cJSON_AddItemToArray(jc, e);
    }
    cJSON *jd = cJSON_AddObjectToObject(ja, "vs_reference");
    cJSON_AddNumberToObject(jd, "difference", 100 * d.mean);
    json_number_or_null(jd, "se", 100 * d.se);
    json_number_or_null(jd, "se_seeds", 100 * d.se_seeds);
    json_number_or_null(jd, "se_problems", 100 * d.se_problems);
    cJSON *jl = cJSON_AddObjectToObject(ja, "labels");
    cJSON_AddItemToObject(jl, "sft", json_array(sft, R->n_seeds, 1));
    cJSON_AddItemToObject(jl, "rl_total", json_array(rl, R->n_seeds, 1));
    cJSON_AddItemToObject(jl, "rl_unique", json_array(rlu, R->n_seeds, 1));
    cJSON_AddItemToObject(jl, "unlabelled_prompts", json_array(pr, R->n_seeds, 1));
    cJSON *jco = cJSON_AddObjectToObject(ja, "compute");
    cJSON_AddItemToObject(jco, "rollout_tokens", json_array(rt, R->n_seeds, 1));
    cJSON_AddItemToObject(jco, "trained_tokens", json_array(tt, R->n_seeds, 1));
    cJSON_AddItemToObject(jco, "flops", json_array(fl, R->n_seeds, 1));
}

/* Claim c: its row and its study.json entry; returns its verdict. */
static stats_verdict report_claim(report_ctx *R, cJSON *jcl, int c) {
    const claim_def *cd = &R->st->claims[c];
    double b[ST_MAX_SEEDS], w[ST_MAX_SEEDS];
    int bn[ST_MAX_SEEDS], wn[ST_MAX_SEEDS];
    operand_values(R->st, R->tree, R->paths, R->n_seeds, cd->better, R->greedy, b, bn);
    operand_values(R->st, R->tree, R->paths, R->n_seeds, cd->worse, R->greedy, w, wn);
    stats_twoway d = twoway_of(R->tree, bn, wn, R->n_seeds, R->greedy);
    stats_verdict v = stats_verdict_of(d.mean, d.se);
    char se[64];
    if (isfinite(d.se)) snprintf(se, sizeof se, "%.1f (%.1f, %.1f)", 100 * d.se, 100 * d.se_seeds, 100 * d.se_problems);
    else snprintf(se, sizeof se, "-");
    double dd[ST_MAX_SEEDS];
    for (int s = 0; s < R->n_seeds; s++) dd[s] = b[s] - w[s];
    /* the per-seed differences beside D and SE: a "holds" from a few nearly equal tenths reads as what it is */
    fprintf(R->md, "| %s: %s (%s vs %s) | %s | %+.1f | %s | ", cd->id, cd->text, cd->better, cd->worse, cd->paper,
            pp(d.mean), se);
    for (int s = 0; s < R->n_seeds; s++) fprintf(R->md, "%s%+.1f", s ? " " : "", pp(dd[s]));
    fprintf(R->md, " | %s |\n", stats_verdict_name(v));
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "id", cd->id);
    cJSON_AddStringToObject(e, "text", cd->text);
    cJSON_AddStringToObject(e, "paper", cd->paper);
    cJSON_AddStringToObject(e, "better", cd->better);
    cJSON_AddStringToObject(e, "worse", cd->worse);
    cJSON_AddNumberToObject(e, "difference", 100 * d.mean);
    json_number_or_null(e, "se", 100 * d.se);
    json_number_or_null(e, "se_seeds", 100 * d.se_seeds);
    json_number_or_null(e, "se_problems", 100 * d.se_problems);
    cJSON_AddItemToObject(e, "per_seed", json_array(dd, R->n_seeds, 100));
    cJSON_AddStringToObject(e, "verdict", stats_verdict_name(v));
    /* what the seeds' spread alone would say (the rule before the problems' part was added; docs/study.md) */
    cJSON_AddStringToObject(e, "verdict_seeds_only", stats_verdict_name(stats_verdict_of(d.mean, d.se_seeds)));
    cJSON_AddItemToArray(jcl, e);
    return v;
}

void study_report(const study_def *st, node_list *tree, arm_path (*paths)[ST_MAX_SEEDS], const int *seeds, int n_seeds,
                  const char *dir, double wall, double cpu) {
    char *md = NULL;
    size_t md_len = 0;
    FILE *m = open_memstream(&md, &md_len);
    CHECK(m, "open_memstream");
    bool greedy = st->metric_greedy;
    const char *metric = greedy ? "greedy accuracy" : "sampled avg@k";
    fprintf(m, "# s2d study: %s\n\n", st->path);
    fprintf(m, "Base pipeline %s; %d seeds (%d", st->base, n_seeds, seeds[0]);
    for (int s = 1; s < n_seeds; s++) fprintf(m, ", %d", seeds[s]);
    fprintf(m, "); test set `%s`, greedy accuracy and sampled avg@%d (temperature %g, top-p %g)", st->eval_data,
            st->eval_samples, st->eval_temperature, st->eval_top_p);
    if (st->eval_plot_samples != st->eval_samples)
        fprintf(m, "; the stages inside an arm, which only the plot shows, at avg@%d", st->eval_plot_samples);
    fprintf(m, "; seed s's models sampled with eval seed %lld + s (every arm of a seed shares its draws, the seeds' "
               "draws are independent)", (long long)st->eval_seed);
    fprintf(m, ". Accuracies in %%. Wall time %.0f s; the child runs of this invocation used %.0f CPU seconds (runs "
               "reused from an earlier invocation not counted). Kernels: %s.\n\n", wall, cpu, study_kernels_text(st));
    fprintf(m, "Verdict rule: a claim's difference is paired over seeds (the same seed's runs share the teacher and "
               "the data order) and over test problems (every model is scored on the same ones): D is its mean and "
               "SE combines two parts, shown as SE (seeds, problems): the seeds' = sd of the per-seed differences / "
               "sqrt(seeds), and the problems' = sd of the per-problem differences (averaged over seeds) / "
               "sqrt(problems), which a fixed test set adds at every seed; SE^2 = seeds'^2 + problems'^2 - the "
               "seed x problem residual counted in both, never below either part. A claim **holds** when D > 2 SE, "
               "is **reversed** when D < -2 SE, and is **within noise** otherwise (undetermined with one seed). "
               "Claims compare the %s.\n\n", metric);
    report_ctx R = {.st = st, .tree = tree, .paths = paths, .n_seeds = n_seeds, .greedy = greedy, .md = m};
    report_shared(&R);
    for (int a = 0; a < st->n_arms; a++)
        if (strcmp(st->arms[a].name, st->reference) == 0) R.ref = a;
    const char *ref_name = st->arms[R.ref].name;
    fprintf(m, "\n## Arms (final accuracy, mean ± sd over seeds; Δ = arm − %s, paired, ± SE, on the %s)\n\n",
            ref_name, metric);
    fprintf(m, "| arm | stages | greedy | sampled | Δ vs %s | SFT labels | RL labels (unique) | bridge prompts | "
               "rollout tokens | trained tokens | FLOPs |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
            ref_name);
    cJSON *J = cJSON_CreateObject();
    R.json = J;
    cJSON_AddStringToObject(J, "study", st->path);
    cJSON_AddStringToObject(J, "base", st->base);
    cJSON *js = cJSON_AddArrayToObject(J, "seeds");
    for (int s = 0; s < n_seeds; s++) cJSON_AddItemToArray(js, cJSON_CreateNumber(seeds[s]));
    cJSON_AddStringToObject(J, "metric", greedy ? "greedy" : "sampled");
    cJSON_AddStringToObject(J, "kernels", study_kernels_name(st));
    cJSON_AddNumberToObject(J, "eval_samples", st->eval_samples);
    cJSON_AddNumberToObject(J, "eval_plot_samples", st->eval_plot_samples);
    cJSON *jes = cJSON_AddArrayToObject(J, "eval_seeds"); /* per seed, in the order of "seeds" */
    for (int s = 0; s < n_seeds; s++) cJSON_AddItemToArray(jes, cJSON_CreateNumber((double)study_eval_seed(st, seeds[s])));
    cJSON_AddStringToObject(J, "reference", ref_name);
    cJSON_AddStringToObject(J, "rule", "holds: difference > 2 SE; reversed: difference < -2 SE; otherwise within "
                                       "noise; SE^2 = se_seeds^2 + se_problems^2 - residual / (seeds problems), at "
                                       "least either part; se_seeds = sd of the per-seed paired differences / "
                                       "sqrt(seeds); se_problems = sd of the per-problem paired differences "
                                       "(averaged over seeds) / sqrt(problems)");
    cJSON_AddStringToObject(J, "units", "accuracies and differences in percentage points");
    cJSON_AddNumberToObject(J, "wall_s", wall);
    cJSON_AddNumberToObject(J, "cpu_s", cpu);
    R.jarms = cJSON_AddObjectToObject(J, "arms");
    for (int s = 0; s < n_seeds; s++) {
        const arm_path *p = &paths[R.ref][s];
        R.ref_node[s] = p->nodes[p->n_nodes - 1];
    }
    for (int a = 0; a < st->n_arms; a++) report_arm(&R, a);
    fprintf(m, "\nLabels and compute count every stage the arm's final model depends on (as policy, teacher or "
               "reference, through earlier stages too: shared SFT and teacher_rl included where used); RL "
               "labels are the labelled examples GRPO stages drew (unique: per stage, summed); FLOPs come from "
               "OUT/budget.json when the runs write one (`-` otherwise).\n");
    /* claims */
    fprintf(m, "\n## Claims (difference = better − worse, %s, percentage points)\n\n"
               "| claim | paper | measured | SE (seeds, problems) | per seed | verdict |\n|---|---|---|---|---|---|\n", metric);
    cJSON *jcl = cJSON_AddArrayToObject(J, "claims");
    int n_hold = 0, n_rev = 0, n_noise = 0;
    for (int c = 0; c < st->n_claims; c++) {
        stats_verdict v = report_claim(&R, jcl, c);
        n_hold += v == VERDICT_HOLDS, n_rev += v == VERDICT_REVERSED, n_noise += v == VERDICT_NOISE;
    }
    fprintf(m, "\n%d of %d claims hold, %d reversed, %d within noise at this scale (%d seeds).\n", n_hold, st->n_claims,
            n_rev, n_noise, n_seeds);
    fclose(m);
    fputs(md, stdout);
    fflush(stdout);
    char path[PATH_MAX + 32];
    s2d_err err;
    snprintf(path, sizeof path, "%s/study.md", dir);
    if (!study_write_text(path, md, &err)) die("%s", err.msg);
    free(md);
    char *js_text = cJSON_Print(J);
    size_t jl = strlen(js_text);
    js_text = xrealloc(js_text, jl + 2);
    js_text[jl] = '\n', js_text[jl + 1] = 0;
    snprintf(path, sizeof path, "%s/study.json", dir);
    if (!study_write_text(path, js_text, &err)) die("%s", err.msg);
    free(js_text);
    cJSON_Delete(J);
    write_plot(st, tree, paths, n_seeds, dir);
}

