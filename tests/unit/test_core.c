/* Core: Philox known answers, counter independence, arena, error formatting, atomic files, special files,
 * dead temp files. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/common.h"
#include "core/json.h"
#include "core/rng.h"
#include "test.h"

static void test_philox_known_answers(void) {
    /* Random123 kat_vectors for philox4x32_10. */
    uint32_t out[4];
    philox4x32(0, 0, 0, out);
    EXPECT(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du && out[2] == 0xbc57ac4cu && out[3] == 0x9b00dbd8u,
           "philox(0,0) = %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
    philox4x32(UINT64_MAX, UINT64_MAX, UINT64_MAX, out);
    EXPECT(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u && out[3] == 0x6d5451fdu,
           "philox(ff..) = %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
}

static void test_rng_stream(void) {
    rng_stream a, b;
    rng_stream_init(&a, 42, 7);
    rng_stream_init(&b, 42, 7);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= rng_next_u32(&a) == rng_next_u32(&b);
    EXPECT(same, "two streams with the same seed and stream differ");
    rng_stream_init(&b, 42, 8);
    int diff = 0;
    for (int i = 0; i < 16; i++) diff += rng_next_u32(&a) != rng_next_u32(&b);
    EXPECT(diff > 12, "streams 7 and 8 are not independent (%d of 16 differ)", diff);
    double mean = 0, sq = 0;
    for (int i = 0; i < 20000; i++) {
        double x = rng_next_normal(&a);
        mean += x;
        sq += x * x;
    }
    mean /= 20000;
    sq /= 20000;
    EXPECT(fabs(mean) < 0.03 && fabs(sq - 1) < 0.05, "normal: mean %g, E[x^2] %g", mean, sq);
    int counts[5] = {0};
    for (int i = 0; i < 5000; i++) counts[rng_next_below(&a, 5)]++;
    for (int i = 0; i < 5; i++) EXPECT(counts[i] > 850 && counts[i] < 1150, "below(5): bucket %d has %d", i, counts[i]);
    float u = rng_uniform_at(1, 2, 3, 0);
    EXPECT(u >= 0 && u < 1 && u == rng_uniform_at(1, 2, 3, 0), "uniform_at is a pure function in [0,1)");
}

static void test_arena(void) {
    arena a;
    arena_init(&a, 1024);
    float *x = arena_floats(&a, 10);
    EXPECT(((uintptr_t)x & 63) == 0, "floats are 64-byte aligned");
    size_t mark = arena_mark(&a);
    char *c = arena_alloc(&a, 3, 1);
    EXPECT(c == (char *)(x + 10), "byte allocation follows");
    arena_reset_to(&a, mark);
    EXPECT(arena_alloc(&a, 3, 1) == c, "reset reuses memory");
    EXPECT(a.peak >= 43, "peak tracks the high-water mark");
    arena_free(&a);
    /* measuring: the same allocations need exactly `used` bytes, and a block of that size holds them, zeroed */
    arena m;
    arena_measure(&m);
    EXPECT(arena_alloc(&m, 5, 1) == NULL && arena_floats(&m, 3) == NULL && arena_alloc(&m, 7, 8) == NULL,
           "a measuring arena returns NULL");
    EXPECT(m.used == 64 + 12 + 4 + 7, "measured %zu bytes: 5, pad to 64, 12, pad to 80, 7", m.used);
    arena_init(&a, m.used);
    unsigned char *p1 = arena_alloc(&a, 5, 1);
    float *p2 = arena_floats(&a, 3);
    unsigned char *p3 = arena_alloc(&a, 7, 8);
    EXPECT(a.used == m.used && p3 + 7 == a.base + a.cap, "the measured size is exactly enough");
    int nonzero = p2[0] != 0 || p2[1] != 0 || p2[2] != 0;
    for (int i = 0; i < 5; i++) nonzero |= p1[i] != 0;
    for (int i = 0; i < 7; i++) nonzero |= p3[i] != 0;
    EXPECT(!nonzero, "the block is zero-filled");
    arena_free(&a);
}

static void test_errors_and_files(void) {
    s2d_err err;
    EXPECT(!err_set(&err, "bad %d", 3), "err_set returns false");
    err_prefix(&err, "file.json");
    EXPECT_STREQ(err.msg, "file.json: bad 3");
    char *data;
    EXPECT(!read_file("/nonexistent/x", &data, NULL, &err) && strstr(err.msg, "/nonexistent/x"),
           "read_file names the missing file: %s", err.msg);

    char dir[] = "/tmp/s2d-core-XXXXXX";
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    path_join(path, sizeof path, dir, "out.txt");
    atomic_file af;
    EXPECT(atomic_open(&af, path, &err), "atomic_open: %s", err.msg);
    fputs("hello", af.fp);
    struct stat st;
    EXPECT(stat(path, &st) != 0, "target does not exist before commit");
    EXPECT(atomic_commit(&af, &err), "atomic_commit: %s", err.msg);
    size_t len;
    EXPECT(read_file(path, &data, &len, &err) && len == 5 && memcmp(data, "hello", 5) == 0, "committed content");
    free(data);
    EXPECT(atomic_open(&af, path, &err), "atomic_open again");
    fputs("partial", af.fp);
    atomic_abort(&af);
    EXPECT(read_file(path, &data, &len, &err) && len == 5, "abort leaves the old file intact");
    free(data);
    EXPECT(stat(af.tmp, &st) != 0, "abort removes the temp file");
    unlink(path);
    rmdir(dir);
}

/* JSON string literals as serde_json writes them (short escapes, other control characters as \u00xx, UTF-8 as
 * is), read back by cJSON to the same bytes; the kind names of error messages. */
static void test_json_helpers(void) {
    const char in[] = "a\"b\\c\n\r\t\b\f\x01\x1f \xc3\xa9 end";
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    print_json_string(f, in, sizeof in - 1);
    fclose(f);
    EXPECT_STREQ(buf, "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f \xc3\xa9 end\"");
    cJSON *back = cJSON_Parse(buf);
    EXPECT(cJSON_IsString(back) && strcmp(back->valuestring, in) == 0, "cJSON reads the literal back: %s", buf);
    cJSON_Delete(back);
    free(buf);
    cJSON *arr = cJSON_Parse("[1, \"x\", null, true, {}, []]");
    const char *want[] = {"a number", "a string", "null", "a boolean", "an object", "an array"};
    for (int i = 0; i < 6; i++) EXPECT_STREQ(json_kind(cJSON_GetArrayItem(arr, i)), want[i]);
    EXPECT_STREQ(json_kind(NULL), "missing");
    cJSON_Delete(arr);
}

/* A directory built with dir_build_atomic appears complete or not at all. */
static bool fill_two(const char *tmp, void *ctx, s2d_err *err) {
    char p[4400];
    path_join(p, sizeof p, tmp, "a.txt");
    FILE *f = fopen(p, "w");
    if (!f) return err_set(err, "%s: cannot create", p);
    fputs("a", f);
    fclose(f);
    if (ctx) return err_set(err, "injected failure after the first file");
    path_join(p, sizeof p, tmp, "b.txt");
    f = fopen(p, "w");
    if (!f) return err_set(err, "%s: cannot create", p);
    fclose(f);
    return true;
}
static void test_dir_build_atomic(void) {
    char dir[] = "/tmp/s2d-core-XXXXXX";
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    char out[256], tmp[300], p[400];
    s2d_err err;
    path_join(out, sizeof out, dir, "model");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
    struct stat st;
    EXPECT(!dir_build_atomic(out, fill_two, (void *)1, &err) && strstr(err.msg, "injected"), "failure reported: %s", err.msg);
    EXPECT(stat(out, &st) != 0 && stat(tmp, &st) != 0, "a failed build leaves neither the directory nor its temp");
    EXPECT(dir_build_atomic(out, fill_two, NULL, &err), "build: %s", err.msg);
    path_join(p, sizeof p, out, "b.txt");
    EXPECT(stat(p, &st) == 0 && stat(tmp, &st) != 0, "complete directory renamed into place");
    remove_dir_files(out);
    EXPECT(stat(out, &st) != 0, "remove_dir_files removes the files and the directory");
    rmdir(dir);
}

/* Issue 13: inputs that are not regular files are refused without blocking; outputs replace only regular
 * files (a symlink's target, never the link; a FIFO is written through); dead temps are found and removed. */
static void test_special_files(void) {
    s2d_err err;
    char dir[] = "/tmp/s2d-core-XXXXXX";
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    char fifo[256], reg[256], link[256], t1[300], t2[300], t3[300], sub[256];
    path_join(fifo, sizeof fifo, dir, "fifo");
    path_join(reg, sizeof reg, dir, "reg.txt");
    path_join(link, sizeof link, dir, "link.txt");
    EXPECT(mkfifo(fifo, 0600) == 0, "mkfifo");
    char *data;
    EXPECT(!read_file(fifo, &data, NULL, &err) && strstr(err.msg, "not a regular file (a FIFO)"), "FIFO read: %s",
           err.msg);
    EXPECT(open_regular(fifo, &err) < 0 && strstr(err.msg, fifo), "open_regular FIFO: %s", err.msg);
    EXPECT(!check_regular(dir, &err) && strstr(err.msg, "(a directory)"), "directory: %s", err.msg);

    /* symlink: the target is replaced, the link stays */
    FILE *f = fopen(reg, "w");
    fputs("old", f);
    fclose(f);
    EXPECT(symlink("reg.txt", link) == 0, "symlink");
    atomic_file af;
    EXPECT(atomic_open(&af, link, &err) && !af.direct, "atomic_open via link: %s", err.msg);
    fputs("new!", af.fp);
    EXPECT(atomic_commit(&af, &err), "commit via link: %s", err.msg);
    struct stat st;
    EXPECT(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "the link is still a link");
    size_t len;
    EXPECT(read_file(reg, &data, &len, &err) && len == 4 && memcmp(data, "new!", 4) == 0, "target replaced");
    free(data);

    /* FIFO: written through (a child reads it), never replaced or unlinked */
    pid_t kid = fork();
    if (kid == 0) {
        FILE *r = fopen(fifo, "r");
        char buf[16] = {0};
        size_t got = r ? fread(buf, 1, sizeof buf - 1, r) : 0;
        _exit(got == 5 && memcmp(buf, "hello", 5) == 0 ? 0 : 1);
    }
    EXPECT(atomic_open(&af, fifo, &err) && af.direct, "atomic_open FIFO: %s", err.msg);
    fputs("hello", af.fp);
    EXPECT(atomic_commit(&af, &err), "commit FIFO: %s", err.msg);
    int status = 0;
    waitpid(kid, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the reader got the bytes");
    EXPECT(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode), "still a FIFO");
    EXPECT(!atomic_open(&af, dir, &err) && strstr(err.msg, "is a directory"), "directory output: %s", err.msg);

    /* dead temps: a dead pid's file and directory go, a live pid's file stays */
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    snprintf(t1, sizeof t1, "%s/a.jsonl.tmp.%ld", dir, (long)dead);
    snprintf(t2, sizeof t2, "%s/b.h5.tmp.%ld", dir, (long)getpid());
    path_join(sub, sizeof sub, dir, "sub");
    EXPECT(mkdir(sub, 0755) == 0, "mkdir");
    snprintf(t3, sizeof t3, "%s/m.tmp.%ld", sub, (long)dead);
    EXPECT(mkdir(t3, 0755) == 0, "mkdir temp dir");
    char inner[400];
    snprintf(inner, sizeof inner, "%s/model.safetensors", t3);
    const char *files[] = {t1, t2, inner};
    for (int i = 0; i < 3; i++) {
        f = fopen(files[i], "w");
        fclose(f);
    }
    EXPECT(dir_has_entries(dir) && !dir_has_entries(fifo), "dir_has_entries");
    EXPECT(remove_dead_temps(dir, 0) == 1, "depth 0: only the top-level dead temp");
    EXPECT(remove_dead_temps(dir, 1) == 1, "depth 1: the dead temp directory");
    EXPECT(stat(t1, &st) != 0 && stat(t3, &st) != 0 && stat(t2, &st) == 0, "dead removed, live kept");
    unlink(t2), rmdir(sub), unlink(fifo), unlink(link), unlink(reg);
    EXPECT(rmdir(dir) == 0, "everything cleaned up: %s", strerror(errno));
}

/* s2d_mem_available: MemAvailable on Linux (no rlimit set here), at most MemTotal, and it names the bound. */
static void test_mem_available(void) {
    const char *what = NULL;
    size_t avail = s2d_mem_available(&what);
    unsigned long long total_kb = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    EXPECT(f != NULL, "/proc/meminfo: %s", strerror(errno));
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemTotal: %llu kB", &total_kb) == 1) break;
    fclose(f);
    EXPECT(avail > 0 && avail <= (size_t)total_kb * 1024, "available %zu bytes, MemTotal %llu kB", avail, total_kb);
    EXPECT(what && (strstr(what, "MemAvailable") || strstr(what, "ulimit")), "bound named: %s", what ? what : "(null)");
}

int main(void) {
    RUN_TEST(test_philox_known_answers);
    RUN_TEST(test_rng_stream);
    RUN_TEST(test_arena);
    RUN_TEST(test_errors_and_files);
    RUN_TEST(test_json_helpers);
    RUN_TEST(test_dir_build_atomic);
    RUN_TEST(test_special_files);
    RUN_TEST(test_mem_available);
    return TEST_SUMMARY();
}
