/* cmd_plot.c: s2d plot OUT [--out DIR]: one PNG of curves per stage from OUT/metrics.jsonl, drawn by gnuplot.
 *
 * The step records of each stage become a tab-separated table (global step, then one column per metric; "?"
 * where a value is null) in a temp directory; a gnuplot script draws a grid of panels (loss, reward, KL,
 * entropy, response length, rates, std, grad norm, lr, throughput: those with data in that stage) against the
 * global step into DIR/<stage>.png.tmp.<pid>, renamed when gnuplot succeeds. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"

extern char **environ;

/* Curves, in table column order (column k + 2 in gnuplot; column 1 is the global step). */
static const char *const SERIES[] = {"loss",          "pg_loss",          "kl_loss",
                                     "reward_mean",   "accuracy",         "kl",
                                     "entropy",       "response_length_mean", "response_length_max",
                                     "truncation_rate", "zero_variance_fraction", "clip_fraction",
                                     "reward_std",    "advantage_std",    "grad_norm",
                                     "lr",            "tokens_per_s"};
#define N_SERIES ((int)S2D_ARRAY_LEN(SERIES))

typedef struct {
    const char *title;
    int series[4]; /* indices into SERIES, -1 ends */
    bool eval;     /* also the stage's eval accuracy points */
} panel;

static const panel PANELS[] = {
    {"loss", {0, 1, 2, -1}, false},
    {"reward and accuracy", {3, 4, -1}, true},
    {"KL", {5, -1}, false},
    {"entropy (sampled tokens)", {6, -1}, false},
    {"response length (tokens)", {7, 8, -1}, false},
    {"rates", {9, 10, 11, -1}, false},
    {"reward and advantage std", {12, 13, -1}, false},
    {"grad norm", {14, -1}, false},
    {"learning rate", {15, -1}, false},
    {"tokens / s", {16, -1}, false},
};
#define N_PANELS ((int)S2D_ARRAY_LEN(PANELS))

typedef struct {
    double x, v[N_SERIES];
} step_row;

typedef struct {
    char *name, *algo;
    step_row *rows;
    int n_rows, cap_rows;
    double *eval_x, *eval_acc;
    int n_evals, cap_evals;
} stage_curves;

static void usage(FILE *out) {
    fprintf(out,
            "usage: s2d plot OUT [--out DIR]\n"
            "  draws the curves of a training run's metrics (OUT/metrics.jsonl, or the temp file of a run still\n"
            "  in progress) with gnuplot: one PNG per stage, DIR/<stage>.png, panels of loss (pg and KL parts),\n"
            "  reward and accuracy (eval points), KL, entropy, response length, truncation / zero-variance /\n"
            "  clip rates, reward and advantage std, grad norm, learning rate and tokens/s against the global step\n"
            "  --out DIR   where the PNGs go (default OUT/plots; created if needed)\n"
            "needs gnuplot with the pngcairo terminal (Debian: gnuplot-nox; make deps installs it)\n");
}

static stage_curves *stage_of(stage_curves **st, int *n, const char *name, const char *algo) {
    for (int i = 0; i < *n; i++)
        if (strcmp((*st)[i].name, name) == 0) return &(*st)[i];
    *st = xrealloc(*st, (size_t)(*n + 1) * sizeof **st);
    stage_curves *s = &(*st)[(*n)++];
    memset(s, 0, sizeof *s);
    s->name = xstrdup(name);
    s->algo = xstrdup(algo ? algo : "");
    return s;
}

static double num_or_nan(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : NAN;
}

/* The metrics file of OUT: metrics.jsonl, else the newest metrics.jsonl.tmp.<pid> of a run in progress. */
static bool find_metrics(const char *out, char *path, size_t n, bool *live) {
    struct stat st;
    path_join(path, n, out, "metrics.jsonl");
    *live = false;
    if (stat(path, &st) == 0) return true;
    DIR *d = opendir(out);
    if (!d) return false;
    struct dirent *e;
    time_t newest = 0;
    char cand[4096];
    bool found = false;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "metrics.jsonl.tmp.", 18) != 0) continue;
        path_join(cand, sizeof cand, out, e->d_name);
        if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && (!found || st.st_mtime > newest)) {
            snprintf(path, n, "%s", cand);
            newest = st.st_mtime, found = true;
        }
    }
    closedir(d);
    *live = found;
    if (!found) path_join(path, n, out, "metrics.jsonl");
    return found;
}

