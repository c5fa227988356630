/* Threads per process: the rule of core/threads.h from the launcher's variables and the affinity mask. */
#include <stdlib.h>

#include "core/threads.h"
#include "test.h"

static void clear_env(void) {
    const char *vars[] = {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
                          "SLURM_NTASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_CPUS_PER_TASK",
                          "SLURM_STEP_ID", "S2D_THREADS_REEXEC"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
}

static thread_plan plan(int cores, int local, int user, const char *wait) {
    thread_plan p = {.cores = cores, .local_ranks = local, .user_threads = user};
    if (wait) snprintf(p.user_wait, sizeof p.user_wait, "%s", wait);
    threads_decide(&p);
    return p;
}

static void test_decide(void) {
    thread_plan p = plan(2, 6, 0, NULL);
    EXPECT(p.threads == 1 && p.oversubscribed && !p.want_passive, "2 cores, 6 ranks: %d threads, over %d passive %d",
           p.threads, p.oversubscribed, p.want_passive);
    p = plan(16, 4, 0, NULL);
    EXPECT(p.threads == 4 && !p.oversubscribed && p.want_passive, "16 cores / 4 ranks: %d threads, passive",
           p.threads);
    p = plan(16, 3, 0, NULL);
    EXPECT(p.threads == 5 && !p.oversubscribed, "16 cores / 3 ranks: %d threads (rounded down)", p.threads);
    p = plan(8, 1, 0, NULL);
    EXPECT(p.threads == 8 && p.want_passive, "one process: every core (%d), passive", p.threads);
    p = plan(1, 1, 0, NULL);
    EXPECT(p.threads == 1 && !p.want_passive, "one core: one thread, wait policy untouched");
    p = plan(2, 6, 2, NULL);
    EXPECT(p.threads == 2 && p.oversubscribed && p.want_passive, "OMP_NUM_THREADS=2 is kept, passive wanted");
    p = plan(2, 6, 2, "active");
    EXPECT(p.threads == 2 && !p.want_passive, "the user's OMP_WAIT_POLICY is kept");
    p = (thread_plan){.cores = 8, .local_ranks = 1, .cpus_per_task = 3};
    threads_decide(&p);
    EXPECT(p.threads == 3, "SLURM_CPUS_PER_TASK=3 on 8 cores: %d", p.threads);
    p = (thread_plan){.cores = 2, .local_ranks = 1, .cpus_per_task = 8};
    threads_decide(&p);
    EXPECT(p.threads == 2, "SLURM_CPUS_PER_TASK above the mask is capped: %d", p.threads);
}

static void test_read_env(void) {
    clear_env();
    thread_plan p;
    threads_read_env(&p);
    EXPECT(p.cores >= 1 && p.local_ranks == 1 && p.user_threads == 0 && p.local_from[0] == '\0',
           "no variables: %d cores, %d local ranks", p.cores, p.local_ranks);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "6", 1);
    setenv("OMP_NUM_THREADS", "3,1", 1);
    threads_read_env(&p);
    EXPECT(p.local_ranks == 6 && strcmp(p.local_from, "OMPI_COMM_WORLD_LOCAL_SIZE") == 0, "Open MPI local size: %d",
           p.local_ranks);
    EXPECT(p.user_threads == 3, "OMP_NUM_THREADS list: first value (%d)", p.user_threads);
    clear_env();
    setenv("OMP_NUM_THREADS", "abc", 1);
    setenv("MPI_LOCALNRANKS", "4", 1);
    threads_read_env(&p);
    EXPECT(p.user_threads == 0 && p.local_ranks == 4, "bad OMP_NUM_THREADS ignored; MPICH local size %d", p.local_ranks);
    clear_env();
    setenv("SLURM_NTASKS_PER_NODE", "4", 1);
    setenv("SLURM_CPUS_PER_TASK", "2", 1);
    threads_read_env(&p);
    EXPECT(p.local_ranks == 1 && p.cpus_per_task == 0, "Slurm variables outside a job step are not ours");
    setenv("SLURM_STEP_ID", "0", 1);
    threads_read_env(&p);
    EXPECT(p.local_ranks == 4 && p.cpus_per_task == 2, "in a step: %d tasks per node, %d cpus per task",
           p.local_ranks, p.cpus_per_task);
    unsetenv("SLURM_NTASKS_PER_NODE");
    setenv("SLURM_STEP_TASKS_PER_NODE", "3(x2)", 1);
    threads_read_env(&p);
    EXPECT(p.local_ranks == 3, "3(x2) tasks per node: %d", p.local_ranks);
    setenv("SLURM_STEP_TASKS_PER_NODE", "3,2", 1);
    threads_read_env(&p);
    EXPECT(p.local_ranks == 1, "uneven tasks per node are not guessed: %d", p.local_ranks);
    clear_env();
}

static void test_describe(void) {
    thread_plan p = plan(2, 6, 0, NULL);
    snprintf(p.local_from, sizeof p.local_from, "OMPI_COMM_WORLD_LOCAL_SIZE");
    char buf[512];
    threads_describe(&p, buf, sizeof buf);
    EXPECT(strstr(buf, "1 thread per rank (2 cores / 6 local ranks from OMPI_COMM_WORLD_LOCAL_SIZE)") != NULL,
           "describe: %s", buf);
    EXPECT(strstr(buf, "oversubscribed") != NULL, "describe says oversubscribed: %s", buf);
    p = plan(2, 6, 2, NULL);
    threads_describe(&p, buf, sizeof buf);
    EXPECT(strstr(buf, "2 threads per rank") && strstr(buf, "oversubscribed"), "OMP_NUM_THREADS=2 x 6 ranks: %s", buf);
    p = plan(4, 1, 3, NULL);
    threads_describe(&p, buf, sizeof buf);
    EXPECT(strstr(buf, "3 threads per rank (from OMP_NUM_THREADS") != NULL, "describe: %s", buf);
}

int main(void) {
    RUN_TEST(test_decide);
    RUN_TEST(test_read_env);
    RUN_TEST(test_describe);
    return TEST_SUMMARY();
}
