/* subproc.h: a long-lived child process spoken to over pipes, one line at a time (the reward command).
 *
 * subproc_start runs `/bin/sh -c COMMAND` with posix_spawn: its stdin and stdout are pipes to us, its stderr is
 * ours, it gets no other descriptor of ours, and it leads a process group of its own, so stopping it stops what
 * the shell started too. Every started child is registered with core/common.h (s2d_child_register): die() and
 * the SIGTERM/SIGINT/SIGHUP handler SIGKILL its group, so no exit path of s2d leaves it running. When s2d itself
 * is SIGKILLed the child sees end-of-file on stdin (a well-behaved line protocol then exits).
 *
 * Writes and reads wait at most timeout_s (poll()); a child that dies shows as end-of-file or a broken pipe, and
 * the error says how it ended (exit status N, killed by signal S). SIGPIPE is blocked around writes, so a dead
 * child is an error here, never a signal that ends s2d. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/common.h"

typedef struct {
    pid_t pid;        /* 0 = not running */
    int to_child;     /* its stdin (write end), -1 when closed */
    int from_child;   /* its stdout (read end) */
    char *buf;        /* bytes read from its stdout, not yet handed out */
    size_t len, cap;  /* cap: at most max_line + 1 */
    size_t max_line;
    size_t consumed;  /* the last line handed out (removed on the next read) */
    int status;       /* waitpid status once reaped */
    bool reaped;
} subproc;

/* Starts `/bin/sh -c command`; lines longer than max_line bytes from it are an error. */
bool subproc_start(subproc *p, const char *command, size_t max_line, s2d_err *err);
/* Writes n bytes to its stdin within timeout_s seconds. */
bool subproc_write(subproc *p, const char *data, size_t n, double timeout_s, s2d_err *err);
/* The next line of its stdout (without the newline, NUL-terminated, valid until the next call) within
 * timeout_s seconds. End-of-file, a timeout and an over-long line are errors saying what happened. */
bool subproc_read_line(subproc *p, double timeout_s, char **line, size_t *len, s2d_err *err);
/* Closes its stdin, waits up to grace_s for it to exit on its own, then SIGKILLs its process group and reaps
 * it. Idempotent; frees the buffer. */
void subproc_stop(subproc *p, double grace_s);
/* After the child ended (reaped): "exited with status N" / "was killed by signal S (NAME)" into out. */
void subproc_describe_exit(const subproc *p, char *out, size_t n);
