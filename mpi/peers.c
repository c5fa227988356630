/* peers.c: the pid/host table of the job and the state of peers on this host (peers.h). */
#include "peers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"

static peer_id *g_peers;  /* [g_size] */
static bool *g_local;     /* [g_size]: on this rank's host */
static int g_rank = -1, g_size, g_gen, g_score;
static atomic_int *g_leaving, *g_reported; /* shared with this host's ranks (peers_set_shared) */

void peers_set_shared(atomic_int *leaving, atomic_int *reported) { g_leaving = leaving, g_reported = reported; }

void peers_mark_leaving(int why) {
    if (g_leaving && g_rank >= 0) atomic_store(&g_leaving[g_rank], why);
}

void peers_init(int rank, int size, int n_gen, int n_score, const peer_id *all) {
    peers_free();
    g_peers = xmalloc((size_t)size * sizeof *g_peers);
    g_local = xcalloc((size_t)size, sizeof *g_local);
    memcpy(g_peers, all, (size_t)size * sizeof *g_peers);
    for (int w = 0; w < size; w++) {
        g_peers[w].host[sizeof g_peers[w].host - 1] = 0;
        g_local[w] = strcmp(g_peers[w].host, all[rank].host) == 0;
    }
    g_rank = rank, g_size = size, g_gen = n_gen, g_score = n_score;
}

void peers_free(void) {
    free(g_peers), free(g_local);
    g_leaving = g_reported = NULL;
    g_peers = NULL, g_local = NULL, g_rank = -1, g_size = 0;
}

const char *peers_role(int w) {
    if (w < 0 || w >= g_size) return "?";
    if (w == 0) return "scheduler";
    if (w <= g_gen) return "generator";
    if (w <= g_gen + g_score) return "scorer";
    return "learner";
}

int peers_index(int w) {
    if (w <= 0) return 0;
    if (w <= g_gen) return w - 1;
    if (w <= g_gen + g_score) return w - 1 - g_gen;
    return w - 1 - g_gen - g_score;
}

void peers_name(int w, char *buf, size_t cap) {
    if (w < 0 || w >= g_size || !g_peers) {
        snprintf(buf, cap, "rank %d", w);
        return;
    }
    snprintf(buf, cap, "rank %d (%s %d, pid %d on %s)", w, peers_role(w), peers_index(w), (int)g_peers[w].pid,
             g_peers[w].host);
}

/* The state letter of /proc/PID/stat (after the parenthesised command name), 0 when unreadable.
 * Only open/read/close: async-signal-safe. */
static char proc_state(int pid) {
    char path[32] = "/proc/", *p = path + 6, digits[12];
    int n = 0;
    for (unsigned v = (unsigned)pid; n == 0 || v; v /= 10) digits[n++] = (char)('0' + v % 10);
    while (n) *p++ = digits[--n];
    memcpy(p, "/stat", 6);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    char buf[512];
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) return 0;
    buf[len] = 0;
    for (ssize_t i = len - 1; i > 0; i--) /* the name may hold ')' itself: the last one ends it */
        if (buf[i] == ')') return i + 2 < len ? buf[i + 2] : 0;
    return 0;
}

peer_state peers_state(int w) {
    if (!g_peers || w < 0 || w >= g_size || w == g_rank || !g_local[w]) return PEER_UNKNOWN;
    int saved = errno;
    peer_state st = PEER_RUNNING;
    if (kill(g_peers[w].pid, 0) != 0 && errno == ESRCH) {
        st = PEER_GONE;
    } else {
        char c = proc_state(g_peers[w].pid);
        if (c == 'T' || c == 't') st = PEER_STOPPED;
        else if (c == 'Z' || c == 'X') st = PEER_GONE;
    }
    errno = saved;
    return st;
}

int peers_find_stuck(int prefer, peer_state *st) {
    for (int k = -1; k < g_size; k++) {
        int w = k < 0 ? prefer : k;
        if (w < 0 || (k >= 0 && w == prefer)) continue;
        if (g_leaving && atomic_load(&g_leaving[w])) continue; /* ending on purpose: its own message says why */
        peer_state s = peers_state(w);
        if (s == PEER_STOPPED || s == PEER_GONE) {
            *st = s;
            return w;
        }
    }
    return -1;
}

const char *peers_state_text(peer_state st) {
    switch (st) {
    case PEER_STOPPED: return "is stopped (SIGSTOP, or held by a debugger)";
    case PEER_GONE: return "is gone (killed, crashed or exited)";
    default: return "is running";
    }
}

/* Signal-safe appends. */
static size_t put_str(char *b, size_t at, size_t cap, const char *s) {
    while (*s && at + 1 < cap) b[at++] = *s++;
    return at;
}
static size_t put_int(char *b, size_t at, size_t cap, long v) {
    char d[24];
    int n = 0;
    if (v < 0) at = put_str(b, at, cap, "-"), v = -v;
    do d[n++] = (char)('0' + v % 10), v /= 10;
    while (v);
    while (n && at + 1 < cap) b[at++] = d[--n];
    return at;
}

void peers_report_gone(int sig) {
    (void)sig;
    if (!g_peers || !g_leaving) return;
    int gone[64], n = 0;
    bool error = false;
    /* gone without leaving on purpose: killed or crashed (the others are ending with the job, like this one) */
    for (int w = 0; w < g_size && n < 64; w++) {
        int why = atomic_load(&g_leaving[w]);
        error = error || why == PEER_LEAVING_ERROR;
        if (!why && peers_state(w) == PEER_GONE) gone[n++] = w;
    }
    peers_mark_leaving(PEER_LEAVING_SIGNAL);
    /* nobody to name: an ordinary SIGTERM (Ctrl-C, a time limit); or a rank's error, which said why, and after
     * which a slow rank may be SIGKILLed before it could mark itself */
    if (n == 0 || error) return;
    int expected = 0;
    if (!atomic_compare_exchange_strong(g_reported, &expected, 1)) return; /* another rank of this host said it */
    for (int i = 0; i < n; i++) {
        int w = gone[i];
        char line[256];
        size_t at = put_str(line, 0, sizeof line, "s2d: rank ");
        at = put_int(line, at, sizeof line, w);
        at = put_str(line, at, sizeof line, " (");
        at = put_str(line, at, sizeof line, peers_role(w));
        at = put_str(line, at, sizeof line, " ");
        at = put_int(line, at, sizeof line, peers_index(w));
        at = put_str(line, at, sizeof line, ", pid ");
        at = put_int(line, at, sizeof line, g_peers[w].pid);
        at = put_str(line, at, sizeof line, " on ");
        at = put_str(line, at, sizeof line, g_peers[w].host);
        at = put_str(line, at, sizeof line, ") is gone: killed or crashed; the launcher is ending the job\n");
        ssize_t wr = write(2, line, at);
        (void)wr;
    }
}
