/* transport.h: how the roles of the pipeline move bytes (DESIGN §2). src/ sees only this interface; the
 * local implementation (transport_local.c, one process plays every role) is a set of no-ops and copies, the
 * MPI one lives in mpi/ (communicators from MPI_Comm_split), a future NCCL one in cuda/.
 *
 * Ranks: world rank 0 is the scheduler, then G generators, S scorers, L learners (in that order). Every move
 * is collective over one named group; member ranks inside a group are fixed functions of the role layout
 * (tp_group_rank below), so the pipeline code is the same for every layout and for the local transport:
 *   TP_WORLD    every rank                         (stage-end weights, per-step timing reports)
 *   TP_GEN      scheduler (0) + generators (1+g)   (prompts out, completions + behaviour log-probs back)
 *   TP_BATCH    scheduler (0) + scorers (1+k) + learners (1+S+j)       (the step's token batch)
 *   TP_PAYLOAD  scorers (k) + learners (S+j)       (per-token teacher/reference log-probs, top-k)
 *   TP_LEARN    learners (j)                       (log-probs, gradient tree reduction, ZeRO-1 shards)
 *   TP_WEIGHTS  learner root (0) + scheduler (1) + generators (2+g)   (new weights, one contiguous buffer)
 * With the local transport one process is every member of every group: a bcast is a no-op (the buffer is
 * already where it is needed), a gather is a copy, send/recv never happen (groups have one member per role).
 *
 * Payload ops time out after timeout_s and die naming the rank that stopped answering when it can be found
 * (mpi/peers.h), and this rank, its role, what it waited for and from whom; die() then aborts the whole job
 * (mpi/ installs an MPI_Abort hook). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "ops/ops.h"

typedef enum { ROLE_SCHEDULER = 0, ROLE_GENERATOR = 1, ROLE_SCORER = 2, ROLE_LEARNER = 3 } tp_role;
typedef enum { TP_WORLD, TP_GEN, TP_BATCH, TP_PAYLOAD, TP_LEARN, TP_WEIGHTS, TP_N_GROUPS } tp_group;

/* Where a moved buffer lives: host memory, or device memory of tp->dev (tensor buffers: weights, gradients,
 * optimizer shards). The moves below take host buffers; the tp_*_mem wrappers take either and stage device
 * buffers through a host bounce buffer unless the transport moves device memory itself (device_native: NCCL)
 * or the device's memory is host memory (the CPU backend: no copy at all). */
typedef enum { TP_HOST = 0, TP_DEVICE = 1 } tp_mem;

/* Gradient reduction across learners (runtime.reduce): deterministic = the fixed pairwise tree over
 * micro-batches (bitwise equal for any learner count), fast = the library's own reduce-scatter (MPI: ring or
 * whatever it picks; results depend on the learner count by float rounding). */
typedef enum { TP_REDUCE_DETERMINISTIC = 0, TP_REDUCE_FAST = 1 } tp_reduce_mode;
#define TP_MAX_BUCKETS 64 /* pending bucketed reductions (the learner merges buckets to stay under it) */

typedef struct { float *dev; const float *host; size_t n; } tp_pending_up; /* a staged bucket's way back */

typedef struct transport transport;
struct transport {
    bool local;          /* one process plays every role */
    int rank, size;      /* world */
    int n_gen, n_score, n_learn;
    tp_role role;        /* this rank's role (local: ROLE_SCHEDULER, but it plays all) */
    int index;           /* index within its role */
    double timeout_s;    /* payload receive timeout */
    const char *name;    /* "local" | "mpi" | "nccl" */
    void *impl;
    /* bytes from group member `root` to every member of g */
    void (*bcast)(transport *tp, tp_group g, int root, void *buf, size_t bytes, const char *what);
    /* every member sends `mine`; group member 0 receives them concatenated in member order into all (cap
     * bytes) and their sizes in counts[group size] */
    void (*gatherv)(transport *tp, tp_group g, const void *mine, size_t bytes, void *all, size_t cap, size_t *counts,
                    const char *what);
    /* in place: member i contributes buf[displs[i] .. displs[i] + counts[i]) and everyone gets all of it */
    void (*allgatherv)(transport *tp, tp_group g, void *buf, const size_t *counts, const size_t *displs,
                       const char *what);
    void (*send)(transport *tp, tp_group g, int to, const void *buf, size_t bytes, const char *what);
    void (*recv)(transport *tp, tp_group g, int from, void *buf, size_t bytes, const char *what);
    void (*barrier)(transport *tp, tp_group g);
    /* Sum over g's members of float buf [n] (n = Σ counts); member i receives its part [displs[i], +counts[i])
     * (ELEMENTS) of the sum in shard [counts[i]]. The library's own order (fast mode). Host buffers. */
    void (*reduce_scatter_f32)(transport *tp, tp_group g, const float *buf, const size_t *counts,
                               const size_t *displs, float *shard, const char *what);
    /* Non-blocking reduce_scatter_f32 of one bucket: buf [Σ counts] is a contiguous piece of every member's
     * gradient, member i receives the sum of its part (counts[i] elements, 0 allowed) into shard. Started here,
     * completed by wait_reduce (buf and shard must stay untouched until then); at most TP_MAX_BUCKETS pending. */
    void (*ireduce_scatter_f32)(transport *tp, tp_group g, const float *buf, const size_t *counts, float *shard,
                                const char *what);
    /* Completes every pending ireduce_scatter_f32 of g (with the payload timeout). */
    void (*wait_reduce)(transport *tp, tp_group g, const char *what);
    /* In place: v [n] becomes the sum over g's members. */
    void (*allreduce_f64)(transport *tp, tp_group g, double *v, int n, const char *what);
    void (*finalize)(transport *tp);
    /* device buffers (tp_mem) */
    ops_queue *dev;      /* the queue tensor buffers belong to (NULL: host only) */
    bool device_native;  /* the moves above accept device buffers of dev directly */
    void *bounce;        /* host staging for device buffers, grown to the largest move */
    size_t bounce_cap;
    float *ibounce;      /* host staging of bucketed reductions: [n] send side, then [n] receive side */
    size_t ibounce_cap;
    int n_pending_up;    /* staged buckets whose shard part goes back to the device after wait_reduce */
    tp_pending_up pending_up[TP_MAX_BUCKETS];
    /* NCCL seam (CUDA issue): for each group an ncclComm_t made from an ncclUniqueId that group member 0
     * creates and broadcasts over the group's MPI communicator (ncclCommInitRank(&c, size, id, rank)); the
     * payload ops above then run ncclBroadcast/ncclSend/ncclRecv on device buffers and only control stays on
     * MPI. NULL on CPU. */
    void *nccl_comm[TP_N_GROUPS];
};

