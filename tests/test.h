/* test.h: a minimal assertion harness. Each test binary ends with TEST_SUMMARY(), which prints
 * "RESULT <binary> <passed> <failed>" for tests/run.sh and returns non-zero on any failure. */
#pragma once
#include <math.h>
#include <stdio.h>
#include <string.h>

static int test_passed_count, test_failed_count;

#define EXPECT(cond, ...)                                                                                    \
    do {                                                                                                     \
        if (cond) {                                                                                          \
            test_passed_count++;                                                                             \
        } else {                                                                                             \
            test_failed_count++;                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                             \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
        }                                                                                                    \
    } while (0)

/* |a - b| <= atol + rtol * |b|; NaN never passes. */
#define EXPECT_CLOSE(a, b, atol, rtol, what)                                                                 \
    do {                                                                                                     \
        double ea_ = (double)(a), eb_ = (double)(b);                                                         \
        EXPECT(fabs(ea_ - eb_) <= (atol) + (rtol) * fabs(eb_), "%s: got %.9g, want %.9g", (what), ea_, eb_); \
    } while (0)

#define EXPECT_STREQ(a, b)                                                                                   \
    do {                                                                                                     \
        const char *sa_ = (a), *sb_ = (b);                                                                   \
        EXPECT(sa_ && sb_ && strcmp(sa_, sb_) == 0, "got \"%s\", want \"%s\"", sa_ ? sa_ : "(null)",         \
               sb_ ? sb_ : "(null)");                                                                        \
    } while (0)

#define RUN_TEST(fn)                                                                                         \
    do {                                                                                                     \
        int failed_before_ = test_failed_count;                                                              \
        fn();                                                                                                \
        fprintf(stderr, "  %-40s %s\n", #fn, test_failed_count == failed_before_ ? "ok" : "FAILED");         \
    } while (0)

#define TEST_SUMMARY()                                                                                       \
    (printf("RESULT %s %d %d\n", __FILE__, test_passed_count, test_failed_count), test_failed_count ? 1 : 0)
