/* Curves: CRC-32C known vectors, TFRecord framing, TensorBoard events byte for byte, the metrics.jsonl mirror
 * (tags, steps, partial lines, errors) and the per-step rollout / reward-group statistics. */
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/step_metrics.h"
#include "core/common.h"
#include "io/metrics_tb.h"
#include "io/tb_events.h"
#include "tb_event.pb-c.h"
#include "test.h"

static uint32_t get_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_le64(const unsigned char *p) { return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32; }

static void test_crc32c_vectors(void) {
    /* "123456789" is the CRC catalogue's check value; the 32-byte vectors are RFC 3720 appendix B.4 (iSCSI) */
    EXPECT(crc32c("123456789", 9) == 0xe3069283u, "crc32c(123456789) = %08x", crc32c("123456789", 9));
    EXPECT(crc32c("", 0) == 0, "crc32c of nothing = %08x", crc32c("", 0));
    unsigned char z[32] = {0}, ff[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) ff[i] = 0xff, inc[i] = (unsigned char)i, dec[i] = (unsigned char)(31 - i);
    EXPECT(crc32c(z, 32) == 0x8a9136aau, "zeros: %08x", crc32c(z, 32));
    EXPECT(crc32c(ff, 32) == 0x62a8ab43u, "ones: %08x", crc32c(ff, 32));
    EXPECT(crc32c(inc, 32) == 0x46dd794eu, "incrementing: %08x", crc32c(inc, 32));
    EXPECT(crc32c(dec, 32) == 0x113fdb5cu, "decrementing: %08x", crc32c(dec, 32));
    EXPECT(crc32c_extend(crc32c(inc, 10), inc + 10, 22) == crc32c(inc, 32), "extend over a split");
    /* the TFRecord mask: rotate right 15, add 0xa282ead8 */
    EXPECT(tb_masked_crc(0) == 0xa282ead8u, "mask(0) = %08x", tb_masked_crc(0));
    EXPECT(tb_masked_crc(0xe3069283u) == 0xc78ab0e5u, "mask(check value) = %08x", tb_masked_crc(0xe3069283u));
}

static void test_tfrecord_frame(void) {
    unsigned char out[64];
    size_t n = tfrecord_frame("hello", 5, out);
    EXPECT(n == 21, "frame size %zu", n);
    EXPECT(get_le64(out) == 5, "length field %llu", (unsigned long long)get_le64(out));
    EXPECT(get_le32(out + 8) == tb_masked_crc(crc32c(out, 8)), "length CRC");
    EXPECT(memcmp(out + 12, "hello", 5) == 0, "payload copied");
    EXPECT(get_le32(out + 17) == tb_masked_crc(crc32c("hello", 5)), "data CRC");
}

/* The records of an event file: payload i at pay[i] with length len[i]; CRCs checked. Returns the count. */
static int read_records(const char *path, unsigned char **data, size_t *off, size_t *len, int cap) {
    size_t n;
    s2d_err err;
    if (!read_file(path, (char **)data, &n, &err)) return -1;
    int k = 0;
    for (size_t at = 0; at < n && k < cap; k++) {
        unsigned char *p = *data + at;
        size_t L = (size_t)get_le64(p);
        EXPECT(get_le32(p + 8) == tb_masked_crc(crc32c(p, 8)), "record %d: length CRC", k);
        EXPECT(get_le32(p + 12 + L) == tb_masked_crc(crc32c(p + 12, L)), "record %d: data CRC", k);
        off[k] = at + 12, len[k] = L;
        at += L + 16;
    }
    return k;
}

