/* transport_local.c: the single-process transport (every role local, moves are no-ops or copies), plus the
 * layout helpers shared with mpi/. */
#include <stdlib.h>
#include <string.h>

#include "runtime/transport.h"
#include "core/common.h"

const char *tp_role_name(tp_role r) {
    static const char *const names[4] = {"scheduler", "generator", "scorer", "learner"};
    return (unsigned)r < 4 ? names[r] : "?";
}

int tp_group_size(const transport *tp, tp_group g) {
    if (tp->local) return 1;
    switch (g) {
    case TP_WORLD: return tp->size;
    case TP_GEN: return 1 + tp->n_gen;
    case TP_BATCH: return 1 + tp->n_score + tp->n_learn;
    case TP_PAYLOAD: return tp->n_score + tp->n_learn;
    case TP_LEARN: return tp->n_learn;
    case TP_WEIGHTS: return 2 + tp->n_gen;
    default: return 0;
    }
}

int tp_group_rank(const transport *tp, tp_group g) {
    if (tp->local) return 0;
    tp_role r = tp->role;
    int i = tp->index;
    switch (g) {
    case TP_WORLD: return tp->rank;
    case TP_GEN: return r == ROLE_SCHEDULER ? 0 : r == ROLE_GENERATOR ? 1 + i : -1;
    case TP_BATCH:
        return r == ROLE_SCHEDULER ? 0 : r == ROLE_SCORER ? 1 + i : r == ROLE_LEARNER ? 1 + tp->n_score + i : -1;
    case TP_PAYLOAD: return r == ROLE_SCORER ? i : r == ROLE_LEARNER ? tp->n_score + i : -1;
    case TP_LEARN: return r == ROLE_LEARNER ? i : -1;
    case TP_WEIGHTS:
        return (r == ROLE_LEARNER && i == 0) ? 0 : r == ROLE_SCHEDULER ? 1 : r == ROLE_GENERATOR ? 2 + i : -1;
    default: return -1;
    }
}

int tp_world_rank(const transport *tp, tp_role r, int index) {
    if (tp->local) return 0;
    switch (r) {
    case ROLE_SCHEDULER: return 0;
    case ROLE_GENERATOR: return 1 + index;
    case ROLE_SCORER: return 1 + tp->n_gen + index;
    default: return 1 + tp->n_gen + tp->n_score + index;
    }
}

void tp_layout(const transport *tp, char *out, size_t cap) {
    snprintf(out, cap, "%dg%ds%dl", tp->n_gen, tp->n_score, tp->n_learn);
}

void tp_split(long n, int parts, int i, long *lo, long *hi) {
    long base = n / parts, extra = n % parts;
    *lo = i * base + (i < extra ? i : extra);
    *hi = *lo + base + (i < extra ? 1 : 0);
}

static void local_bcast(transport *tp, tp_group g, int root, void *buf, size_t bytes, const char *what) {
    (void)tp, (void)g, (void)root, (void)buf, (void)bytes, (void)what; /* the buffer is already shared */
}

static void local_gatherv(transport *tp, tp_group g, const void *mine, size_t bytes, void *all, size_t cap,
                          size_t *counts, const char *what) {
    (void)tp, (void)g;
    CHECK(bytes <= cap, "gather of %s: %zu bytes > buffer %zu", what, bytes, cap);
    if (all != mine && bytes) memmove(all, mine, bytes);
    counts[0] = bytes;
}

static void local_allgatherv(transport *tp, tp_group g, void *buf, const size_t *counts, const size_t *displs,
                             const char *what) {
    (void)tp, (void)g, (void)buf, (void)counts, (void)displs, (void)what;
}

