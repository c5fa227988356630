/* common.h: error reporting, checked-call macros and small helpers shared by all of src/.
 *
 * Two kinds of failure:
 *  - bad external input (files, config, data): functions return false and fill an s2d_err, so callers and
 *    tests can see the message; the command line turns it into die().
 *  - everything else that cannot go on (OOM, syscalls, broken invariants): die() at once.
 * die() prints rank, role, file:line and an optional hint, removes registered temporary files (so no partial
 * output survives), kills registered child processes, then calls the abort hook (MPI_Abort under mpi/) or _exit(1) (no atexit handlers: HDF5's
 * would close half-written files). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    char msg[1024];
} s2d_err;

/* Formats into err (if non-NULL) and returns false, so `return err_set(err, ...)` reads naturally. */
bool err_set(s2d_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends "prefix: " to an existing message (adds context such as a file name while unwinding). */
bool err_prefix(s2d_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

_Noreturn void die_at(const char *file, int line, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define die(...) die_at(__FILE__, __LINE__, NULL, __VA_ARGS__)
#define die_hint(hint, ...) die_at(__FILE__, __LINE__, (hint), __VA_ARGS__)

/* CHECK: an invariant or precondition; dies with the message when false. */
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) die(__VA_ARGS__);                                                                       \
    } while (0)
/* CHECK_OK: a call returning bool that fills `err` on failure. */
#define CHECK_OK(call, err)                                                                                  \
    do {                                                                                                     \
        if (!(call)) die("%s", (err)->msg);                                                                  \
    } while (0)
/* CHECK_SYS: a POSIX call returning -1 (or < 0) with errno set. */
#define CHECK_SYS(call)                                                                                      \
    do {                                                                                                     \
        if ((call) < 0) die_sys_at(__FILE__, __LINE__, #call);                                               \
    } while (0)
_Noreturn void die_sys_at(const char *file, int line, const char *what);

/* Process identity printed by die() and the logger; the mpi/ runtime sets it, single process is rank 0. */
void s2d_set_identity(int rank, const char *role);
int s2d_rank(void);
/* Called by die() instead of exit(1); mpi/ installs one that calls MPI_Abort. */
void s2d_set_abort_hook(void (*hook)(int code));

/* Temporary files that die() must remove (outputs are written to a temp name, then renamed). */
void s2d_tmp_register(const char *path);
void s2d_tmp_unregister(const char *path);
/* Removes every registered temp file; async-signal-safe (unlink only), so core/signals.c calls it too. */
void s2d_tmp_unlink_all(void);

/* Memory this process can still ask for, in bytes: the least of MemAvailable (/proc/meminfo) and the soft
 * RLIMIT_AS / RLIMIT_DATA limits; SIZE_MAX when none is known. *what (optional) names the bound that applies,
 * for messages ("MemAvailable in /proc/meminfo", "ulimit -v", "ulimit -d"). For up-front checks that name the
 * config key behind a size before anything is allocated. */
size_t s2d_mem_available(const char **what);
/* Child process groups that die() and the fatal-signal handler must SIGKILL (core/subproc.h registers them). */
void s2d_child_register(int pgid);
void s2d_child_unregister(int pgid);
/* SIGKILLs every registered group; async-signal-safe (kill only). */
void s2d_children_kill_all(void);

/* Allocation that dies on failure (never inside a step loop: buffers are sized up front). */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* Read-only opens that refuse anything but a regular file (FIFO, device, directory, socket) before a read can
 * block on it: open with O_NONBLOCK, fstat, S_ISREG, then back to blocking. -1 / NULL + err naming the file.
 * check_regular is the stat-only check for libraries that open by name (HDF5). */
int open_regular(const char *path, s2d_err *err);
FILE *fopen_regular(const char *path, s2d_err *err);
bool check_regular(const char *path, s2d_err *err);
/* Whole file into memory (NUL-terminated); false + err naming the file on failure. */
bool read_file(const char *path, char **data, size_t *len, s2d_err *err);
/* Joins dir and name into out (size n); dies if it does not fit. */
void path_join(char *out, size_t n, const char *dir, const char *name);

/* Atomic output: write to "<path>.tmp.<pid>", then rename over path on commit; die() removes the temp.
 * Only regular files (or nothing) are replaced: a symlink's target is replaced (the link stays); an existing
 * device or FIFO (e.g. --out /dev/null) is written through (direct: tmp = path, no rename, never unlinked). */
typedef struct {
    FILE *fp;
    char path[4096];
    char tmp[4200];
    bool direct;
} atomic_file;
bool atomic_open(atomic_file *af, const char *path, s2d_err *err);
bool atomic_commit(atomic_file *af, s2d_err *err); /* fflush + fsync + rename */
void atomic_abort(atomic_file *af);                /* close and remove the temp file */

/* A new directory that appears only when complete: fill(tmp, ctx, err) writes the files into a fresh
 * "<dir>.tmp.<pid>", which is then renamed to dir; on any failure the temp directory and its files are removed
 * (a SIGKILLed one is a dead temp for remove_dead_temps). dir must not exist. */
bool dir_build_atomic(const char *dir, bool (*fill)(const char *tmp, void *ctx, s2d_err *err), void *ctx,
                      s2d_err *err);
/* Removes the plain files of dir (one level), then dir itself if it is then empty. */
void remove_dir_files(const char *dir);
/* True when dir exists and holds anything (other than . and ..). */
bool dir_has_entries(const char *dir);
/* Removes temp files and temp directories ("<name>.tmp.<pid>", as atomic_open, ckpt_save and model saves name
 * them) under dir and its subdirectories down to `depth` more levels, whose pid is not a live process (the
 * leftovers of a SIGKILLed run). Returns how many were removed. */
int remove_dead_temps(const char *dir, int depth);

/* Index of name in names[0..n), or -1: the one lookup behind every "parse a name from a fixed list". */
int name_index(const char *name, const char *const *names, int n);

#define S2D_MIN(a, b) ((a) < (b) ? (a) : (b))
#define S2D_MAX(a, b) ((a) > (b) ? (a) : (b))
#define S2D_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
