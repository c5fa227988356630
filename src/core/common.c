#include "core/common.h"
#include "core/fault_point.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int g_rank = 0;
static char g_role[32] = "main";
static void (*g_abort_hook)(int) = NULL;

/* Temp files to remove on die() or a fatal signal. A slot's path is written before its flag is set, so a signal
 * handler never sees a half-written path. */
enum { MAX_TMP_FILES = 64 };
static char g_tmp_files[MAX_TMP_FILES][4200];
static volatile sig_atomic_t g_tmp_used[MAX_TMP_FILES];

void s2d_set_identity(int rank, const char *role) {
    g_rank = rank;
    snprintf(g_role, sizeof g_role, "%s", role);
}
int s2d_rank(void) { return g_rank; }
void s2d_set_abort_hook(void (*hook)(int code)) { g_abort_hook = hook; }

void s2d_tmp_register(const char *path) {
    for (int i = 0; i < MAX_TMP_FILES; i++) {
        if (!g_tmp_used[i]) {
            snprintf(g_tmp_files[i], sizeof g_tmp_files[i], "%s", path);
            g_tmp_used[i] = 1;
            return;
        }
    }
    die("too many temporary files open at once (limit %d)", MAX_TMP_FILES);
}

void s2d_tmp_unregister(const char *path) {
    for (int i = 0; i < MAX_TMP_FILES; i++)
        if (g_tmp_used[i] && strcmp(g_tmp_files[i], path) == 0) g_tmp_used[i] = 0;
}

void s2d_tmp_unlink_all(void) {
    for (int i = 0; i < MAX_TMP_FILES; i++) {
        if (g_tmp_used[i]) {
            unlink(g_tmp_files[i]);
            g_tmp_used[i] = 0;
        }
    }
}

/* Child process groups to kill on die() or a fatal signal (pid 0 = free slot). */
enum { MAX_CHILDREN = 16 };
static volatile sig_atomic_t g_children[MAX_CHILDREN];

void s2d_child_register(int pgid) {
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (!g_children[i]) {
            g_children[i] = pgid;
            return;
        }
    kill(-pgid, SIGKILL);
    die("too many child processes at once (limit %d)", MAX_CHILDREN);
}

void s2d_child_unregister(int pgid) {
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (g_children[i] == pgid) g_children[i] = 0;
}

void s2d_children_kill_all(void) {
    for (int i = 0; i < MAX_CHILDREN; i++) {
        int g = g_children[i];
        if (g > 0) kill(-g, SIGKILL);
        g_children[i] = 0;
    }
}

bool err_set(s2d_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return false;
}

bool err_prefix(s2d_err *err, const char *fmt, ...) {
    if (err) {
        char prefix[512], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    }
    return false;
}

_Noreturn void die_at(const char *file, int line, const char *hint, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "s2d: error [rank %d, %s] %s:%d: %s\n", g_rank, g_role, file, line, msg);
    if (hint) fprintf(stderr, "  hint: %s\n", hint);
    fflush(stderr);
    s2d_tmp_unlink_all();
    s2d_children_kill_all();
    if (g_abort_hook) g_abort_hook(1);
    /* _exit, not exit: atexit handlers would run HDF5's library shutdown, which closes (and flushes) files
     * that a failed write left half-built, and that crashes (H5F__close_cb after ENOSPC). Every stdio stream
     * is flushed first, as exit() would have done. */
    fflush(NULL);
    fault_leak_check(); /* sanitizer build: what the error path lost is reported before _exit skips LSan */
    _exit(1);
}

_Noreturn void die_sys_at(const char *file, int line, const char *what) {
    die_at(file, line, NULL, "%s failed: %s", what, strerror(errno));
}

int name_index(const char *name, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

size_t s2d_mem_available(const char **what) {
    size_t best = SIZE_MAX;
    const char *why = "nothing known";
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                best = (size_t)kb * 1024, why = "MemAvailable in /proc/meminfo";
                break;
            }
        fclose(f);
    }
    const int res[2] = {RLIMIT_AS, RLIMIT_DATA};
    const char *names[2] = {"ulimit -v", "ulimit -d"};
    for (int i = 0; i < 2; i++) {
        struct rlimit rl;
        if (getrlimit(res[i], &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (size_t)rl.rlim_cur < best)
            best = (size_t)rl.rlim_cur, why = names[i];
    }
    if (what) *what = why;
    return best;
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory allocating %zu bytes", n);
    return p;
}
void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) die("out of memory reallocating to %zu bytes", n);
    return q;
}
char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

static const char *file_kind(mode_t m) {
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a plain file";
}

bool check_regular(const char *path, s2d_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) return err_set(err, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return err_set(err, "%s: not a regular file (%s)", path, file_kind(st.st_mode));
    return true;
}