static void local_p2p(transport *tp, tp_group g, int peer, const void *buf, size_t bytes, const char *what) {
    (void)tp, (void)g, (void)peer, (void)buf, (void)bytes;
    die("local transport: point-to-point %s within a one-member group (a bug)", what);
}
static void local_send(transport *tp, tp_group g, int to, const void *buf, size_t bytes, const char *what) {
    local_p2p(tp, g, to, buf, bytes, what);
}
static void local_recv(transport *tp, tp_group g, int from, void *buf, size_t bytes, const char *what) {
    local_p2p(tp, g, from, buf, bytes, what);
}
static void local_barrier(transport *tp, tp_group g) { (void)tp, (void)g; }
static void local_reduce_scatter(transport *tp, tp_group g, const float *buf, const size_t *counts,
                                 const size_t *displs, float *shard, const char *what) {
    (void)tp, (void)g, (void)what; /* one member: its shard is all of it */
    if (shard != buf + displs[0] && counts[0]) memmove(shard, buf + displs[0], counts[0] * sizeof(float));
}
static void local_ireduce_scatter(transport *tp, tp_group g, const float *buf, const size_t *counts, float *shard,
                                  const char *what) {
    (void)tp, (void)g, (void)what; /* one member: its part is the whole bucket, done at once */
    if (shard != buf && counts[0]) memmove(shard, buf, counts[0] * sizeof(float));
}
static void local_wait_reduce(transport *tp, tp_group g, const char *what) { (void)tp, (void)g, (void)what; }
static void local_allreduce_f64(transport *tp, tp_group g, double *v, int n, const char *what) {
    (void)tp, (void)g, (void)v, (void)n, (void)what; /* one member: the sum is its own */
}
static void local_finalize(transport *tp) {
    tp_free_staging(tp);
    free(tp);
}

transport *transport_local_new(void) {
    transport *tp = xcalloc(1, sizeof *tp);
    *tp = (transport){.local = true, .rank = 0, .size = 1, .n_gen = 1, .n_score = 1, .n_learn = 1,
                      .role = ROLE_SCHEDULER, .index = 0, .timeout_s = 0, .name = "local",
                      .bcast = local_bcast, .gatherv = local_gatherv, .allgatherv = local_allgatherv,
                      .send = local_send, .recv = local_recv, .barrier = local_barrier,
                      .reduce_scatter_f32 = local_reduce_scatter,
                      .ireduce_scatter_f32 = local_ireduce_scatter, .wait_reduce = local_wait_reduce, .allreduce_f64 = local_allreduce_f64,
                      .finalize = local_finalize};
    return tp;
}

static transport_factory g_factory = NULL;
void transport_set_factory(transport_factory f) { g_factory = f; }
transport_factory transport_get_factory(void) { return g_factory; }

static long env_long(const char *name) {
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : -1;
}

bool tp_launched(void) {
    const char *sizes[3] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"};
    for (int i = 0; i < 3; i++) {
        long n = env_long(sizes[i]);
        if (n > 1) return true;
        if (n == 1) return false; /* a launcher with one task: run locally */
    }
    return getenv("PMIX_RANK") != NULL;
}

/* ---- moves of device buffers ---- */

/* True when a buffer at `where` must be staged through host memory. */
static bool staged(const transport *tp, tp_mem where) {
    return where == TP_DEVICE && tp->dev && !tp->dev->host_memory && !tp->device_native;
}

static void *bounce(transport *tp, size_t bytes) {
    if (bytes > tp->bounce_cap) { /* grows to the largest move once (the first step), then stays */
        free(tp->bounce);
        tp->bounce = xmalloc(bytes);
        tp->bounce_cap = bytes;
    }
    return tp->bounce;
}

void tp_free_staging(transport *tp) {
    free(tp->bounce), free(tp->ibounce);
    tp->bounce = NULL, tp->bounce_cap = 0, tp->ibounce = NULL, tp->ibounce_cap = 0;
}

static ops_tensor dev_bytes(void *p) { return (ops_tensor){p, OPS_F32}; }

void tp_bcast_mem(transport *tp, tp_group g, int root, void *buf, size_t bytes, tp_mem where, const char *what) {
    if (!staged(tp, where)) return tp->bcast(tp, g, root, buf, bytes, what);
    CHECK(bytes % 4 == 0, "device move of %s: %zu bytes is not whole floats", what, bytes);
    void *h = bounce(tp, bytes);
    bool am_root = tp_group_rank(tp, g) == root;
    if (am_root) ops_download(tp->dev, h, dev_bytes(buf), bytes / 4);
    tp->bcast(tp, g, root, h, bytes, what);
    if (!am_root) ops_upload(tp->dev, dev_bytes(buf), h, bytes / 4);
}

