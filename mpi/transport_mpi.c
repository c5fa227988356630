/* transport_mpi.c: the MPI transport (DESIGN §2). Every payload op is a nonblocking MPI call completed by a
 * polling wait that sleeps between MPI_Test calls (ranks share cores: never spin) and gives up after the
 * configured timeout with a message naming this rank, its role, the payload and the peer.
 *
 * Scheduler heartbeat: a thread on rank 0 sends a small message to every worker once per interval on a
 * communicator of its own, whatever the scheduler's main thread is doing. Workers read them inside their waits;
 * one that hears nothing for heartbeat_s ends the job. This is liveness, not progress: it catches a scheduler
 * that is frozen, or dead where the launcher has not noticed (a lost node), well before a long receive timeout
 * would; a scheduler stuck in its own code still beats, and the receive timeouts catch that. */
#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/common.h"
#include "core/log.h"
#include "core/timer.h"
#include "runtime.h"

typedef struct {
    MPI_Comm comm[TP_N_GROUPS]; /* MPI_COMM_NULL where this rank is not a member */
    /* heartbeat (heartbeat_s > 0) */
    MPI_Comm hb_comm;           /* a dup of the world, only for heartbeats */
    double heartbeat_s;
    double last_beat;           /* workers: time_now() when a heartbeat last arrived */
    pthread_t hb_thread;        /* rank 0 */
    atomic_int hb_stop;
    bool hb_running;
    /* bucketed reductions in flight (ireduce_scatter_f32 until wait_reduce) and their count arrays, which MPI
     * reads until each completes */
    MPI_Request reqs[TP_MAX_BUCKETS];
    int n_reqs;
    int *req_counts; /* [TP_MAX_BUCKETS * members], made at the first bucket */
} mpi_impl;

#define HEARTBEAT_TAG 7

/* Seconds between beats: a few per heartbeat_s, at most one a second. */
static double beat_interval(double heartbeat_s) { return heartbeat_s / 4 < 1.0 ? heartbeat_s / 4 : 1.0; }

