/* threads.c: OpenMP threads per process and their wait policy (threads.h has the rule). */
#include "core/threads.h"

#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

/* Set in the environment of the re-executed process so that it does not re-execute again and can say who set
 * OMP_WAIT_POLICY. */
#define REEXEC_VAR "S2D_THREADS_REEXEC"

static thread_plan g_plan;
static bool g_have_plan;

/* A positive integer at the start of s ("4", "4,2", "6(x2)"), or 0. */
static int leading_int(const char *s) {
    if (!s || *s < '0' || *s > '9') return 0;
    long v = strtol(s, NULL, 10);
    return v > 0 && v < 1000000 ? (int)v : 0;
}

/* SLURM_*_TASKS_PER_NODE: "6" or "6(x2)" (every node the same) gives 6; a mixed list ("3,2") gives 0. */
static int uniform_tasks_per_node(const char *s) {
    int n = leading_int(s);
    if (!n) return 0;
    const char *rest = s + strspn(s, "0123456789");
    if (*rest == '\0') return n;
    if (rest[0] == '(' && rest[1] == 'x' && strchr(rest, ',') == NULL) return n;
    return 0;
}

void threads_read_env(thread_plan *p) {
    memset(p, 0, sizeof *p);
    cpu_set_t set;
    CPU_ZERO(&set);
    p->cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    if (p->cores <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p->cores = n > 0 ? (int)n : 1;
    }
    p->local_ranks = 1;
    const char *locals[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE",
                            "SLURM_STEP_TASKS_PER_NODE"};
    for (size_t i = 0; i < sizeof locals / sizeof *locals; i++) {
        const char *v = getenv(locals[i]);
        int n = i < 2 ? leading_int(v) : uniform_tasks_per_node(v);
        /* the Slurm task counts describe a job step only inside one (not an sbatch script's own shell) */
        if (i >= 2 && !getenv("SLURM_STEP_ID")) n = 0;
        if (n > 0) {
            p->local_ranks = n;
            snprintf(p->local_from, sizeof p->local_from, "%s", locals[i]);
            break;
        }
    }
    if (getenv("SLURM_STEP_ID")) p->cpus_per_task = leading_int(getenv("SLURM_CPUS_PER_TASK"));
    p->user_threads = leading_int(getenv("OMP_NUM_THREADS"));
    const char *w = getenv("OMP_WAIT_POLICY");
    if (w) snprintf(p->user_wait, sizeof p->user_wait, "%s", w);
    const char *re = getenv(REEXEC_VAR);
    p->wait_by_s2d = re && strcmp(re, "1") == 0 && w && strcmp(w, "passive") == 0;
}

void threads_decide(thread_plan *p) {
    if (p->cores < 1) p->cores = 1;
    if (p->local_ranks < 1) p->local_ranks = 1;
    if (p->user_threads > 0) {
        p->threads = p->user_threads;
        p->why = "OMP_NUM_THREADS";
    } else if (p->cpus_per_task > 0) {
        p->threads = p->cpus_per_task < p->cores ? p->cpus_per_task : p->cores;
        p->why = "SLURM_CPUS_PER_TASK";
    } else {
        p->threads = p->cores / p->local_ranks;
        if (p->threads < 1) p->threads = 1;
        p->why = "cores / local ranks";
    }
    p->oversubscribed = (long)p->local_ranks * p->threads > p->cores;
    p->want_passive = p->threads > 1 && p->user_wait[0] == '\0';
}

void threads_early(char **argv) {
    thread_plan p;
    threads_read_env(&p);
    threads_decide(&p);
    if (p.want_passive) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        /* libgomp read its environment when it was loaded: with worker threads to wait, start over once */
        if (!getenv(REEXEC_VAR) && argv) {
            setenv(REEXEC_VAR, "1", 1);
            execv("/proc/self/exe", argv);
            /* no /proc: go on with libgomp's default (short) spinning */
        }
    }
    unsetenv(REEXEC_VAR); /* not for child processes */
    omp_set_num_threads(p.threads);
    g_plan = p;
    g_have_plan = true;
}

const thread_plan *threads_plan(void) {
    if (!g_have_plan) {
        threads_read_env(&g_plan);
        threads_decide(&g_plan);
        g_have_plan = true;
    }
    return &g_plan;
}

void threads_describe(const thread_plan *p, char *buf, size_t n) {
    char src[160];
    if (strcmp(p->why, "OMP_NUM_THREADS") == 0 || strcmp(p->why, "SLURM_CPUS_PER_TASK") == 0)
        snprintf(src, sizeof src, "from %s; %d cores, %d local rank%s", p->why, p->cores, p->local_ranks,
                 p->local_ranks == 1 ? "" : "s");
    else
        snprintf(src, sizeof src, "%d cores / %d local rank%s%s%s", p->cores, p->local_ranks,
                 p->local_ranks == 1 ? "" : "s", p->local_from[0] ? " from " : "", p->local_from);
    const char *wait = p->user_wait[0] ? p->user_wait : "default";
    if (p->wait_by_s2d) wait = "passive (set by s2d)";
    else if (p->threads == 1 && !p->user_wait[0]) wait = "unused (one thread)";
    char over[128] = "";
    if (p->oversubscribed)
        snprintf(over, sizeof over, "; oversubscribed: %d rank%s x %d thread%s > %d cores", p->local_ranks,
                 p->local_ranks == 1 ? "" : "s", p->threads, p->threads == 1 ? "" : "s", p->cores);
    snprintf(buf, n, "%d thread%s per rank (%s), OMP_WAIT_POLICY %s%s", p->threads, p->threads == 1 ? "" : "s", src,
             wait, over);
}