int open_regular(const char *path, s2d_err *err) {
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err_set(err, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        err_set(err, "%s: not a regular file (%s)", path, file_kind(st.st_mode));
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

FILE *fopen_regular(const char *path, s2d_err *err) {
    int fd = open_regular(path, err);
    if (fd < 0) return NULL;
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        err_set(err, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
    }
    return fp;
}

bool read_file(const char *path, char **data, size_t *len, s2d_err *err) {
    FILE *fp = fopen_regular(path, err);
    if (!fp) return false;
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        fclose(fp);
        return err_set(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t n = (size_t)st.st_size;
    char *buf = xmalloc(n + 1);
    size_t got = fread(buf, 1, n, fp);
    fclose(fp);
    if (got != n) {
        free(buf);
        return err_set(err, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = '\0';
    *data = buf;
    if (len) *len = n;
    return true;
}

void path_join(char *out, size_t n, const char *dir, const char *name) {
    size_t dl = strlen(dir);
    int w = (dl > 0 && dir[dl - 1] == '/') ? snprintf(out, n, "%s%s", dir, name)
                                           : snprintf(out, n, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= n) die("path too long: %s/%s", dir, name);
}

bool atomic_open(atomic_file *af, const char *path, s2d_err *err) {
    memset(af, 0, sizeof *af);
    if (snprintf(af->path, sizeof af->path, "%s", path) >= (int)sizeof af->path)
        return err_set(err, "path too long: %s", path);
    /* Only a regular file is replaced (by rename). A symlink is followed: its target is replaced and the link
     * stays. Anything else that exists (a device such as /dev/null, a FIFO) is written through, never renamed
     * over: the rename would put a regular file in the device's place. */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        char *target = realpath(path, NULL);
        if (target) {
            int w = snprintf(af->path, sizeof af->path, "%s", target);
            free(target);
            if (w >= (int)sizeof af->path) return err_set(err, "%s: the link's target path is too long", path);
        }
        /* a dangling link: written through below (creates its target) */
    }
    bool exists = stat(af->path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) return err_set(err, "%s: is a directory", path);
    if ((exists && !S_ISREG(st.st_mode)) || (!exists && lstat(af->path, &st) == 0)) {
        af->direct = true;
        snprintf(af->tmp, sizeof af->tmp, "%s", af->path);
        af->fp = fopen(af->path, "wb");
        if (!af->fp) return err_set(err, "%s: cannot open for writing: %s", path, strerror(errno));
        return true;
    }
    snprintf(af->tmp, sizeof af->tmp, "%s.tmp.%ld", af->path, (long)getpid());
    af->fp = fopen(af->tmp, "wb");
    if (!af->fp) return err_set(err, "%s: cannot create: %s", af->tmp, strerror(errno));
    s2d_tmp_register(af->tmp);
    return true;
}

bool atomic_commit(atomic_file *af, s2d_err *err) {
    if (af->direct) { /* a device or FIFO: nothing to sync or rename */
        bool ok = fflush(af->fp) == 0;
        ok = (fclose(af->fp) == 0) && ok;
        af->fp = NULL;
        if (!ok) return err_set(err, "%s: write failed: %s", af->path, strerror(errno));
        return true;
    }
    bool ok = fflush(af->fp) == 0 && fsync(fileno(af->fp)) == 0;
    ok = (fclose(af->fp) == 0) && ok;
    af->fp = NULL;
    if (!ok) {
        int e = errno;
        unlink(af->tmp);
        s2d_tmp_unregister(af->tmp);
        return err_set(err, "%s: write failed: %s", af->path, strerror(e));
    }
    if (rename(af->tmp, af->path) != 0) {
        int e = errno;
        unlink(af->tmp);
        s2d_tmp_unregister(af->tmp);
        return err_set(err, "%s: cannot rename into place: %s", af->path, strerror(e));
    }
    s2d_tmp_unregister(af->tmp);
    return true;
}

void atomic_abort(atomic_file *af) {
    if (af->fp) fclose(af->fp);
    af->fp = NULL;
    if (af->direct) return; /* never unlink a device or FIFO */
    unlink(af->tmp);
    s2d_tmp_unregister(af->tmp);
}

void remove_dir_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4400];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            path_join(path, sizeof path, dir, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(dir);
}

bool dir_build_atomic(const char *dir, bool (*fill)(const char *tmp, void *ctx, s2d_err *err), void *ctx,
                      s2d_err *err) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    if (mkdir(tmp, 0755) != 0) return err_set(err, "%s: cannot create directory: %s", tmp, strerror(errno));
    bool ok = fill(tmp, ctx, err);
    if (ok && rename(tmp, dir) != 0) ok = err_set(err, "%s: cannot create directory: %s", dir, strerror(errno));
    if (!ok) remove_dir_files(tmp);
    return ok;
}

bool dir_has_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    struct dirent *e;
    bool any = false;
    while (!any && (e = readdir(d))) any = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return any;
}

/* The pid of a temp name "<anything>.tmp.<digits>", or 0. */
static long temp_pid(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (!t) return 0;
    for (const char *n; (n = strstr(t + 1, ".tmp.")); t = n) {} /* the last ".tmp." */
    const char *p = t + 5;
    if (!*p) return 0;
    long pid = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || pid > 100000000L) return 0;
        pid = pid * 10 + (*p - '0');
    }
    return pid;
}

static bool pid_alive(long pid) { return pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno == EPERM; }

/* Removes a temp directory written by a dead process: its plain files, then itself (nothing deeper). */
static bool remove_temp_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) return false;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && !S_ISDIR(st.st_mode)) unlink(p);
    }
    closedir(d);
    return rmdir(path) == 0;
}

int remove_dead_temps(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int removed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[8192];
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p) continue;
        struct stat st;
        if (lstat(p, &st) != 0) continue;
        long pid = temp_pid(e->d_name);
        if (pid > 0 && !pid_alive(pid) && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
            bool ok = S_ISDIR(st.st_mode) ? remove_temp_dir(p) : unlink(p) == 0;
            if (ok) removed++;
        } else if (S_ISDIR(st.st_mode) && depth > 0) {
            removed += remove_dead_temps(p, depth - 1);
        }
    }
    closedir(d);
    return removed;
}
