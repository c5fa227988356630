/* Core: Philox known answers, counter independence, arena, error formatting, atomic files. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/common.h"
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

int main(void) {
    RUN_TEST(test_philox_known_answers);
    RUN_TEST(test_rng_stream);
    RUN_TEST(test_arena);
    RUN_TEST(test_errors_and_files);
    return TEST_SUMMARY();
}
