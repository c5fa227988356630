/* transport_mpi.c: the MPI transport (DESIGN §2). Every payload op is a nonblocking MPI call completed by a
 * polling wait that sleeps between MPI_Test calls (ranks share cores: never spin) and gives up after the
 * configured timeout with a message naming the rank that stopped answering when it can be found (peers.h: a
 * peer on this host that is stopped or gone; a worker whose heartbeat fell silent), else this rank, its role,
 * the payload and the peer it waited on.
 *
 * Heartbeats, on a communicator of their own, from a thread on every rank whatever its main thread is doing:
 * the scheduler beats to every worker, every worker beats to the scheduler. A worker that hears nothing from
 * the scheduler for heartbeat_s ends the job, and so does the scheduler for a silent worker; the scheduler's
 * beats also carry the rank it has heard from least recently, so a worker that times out can name it. This is
 * liveness, not progress: it catches a rank that is frozen (SIGSTOP), or dead where the launcher has not noticed
 * (a lost node), well before a long receive timeout would; a rank stuck in its own code still beats, and the
 * receive timeouts catch that. */
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
#include "core/signals.h"
#include "core/timer.h"
#include "peers.h"
#include "runtime.h"

typedef struct {
    MPI_Comm comm[TP_N_GROUPS]; /* MPI_COMM_NULL where this rank is not a member */
    /* heartbeat (heartbeat_s > 0) */
    MPI_Comm hb_comm;           /* a dup of the world, only for heartbeats */
    double heartbeat_s;
    double last_beat;           /* workers: time_now() when a scheduler heartbeat last arrived */
    int relay_rank;             /* workers: the rank the scheduler last reported silent (-1: none) */
    double relay_silent_s;      /* ... and for how long */
    int relay_busy_rank;        /* workers: the worker the scheduler last saw outside any wait longest (-1: none) */
    double relay_busy_s;        /* ... and for how long */
    _Atomic double *last_seen;  /* scheduler: [size] time_now() of each worker's last beat (its thread writes) */
    _Atomic double *busy_from;  /* scheduler: [size] since when each worker has been outside any wait, per its
                                 * last beat (-1: it was waiting) */
    _Atomic double busy_since;  /* this rank: when its main thread left its last wait (-1: in one now) */
    MPI_Comm node_comm;         /* the ranks of this host */
    MPI_Win node_win;           /* their shared words (peers_set_shared): leaving[size], reported */
    pthread_t hb_thread;        /* every rank */
    atomic_int hb_stop;
    bool hb_running;
    /* bucketed reductions in flight (ireduce_scatter_f32 until wait_reduce) and their count arrays, which MPI
     * reads until each completes */
    MPI_Request reqs[TP_MAX_BUCKETS];
    int n_reqs;
    int *req_counts; /* [TP_MAX_BUCKETS * members], made at the first bucket */
} mpi_impl;

#define HEARTBEAT_TAG 7 /* scheduler -> worker: int32 {silent rank or -1, its silence in ms, busy rank or -1, ms} */
#define WORKER_BEAT_TAG 8 /* worker -> scheduler: int32 {beat, ms outside any wait or -1 while in one} */

/* Seconds between beats: a few per heartbeat_s, at most one a second. */
static double beat_interval(double heartbeat_s) { return heartbeat_s / 4 < 1.0 ? heartbeat_s / 4 : 1.0; }
/* Silence that marks a rank as not answering in a timeout's message: a few missed beats. */
static double silent_after(double heartbeat_s) { return 3 * beat_interval(heartbeat_s) + 0.5; }

