/* subproc.c: a child process behind two pipes (subproc.h). */
#include "core/subproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/timer.h"

extern char **environ;

bool subproc_start(subproc *p, const char *command, size_t max_line, s2d_err *err) {
    memset(p, 0, sizeof *p);
    p->to_child = p->from_child = -1;
    int in[2], out[2]; /* in: we write -> child stdin; out: child stdout -> we read */
    if (pipe2(in, O_CLOEXEC) != 0) return err_set(err, "pipe: %s", strerror(errno));
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]), close(in[1]);
        return err_set(err, "pipe: %s", strerror(errno));
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    CHECK(posix_spawn_file_actions_init(&fa) == 0, "posix_spawn_file_actions_init failed");
    CHECK(posix_spawnattr_init(&at) == 0, "posix_spawnattr_init failed");
    /* dup2 clears close-on-exec on 0 and 1; everything else of ours (files, MPI sockets) is closed */
    CHECK(posix_spawn_file_actions_adddup2(&fa, in[0], 0) == 0, "posix_spawn: adddup2 failed");
    CHECK(posix_spawn_file_actions_adddup2(&fa, out[1], 1) == 0, "posix_spawn: adddup2 failed");
    CHECK(posix_spawn_file_actions_addclosefrom_np(&fa, 3) == 0, "posix_spawn: addclosefrom failed");
    /* its own process group (so a kill reaches what the shell starts), default signal mask and dispositions */
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE), sigaddset(&dfl, SIGTERM), sigaddset(&dfl, SIGINT), sigaddset(&dfl, SIGHUP);
    CHECK(posix_spawnattr_setpgroup(&at, 0) == 0, "posix_spawnattr_setpgroup failed");
    CHECK(posix_spawnattr_setsigmask(&at, &none) == 0, "posix_spawnattr_setsigmask failed");
    CHECK(posix_spawnattr_setsigdefault(&at, &dfl) == 0, "posix_spawnattr_setsigdefault failed");
    CHECK(posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) == 0,
          "posix_spawnattr_setflags failed");
    char *argv[] = {"sh", "-c", (char *)command, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(in[0]), close(out[1]);
    if (rc != 0) {
        close(in[1]), close(out[0]);
        return err_set(err, "cannot start /bin/sh -c: %s", strerror(rc));
    }
    s2d_child_register(pid);
    p->pid = pid, p->to_child = in[1], p->from_child = out[0];
    CHECK_SYS(fcntl(p->to_child, F_SETFL, O_NONBLOCK));
    CHECK_SYS(fcntl(p->from_child, F_SETFL, O_NONBLOCK));
    p->max_line = max_line;
    p->cap = max_line + 1;
    p->buf = xmalloc(p->cap);
    return true;
}

/* Reaps the child if it has ended (or waits up to wait_s for it to). */
static bool try_reap(subproc *p, double wait_s) {
    if (p->reaped || !p->pid) return p->reaped;
    double t0 = time_now();
    for (;;) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->status = st, p->reaped = true;
            s2d_child_unregister(p->pid);
            kill(-p->pid, SIGKILL); /* anything the shell left behind in its group */
            return true;
        }
        if (r < 0 && errno != EINTR) return false;
        if (time_now() - t0 >= wait_s) return false;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void subproc_describe_exit(const subproc *p, char *out, size_t n) {
    if (!p->reaped) snprintf(out, n, "is still running");
    else if (WIFEXITED(p->status) && WEXITSTATUS(p->status) > 128 && WEXITSTATUS(p->status) < 128 + 65)
        snprintf(out, n, "exited with status %d (the shell's report of signal %d, %s)", WEXITSTATUS(p->status),
                 WEXITSTATUS(p->status) - 128, strsignal(WEXITSTATUS(p->status) - 128));
    else if (WIFEXITED(p->status)) snprintf(out, n, "exited with status %d", WEXITSTATUS(p->status));
    else if (WIFSIGNALED(p->status))
        snprintf(out, n, "was killed by signal %d (%s)", WTERMSIG(p->status), strsignal(WTERMSIG(p->status)));
    else snprintf(out, n, "ended (wait status %d)", p->status);
}