static void *heartbeat_main(void *arg) {
    mpi_impl *im = arg;
    int size;
    MPI_Comm_size(im->hb_comm, &size);
    const double interval = beat_interval(im->heartbeat_s);
    int beat = 0;
    while (!atomic_load(&im->hb_stop)) {
        for (int w = 1; w < size; w++) {
            MPI_Request req;
            MPI_Isend(&beat, 1, MPI_INT, w, HEARTBEAT_TAG, im->hb_comm, &req);
            MPI_Request_free(&req); /* a 4-byte eager message completes on its own */
        }
        beat++;
        for (double slept = 0; slept < interval && !atomic_load(&im->hb_stop); slept += 0.05) {
            struct timespec ts = {0, 50000000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* Workers: take every heartbeat that has arrived; true if at least one did. */
static bool drain_heartbeats(mpi_impl *im) {
    bool got = false;
    for (;;) {
        int flag = 0, beat;
        MPI_Iprobe(0, HEARTBEAT_TAG, im->hb_comm, &flag, MPI_STATUS_IGNORE);
        if (!flag) return got;
        MPI_Recv(&beat, 1, MPI_INT, 0, HEARTBEAT_TAG, im->hb_comm, MPI_STATUS_IGNORE);
        got = true;
    }
}

/* Called on every turn of a worker's wait loop. */
static void check_heartbeat(transport *tp) {
    mpi_impl *im = tp->impl;
    if (im->heartbeat_s <= 0 || tp->rank == 0) return;
    double now = time_now();
    if (drain_heartbeats(im)) im->last_beat = now;
    if (now - im->last_beat > im->heartbeat_s)
        die_hint("the scheduler's process is frozen, or dead on a node its launcher lost; raise runtime.heartbeat_s "
                 "if its node is merely overloaded",
                 "rank %d (%s) heard no heartbeat from the scheduler (rank 0) for %.0f s (runtime.heartbeat_s)",
                 tp->rank, tp_role_name(tp->role), now - im->last_beat);
}

/* MPI counts are int: payloads move in pieces of at most this many bytes. */
#define CHUNK ((size_t)1 << 30)

static void abort_hook(int code) { MPI_Abort(MPI_COMM_WORLD, code ? code : 1); }

static MPI_Comm comm_of(transport *tp, tp_group g) {
    MPI_Comm c = ((mpi_impl *)tp->impl)->comm[g];
    CHECK(c != MPI_COMM_NULL, "rank %d (%s) is not a member of transport group %d (a bug)", tp->rank,
          tp_role_name(tp->role), (int)g);
    return c;
}

/* World rank of member `m` of group g (for messages). */
static int world_of(transport *tp, tp_group g, int m) {
    MPI_Group gg, wg;
    int w = -1;
    MPI_Comm_group(comm_of(tp, g), &gg);
    MPI_Comm_group(MPI_COMM_WORLD, &wg);
    MPI_Group_translate_ranks(gg, 1, &m, wg, &w);
    MPI_Group_free(&gg), MPI_Group_free(&wg);
    return w;
}

static const char *role_of_world(transport *tp, int w) {
    if (w <= 0) return w == 0 ? "scheduler" : "?";
    if (w <= tp->n_gen) return "generator";
    if (w <= tp->n_gen + tp->n_score) return "scorer";
    return "learner";
}

/* Waits for req with sleeps of 1..10 ms; dies after timeout_s naming what and from whom. */
static const char *const group_names[TP_N_GROUPS] = {
    "world", "scheduler+generators", "scheduler+scorers+learners", "scorers+learners", "learners",
    "learner root+scheduler+generators"};

/* from_world: the rank this one waits on; -1: the whole group g (collectives where this rank sends) */
static void wait_req(transport *tp, MPI_Request *req, const char *what, int from_world, tp_group g) {
    double t0 = time_now();
    long sleep_ns = 100000; /* 0.1 ms, growing to 10 ms */
    mpi_impl *im = tp->impl;
    /* Beats queued while this rank computed are fresh evidence: the scheduler was alive meanwhile. */
    if (im->heartbeat_s > 0 && tp->rank != 0 && drain_heartbeats(im)) im->last_beat = t0;
    for (;;) {
        int done = 0;
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) return;
        check_heartbeat(tp);
        double waited = time_now() - t0;
        if (tp->timeout_s > 0 && waited > tp->timeout_s) {
            if (from_world >= 0)
                die("rank %d (%s) waited %.0f s for %s from rank %d (%s); giving up (runtime.timeout_s)", tp->rank,
                    tp_role_name(tp->role), waited, what, from_world, role_of_world(tp, from_world));
            die("rank %d (%s) waited %.0f s for the group %s to exchange %s (a member is stuck or dead); giving up "
                "(runtime.timeout_s)", tp->rank, tp_role_name(tp->role), waited, group_names[g], what);
        }
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
        if (sleep_ns < 10000000) sleep_ns = sleep_ns * 2 > 10000000 ? 10000000 : sleep_ns * 2;
        if (waited < 0.002) sleep_ns = 100000; /* stay responsive for quick replies */
    }
}

static void m_bcast(transport *tp, tp_group g, int root, void *buf, size_t bytes, const char *what) {
    MPI_Comm c = comm_of(tp, g);
    int from = world_of(tp, g, root), me;
    MPI_Comm_rank(c, &me);
    for (size_t at = 0; at < bytes; at += CHUNK) {
        size_t n = bytes - at < CHUNK ? bytes - at : CHUNK;
        MPI_Request r;
        MPI_Ibcast((char *)buf + at, (int)n, MPI_BYTE, root, c, &r);
        wait_req(tp, &r, what, root == me ? -1 : from, g);
    }
}

static void m_gatherv(transport *tp, tp_group g, const void *mine, size_t bytes, void *all, size_t cap,
                      size_t *counts, const char *what) {
    MPI_Comm c = comm_of(tp, g);
    int me, n;
    MPI_Comm_rank(c, &me), MPI_Comm_size(c, &n);
    CHECK(bytes < (size_t)INT32_MAX, "gather of %s: %zu bytes is too large for one message", what, bytes);
    long long mine_n = (long long)bytes, *sizes = me == 0 ? xmalloc((size_t)n * sizeof(long long)) : NULL;
    MPI_Request r;
    MPI_Igather(&mine_n, 1, MPI_LONG_LONG, sizes, 1, MPI_LONG_LONG, 0, c, &r);
    wait_req(tp, &r, what, me == 0 ? -1 : world_of(tp, g, 0), g);
    int *cnt = NULL, *disp = NULL;
    if (me == 0) {
        cnt = xmalloc((size_t)n * sizeof(int)), disp = xmalloc((size_t)n * sizeof(int));
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            counts[i] = (size_t)sizes[i];
            disp[i] = (int)total, cnt[i] = (int)sizes[i];
            total += (size_t)sizes[i];
        }
        CHECK(total <= cap && total < (size_t)INT32_MAX, "gather of %s: %zu bytes > buffer %zu", what, total, cap);
    }
    MPI_Igatherv(mine, (int)bytes, MPI_BYTE, all, cnt, disp, MPI_BYTE, 0, c, &r);
    wait_req(tp, &r, what, me == 0 ? -1 : world_of(tp, g, 0), g);
    free(sizes), free(cnt), free(disp);
}

static void m_allgatherv(transport *tp, tp_group g, void *buf, const size_t *counts, const size_t *displs,
                         const char *what) {
    MPI_Comm c = comm_of(tp, g);
    int n;
    MPI_Comm_size(c, &n);
    int *cnt = xmalloc((size_t)n * sizeof(int)), *disp = xmalloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) {
        CHECK(displs[i] + counts[i] < (size_t)INT32_MAX, "all-gather of %s: too large for one message", what);
        cnt[i] = (int)counts[i], disp[i] = (int)displs[i];
    }
    MPI_Request r;
    MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, cnt, disp, MPI_BYTE, c, &r);
    wait_req(tp, &r, what, -1, g);
    free(cnt), free(disp);
}