static void pause_s(double s, atomic_int *stop) {
    for (double slept = 0; slept < s && !atomic_load(stop); slept += 0.05) {
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
}

/* Scheduler: the rank (itself included) outside any wait the longest, and for how long (-1: all are waiting). */
static int most_busy(const mpi_impl *im, int size, double now, double *busy) {
    int who = -1;
    *busy = 0;
    for (int w = 0; w < size && im->busy_from; w++) {
        double from = atomic_load(w == 0 ? &im->busy_since : &im->busy_from[w]); /* the scheduler itself too */
        if (from >= 0 && now - from > *busy) *busy = now - from, who = w;
    }
    return who;
}

/* Scheduler: the worker heard from least recently, and how long ago (-1 if heartbeats are off). */
static int most_silent(const mpi_impl *im, int size, double now, double *silence) {
    int who = -1;
    *silence = 0;
    for (int w = 1; w < size && im->last_seen; w++) {
        double s = now - atomic_load(&im->last_seen[w]);
        if (s > *silence) *silence = s, who = w;
    }
    return who;
}

static void *heartbeat_main(void *arg) {
    transport *tp = arg;
    mpi_impl *im = tp->impl;
    const double interval = beat_interval(im->heartbeat_s);
    int32_t beat = 0;
    while (!atomic_load(&im->hb_stop)) {
        if (tp->rank == 0) {
            for (;;) { /* the workers' beats */
                int flag = 0;
                MPI_Status st;
                MPI_Iprobe(MPI_ANY_SOURCE, WORKER_BEAT_TAG, im->hb_comm, &flag, &st);
                if (!flag) break;
                int32_t b[2];
                MPI_Recv(b, 2, MPI_INT32_T, st.MPI_SOURCE, WORKER_BEAT_TAG, im->hb_comm, MPI_STATUS_IGNORE);
                double now = time_now();
                atomic_store(&im->last_seen[st.MPI_SOURCE], now);
                atomic_store(&im->busy_from[st.MPI_SOURCE], b[1] < 0 ? -1.0 : now - b[1] / 1000.0);
            }
            double silence, busy, now = time_now();
            int who = most_silent(im, tp->size, now, &silence), busiest = most_busy(im, tp->size, now, &busy);
            int32_t msg[4] = {silence > silent_after(im->heartbeat_s) ? who : -1, (int32_t)(silence * 1000), busiest,
                              (int32_t)(busy * 1000)};
            for (int w = 1; w < tp->size; w++) {
                MPI_Request req;
                MPI_Isend(msg, 4, MPI_INT32_T, w, HEARTBEAT_TAG, im->hb_comm, &req);
                MPI_Request_free(&req); /* an 8-byte eager message completes on its own */
            }
        } else {
            MPI_Request req;
            double since = atomic_load(&im->busy_since);
            int32_t msg[2] = {beat, since < 0 ? -1 : (int32_t)((time_now() - since) * 1000)};
            MPI_Isend(msg, 2, MPI_INT32_T, 0, WORKER_BEAT_TAG, im->hb_comm, &req);
            MPI_Request_free(&req);
        }
        beat++;
        pause_s(interval, &im->hb_stop);
    }
    return NULL;
}

/* Workers: take every heartbeat that has arrived; true if at least one did. */
static bool drain_heartbeats(mpi_impl *im) {
    bool got = false;
    for (;;) {
        int flag = 0;
        int32_t msg[4];
        MPI_Iprobe(0, HEARTBEAT_TAG, im->hb_comm, &flag, MPI_STATUS_IGNORE);
        if (!flag) return got;
        MPI_Recv(msg, 4, MPI_INT32_T, 0, HEARTBEAT_TAG, im->hb_comm, MPI_STATUS_IGNORE);
        im->relay_rank = msg[0], im->relay_silent_s = msg[1] / 1000.0;
        im->relay_busy_rank = msg[2], im->relay_busy_s = msg[3] / 1000.0;
        got = true;
    }
}

/* " ; rank W (role i, pid P on H) is stopped (...)" for a peer on this host, "" otherwise. */
static void state_suffix(int w, char *buf, size_t cap) {
    peer_state st = peers_state(w);
    if (st == PEER_STOPPED || st == PEER_GONE) snprintf(buf, cap, "; it %s", peers_state_text(st));
    else buf[0] = 0;
}

/* Called on every turn of a wait loop. */
static void check_heartbeat(transport *tp) {
    mpi_impl *im = tp->impl;
    if (im->heartbeat_s <= 0) return;
    double now = time_now();
    char who[160], how[96];
    if (tp->rank == 0) {
        double silence;
        int w = most_silent(im, tp->size, now, &silence);
        if (w < 0 || silence <= im->heartbeat_s) return;
        peers_name(w, who, sizeof who);
        state_suffix(w, how, sizeof how);
        die_hint("the rank's process is frozen (SIGSTOP, a debugger), or dead on a node its launcher lost; raise "
                 "runtime.heartbeat_s if its node is merely overloaded",
                 "%s stopped answering: the scheduler (rank 0) heard no heartbeat from it for %.0f s "
                 "(runtime.heartbeat_s)%s", who, silence, how);
    }
    if (drain_heartbeats(im)) im->last_beat = now;
    if (now - im->last_beat > im->heartbeat_s) {
        state_suffix(0, how, sizeof how);
        die_hint("the scheduler's process is frozen, or dead on a node its launcher lost; raise runtime.heartbeat_s "
                 "if its node is merely overloaded",
                 "rank %d (%s) heard no heartbeat from the scheduler (rank 0) for %.0f s (runtime.heartbeat_s)%s",
                 tp->rank, tp_role_name(tp->role), now - im->last_beat, how);
    }
}

/* MPI counts are int: payloads move in pieces of at most this many bytes. */
#define CHUNK ((size_t)1 << 30)

static void abort_hook(int code) {
    peers_mark_leaving(PEER_LEAVING_ERROR); /* an error, already printed: not a rank that was killed */
    MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
}

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
    (void)tp;
    return peers_role(w);
}