void tp_send_mem(transport *tp, tp_group g, int to, const void *buf, size_t bytes, tp_mem where, const char *what) {
    if (!staged(tp, where)) return tp->send(tp, g, to, buf, bytes, what);
    void *h = bounce(tp, bytes);
    ops_download(tp->dev, h, dev_bytes((void *)buf), bytes / 4);
    tp->send(tp, g, to, h, bytes, what);
}

void tp_recv_mem(transport *tp, tp_group g, int from, void *buf, size_t bytes, tp_mem where, const char *what) {
    if (!staged(tp, where)) return tp->recv(tp, g, from, buf, bytes, what);
    void *h = bounce(tp, bytes);
    tp->recv(tp, g, from, h, bytes, what);
    ops_upload(tp->dev, dev_bytes(buf), h, bytes / 4);
}

void tp_allgatherv_mem(transport *tp, tp_group g, void *buf, const size_t *counts, const size_t *displs, size_t total,
                       tp_mem where, const char *what) {
    if (!staged(tp, where)) return tp->allgatherv(tp, g, buf, counts, displs, what);
    void *h = bounce(tp, total);
    ops_download(tp->dev, h, dev_bytes(buf), total / 4);
    tp->allgatherv(tp, g, h, counts, displs, what);
    ops_upload(tp->dev, dev_bytes(buf), h, total / 4);
}

void tp_gatherv_mem(transport *tp, tp_group g, const void *mine, size_t bytes, tp_mem where, void *all, size_t cap,
                    size_t *counts, const char *what) {
    if (!staged(tp, where) || !mine) return tp->gatherv(tp, g, mine, bytes, all, cap, counts, what);
    void *h = bounce(tp, bytes);
    ops_download(tp->dev, h, dev_bytes((void *)mine), bytes / 4);
    tp->gatherv(tp, g, h, bytes, all, cap, counts, what);
}

void tp_reduce_scatter_mem(transport *tp, tp_group g, const float *grads, const size_t *counts,
                           const size_t *displs, float *shard, const char *what) {
    if (!staged(tp, TP_DEVICE)) return tp->reduce_scatter_f32(tp, g, grads, counts, displs, shard, what);
    int n_members = tp_group_size(tp, g), me = tp_group_rank(tp, g);
    size_t n = 0;
    for (int i = 0; i < n_members; i++) n = S2D_MAX(n, displs[i] + counts[i]);
    float *h = bounce(tp, (n + counts[me]) * sizeof(float));
    ops_download(tp->dev, h, ot_f32(grads), n);
    tp->reduce_scatter_f32(tp, g, h, counts, displs, h + n, what);
    ops_upload(tp->dev, ot_f32(shard), h + n, counts[me]);
}

void tp_ireduce_scatter_mem(transport *tp, tp_group g, const float *grads_at, size_t at, size_t n,
                            const size_t *counts, float *shard_at, const char *what) {
    if (!staged(tp, TP_DEVICE)) return tp->ireduce_scatter_f32(tp, g, grads_at, counts, shard_at, what);
    if (2 * n > tp->ibounce_cap) { /* once: the bucket's send and receive sides live at their own offsets */
        free(tp->ibounce);
        tp->ibounce = xmalloc(2 * n * sizeof(float));
        tp->ibounce_cap = 2 * n;
    }
    int members = tp_group_size(tp, g), me = tp_group_rank(tp, g);
    size_t len = 0;
    for (int i = 0; i < members; i++) len += counts[i];
    CHECK(tp->n_pending_up < TP_MAX_BUCKETS, "more than %d bucketed reductions pending", TP_MAX_BUCKETS);
    float *send = tp->ibounce + at, *recv = tp->ibounce + n + at;
    ops_download(tp->dev, send, ot_f32(grads_at), len);
    tp->ireduce_scatter_f32(tp, g, send, counts, recv, what);
    if (counts[me]) tp->pending_up[tp->n_pending_up++] = (tp_pending_up){shard_at, recv, counts[me]};
}

void tp_wait_reduce_mem(transport *tp, tp_group g, const char *what) {
    tp->wait_reduce(tp, g, what);
    for (int i = 0; i < tp->n_pending_up; i++)
        ops_upload(tp->dev, ot_f32(tp->pending_up[i].dev), tp->pending_up[i].host, tp->pending_up[i].n);
    tp->n_pending_up = 0;
}
