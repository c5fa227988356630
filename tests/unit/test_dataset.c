/* Datasets: loaders against the files' own answers (MATH-500 `answer` column, GSM8K answers extracted by
 * Python into tests/fixtures/data/gsm8k_test_answers.txt), error messages, dedup, the shuffling cursor
 * (uniformity of Fisher-Yates, save/restore), and order-independent splits. */
#include <stdlib.h>

#include "io/dataset.h"
#include "test.h"

#define FIX "tests/fixtures/data/"

static bool contains(const char *s, const char *sub) { return s && sub && strstr(s, sub) != NULL; }
#define EXPECT_HAS(msg, sub) EXPECT(contains((msg), (sub)), "message \"%s\" lacks \"%s\"", (msg), (sub))

static void test_subject_level(void) {
    s2d_err err;
    dataset ds;
    ds_load_opts o = {.format = DS_MATH};
    const char *path = "/tmp/s2d-test-dataset-tags.jsonl";
    FILE *f = fopen(path, "w");
    EXPECT(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs("{\"problem\": \"p1\", \"answer\": \"1\", \"level\": \"Level 3\"}\n"
          "{\"problem\": \"p2\", \"answer\": \"2\", \"subject\": null}\n", f);
    fclose(f);
    EXPECT(dataset_load(&ds, path, &o, &err), "%s", err.msg);
    if (ds.n == 2) {
        EXPECT_STREQ(ds.rec[0].subject, ""); EXPECT_STREQ(ds.rec[0].level, "Level 3");
        EXPECT_STREQ(ds.rec[1].subject, ""); EXPECT_STREQ(ds.rec[1].level, "");
    }
    dataset_free(&ds);
    f = fopen(path, "w");
    if (!f) return;
    fputs("{\"problem\": \"p1\", \"answer\": \"1\", \"subject\": [1]}\n", f);
    fclose(f);
    EXPECT(!dataset_load(&ds, path, &o, &err), "a list as subject accepted");
    EXPECT_HAS(err.msg, ":1: field 'subject' is not a string or number");
    remove(path);
}

static void test_math(void) {
    s2d_err err;
    dataset with, without;
    ds_load_opts o = {.format = DS_MATH};
    EXPECT(dataset_load(&with, FIX "math500_sample.jsonl", &o, &err), "%s", err.msg);
    EXPECT(dataset_load(&without, FIX "math500_noanswer.jsonl", &o, &err), "%s", err.msg);
    EXPECT(with.n == 5 && without.n == 5, "5 records each (%d, %d)", with.n, without.n);
    if (with.n != 5 || without.n != 5) return;
    /* answer column vs the last \boxed{} of the solution: the dataset's own answers are the reference */
    for (int i = 0; i < 5; i++) {
        EXPECT_STREQ(without.rec[i].answer, with.rec[i].answer);
        EXPECT_STREQ(without.rec[i].id, with.rec[i].id);
        EXPECT_STREQ(without.rec[i].prompt, with.rec[i].prompt);
    }
    EXPECT_STREQ(with.rec[0].id, "test/precalculus/807.json");
    EXPECT_STREQ(with.rec[0].answer, "\\left( 3, \\frac{\\pi}{2} \\right)");
    EXPECT_STREQ(with.rec[2].answer, "\\{1\\pm\\sqrt{5},-2\\}"); /* escaped braces inside \boxed{} */
    EXPECT_STREQ(with.rec[3].answer, "2");                        /* two \boxed{}: the last one */
    EXPECT(strncmp(with.rec[0].prompt, "Convert the point $(0,3)$", 25) == 0, "prompt");
    /* MATH-500's subject (string) and level (a JSON number) are kept for eval's breakdowns */
    EXPECT_STREQ(with.rec[0].subject, "Precalculus");
    EXPECT_STREQ(with.rec[0].level, "2");
    EXPECT_STREQ(with.rec[1].subject, "Intermediate Algebra");
    EXPECT_STREQ(with.rec[1].level, "5");
    EXPECT_STREQ(with.rec[4].subject, "Algebra");
    dataset_free(&with);
    dataset_free(&without);

    char *box = NULL;
    EXPECT(ds_last_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c", &box), "boxed");
    EXPECT_STREQ(box, "\\frac{1}{2}");
    free(box);
    EXPECT(ds_last_boxed("\\fbox{x{y}}", &box), "fbox");
    EXPECT_STREQ(box, "x{y}");
    free(box);
    EXPECT(!ds_last_boxed("\\boxed{unbalanced", &box), "unbalanced");
    EXPECT(!ds_last_boxed("no box here", &box), "none");
}

static void test_gsm8k(void) {
    s2d_err err;
    dataset ds;
    ds_load_opts o = {.format = DS_GSM8K};
    EXPECT(dataset_load(&ds, "data/gsm8k/test.jsonl", &o, &err), "%s", err.msg);
    EXPECT(ds.n == 1319, "GSM8K test has 1319 records, got %d", ds.n);
    FILE *fp = fopen(FIX "gsm8k_test_answers.txt", "r");
    EXPECT(fp != NULL, "reference answers");
    if (!fp) return;
    char line[256];
    int i = 0, mismatches = 0;
    while (fgets(line, sizeof line, fp) && i < ds.n) {
        line[strcspn(line, "\n")] = '\0';
        if (strcmp(line, ds.rec[i].answer) != 0 && mismatches++ < 5)
            fprintf(stderr, "record %d: got '%s', want '%s'\n", i, ds.rec[i].answer, line);
        i++;
    }
    fclose(fp);
    EXPECT(i == 1319 && mismatches == 0, "%d of %d answers differ from Python's", mismatches, i);
    EXPECT_STREQ(ds.rec[0].answer, "18");
    EXPECT_STREQ(ds.rec[0].id, "1");
    EXPECT(strncmp(ds.rec[0].prompt, "Janet\xe2\x80\x99s ducks", 15) == 0, "UTF-8 prompt kept");
    EXPECT(dataset_dedup(&ds) == 0, "GSM8K test has no duplicate questions");
    dataset_free(&ds);
    /* auto detection */
    o.format = DS_AUTO;
    EXPECT(dataset_load(&ds, "data/gsm8k/train.jsonl", &o, &err) && ds.format == DS_GSM8K && ds.n == 7473,
           "train: auto → gsm8k, 7473 records (%d)", ds.n);
    dataset_free(&ds);
}

static void test_aime_and_generic(void) {
    s2d_err err;
    dataset ds;
    ds_load_opts o = {.format = DS_AUTO};
    EXPECT(dataset_load(&ds, FIX "aime_sample.jsonl", &o, &err) && ds.format == DS_AIME, "%s", err.msg);
    static const char *const want[] = {"204", "113", "371", "70", "588"};
    EXPECT(ds.n == 5, "5 AIME records");
    for (int i = 0; i < ds.n && i < 5; i++) EXPECT_STREQ(ds.rec[i].answer, want[i]);
    EXPECT(contains(ds.rec[0].prompt, "Every morning Aya"), "prompt");
    dataset_free(&ds);
    o.format = DS_AIME;
    EXPECT(dataset_load(&ds, FIX "aime_edge.jsonl", &o, &err), "%s", err.msg);
    EXPECT(ds.n == 3, "3 edge records");
    if (ds.n == 3) {
        EXPECT_STREQ(ds.rec[0].answer, "001"); /* zero padding kept as written */
        EXPECT_STREQ(ds.rec[0].id, "edge-1");
        EXPECT_STREQ(ds.rec[1].answer, "5");
        EXPECT_STREQ(ds.rec[1].id, "2");
        EXPECT(contains(ds.rec[1].prompt, "\xe2\x80\x9cunicode\xe2\x80\x9d \xe2\x88\x91 and braces {x}"), "unicode");
        EXPECT_STREQ(ds.rec[2].answer, "-12");
    }
    dataset_free(&ds);
    ds_load_opts g = {.format = DS_GENERIC, .prompt_field = "q", .answer_field = "gold", .id_field = "key"};
    EXPECT(dataset_load(&ds, FIX "generic.jsonl", &g, &err), "%s", err.msg);
    EXPECT(ds.n == 2, "2 generic records");
    if (ds.n == 2) {
        EXPECT_STREQ(ds.rec[0].answer, "5");
        EXPECT_STREQ(ds.rec[0].id, "a");
        EXPECT_STREQ(ds.rec[1].answer, "b");
        EXPECT_STREQ(ds.rec[1].id, "7");
    }
    dataset_free(&ds);
    ds_format f;
    EXPECT(ds_format_parse("gsm8k", &f, &err) && f == DS_GSM8K, "parse gsm8k");
    EXPECT(ds_format_parse("math", &f, &err) && f == DS_MATH, "parse math");
    EXPECT(ds_format_parse("aime", &f, &err) && f == DS_AIME, "parse aime");
    EXPECT(ds_format_parse("generic", &f, &err) && f == DS_GENERIC, "parse generic");
    EXPECT(!ds_format_parse("mmlu", &f, &err), "unknown format");
    EXPECT_HAS(err.msg, "unknown dataset format 'mmlu'");
}

static void test_errors(void) {
    s2d_err err;
    dataset ds;
    ds_load_opts o = {.format = DS_GSM8K};
    EXPECT(!dataset_load(&ds, FIX "bad_json.jsonl", &o, &err), "bad JSON accepted");
    EXPECT_HAS(err.msg, FIX "bad_json.jsonl:3: invalid JSON");
    EXPECT(!dataset_load(&ds, FIX "gsm8k_missing.jsonl", &o, &err), "missing field accepted");
    EXPECT_STREQ(err.msg, FIX "gsm8k_missing.jsonl:2: record has no 'answer' field (format gsm8k)");
    o.format = DS_AIME;
    EXPECT(!dataset_load(&ds, FIX "aime_bad.jsonl", &o, &err), "12.5 accepted as AIME answer");
    EXPECT_STREQ(err.msg, FIX "aime_bad.jsonl:1: 'answer' is not an integer: 12.5 (format aime)");
    o.format = DS_MATH;
    EXPECT(!dataset_load(&ds, FIX "gsm8k_missing.jsonl", &o, &err), "gsm8k as math");
    EXPECT_STREQ(err.msg, FIX "gsm8k_missing.jsonl:1: record has no 'problem' field (format math)");
    ds_load_opts g = {.format = DS_GENERIC, .prompt_field = "q", .answer_field = "answer"};
    EXPECT(!dataset_load(&ds, FIX "generic.jsonl", &g, &err), "generic without the field");
    EXPECT_STREQ(err.msg, FIX "generic.jsonl:1: record has no 'answer' field (format generic)");
    EXPECT(!dataset_load(&ds, FIX "nope.jsonl", &o, &err), "missing file");
    EXPECT_HAS(err.msg, "nope.jsonl: cannot open");
}

static void test_dedup(void) {
    s2d_err err;
    dataset ds;
    ds_load_opts o = {.format = DS_GSM8K};
    EXPECT(dataset_load(&ds, FIX "dups.jsonl", &o, &err), "%s", err.msg);
    EXPECT(ds.n == 5, "5 loaded");
    if (ds.n == 5) EXPECT_STREQ(ds.rec[2].answer, "1003"); /* commas removed */
    int removed = dataset_dedup(&ds);
    EXPECT(removed == 2 && ds.n == 3, "removed %d (want 2), kept %d", removed, ds.n);
    if (ds.n == 3) {
        EXPECT_STREQ(ds.rec[0].id, "1"); /* the first copy is kept */
        EXPECT_STREQ(ds.rec[1].id, "3");
        EXPECT_STREQ(ds.rec[2].id, "4"); /* "1 + 1" differs from "1+1": exact match only */
    }
    dataset_free(&ds);
}

static void test_sampler(void) {
    /* Fisher-Yates over n = 3 is uniform over the 6 orders: 6000 epochs, each order ≈ 1000 (σ ≈ 29). */
    int counts[6] = {0};
    int32_t p[3];
    for (int e = 0; e < 6000; e++) {
        ds_permutation(99, e, 3, p);
        int code = p[0] * 2 + (p[1] > p[2]); /* p[0] picks the pair, the order of the rest the bit */
        counts[code]++;
    }
    for (int i = 0; i < 6; i++) EXPECT(counts[i] > 880 && counts[i] < 1120, "order %d drawn %d times", i, counts[i]);

    enum { N = 10 };
    ds_sampler a;
    ds_sampler_init(&a, N, 7);
    int32_t first[N], second[N], tmp[4];
    ds_sampler_next(&a, N, first);
    int seen[N] = {0};
    for (int i = 0; i < N; i++) seen[first[i]]++;
    int perm_ok = 1;
    for (int i = 0; i < N; i++) perm_ok &= seen[i] == 1;
    EXPECT(perm_ok, "an epoch visits every record once");
    EXPECT(a.cur.epoch == 0 && a.cur.position == N, "cursor at end of epoch 0");
    ds_sampler_next(&a, 3, tmp); /* crosses into epoch 1 */
    EXPECT(a.cur.epoch == 1 && a.cur.position == 3, "epoch 1, position 3");
    ds_cursor saved = a.cur;
    ds_sampler_next(&a, 4, tmp);
    int32_t after[4];
    memcpy(after, tmp, sizeof after);
    ds_sampler b;
    s2d_err err;
    EXPECT(ds_sampler_restore(&b, N, saved, &err), "%s", err.msg);
    ds_sampler_next(&b, 4, tmp);
    EXPECT(memcmp(after, tmp, sizeof after) == 0, "restored cursor continues the same stream");
    ds_permutation(7, 1, N, second);
    EXPECT(memcmp(first, second, sizeof first) != 0, "epoch 1 is reshuffled");
    EXPECT(memcmp(second + 3, after, sizeof after) == 0, "the stream is the epoch permutation");
    ds_cursor bad = {.seed = 7, .epoch = 0, .position = N + 1};
    ds_sampler c;
    EXPECT(!ds_sampler_restore(&c, N, bad, &err), "bad cursor accepted");
    ds_sampler_free(&a);
    ds_sampler_free(&b);
}

static void test_split(void) {
    s2d_err err;
    dataset ds, rev;
    ds_load_opts o = {.format = DS_GSM8K};
    EXPECT(dataset_load(&ds, "data/gsm8k/test.jsonl", &o, &err), "%s", err.msg);
    int n = ds.n;
    int *part = xmalloc((size_t)n * sizeof *part), *part_rev = xmalloc((size_t)n * sizeof *part);
    int64_t counts[3];
    double frac[2] = {0.7, 0.3};
    EXPECT(ds_split_fraction(&ds, 5, 2, frac, part, counts, &err), "%s", err.msg);
    /* binomial(1319, 0.7): mean 923.3, sd 16.6 */
    EXPECT(counts[0] + counts[1] == n && counts[2] == 0, "every record placed");
    EXPECT(llabs(counts[0] - 923) < 67, "part 0 has %lld records (expect ≈923)", (long long)counts[0]);
    /* the same records in reverse order get the same parts */
    rev = ds;
    rev.rec = xmalloc((size_t)n * sizeof *rev.rec);
    for (int i = 0; i < n; i++) rev.rec[i] = ds.rec[n - 1 - i];
    EXPECT(ds_split_fraction(&rev, 5, 2, frac, part_rev, counts, &err), "%s", err.msg);
    int same = 1;
    for (int i = 0; i < n; i++) same &= part[i] == part_rev[n - 1 - i];
    EXPECT(same, "fraction split depends on file order");
    /* a different seed gives a different split */
    EXPECT(ds_split_fraction(&ds, 6, 2, frac, part_rev, counts, &err), "%s", err.msg);
    int diff = 0;
    for (int i = 0; i < n; i++) diff += part[i] != part_rev[i];
    EXPECT(diff > n / 5, "seed 6 vs 5 differ on only %d records", diff);

    int64_t want[2] = {1000, 200};
    EXPECT(ds_split_count(&ds, 5, 2, want, part, counts, &err), "%s", err.msg);
    EXPECT(counts[0] == 1000 && counts[1] == 200 && counts[2] == n - 1200, "count split sizes");
    EXPECT(ds_split_count(&rev, 5, 2, want, part_rev, counts, &err), "%s", err.msg);
    same = 1;
    for (int i = 0; i < n; i++) same &= part[i] == part_rev[n - 1 - i];
    EXPECT(same, "count split depends on file order");
    dataset sub0, sub1;
    dataset_subset(&ds, part, 0, &sub0);
    dataset_subset(&ds, part, 1, &sub1);
    EXPECT(sub0.n == 1000 && sub1.n == 200, "subset sizes");
    int overlap = 0;
    for (int i = 0; i < sub1.n; i++)
        for (int j = 0; j < sub0.n; j++) overlap += strcmp(sub1.rec[i].prompt, sub0.rec[j].prompt) == 0;
    EXPECT(overlap == 0, "parts overlap on %d prompts", overlap);
    int64_t too_many[2] = {1300, 100};
    EXPECT(!ds_split_count(&ds, 5, 2, too_many, part, counts, &err), "over-asking accepted");
    EXPECT_HAS(err.msg, "ask for 1400 records, but data/gsm8k/test.jsonl has only 1319");
    double bad[2] = {0.8, 0.3};
    EXPECT(!ds_split_fraction(&ds, 5, 2, bad, part, counts, &err), "fractions > 1 accepted");
    dataset_free(&sub0);
    dataset_free(&sub1);
    free(rev.rec);
    free(part);
    free(part_rev);
    dataset_free(&ds);
}

int main(void) {
    RUN_TEST(test_subject_level);
    RUN_TEST(test_math);
    RUN_TEST(test_gsm8k);
    RUN_TEST(test_aime_and_generic);
    RUN_TEST(test_errors);
    RUN_TEST(test_dedup);
    RUN_TEST(test_sampler);
    RUN_TEST(test_split);
    return TEST_SUMMARY();
}
