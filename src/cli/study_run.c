/* study_run.c: the child processes of `s2d study`: one `s2d train` per node of the run tree, then its greedy
 * and sampled `s2d eval`, up to --jobs at once (fork + exec of /proc/self/exe), with progress lines, failure
 * handling (the others stopped, the log named) and signal forwarding; then each node's results. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/study.h"
#include "core/common.h"

char *study_read_text(const char *path) {
    char *d;
    size_t len;
    s2d_err e;
    return read_file(path, &d, &len, &e) ? d : NULL;
}

/* Whether old is text as written for the same study in another directory (the study directory moved or
 * copied since): text with every `lead DIR/` (DIR: this study's directory, spelled as in text) reading
 * `lead OLD/` for one OLD. The directory is the only thing allowed to differ. */
bool study_same_text_moved(const char *old, const char *text, const char *lead, const char *dir) {
    if (!old || !text) return false;
    if (strcmp(old, text) == 0) return true;
    char from[PATH_MAX + 64];
    const int n_from = snprintf(from, sizeof from, "%s%s/", lead, dir);
    const char *at = strstr(text, from);
    if (!at || n_from >= (int)sizeof from) return false;
    const size_t head = (size_t)(at - text) + strlen(lead); /* old and text agree up to the directory */
    if (strncmp(old, text, head) != 0) return false;
    /* OLD ends where old goes on with the rest of that path ("/runs/seed1/00-teacher/...") and its delimiter */
    const char *rest = at + n_from - 1;
    char tail[PATH_MAX + 8];
    const size_t n_tail = strcspn(rest, "\" \t\n") + 1;
    if (n_tail >= sizeof tail) return false;
    memcpy(tail, rest, n_tail), tail[n_tail] = 0;
    const char *old_dir = old + head, *old_end = strstr(old_dir, tail);
    if (!old_end || old_end == old_dir || memchr(old_dir, '\n', (size_t)(old_end - old_dir))) return false;
    char to[PATH_MAX + 64];
    if (snprintf(to, sizeof to, "%s%.*s/", lead, (int)(old_end - old_dir), old_dir) >= (int)sizeof to) return false;
    /* text with every `from` replaced by `to`, compared with old as it is built */
    const size_t n_to = strlen(to);
    const char *t = text, *o = old;
    for (const char *f; (f = strstr(t, from)); t = f + n_from) {
        const size_t n = (size_t)(f - t);
        if (strncmp(o, t, n) != 0 || strncmp(o + n, to, n_to) != 0) return false;
        o += n + n_to;
    }
    return strcmp(o, t) == 0;
}

