/* transport_local.c: the single-process transport (every role local, moves are no-ops or copies), plus the
 * layout helpers shared with mpi/. */
#include <stdlib.h>
#include <string.h>

#include "algo/transport.h"
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
static void local_finalize(transport *tp) { free(tp); }

transport *transport_local_new(void) {
    transport *tp = xcalloc(1, sizeof *tp);
    *tp = (transport){.local = true, .rank = 0, .size = 1, .n_gen = 1, .n_score = 1, .n_learn = 1,
                      .role = ROLE_SCHEDULER, .index = 0, .timeout_s = 0, .name = "local",
                      .bcast = local_bcast, .gatherv = local_gatherv, .allgatherv = local_allgatherv,
                      .send = local_send, .recv = local_recv, .barrier = local_barrier, .finalize = local_finalize};
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