static const char *const group_names[TP_N_GROUPS] = {
    "world", "scheduler+generators", "scheduler+scorers+learners", "scorers+learners", "learners",
    "learner root+scheduler+generators"};

/* The rank that stopped answering, as far as this rank can tell: a peer on this host that is stopped or gone
 * (prefer: the one waited on), else a worker whose heartbeats fell silent (the scheduler's own table, or the
 * one its beats report). Writes "rank W (role i, pid P on H) stopped answering: it ..." into buf; false when
 * nobody is known. */
static bool blame(transport *tp, int prefer, char *buf, size_t cap) {
    mpi_impl *im = tp->impl;
    char who[160];
    peer_state st;
    int w = peers_find_stuck(prefer, &st);
    if (w >= 0) {
        peers_name(w, who, sizeof who);
        snprintf(buf, cap, "%s stopped answering: it %s", who, peers_state_text(st));
        return true;
    }
    if (im->heartbeat_s <= 0) return false;
    double silence = 0;
    if (tp->rank == 0) w = most_silent(im, tp->size, time_now(), &silence);
    else w = im->relay_rank, silence = im->relay_silent_s;
    if (w >= 0 && silence > silent_after(im->heartbeat_s)) {
        peers_name(w, who, sizeof who);
        snprintf(buf, cap, "%s stopped answering: the scheduler has heard no heartbeat from it for %.0f s (frozen, "
                 "or its node is lost)", who, silence);
        return true;
    }
    /* everyone beats: a worker that has been outside any exchange for most of this wait is the one not coming */
    double longest;
    if (tp->rank == 0) w = most_busy(im, tp->size, time_now(), &longest);
    else w = im->relay_busy_rank, longest = im->relay_busy_s;
    if (w < 0 || w == tp->rank || longest < tp->timeout_s / 2) return false;
    peers_name(w, who, sizeof who);
    snprintf(buf, cap, "%s stopped answering: it has been busy outside any exchange for %.0f s (stuck in its own "
             "work, or slower than runtime.timeout_s allows)", who, longest);
    return true;
}

/* from_world: the rank this one waits on; -1: the whole group g (collectives where this rank sends) */
static _Noreturn void wait_timed_out(transport *tp, double waited, const char *what, int from_world, tp_group g) {
    char culprit[320], from[160];
    if (from_world >= 0) snprintf(from, sizeof from, "from rank %d (%s)", from_world, role_of_world(tp, from_world));
    else snprintf(from, sizeof from, "in an exchange with the group %s", group_names[g]);
    if (blame(tp, from_world, culprit, sizeof culprit))
        die("%s; rank %d (%s) gave up after waiting %.0f s for %s %s (runtime.timeout_s)", culprit, tp->rank,
            tp_role_name(tp->role), waited, what, from);
    if (from_world >= 0)
        die("rank %d (%s) waited %.0f s for %s from rank %d (%s); giving up (runtime.timeout_s)", tp->rank,
            tp_role_name(tp->role), waited, what, from_world, role_of_world(tp, from_world));
    die("rank %d (%s) waited %.0f s for the group %s to exchange %s (a member is stuck or dead); giving up "
        "(runtime.timeout_s)", tp->rank, tp_role_name(tp->role), waited, group_names[g], what);
}