static void m_send(transport *tp, tp_group g, int to, const void *buf, size_t bytes, const char *what) {
    MPI_Comm c = comm_of(tp, g);
    for (size_t at = 0; at < bytes; at += CHUNK) {
        size_t n = bytes - at < CHUNK ? bytes - at : CHUNK;
        MPI_Request r;
        MPI_Isend((const char *)buf + at, (int)n, MPI_BYTE, to, 7, c, &r);
        wait_req(tp, &r, what, -1, g);
    }
}

static void m_recv(transport *tp, tp_group g, int from, void *buf, size_t bytes, const char *what) {
    MPI_Comm c = comm_of(tp, g);
    int w = world_of(tp, g, from);
    for (size_t at = 0; at < bytes; at += CHUNK) {
        size_t n = bytes - at < CHUNK ? bytes - at : CHUNK;
        MPI_Request r;
        MPI_Irecv((char *)buf + at, (int)n, MPI_BYTE, from, 7, c, &r);
        wait_req(tp, &r, what, w, g);
    }
}

static void m_reduce_scatter_f32(transport *tp, tp_group g, const float *buf, const size_t *counts,
                                 const size_t *displs, float *shard, const char *what) {
    MPI_Comm c = comm_of(tp, g);
    int n;
    MPI_Comm_size(c, &n);
    int *cnt = xmalloc((size_t)n * sizeof(int));
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        CHECK(displs[i] == at && counts[i] < (size_t)INT32_MAX, "reduce-scatter of %s: shards must tile the buffer in "
              "member order and fit an int", what);
        cnt[i] = (int)counts[i], at += counts[i];
    }
    MPI_Request r;
    MPI_Ireduce_scatter(buf, shard, cnt, MPI_FLOAT, MPI_SUM, c, &r);
    wait_req(tp, &r, what, -1, g);
    free(cnt);
}

static void m_ireduce_scatter_f32(transport *tp, tp_group g, const float *buf, const size_t *counts, float *shard,
                                  const char *what) {
    mpi_impl *im = tp->impl;
    MPI_Comm c = comm_of(tp, g);
    int n;
    MPI_Comm_size(c, &n);
    CHECK(im->n_reqs < TP_MAX_BUCKETS, "more than %d bucketed reductions of %s pending", TP_MAX_BUCKETS, what);
    if (!im->req_counts) im->req_counts = xmalloc((size_t)TP_MAX_BUCKETS * (size_t)n * sizeof(int));
    int *cnt = im->req_counts + (size_t)im->n_reqs * (size_t)n;
    for (int i = 0; i < n; i++) {
        CHECK(counts[i] < (size_t)INT32_MAX, "bucketed reduce-scatter of %s: a part of %zu floats does not fit an int",
              what, counts[i]);
        cnt[i] = (int)counts[i];
    }
    MPI_Ireduce_scatter(buf, shard, cnt, MPI_FLOAT, MPI_SUM, c, &im->reqs[im->n_reqs++]);
    /* Open MPI moves non-blocking collectives only inside MPI calls: each new bucket pokes the earlier ones */
    int done;
    MPI_Testall(im->n_reqs, im->reqs, &done, MPI_STATUSES_IGNORE);
}

static void m_wait_reduce(transport *tp, tp_group g, const char *what) {
    mpi_impl *im = tp->impl;
    for (int i = 0; i < im->n_reqs; i++) wait_req(tp, &im->reqs[i], what, -1, g);
    im->n_reqs = 0;
}

static void m_allreduce_f64(transport *tp, tp_group g, double *v, int n, const char *what) {
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, comm_of(tp, g), &r);
    wait_req(tp, &r, what, -1, g);
}

static void m_barrier(transport *tp, tp_group g) {
    MPI_Request r;
    MPI_Ibarrier(comm_of(tp, g), &r);
    wait_req(tp, &r, "a barrier", -1, g);
}

