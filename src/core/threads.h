/* threads.h: how many OpenMP threads each process uses, and how they wait.
 *
 * Rule (README "Threads and placement"):
 *  - OMP_NUM_THREADS set by the user: used as given (first value of a list).
 *  - SLURM_CPUS_PER_TASK set (inside a Slurm step): that many, at most the CPUs in the affinity mask.
 *  - otherwise: max(1, CPUs in the affinity mask / local ranks), where local ranks is this job's process count
 *    on this node from the launcher (OMPI_COMM_WORLD_LOCAL_SIZE, MPI_LOCALNRANKS, SLURM_NTASKS_PER_NODE,
 *    SLURM_STEP_TASKS_PER_NODE); 1 when no launcher says.
 *  - more than one thread and OMP_WAIT_POLICY unset: OMP_WAIT_POLICY=passive (threads sleep, not spin, between
 *    parallel regions). libgomp reads it only when it is loaded, so main() re-executes itself once with it set
 *    (threads_early). Measured on a shared 2-core machine, tiny pipeline, one process: 2 spinning threads took
 *    14-169 s depending on the other load, 2 passive threads 21-23 s, 1 thread 29-30 s (README).
 *    With one thread there is nothing to wait for, and nothing is changed.
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    /* inputs */
    int cores;              /* CPUs in the affinity mask (sched_getaffinity) */
    int local_ranks;        /* this job's processes on this node; 1 when no launcher variable says */
    char local_from[40];    /* the variable that gave local_ranks, "" when none */
    int cpus_per_task;      /* SLURM_CPUS_PER_TASK, 0 when unset */
    int user_threads;       /* OMP_NUM_THREADS (first value), 0 when unset or not a positive number */
    char user_wait[16];     /* OMP_WAIT_POLICY as found, "" when unset */
    bool wait_by_s2d;       /* OMP_WAIT_POLICY was set by s2d (threads_early re-executed with it) */
    /* decisions */
    int threads;            /* OpenMP threads of this process */
    const char *why;        /* "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK" or "cores / local ranks" */
    bool oversubscribed;    /* local_ranks * threads > cores */
    bool want_passive;      /* more than one thread and OMP_WAIT_POLICY unset: s2d sets it to passive */
} thread_plan;

/* Reads the affinity mask and the environment into p's inputs (no decision). */
void threads_read_env(thread_plan *p);
/* Fills p's decisions from its inputs (pure: tests call it directly). */
void threads_decide(thread_plan *p);
/* Top of main(), before any OpenMP call: read, decide, set OMP_WAIT_POLICY=passive when wanted (re-executing
 * /proc/self/exe once when more than one thread would wait), then omp_set_num_threads. */
void threads_early(char **argv);
/* The plan in effect (threads_early must have run; otherwise it is read now). */
const thread_plan *threads_plan(void);
/* One line for the start-up log: "3 threads per rank (6 cores / 2 local ranks from OMPI_COMM_WORLD_LOCAL_SIZE),
 * OMP_WAIT_POLICY passive (set by s2d)"; says when the node is oversubscribed. */
void threads_describe(const thread_plan *p, char *buf, size_t n);