/* Waits for req with sleeps of 0.1..10 ms; dies after timeout_s naming what and from whom. */
static void wait_req(transport *tp, MPI_Request *req, const char *what, int from_world, tp_group g) {
    double t0 = time_now();
    long sleep_ns = 100000; /* 0.1 ms, growing to 10 ms */
    mpi_impl *im = tp->impl;
    /* Beats queued while this rank computed are fresh evidence: the scheduler was alive meanwhile. */
    if (im->heartbeat_s > 0 && tp->rank != 0 && drain_heartbeats(im)) im->last_beat = t0;
    atomic_store(&im->busy_since, -1.0);
    for (;;) {
        int done = 0;
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) {
            atomic_store(&im->busy_since, time_now());
            return;
        }
        check_heartbeat(tp);
        double waited = time_now() - t0;
        if (tp->timeout_s > 0 && waited > tp->timeout_s) wait_timed_out(tp, waited, what, from_world, g);
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
    /* beats go on through the final barrier: a rank that finished early must not look silent to the others */
    MPI_Request r;
    MPI_Ibarrier(MPI_COMM_WORLD, &r);
    wait_req(tp, &r, "the final barrier", -1, TP_WORLD);
    if (im->hb_running) {
        atomic_store(&im->hb_stop, 1);
        pthread_join(im->hb_thread, NULL);
    }
    if (im->heartbeat_s > 0) {
        im->heartbeat_s = 0; /* beats still in flight must not count against anyone now */
        MPI_Barrier(im->hb_comm);
        if (tp->rank != 0) {
            drain_heartbeats(im);
        } else {
            for (;;) {
                int flag = 0;
                int32_t b[2];
                MPI_Status st;
                MPI_Iprobe(MPI_ANY_SOURCE, WORKER_BEAT_TAG, im->hb_comm, &flag, &st);
                if (!flag) break;
                MPI_Recv(b, 2, MPI_INT32_T, st.MPI_SOURCE, WORKER_BEAT_TAG, im->hb_comm, MPI_STATUS_IGNORE);
            }
        }
        MPI_Comm_free(&im->hb_comm);
    }
    for (int g = 0; g < TP_N_GROUPS; g++)
        if (im->comm[g] != MPI_COMM_NULL) MPI_Comm_free(&im->comm[g]);
    s2d_set_abort_hook(NULL);
    s2d_set_signal_hook(NULL);
    peers_set_shared(NULL, NULL);
    MPI_Win_free(&im->node_win);
    MPI_Comm_free(&im->node_comm);
    MPI_Finalize();
    peers_free();
    tp_free_staging(tp);
    free(im->req_counts), free(im->last_seen), free(im->busy_from);
    free(im), free(tp);
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
    /* pids and hosts of every rank, for messages that name the rank that stopped answering */
    peer_id me = {.pid = (int32_t)getpid()}, *all = xmalloc((size_t)size * sizeof(peer_id));
    char host[256] = "?";
    gethostname(host, sizeof host);
    snprintf(me.host, sizeof me.host, "%s", host);
    MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, MPI_COMM_WORLD);
    peers_init(rank, size, generators, scorers, all);
    free(all);
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &im->node_comm);
    int node_rank;
    MPI_Comm_rank(im->node_comm, &node_rank);
    atomic_int *words;
    MPI_Aint win_bytes = node_rank == 0 ? (MPI_Aint)((size_t)(size + 1) * sizeof(atomic_int)) : 0, got;
    MPI_Win_allocate_shared(win_bytes, (int)sizeof(atomic_int), MPI_INFO_NULL, im->node_comm, &words, &im->node_win);
    int unit;
    MPI_Win_shared_query(im->node_win, 0, &got, &unit, &words);
    if (node_rank == 0)
        for (int w = 0; w <= size; w++) atomic_init(&words[w], 0);
    MPI_Barrier(im->node_comm); /* zeroed before anyone reads them */
    peers_set_shared(words, words + size);
    s2d_set_signal_hook(peers_report_gone);
    if (heartbeat_s > 0) {
        MPI_Comm_dup(MPI_COMM_WORLD, &im->hb_comm);
        im->last_beat = time_now();
        im->relay_rank = im->relay_busy_rank = -1;
        if (rank == 0) {
            im->last_seen = xmalloc((size_t)size * sizeof *im->last_seen);
            im->busy_from = xmalloc((size_t)size * sizeof *im->busy_from);
            for (int w = 0; w < size; w++) atomic_init(&im->last_seen[w], im->last_beat), atomic_init(&im->busy_from[w], -1.0);
        }
        atomic_init(&im->busy_since, time_now());
        CHECK(pthread_create(&im->hb_thread, NULL, heartbeat_main, tp) == 0, "cannot start the heartbeat thread");
        im->hb_running = true;
    }
    fprintf(stderr, "s2d: rank %d of %d is %s %d (pid %ld on %s)\n", rank, size, tp_role_name(tp->role), tp->index,
            (long)getpid(), host);
    return tp;
}