static void test_event_bytes(void) {
    char dir[] = "/tmp/s2d-tb-XXXXXX";
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    s2d_err err;
    tb_writer *w = tb_open(dir, &err);
    EXPECT(w != NULL, "tb_open: %s", err.msg);
    if (!w) return;
    EXPECT(strncmp(tb_file_name(w), "events.out.tfevents.", 20) == 0, "file name %s", tb_file_name(w));
    const char *tags[2] = {"a/b", "stage/loss"};
    float vals[2] = {2.0f, -0.25f};
    EXPECT(tb_scalars(w, 3, 1.5, 1, tags, vals, &err), "tb_scalars: %s", err.msg);
    EXPECT(tb_scalars(w, 1234567890123LL, 2.0, 2, tags, vals, &err), "tb_scalars: %s", err.msg);
    EXPECT(tb_scalars(w, 9, 2.0, 0, tags, vals, &err), "no scalars: nothing written");
    char path[4096];
    snprintf(path, sizeof path, "%s", tb_path(w));
    EXPECT(tb_close(w, &err), "tb_close: %s", err.msg);
    unsigned char *data = NULL;
    size_t off[8], len[8];
    int k = read_records(path, &data, off, len, 8);
    EXPECT(k == 3, "%d records, want 3 (file_version + 2 summaries)", k);
    if (k == 3) {
        /* Event{wall_time 1.5, step 3, summary{value{tag "a/b", simple_value 2}}} encoded by hand */
        static const unsigned char want[] = {0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x10, 0x03, 0x2a, 0x0c, 0x0a, 0x0a,
                                             0x0a, 0x03, 'a', '/', 'b', 0x15, 0, 0, 0, 0x40};
        EXPECT(len[1] == sizeof want && memcmp(data + off[1], want, sizeof want) == 0, "scalar event bytes (%zu)", len[1]);
        Tensorflow__Event *ev = tensorflow__event__unpack(NULL, len[0], data + off[0]);
        EXPECT(ev && ev->what_case == TENSORFLOW__EVENT__WHAT_FILE_VERSION && strcmp(ev->file_version, "brain.Event:2") == 0,
               "first event: file_version brain.Event:2");
        if (ev) tensorflow__event__free_unpacked(ev, NULL);
        ev = tensorflow__event__unpack(NULL, len[2], data + off[2]);
        EXPECT(ev && ev->step == 1234567890123LL && ev->wall_time == 2.0 && ev->what_case == TENSORFLOW__EVENT__WHAT_SUMMARY &&
                   ev->summary->n_value == 2 && strcmp(ev->summary->value[1]->tag, "stage/loss") == 0 &&
                   ev->summary->value[1]->simple_value == -0.25f,
               "second summary decodes (step, wall time, two values)");
        if (ev) tensorflow__event__free_unpacked(ev, NULL);
    }
    free(data);
    unlink(path);
    rmdir(dir);
}