void study_mkdir_p(const char *path) {
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

bool study_write_text(const char *path, const char *text, s2d_err *err) {
    atomic_file af;
    if (!atomic_open(&af, path, err)) return false;
    if (fputs(text, af.fp) == EOF) {
        atomic_abort(&af);
        return err_set(err, "%s: write failed: %s", path, strerror(errno));
    }
    return atomic_commit(&af, err);
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

double study_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Portable kernels: the bits of a run depend on the CPU's kernels (s2d's AVX-512 paths, OpenBLAS's choice of
 * sgemm kernel for the CPU) and on the thread count, so by default every child runs s2d's portable paths,
 * OpenBLAS's Haswell kernels (any x86-64 CPU with AVX2 and FMA has them) and one thread: the same study gives
 * the same numbers on every such machine. */
static bool cpu_runs_haswell_kernels(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

const char *study_kernels_name(const study_def *st) { return st->kernels_native ? "native" : "portable"; }

void study_trained_mark(const study_def *st, char *buf, size_t n) {
    snprintf(buf, n, "complete kernels=%s\n", study_kernels_name(st));
}

const char *study_kernels_text(const study_def *st) {
    if (st->kernels_native)
        return "native (each child uses this CPU's fastest kernels and its share of the cores: the numbers depend on "
               "the CPU and the thread count)";
    if (cpu_runs_haswell_kernels())
        return "portable (S2D_NO_AVX512=1, OPENBLAS_CORETYPE=Haswell, one thread per child: every x86-64 CPU with "
               "AVX2 and FMA gives these numbers)";
    return "portable (S2D_NO_AVX512=1, one thread per child; this CPU has no AVX2 and FMA, so OpenBLAS chooses its "
           "own kernels and the numbers may differ from an x86-64 machine's)";
}

static pid_t spawn(const char *exe, char *const argv[], const char *stdout_path, const char *log_path, int threads,
                   bool portable) {
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
        if (portable) {
            setenv("S2D_NO_AVX512", "1", 1);
            if (cpu_runs_haswell_kernels()) setenv("OPENBLAS_CORETYPE", "Haswell", 1);
            unsetenv("OPENBLAS_NUM_THREADS"), unsetenv("GOTO_NUM_THREADS");
            setenv("OMP_NUM_THREADS", "1", 1);
        } else if (threads > 0) {
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

/* eval_<kind>.samples.jsonl (s2d eval --out: one line per sample) -> eval_<kind>.problems: one line per problem,
 * "id<TAB>correct<TAB>samples", in the order of first appearance; the samples file is removed after. */
static bool fold_samples(const char *samples_path, const char *problems_path, s2d_err *err) {
    FILE *f = fopen(samples_path, "r");
    if (!f) return err_set(err, "%s: %s", samples_path, strerror(errno));
    int n = 0, cap = 0, last = -1;
    struct problem { char id[128]; int correct, samples; } *v = NULL;
    char *line = NULL;
    size_t lcap = 0;
    long lineno = 0;
    bool ok = true;
    while (ok && getline(&line, &lcap, f) > 0) {
        lineno++;
        cJSON *j = cJSON_Parse(line);
        const cJSON *id = j ? cJSON_GetObjectItemCaseSensitive(j, "id") : NULL;
        const cJSON *c = j ? cJSON_GetObjectItemCaseSensitive(j, "correct") : NULL;
        if (!cJSON_IsString(id) || !cJSON_IsBool(c) || strlen(id->valuestring) >= sizeof v->id) {
            ok = err_set(err, "%s:%ld: not an eval sample line (string \"id\", bool \"correct\")", samples_path, lineno);
        } else {
            /* samples of one problem are usually adjacent: try the last one first */
            int k = last >= 0 && strcmp(v[last].id, id->valuestring) == 0 ? last : -1;
            for (int i = 0; k < 0 && i < n; i++)
                if (strcmp(v[i].id, id->valuestring) == 0) k = i;
            if (k < 0) {
                if (n == cap) cap = cap ? 2 * cap : 256, v = xrealloc(v, (size_t)cap * sizeof *v);
                k = n++;
                snprintf(v[k].id, sizeof v[k].id, "%s", id->valuestring);
                v[k].correct = v[k].samples = 0;
            }
            v[k].correct += cJSON_IsTrue(c), v[k].samples++, last = k;
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    if (ok && n == 0) ok = err_set(err, "%s: no samples", samples_path);
    if (ok) {
        size_t sz = 64 * (size_t)n + 64, len = 0;
        char *text = xmalloc(sz);
        for (int i = 0; i < n; i++) len += (size_t)snprintf(text + len, sz - len, "%s\t%d\t%d\n", v[i].id, v[i].correct, v[i].samples);
        ok = study_write_text(problems_path, text, err);
        free(text);
    }
    free(v);
    if (ok) unlink(samples_path);
    return ok;
}

/* eval_<kind>.problems -> per-problem accuracies (malloc'd) and the hash of the ids in order; false when missing
 * or unreadable. */
static bool read_problems(const char *path, double **acc, int *n_out, uint64_t *ids_hash) {
    char *t = study_read_text(path);
    if (!t) return false;
    int n = 0, cap = 0;
    double *v = NULL;
    uint64_t h = 1469598103934665603ull; /* FNV-1a over "id\n" of every problem */
    bool ok = true;
    for (char *line = t, *next; ok && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        else next = line + strlen(line);
        char *tab = strchr(line, '\t');
        int correct, samples;
        if (!tab || sscanf(tab + 1, "%d\t%d", &correct, &samples) != 2 || samples < 1 || correct < 0 || correct > samples) {
            ok = false;
            break;
        }
        for (const char *c = line; c < tab; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        h = (h ^ '\n') * 1099511628211ull;
        if (n == cap) cap = cap ? 2 * cap : 256, v = xrealloc(v, (size_t)cap * sizeof *v);
        v[n++] = (double)correct / samples;
    }
    free(t);
    if (!ok || n == 0) {
        free(v);
        return false;
    }
    *acc = v, *n_out = n, *ids_hash = h;
    return true;
}

/* DIR/eval_<greedy|sampled><suffix>: an eval's files (.json, .problems, .samples.jsonl) */
static void eval_file(const char *dir, job_kind kind, const char *suffix, char *buf, size_t n) {
    snprintf(buf, n, "%s/eval_%s%s", dir, kind == JOB_GREEDY ? "greedy" : "sampled", suffix);
}

static void problems_path(const char *dir, job_kind kind, char *buf, size_t n) { eval_file(dir, kind, ".problems", buf, n); }

static void node_label(const st_node *nd, char *buf, size_t n) {
    if (nd->shared) snprintf(buf, n, "shared %s", nd->stage);
    else snprintf(buf, n, "seed %d %s", nd->seed, nd->stage);
}

/* Accuracy ("pass@1" = avg@k, greedy with k = 1) from an eval's JSON line; NaN when unreadable. */
static double read_eval(const char *path) {
    char *t = study_read_text(path);
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

/* Labels and compute of a finished node: OUT/budget.json when the run wrote one (its "flops_total",
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
    char *t = study_read_text(path);
    if (!t) return;
    cJSON *b = cJSON_Parse(t);
    free(t);
    const cJSON *tot = cJSON_GetObjectItemCaseSensitive(b, "total");
    const cJSON *src = cJSON_IsObject(tot) ? tot : b;
    double f = num_field(src, "flops_total"); /* docs/design.md §7 */
    if (!isfinite(f)) f = num_field(src, "flops");
    if (isfinite(f)) nd->flops = f;
    double r = num_field(src, "rollout_tokens"), tr = num_field(src, "trained_tokens");
    if (isfinite(r)) nd->rollout_tokens = r;
    if (isfinite(tr)) nd->trained_tokens = tr;
    cJSON_Delete(b);
}

typedef struct {
    const study_def *st;
    node_list *tree;
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
    char *t = study_read_text(path);
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

/* The sampling settings of an eval job, for its arguments and its reuse stamp alike. Greedy is one sample at
 * temperature 0 (top-p and the seed cannot change it, so they are fixed and a new eval seed reruns no greedy
 * eval); sampled takes the node's sample count and its seed's eval seed. */
typedef struct {
    int samples;
    double temperature, top_p;
    long long seed;
} eval_sampling;

static eval_sampling eval_sampling_of(const runner *R, const st_node *nd, job_kind kind) {
    if (kind == JOB_GREEDY) return (eval_sampling){.samples = 1, .temperature = 0.0, .top_p = 1.0, .seed = 0};
    return (eval_sampling){.samples = nd->eval_samples, .temperature = R->st->eval_temperature,
                           .top_p = R->st->eval_top_p, .seed = (long long)study_eval_seed(R->st, nd->seed)};
}

static void start_job(runner *R, st_job *jb) {
    st_node *nd = &R->tree->v[jb->node];
    char *argv[40];
    int a = 0;
    char a_cfg[PATH_MAX + 32], a_out[PATH_MAX + 32], a_model[PATH_MAX + 96], a_k[16], a_t[32], a_p[32], a_n[16],
        a_seed[32], a_lim[16], tmp[PATH_MAX + 64], a_samples[PATH_MAX + 64];
    argv[a++] = (char *)"s2d";
    if (jb->kind == JOB_TRAIN) {
        snprintf(a_cfg, sizeof a_cfg, "%s/stage.yaml", nd->dir);
        snprintf(a_out, sizeof a_out, "%s/out", nd->dir);
        snprintf(jb->log, sizeof jb->log, "%s/train.log", nd->dir);
        argv[a++] = (char *)"train", argv[a++] = a_cfg, argv[a++] = (char *)"--out", argv[a++] = a_out;
        argv[a++] = (char *)"--overwrite";
        argv[a] = NULL;
        jb->pid = spawn(R->exe, argv, NULL, jb->log, R->threads, !R->st->kernels_native);
    } else {
        bool greedy = jb->kind == JOB_GREEDY;
        snprintf(a_model, sizeof a_model, "%s/out/models/%s", nd->dir, nd->output);
        const eval_sampling es = eval_sampling_of(R, nd, jb->kind);
        snprintf(a_k, sizeof a_k, "%d", es.samples);
        snprintf(a_t, sizeof a_t, "%.17g", es.temperature);
        snprintf(a_p, sizeof a_p, "%.17g", es.top_p);
        snprintf(a_n, sizeof a_n, "%d", R->st->eval_max_new);
        snprintf(a_seed, sizeof a_seed, "%lld", es.seed);
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
        /* every sample, folded into per-problem accuracies when the eval is done (the two-way SE) */
        eval_file(nd->dir, jb->kind, ".samples.jsonl", a_samples, sizeof a_samples);
        argv[a++] = (char *)"--out", argv[a++] = a_samples;
        if (R->st->eval_limit > 0) {
            snprintf(a_lim, sizeof a_lim, "%d", R->st->eval_limit);
            argv[a++] = (char *)"--limit", argv[a++] = a_lim;
        }
        argv[a] = NULL;
        jb->pid = spawn(R->exe, argv, tmp, jb->log, R->threads, !R->st->kernels_native);
    }
    jb->state = JS_RUN;
    jb->t0 = study_now_s();
    char lab[160];
    node_label(nd, lab, sizeof lab);
    fprintf(stderr, "[study %6.1fs] start %-12s %-28s log %s\n", study_now_s() - R->t0, job_names[jb->kind], lab, jb->log);
}

/* What an eval's result depends on besides the model: reused only when this matches (eval_<kind>.args). */
static void eval_stamp(const runner *R, const st_node *nd, job_kind kind, char *buf, size_t n) {
    const eval_sampling es = eval_sampling_of(R, nd, kind);
    snprintf(buf, n, "data=%s format=%s template=%s instruction=\"%s\" samples=%d temperature=%.17g top_p=%.17g "
             "max_new_tokens=%d seed=%lld limit=%d kernels=%s\n", R->eval_file, R->eval_format, R->template_name, R->instruction,
             es.samples, es.temperature, es.top_p, R->st->eval_max_new, es.seed, R->st->eval_limit, study_kernels_name(R->st));
}

static void stamp_path(const char *json, char *buf, size_t n) {
    snprintf(buf, n, "%.*s.args", (int)(strlen(json) - 5), json); /* eval_x.json -> eval_x.args */
}

static bool job_ready(runner *R, const st_job *jb) {
    if (jb->state != JS_WAIT) return false;
    const st_node *nd = &R->tree->v[jb->node];
    if (jb->kind == JOB_TRAIN) {
        /* waits only for the ancestors whose outputs it reads (policy, teacher, reference), so independent
         * stages of one path (the two SFTs) run side by side */
        for (int a = nd->parent; a >= 0; a = R->tree->v[a].parent) {
            const st_node *an = &R->tree->v[a];
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
        st_node *nd = &R->tree->v[jb->node];
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
            char text[64];
            study_trained_mark(R->st, text, sizeof text);
            if (!study_write_text(mark, text, &err)) die("%s", err.msg);
        } else {
            char tmp[PATH_MAX + 64];
            snprintf(tmp, sizeof tmp, "%s.tmp", jb->out);
            double v = read_eval(tmp);
            if (!isfinite(v)) {
                kill_running(R);
                die("study: %s of %s: no accuracy in its output %s (log %s)", job_names[jb->kind], lab, tmp, jb->log);
            }
            char stamp[PATH_MAX + 512], sp[PATH_MAX + 64], samples[PATH_MAX + 64], probs[PATH_MAX + 64];
            eval_file(nd->dir, jb->kind, ".samples.jsonl", samples, sizeof samples);
            problems_path(nd->dir, jb->kind, probs, sizeof probs);
            s2d_err err;
            if (!fold_samples(samples, probs, &err)) {
                kill_running(R);
                die("study: %s of %s: %s (log %s)", job_names[jb->kind], lab, err.msg, jb->log);
            }
            eval_stamp(R, nd, jb->kind, stamp, sizeof stamp);
            stamp_path(jb->out, sp, sizeof sp);
            if (!study_write_text(sp, stamp, &err)) die("%s", err.msg);
            CHECK_SYS(rename(tmp, jb->out));
        }
        fprintf(stderr, "[study %6.1fs] done  %-12s %-28s in %.1f s (%d of %d runs done, %d running)\n",
                study_now_s() - R->t0, job_names[jb->kind], lab, study_now_s() - jb->t0, done, total, running);
    }
}

double study_run(const study_def *st, node_list *tree_in, const study_eval_args *ea, const char *config, const char *dir,
                 int n_seeds, int ncpu) {
    node_list tree = *tree_in; /* a copy of the list header: the nodes (tree.v) are shared */
    st_job *jobsv = xcalloc((size_t)tree.n * 3, sizeof *jobsv);
    /* the children exec this very binary through /proc/PID/exe: it stays valid (the same inode) when the file is
     * rebuilt or replaced while the study runs, where its path would give a half-written or another binary */
    char exe[64];
    snprintf(exe, sizeof exe, "/proc/%ld/exe", (long)getpid());
    CHECK_SYS(access(exe, X_OK));
    runner R = {.st = st, .tree = &tree, .jobs = jobsv, .n_jobs = 3 * tree.n, .exe = exe, .eval_format = ea->format,
                .template_name = ea->template_name, .instruction = ea->instruction, .t0 = study_now_s()};
    snprintf(R.eval_file, sizeof R.eval_file, "%s", ea->file);
    /* jobs: train (unless reused), then greedy and sampled evals (unless their results are there, made with
     * the same eval settings) */
    int n_jobs = 0, n_reused = 0;
    for (int i = 0; i < tree.n; i++)
        for (int k = 0; k < 3; k++) {
            st_job *jb = &jobsv[n_jobs++];
            jb->node = i, jb->kind = (job_kind)k;
            bool have = tree.v[i].reused;
            if (k != JOB_TRAIN) {
                snprintf(jb->out, sizeof jb->out, "%s/eval_%s.json", tree.v[i].dir, k == JOB_GREEDY ? "greedy" : "sampled");
                char want[PATH_MAX + 512], sp[PATH_MAX + 64];
                eval_stamp(&R, &tree.v[i], (job_kind)k, want, sizeof want);
                stamp_path(jb->out, sp, sizeof sp);
                char *got = study_read_text(sp), pp[PATH_MAX + 64];
                problems_path(tree.v[i].dir, (job_kind)k, pp, sizeof pp);
                have = have && study_same_text_moved(got, want, "data=", dir) && access(jb->out, F_OK) == 0 &&
                       access(pp, F_OK) == 0;
                s2d_err err;
                if (have && strcmp(got, want) != 0 && !study_write_text(sp, want, &err)) /* moved: name the data here */
                    die("%s", err.msg);
                free(got);
            }
            jb->state = have ? JS_DONE : JS_WAIT;
            n_reused += have;
        }
    /* cores split between the children unless the user fixed OMP_NUM_THREADS */
    R.threads = getenv("OMP_NUM_THREADS") ? 0 : S2D_MAX(1, ncpu / st->jobs); /* native kernels only */
    fprintf(stderr,
            "[study] %s: %d arms x %d seeds -> %d distinct stage runs, %d evals; %d of %d jobs reused from %s; "
            "%d at once\n",
            config, st->n_arms, n_seeds, tree.n, 2 * tree.n, n_reused, n_jobs, dir, st->jobs);
    fprintf(stderr, "[study] kernels: %s\n", study_kernels_text(st));
    install_signals();
    run_all(&R, st->jobs);
    /* CPU seconds (user + sys) of every child of this invocation: what the study costs on an idle machine */
    struct rusage ru;
    CHECK_SYS(getrusage(RUSAGE_CHILDREN, &ru));
    double cpu = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
                 1e-6 * (double)ru.ru_stime.tv_usec;
    for (int i = 0; i < tree.n; i++) {
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/eval_greedy.json", tree.v[i].dir);
        tree.v[i].greedy = read_eval(p);
        snprintf(p, sizeof p, "%s/eval_sampled.json", tree.v[i].dir);
        tree.v[i].sampled = read_eval(p);
        if (!isfinite(tree.v[i].greedy) || !isfinite(tree.v[i].sampled)) die("study: %s: unreadable eval results", tree.v[i].dir);
        for (int k = 0; k < 2; k++) {
            int n = 0;
            problems_path(tree.v[i].dir, k == 0 ? JOB_GREEDY : JOB_SAMPLED, p, sizeof p);
            if (!read_problems(p, &tree.v[i].problems[k], &n, &tree.v[i].problem_ids[k]))
                die("study: %s: unreadable per-problem results (remove it to rerun the evaluation)", p);
            if (k == 1 && n != tree.v[i].n_problems)
                die("study: %s: %d problems, but %d in its greedy evaluation", p, n, tree.v[i].n_problems);
            tree.v[i].n_problems = n;
        }
        read_node_budget(&tree.v[i]);
    }
    free(jobsv);
    return cpu;
}
