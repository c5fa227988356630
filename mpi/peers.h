/* peers.h: what one rank can tell about the others when something goes wrong, so that an error names the rank
 * and role that stopped answering rather than the peer this rank happened to wait on.
 *
 * At start-up every rank shares its pid and host (peers_init, from transport_mpi.c). Later, for a peer on the
 * same host, /proc/PID/stat says whether it is stopped (SIGSTOP, a debugger) or gone (killed, crashed, exited);
 * for peers on other hosts only the heartbeats can tell (transport_mpi.c). The world layout is fixed: rank 0
 * the scheduler, then generators, scorers, learners. */
#pragma once
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int32_t pid;
    char host[60];
} peer_id; /* 64 bytes, exchanged as MPI_BYTE */

typedef enum { PEER_RUNNING = 0, PEER_STOPPED, PEER_GONE, PEER_UNKNOWN } peer_state;

/* Copies the table all[size] (this rank is `rank`); n_gen and n_score fix the roles of the world ranks. */
void peers_init(int rank, int size, int n_gen, int n_score, const peer_id *all);
void peers_free(void);
/* "generator" and its index within the role (generator 0) for world rank w. */
const char *peers_role(int w);
int peers_index(int w);
/* "rank 1 (generator 0, pid 123 on node7)" */
void peers_name(int w, char *buf, size_t cap);
/* A peer on this host: running, stopped or gone; PEER_UNKNOWN for one on another host (or this rank). */
peer_state peers_state(int w);
/* The first peer on this host that is stopped or gone, `prefer` first (-1: none preferred); -1 if there is none.
 * *st: its state. */
int peers_find_stuck(int prefer, peer_state *st);
/* "is stopped (SIGSTOP, or held by a debugger)" / "is gone (killed, crashed or exited)" */
const char *peers_state_text(peer_state st);
/* Words shared by the ranks of this host (an MPI shared-memory window): leaving[w] is set by rank w when it
 * ends on purpose (PEER_LEAVING_ERROR: die(), its message printed; PEER_LEAVING_SIGNAL: a launcher's signal), so
 * the others can tell a peer that was killed or crashed from one that is leaving with the rest; *reported makes
 * the report once per host. NULL: not shared. */
void peers_set_shared(atomic_int *leaving, atomic_int *reported);
enum { PEER_LEAVING_SIGNAL = 1, PEER_LEAVING_ERROR = 2 };
/* This rank ends on purpose, for that reason: async-signal-safe. */
void peers_mark_leaving(int why);
/* For the SIGTERM/SIGINT/SIGHUP handler (core/signals.c's hook): when the launcher ends the job because a rank
 * was killed or crashed, one rank of that host prints "s2d: rank R (role i, pid P on H) is gone ...", naming
 * its role. Async-signal-safe (kill, open/read/close of /proc, atomics, write). */
void peers_report_gone(int sig);