static void test_record_tags(void) {
    char tags[8][TB_MAX_TAG + 1];
    float v[8];
    int64_t gs = -1;
    s2d_err err;
    const char *line = "{\"stage\": \"teacher_rl\", \"algo\": \"grpo\", \"step\": 2, \"global_step\": 7, \"loss\": 0.5, "
                       "\"reward_mean\": null, \"ok\": true, \"xs\": [1, {\"a\": \"]\"}], \"tokens\": 1.5e3}";
    int n = metrics_tb_record(line, strlen(line), tags, v, 8, &gs, &err);
    EXPECT(n == 2 && gs == 7, "step line: %d scalars at %lld (%s)", n, (long long)gs, n < 0 ? err.msg : "");
    if (n == 2) {
        EXPECT_STREQ(tags[0], "teacher_rl/loss");
        EXPECT_STREQ(tags[1], "teacher_rl/tokens");
        EXPECT(v[0] == 0.5f && v[1] == 1500.0f, "values %g %g", v[0], v[1]);
    }
    const char *ev = "{\"stage\": \"s\", \"step\": 0, \"global_step\": 0, \"event\": \"eval\", \"accuracy\": 0.25}";
    n = metrics_tb_record(ev, strlen(ev), tags, v, 8, &gs, &err);
    EXPECT(n == 1 && gs == 0, "eval line: %d", n);
    if (n == 1) EXPECT_STREQ(tags[0], "s/eval_accuracy");
    /* the problem count: "problems", and "samples" in eval lines of older runs, is one tag */
    const char *ev_new = "{\"stage\": \"s\", \"step\": 0, \"global_step\": 0, \"event\": \"eval\", \"problems\": 64}";
    const char *ev_old = "{\"stage\": \"s\", \"samples\": 32, \"step\": 0, \"global_step\": 0, \"event\": \"eval\"}";
    n = metrics_tb_record(ev_new, strlen(ev_new), tags, v, 8, &gs, &err);
    EXPECT(n == 1 && strcmp(tags[0], "s/eval_problems") == 0 && v[0] == 64, "eval problems: %d %s", n, n > 0 ? tags[0] : "");
    n = metrics_tb_record(ev_old, strlen(ev_old), tags, v, 8, &gs, &err);
    EXPECT(n == 1 && strcmp(tags[0], "s/eval_problems") == 0 && v[0] == 32, "old eval samples: %d %s", n,
           n > 0 ? tags[0] : "");
    const char *st_samples = "{\"stage\": \"s\", \"step\": 1, \"global_step\": 1, \"samples\": 3}";
    n = metrics_tb_record(st_samples, strlen(st_samples), tags, v, 8, &gs, &err);
    EXPECT(n == 1 && strcmp(tags[0], "s/samples") == 0, "\"samples\" outside eval lines is left alone");
    const char *nostep = "{\"stage\": \"s\", \"loss\": 1}";
    EXPECT(metrics_tb_record(nostep, strlen(nostep), tags, v, 8, &gs, &err) == 0, "no global_step: not mirrored");
    const char *nostage = "{\"global_step\": 3, \"loss\": 1}";
    EXPECT(metrics_tb_record(nostage, strlen(nostage), tags, v, 8, &gs, &err) == 0, "no stage: not mirrored");
    const char *bad[] = {"[1]", "{\"a\": 1", "{\"a\" 1}", "{\"a\": 1x}", "{\"a\": 1} x", "{\"a\": tru}"};
    for (size_t i = 0; i < S2D_ARRAY_LEN(bad); i++)
        EXPECT(metrics_tb_record(bad[i], strlen(bad[i]), tags, v, 8, &gs, &err) < 0, "malformed %s refused", bad[i]);
    /* escapes in a stage name: \u00e9 and a surrogate pair come out as UTF-8, \n as its byte */
    const char *esc = "{\"stage\": \"r\\u00e9\\ud83d\\ude00\\n\", \"global_step\": 4, \"loss\": 2}";
    n = metrics_tb_record(esc, strlen(esc), tags, v, 8, &gs, &err);
    EXPECT(n == 1, "escaped stage name: %d (%s)", n, n < 0 ? err.msg : "");
    if (n == 1) EXPECT_STREQ(tags[0], "r\xc3\xa9\xf0\x9f\x98\x80\n/loss");
    const char *lone = "{\"stage\": \"\\ude00\", \"global_step\": 4, \"loss\": 2}";
    EXPECT(metrics_tb_record(lone, strlen(lone), tags, v, 8, &gs, &err) < 0, "a lone low surrogate is refused");
    const char *many = "{\"stage\": \"s\", \"global_step\": 1, \"a\": 1, \"b\": 2, \"c\": 3}";
    EXPECT(metrics_tb_record(many, strlen(many), tags, v, 2, &gs, &err) < 0 && strstr(err.msg, "more than 2"),
           "over capacity: %s", err.msg);
}