static void read_metrics(const char *path, stage_curves **st, int *n_st) {
    s2d_err err;
    FILE *fp = fopen_regular(path, &err);
    if (!fp) die("%s", err.msg);
    jsonl_reader rd;
    jsonl_reader_init(&rd, fp, path);
    cJSON *j;
    while ((j = jsonl_next(&rd))) {
        const cJSON *stage = cJSON_GetObjectItemCaseSensitive(j, "stage");
        const cJSON *event = cJSON_GetObjectItemCaseSensitive(j, "event");
        const cJSON *algo = cJSON_GetObjectItemCaseSensitive(j, "algo");
        if (!cJSON_IsObject(j) || !cJSON_IsString(stage)) {
            cJSON_Delete(j);
            continue; /* not a stage record */
        }
        double x = num_or_nan(j, "global_step");
        if (isnan(x)) x = num_or_nan(j, "step"); /* files written before global_step existed */
        if (cJSON_IsString(event) && strcmp(event->valuestring, "eval") == 0 && !isnan(x)) {
            stage_curves *s = stage_of(st, n_st, stage->valuestring, NULL);
            if (s->n_evals == s->cap_evals) {
                s->cap_evals = s->cap_evals ? 2 * s->cap_evals : 16;
                s->eval_x = xrealloc(s->eval_x, (size_t)s->cap_evals * sizeof(double));
                s->eval_acc = xrealloc(s->eval_acc, (size_t)s->cap_evals * sizeof(double));
            }
            s->eval_x[s->n_evals] = x, s->eval_acc[s->n_evals++] = num_or_nan(j, "accuracy");
        } else if (!event && cJSON_IsString(algo) && !isnan(x)) { /* a step record */
            stage_curves *s = stage_of(st, n_st, stage->valuestring, algo->valuestring);
            if (!s->algo[0]) free(s->algo), s->algo = xstrdup(algo->valuestring);
            if (s->n_rows == s->cap_rows) {
                s->cap_rows = s->cap_rows ? 2 * s->cap_rows : 64;
                s->rows = xrealloc(s->rows, (size_t)s->cap_rows * sizeof(step_row));
            }
            step_row *r = &s->rows[s->n_rows++];
            r->x = x;
            for (int k = 0; k < N_SERIES; k++) r->v[k] = num_or_nan(j, SERIES[k]);
        }
        cJSON_Delete(j);
    }
    jsonl_reader_free(&rd);
    fclose(fp);
}