static void m_finalize(transport *tp) {
    mpi_impl *im = tp->impl;
    if (im->hb_running) { /* stop beating before the last barrier, so every beat is already sent */
        atomic_store(&im->hb_stop, 1);
        pthread_join(im->hb_thread, NULL);
    }
    MPI_Request r;
    MPI_Ibarrier(MPI_COMM_WORLD, &r);
    wait_req(tp, &r, "the final barrier", -1, TP_WORLD);
    if (im->heartbeat_s > 0) {
        im->heartbeat_s = 0; /* beats still in flight must not count against anyone now */
        MPI_Barrier(im->hb_comm);
        if (tp->rank != 0) drain_heartbeats(im);
        MPI_Comm_free(&im->hb_comm);
    }
    for (int g = 0; g < TP_N_GROUPS; g++)
        if (im->comm[g] != MPI_COMM_NULL) MPI_Comm_free(&im->comm[g]);
    s2d_set_abort_hook(NULL);
    MPI_Finalize();
    tp_free_staging(tp);
    free(im->req_counts), free(im), free(tp);
}

transport *mpi_transport_new(int generators, int scorers, int learners, double timeout_s, double heartbeat_s) {
    int inited = 0, provided = MPI_THREAD_SINGLE;
    MPI_Initialized(&inited);
    if (!inited) MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided); /* the heartbeat thread sends */
    else MPI_Query_thread(&provided);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    s2d_set_abort_hook(abort_hook);
    transport *tp = xcalloc(1, sizeof *tp);
    *tp = (transport){.local = false, .rank = rank, .size = size, .n_gen = generators, .n_score = scorers,
                      .n_learn = learners, .timeout_s = timeout_s, .name = "mpi", .bcast = m_bcast,
                      .gatherv = m_gatherv, .allgatherv = m_allgatherv, .send = m_send, .recv = m_recv,
                      .barrier = m_barrier, .reduce_scatter_f32 = m_reduce_scatter_f32,
                      .ireduce_scatter_f32 = m_ireduce_scatter_f32, .wait_reduce = m_wait_reduce,
                      .allreduce_f64 = m_allreduce_f64, .finalize = m_finalize};
    if (rank == 0) tp->role = ROLE_SCHEDULER, tp->index = 0;
    else if (rank <= generators) tp->role = ROLE_GENERATOR, tp->index = rank - 1;
    else if (rank <= generators + scorers) tp->role = ROLE_SCORER, tp->index = rank - 1 - generators;
    else tp->role = ROLE_LEARNER, tp->index = rank - 1 - generators - scorers;
    s2d_set_identity(rank, rank < generators + scorers + learners + 1 ? tp_role_name(tp->role) : "extra");
    if (generators + scorers + learners + 1 != size)
        die_hint("launch with mpirun -np N where N = 1 (scheduler) + generators + scorers + learners, or change "
                 "roles: in the config (--set roles.learners=2)",
                 "roles: %d generators + %d scorers + %d learners + 1 scheduler = %d ranks, but the MPI world has %d",
                 generators, scorers, learners, generators + scorers + learners + 1, size);
    mpi_impl *im = xcalloc(1, sizeof *im);
    tp->impl = im;
    im->comm[TP_WORLD] = MPI_COMM_NULL;
    MPI_Comm_dup(MPI_COMM_WORLD, &im->comm[TP_WORLD]);
    for (int g = TP_GEN; g < TP_N_GROUPS; g++) {
        int key = tp_group_rank(tp, (tp_group)g);
        MPI_Comm_split(MPI_COMM_WORLD, key >= 0 ? 1 : MPI_UNDEFINED, key >= 0 ? key : 0, &im->comm[g]);
    }
    if (heartbeat_s > 0 && provided < MPI_THREAD_MULTIPLE) {
        if (rank == 0) log_warn("this MPI gives no MPI_THREAD_MULTIPLE: the scheduler heartbeat is off");
        heartbeat_s = 0;
    }
    im->heartbeat_s = heartbeat_s;
    if (heartbeat_s > 0) {
        MPI_Comm_dup(MPI_COMM_WORLD, &im->hb_comm);
        im->last_beat = time_now();
        if (rank == 0) {
            CHECK(pthread_create(&im->hb_thread, NULL, heartbeat_main, im) == 0, "cannot start the heartbeat thread");
            im->hb_running = true;
        }
    }
    char host[256] = "?";
    gethostname(host, sizeof host);
    fprintf(stderr, "s2d: rank %d of %d is %s %d (pid %ld on %s)\n", rank, size, tp_role_name(tp->role), tp->index,
            (long)getpid(), host);
    return tp;
}