const char *tp_role_name(tp_role r);
/* The moves on a buffer that lives at `where` (see tp_mem). gatherv: `mine` lives at where, `all` on the host. */
void tp_bcast_mem(transport *tp, tp_group g, int root, void *buf, size_t bytes, tp_mem where, const char *what);
void tp_send_mem(transport *tp, tp_group g, int to, const void *buf, size_t bytes, tp_mem where, const char *what);
void tp_recv_mem(transport *tp, tp_group g, int from, void *buf, size_t bytes, tp_mem where, const char *what);
void tp_allgatherv_mem(transport *tp, tp_group g, void *buf, const size_t *counts, const size_t *displs, size_t total,
                       tp_mem where, const char *what);
void tp_gatherv_mem(transport *tp, tp_group g, const void *mine, size_t bytes, tp_mem where, void *all, size_t cap,
                    size_t *counts, const char *what);
/* Fast-mode gradient reduction of device buffers: the sum of every member's grads [n] (tp->dev), member i's
 * shard [counts[i]] of it into shard (tp->dev). */
void tp_reduce_scatter_mem(transport *tp, tp_group g, const float *grads, const size_t *counts,
                           const size_t *displs, float *shard, const char *what);
/* Bucketed fast-mode reduction of device buffers: grads_at [Σ counts] (tp->dev) is the bucket of the flat
 * gradient at element `at` of n, shard_at (tp->dev) where this member's part lands. Staged buckets are
 * downloaded now and their parts uploaded by tp_wait_reduce_mem. */
void tp_ireduce_scatter_mem(transport *tp, tp_group g, const float *grads_at, size_t at, size_t n,
                            const size_t *counts, float *shard_at, const char *what);
void tp_wait_reduce_mem(transport *tp, tp_group g, const char *what);
void tp_free_staging(transport *tp);
/* Does this process play role r? (the local transport plays all four) */
static inline bool tp_plays(const transport *tp, tp_role r) { return tp->local || tp->role == r; }
/* Members of g and this rank's place in it (-1 when not a member); fixed by the layout. */
int tp_group_size(const transport *tp, tp_group g);
int tp_group_rank(const transport *tp, tp_group g);
/* World rank of (role, index). */
int tp_world_rank(const transport *tp, tp_role r, int index);
/* "1g1s1l" */
void tp_layout(const transport *tp, char *out, size_t cap);
/* Contiguous split of n items into parts: item range [*lo, *hi) of part i (sizes differ by at most 1). */
void tp_split(long n, int parts, int i, long *lo, long *hi);

/* One process, every role. */
transport *transport_local_new(void);

/* The launcher seam: main.c (the only src/ file that may see mpi/) registers a factory that makes the MPI
 * transport for a world of generators + scorers + learners + 1 ranks (dies with a clear message if the world
 * size differs). cmd_train calls it only when tp_launched() says a launcher started us. */
/* heartbeat_s: workers that hear nothing from the scheduler's heartbeat for this long end the job (0 = off). */
typedef transport *(*transport_factory)(int generators, int scorers, int learners, double timeout_s,
                                        double heartbeat_s);
void transport_set_factory(transport_factory f);
transport_factory transport_get_factory(void);
/* True under mpirun/srun with more than one task (env OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_STEP_NUM_TASKS > 1,
 * or PMIX_RANK set with an unknown size). */
bool tp_launched(void);