static void test_follow(void) {
    char dir[] = "/tmp/s2d-tbf-XXXXXX";
    EXPECT(mkdtemp(dir) != NULL, "mkdtemp");
    char jsonl[4096], tbdir[4096], old[4096];
    path_join(jsonl, sizeof jsonl, dir, "metrics.jsonl");
    path_join(tbdir, sizeof tbdir, dir, "tb");
    path_join(old, sizeof old, tbdir, "events.out.tfevents.1.old");
    FILE *f = fopen(jsonl, "w");
    EXPECT(f != NULL, "create %s", jsonl);
    if (!f) return;
    s2d_err err;
    /* an earlier session's event file is replaced by the new one */
    EXPECT(mkdir(tbdir, 0777) == 0, "mkdir");
    FILE *o = fopen(old, "w");
    if (o) fclose(o);
    metrics_tb *m = metrics_tb_open(tbdir, jsonl, &err);
    EXPECT(m != NULL, "metrics_tb_open: %s", err.msg);
    if (!m) return;
    EXPECT(access(old, F_OK) != 0, "the earlier session's event file is removed");
    fputs("{\"stage\": \"a\", \"step\": 1, \"global_step\": 1, \"loss\": 1}\n{\"stage\": \"a\", \"st", f);
    fflush(f);
    EXPECT(metrics_tb_sync(m, &err), "sync 1: %s", err.msg);
    fputs("ep\": 2, \"global_step\": 2, \"loss\": 2}\n\n{\"stage\": \"b\", \"global_step\": 3, \"loss\": 3}\n", f);
    fflush(f);
    EXPECT(metrics_tb_sync(m, &err), "sync 2: %s", err.msg);
    char path[4096];
    snprintf(path, sizeof path, "%s", metrics_tb_path(m));
    fputs("{\"stage\": \"b\", \"global_step\": 4, \"loss\": oops}\n", f);
    fflush(f);
    EXPECT(!metrics_tb_sync(m, &err) && strstr(err.msg, "metrics.jsonl:5") && strstr(err.msg, "not a number"),
           "a bad line names file:line: %s", err.msg);
    metrics_tb_close(m, &err);
    fclose(f);
    unsigned char *data = NULL;
    size_t off[8], len[8];
    int k = read_records(path, &data, off, len, 8);
    EXPECT(k == 4, "%d records, want file_version + 3 (a line split over two syncs is one record)", k);
    for (int i = 1; i < k; i++) {
        Tensorflow__Event *ev = tensorflow__event__unpack(NULL, len[i], data + off[i]);
        EXPECT(ev && ev->step == i && ev->summary && ev->summary->n_value == 1 &&
                   ev->summary->value[0]->simple_value == (float)i &&
                   strcmp(ev->summary->value[0]->tag, i < 3 ? "a/loss" : "b/loss") == 0,
               "record %d: step, tag, value", i);
        if (ev) tensorflow__event__free_unpacked(ev, NULL);
    }
    free(data);
    int removed;
    EXPECT(tb_remove_event_files(tbdir, NULL, &removed, &err) && removed == 1, "remove: %d", removed);
    unlink(jsonl), rmdir(tbdir), rmdir(dir);
}

static void test_step_stats(void) {
    /* 3 sequences of 2, 0 and 4 tokens; the last hit the length limit */
    int start[4] = {0, 2, 2, 6};
    gen_finish fin[3] = {GEN_FINISH_STOP, GEN_FINISH_STOP, GEN_FINISH_LENGTH};
    float lp[6] = {-1, -2, -0.5f, -0.5f, -0.5f, -0.5f};
    rollout_stats ro;
    rollout_stats_of(3, start, fin, lp, &ro);
    EXPECT_CLOSE(ro.response_length_mean, 2.0, 1e-12, 0, "response length mean");
    EXPECT(ro.response_length_max == 4, "response length max %g", ro.response_length_max);
    EXPECT_CLOSE(ro.truncation_rate, 1.0 / 3, 1e-12, 0, "truncation rate");
    EXPECT_CLOSE(ro.entropy, 5.0 / 6, 1e-12, 0, "entropy estimate = mean -log p");
    rollout_stats_of(0, start, fin, lp, &ro);
    EXPECT(isnan(ro.response_length_mean) && isnan(ro.entropy), "no sequences: NaN");
    /* 2 groups of 2: rewards {1,0} and {1,1} (zero variance) */
    float r[4] = {1, 0, 1, 1}, adv[4] = {1, -1, 0, 0};
    bool zv[2] = {false, true};
    group_stats gs;
    group_stats_of(2, 2, r, adv, zv, &gs);
    EXPECT_CLOSE(gs.reward_std, sqrt(3.0) / 4, 1e-12, 0, "reward std (population)");
    EXPECT_CLOSE(gs.advantage_std, sqrt(0.5), 1e-12, 0, "advantage std");
    EXPECT_CLOSE(gs.zero_variance_fraction, 0.5, 1e-12, 0, "zero-variance fraction");
}

int main(void) {
    RUN_TEST(test_crc32c_vectors);
    RUN_TEST(test_tfrecord_frame);
    RUN_TEST(test_event_bytes);
    RUN_TEST(test_record_tags);
    RUN_TEST(test_follow);
    RUN_TEST(test_step_stats);
    return TEST_SUMMARY();
}