/* A gnuplot single-quoted string ('' stands for a quote). */
static void gp_quote(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

static bool series_has_data(const stage_curves *s, int k) {
    for (int i = 0; i < s->n_rows; i++)
        if (!isnan(s->rows[i].v[k])) return true;
    return false;
}

static bool evals_have_data(const stage_curves *s) {
    for (int i = 0; i < s->n_evals; i++)
        if (!isnan(s->eval_acc[i])) return true;
    return false;
}

/* What a stage's plot is made of: its curves, the two tables gnuplot reads and the PNG it writes. */
typedef struct {
    const stage_curves *s;
    const char *table, *evals, *png;
} plot_job;

static void write_file(const char *path, void (*fill)(FILE *, const plot_job *), const plot_job *job) {
    FILE *f = fopen(path, "w");
    if (!f) die("%s: cannot create: %s", path, strerror(errno));
    s2d_tmp_register(path);
    fill(f, job);
    if (ferror(f) | fclose(f)) die("%s: write failed: %s", path, strerror(errno));
}

static void fill_table(FILE *f, const plot_job *job) {
    const stage_curves *s = job->s;
    for (int i = 0; i < s->n_rows; i++) {
        fprintf(f, "%.17g", s->rows[i].x);
        for (int k = 0; k < N_SERIES; k++) {
            if (isnan(s->rows[i].v[k])) fputs("\t?", f);
            else fprintf(f, "\t%.9g", s->rows[i].v[k]);
        }
        fputc('\n', f);
    }
}

static void fill_evals(FILE *f, const plot_job *job) {
    const stage_curves *s = job->s;
    for (int i = 0; i < s->n_evals; i++)
        if (!isnan(s->eval_acc[i])) fprintf(f, "%.17g\t%.9g\n", s->eval_x[i], s->eval_acc[i]);
}

static void fill_script(FILE *f, const plot_job *job) {
    const stage_curves *s = job->s;
    int n = 0;
    bool show[N_PANELS];
    for (int p = 0; p < N_PANELS; p++) {
        show[p] = PANELS[p].eval && evals_have_data(s);
        for (int k = 0; PANELS[p].series[k] >= 0 && k < 4; k++) show[p] |= series_has_data(s, PANELS[p].series[k]);
        n += show[p];
    }
    int cols = n < 3 ? n : 3, rows = (n + cols - 1) / cols;
    fprintf(f, "set terminal pngcairo noenhanced size %d,%d font 'sans,10'\nset output ", 520 * cols, 360 * rows + 40);
    gp_quote(f, job->png);
    fprintf(f, "\nset datafile separator '\\t'\nset datafile missing '?'\nset grid\nset key top right font ',8'\n"
               "set xlabel 'global step'\nset offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05\nset multiplot layout %d,%d title ", rows, cols);
    char title[512];
    snprintf(title, sizeof title, "%s (%s): %d steps", s->name, s->algo, s->n_rows);
    gp_quote(f, title);
    fputc('\n', f);
    for (int p = 0; p < N_PANELS; p++) {
        if (!show[p]) continue;
        fputs("set title ", f);
        gp_quote(f, PANELS[p].title);
        fputs("\nplot ", f);
        bool first = true;
        for (int k = 0; PANELS[p].series[k] >= 0 && k < 4; k++) {
            int sk = PANELS[p].series[k];
            if (!series_has_data(s, sk)) continue;
            if (!first) fputs(", ", f);
            gp_quote(f, job->table);
            fprintf(f, " using 1:%d with linespoints pointtype 7 pointsize 0.4 title ", sk + 2);
            gp_quote(f, SERIES[sk]);
            first = false;
        }
        if (PANELS[p].eval && evals_have_data(s)) {
            if (!first) fputs(", ", f);
            gp_quote(f, job->evals);
            fputs(" using 1:2 with points pointtype 5 pointsize 1.2 title 'eval accuracy (greedy)'", f);
        }
        fputc('\n', f);
    }
    fputs("unset multiplot\nset output\n", f);
}

/* Runs gnuplot on script; its stderr goes to errpath. False + err (not found, or its exit status and first
 * error line). */
static bool run_gnuplot(const char *script, const char *errpath, s2d_err *err) {
    posix_spawn_file_actions_t fa;
    CHECK(posix_spawn_file_actions_init(&fa) == 0, "posix_spawn_file_actions_init failed");
    CHECK(posix_spawn_file_actions_addopen(&fa, 2, errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644) == 0,
          "posix_spawn_file_actions_addopen failed");
    char *argv[] = {(char *)"gnuplot", (char *)script, NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc == ENOENT)
        return err_set(err, "gnuplot not found on PATH: s2d plot draws with gnuplot (Debian: apt-get install "
                            "gnuplot-nox, or make deps)");
    if (rc != 0) return err_set(err, "cannot run gnuplot: %s", strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0) CHECK(errno == EINTR, "waitpid(gnuplot) failed: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    char first[512] = "";
    FILE *e = fopen(errpath, "r");
    if (e) {
        while (fgets(first, sizeof first, e) && strspn(first, " \t\n^") == strlen(first)) {}
        fclose(e);
    }
    first[strcspn(first, "\n")] = '\0';
    return err_set(err, "gnuplot failed (%s %d)%s%s", WIFEXITED(status) ? "exit status" : "signal",
                   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), first[0] ? ": " : "", first);
}

static void mkdir_p(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) die("%s: cannot create: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) die("%s: cannot create: %s", buf, strerror(errno));
}

int cmd_plot(int argc, char **argv) {
    const char *out = NULL, *dir = NULL;
    enum { O_OUT = 256 };
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {"out", required_argument, 0, O_OUT},
                                         {0, 0, 0, 0}};
    cli_options_reset();
    const char *val, *opt;
    for (int o; (o = cli_option("plot", argc, argv, opts, NULL, &val, &opt)) != -1;) {
        if (o == 'h') {
            usage(stdout);
            return 0;
        }
        if (o == O_OUT) dir = val;
    }
    for (int i = optind; i < argc; i++) {
        if (out) die_hint("s2d plot --help", "one run directory at a time ('%s', '%s')", out, argv[i]);
        out = argv[i];
    }
    if (!out) die_hint("s2d plot --help", "plot needs a run directory OUT (the --out of s2d train)");
    struct stat st;
    if (stat(out, &st) != 0) die("%s: %s", out, strerror(errno));
    if (!S_ISDIR(st.st_mode)) die("%s: not a directory (s2d plot takes the run directory, the --out of s2d train)", out);
    char mpath[4096];
    bool live;
    if (!find_metrics(out, mpath, sizeof mpath, &live))
        die("%s: no metrics.jsonl: %s holds no training metrics (s2d train writes OUT/metrics.jsonl)", mpath, out);
    stage_curves *stages = NULL;
    int n_st = 0;
    read_metrics(mpath, &stages, &n_st);
    int with_steps = 0;
    for (int i = 0; i < n_st; i++) with_steps += stages[i].n_rows > 0;
    if (with_steps == 0) die("%s: no step records to plot (no line with \"stage\", \"algo\" and a step)", mpath);
    if (live) fprintf(stderr, "s2d plot: %s: a run in progress (metrics.jsonl is not written yet)\n", mpath);

    char pdir[4096];
    if (dir) snprintf(pdir, sizeof pdir, "%s", dir);
    else path_join(pdir, sizeof pdir, out, "plots");
    mkdir_p(pdir);
    char tmpd[4096];
    const char *tmproot = getenv("TMPDIR");
    snprintf(tmpd, sizeof tmpd, "%s/s2d-plot-XXXXXX", tmproot && *tmproot ? tmproot : "/tmp"); /* mkdtemp's template */
    if (!mkdtemp(tmpd)) die("%s: cannot create a temp directory: %s", tmpd, strerror(errno));
    char table[4200], evals[4200], script[4200], errp[4200], png[4200], tmp_png[4300];
    path_join(table, sizeof table, tmpd, "steps.tsv");
    path_join(evals, sizeof evals, tmpd, "evals.tsv");
    path_join(script, sizeof script, tmpd, "plot.gp");
    path_join(errp, sizeof errp, tmpd, "gnuplot.err");
    s2d_tmp_register(errp);
    s2d_err err;
    bool ok = true;
    for (int i = 0; i < n_st && ok; i++) {
        const stage_curves *s = &stages[i];
        if (s->n_rows == 0) continue;
        char safe[256];
        snprintf(safe, sizeof safe, "%s", s->name);
        for (char *c = safe; *c; c++) /* a file name whatever the stage is called */
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
                  *c == '-' || *c == '.'))
                *c = '_';
        if (strcmp(safe, ".") == 0 || strcmp(safe, "..") == 0) safe[0] = '_';
        snprintf(png, sizeof png, "%s/%s.png", pdir, safe);
        snprintf(tmp_png, sizeof tmp_png, "%s.tmp.%d", png, (int)getpid());
        plot_job job = {s, table, evals, tmp_png};
        write_file(table, fill_table, &job);
        write_file(evals, fill_evals, &job);
        write_file(script, fill_script, &job);
        s2d_tmp_register(tmp_png);
        ok = run_gnuplot(script, errp, &err);
        if (ok && rename(tmp_png, png) != 0) die("%s: cannot rename to %s: %s", tmp_png, png, strerror(errno));
        if (!ok) unlink(tmp_png);
        s2d_tmp_unregister(tmp_png);
        if (ok) printf("%s\n", png);
    }
    const char *tmps[] = {table, evals, script, errp};
    for (size_t k = 0; k < S2D_ARRAY_LEN(tmps); k++) unlink(tmps[k]), s2d_tmp_unregister(tmps[k]);
    rmdir(tmpd);
    for (int i = 0; i < n_st; i++) {
        free(stages[i].name), free(stages[i].algo), free(stages[i].rows);
        free(stages[i].eval_x), free(stages[i].eval_acc);
    }
    free(stages);
    if (!ok) die("%s", err.msg);
    return 0;
}