/* "the command exited with status 3" style text for a child that went away. */
static bool gone(subproc *p, const char *what, s2d_err *err) {
    try_reap(p, 2.0);
    char how[128];
    subproc_describe_exit(p, how, sizeof how);
    return err_set(err, "%s: the command %s", what, how);
}

static int remaining_ms(double deadline) {
    double left = deadline - time_now();
    return left <= 0 ? 0 : left > 1e6 ? 1000000000 : (int)(left * 1000) + 1;
}

bool subproc_write(subproc *p, const char *data, size_t n, double timeout_s, s2d_err *err) {
    if (p->to_child < 0) return err_set(err, "writing to the command: its stdin is closed");
    /* a dead reader raises SIGPIPE: block it here, and take a pending one away before unblocking */
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    double deadline = time_now() + timeout_s;
    bool ok = true, broken = false;
    size_t done = 0;
    while (done < n && ok) {
        ssize_t w = write(p->to_child, data + done, n - done);
        if (w > 0) {
            done += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EPIPE) broken = true, ok = false;
        else if (w < 0 && errno != EAGAIN && errno != EINTR) ok = err_set(err, "writing to the command: %s", strerror(errno));
        else {
            struct pollfd pf = {.fd = p->to_child, .events = POLLOUT};
            int ms = remaining_ms(deadline);
            int r = ms ? poll(&pf, 1, ms) : 0;
            if (r == 0) ok = err_set(err, "the command did not read its input within %g s (timeout)", timeout_s);
            else if (r < 0 && errno != EINTR) ok = err_set(err, "poll: %s", strerror(errno));
            else if (r > 0 && (pf.revents & (POLLERR | POLLHUP)) && !(pf.revents & POLLOUT)) broken = true, ok = false;
        }
    }
    if (broken) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (broken) return gone(p, "writing to the command (broken pipe)", err);
    return ok;
}

bool subproc_read_line(subproc *p, double timeout_s, char **line, size_t *len, s2d_err *err) {
    if (p->consumed) { /* drop the line handed out last time */
        memmove(p->buf, p->buf + p->consumed, p->len - p->consumed);
        p->len -= p->consumed, p->consumed = 0;
    }
    double deadline = time_now() + timeout_s;
    size_t scanned = 0;
    for (;;) {
        char *nl = memchr(p->buf + scanned, '\n', p->len - scanned);
        if (nl) {
            *nl = '\0';
            *line = p->buf, *len = (size_t)(nl - p->buf);
            p->consumed = *len + 1;
            return true;
        }
        scanned = p->len;
        if (p->len >= p->max_line)
            return err_set(err, "the command wrote a line longer than %zu bytes", p->max_line);
        ssize_t r = read(p->from_child, p->buf + p->len, p->max_line - p->len);
        if (r > 0) {
            p->len += (size_t)r;
            continue;
        }
        if (r == 0) return gone(p, p->len ? "the command's output ended inside a line" : "the command closed its output", err);
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return err_set(err, "reading from the command: %s", strerror(errno));
        struct pollfd pf = {.fd = p->from_child, .events = POLLIN};
        int ms = remaining_ms(deadline);
        int n = ms ? poll(&pf, 1, ms) : 0;
        if (n == 0) return err_set(err, "no reply from the command within %g s (timeout)", timeout_s);
        if (n < 0 && errno != EINTR) return err_set(err, "poll: %s", strerror(errno));
    }
}

void subproc_stop(subproc *p, double grace_s) {
    if (p->to_child >= 0) close(p->to_child), p->to_child = -1;
    if (p->pid && !p->reaped && !try_reap(p, grace_s)) {
        kill(-p->pid, SIGKILL);
        kill(p->pid, SIGKILL);
        int st = 0;
        while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {
        }
        p->status = st, p->reaped = true;
        s2d_child_unregister(p->pid);
    }
    if (p->from_child >= 0) close(p->from_child), p->from_child = -1;
    free(p->buf);
    p->buf = NULL, p->len = p->cap = p->consumed = 0;
}
