/* test_verify.c: the math answer verifier.
 *  - every hand-labelled case of tests/fixtures/verify/cases.jsonl (labels are mathematical truth);
 *  - extraction, normalisation (the MATH strip_string steps) and the evaluator against closed forms;
 *  - robustness: every fuzz corpus file and pathological inputs, each call under 10 ms. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/common.h"
#include "test.h"
#include "text/verify.h"

static const char *root(void) {
    const char *r = getenv("S2D_ROOT");
    return r ? r : ".";
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static verify_result res; /* large: keep it off the stack */

static void test_labelled_cases(void) {
    char path[4096];
    path_join(path, sizeof path, root(), "tests/fixtures/verify/cases.jsonl");
    char *data;
    size_t len;
    s2d_err err;
    EXPECT(read_file(path, &data, &len, &err), "%s", err.msg);
    if (!data) return;
    int total = 0, n_true = 0, mismatches = 0;
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        EXPECT(j != NULL, "cases.jsonl line %d: invalid JSON", total + 1);
        if (!j) continue;
        const cJSON *resp = cJSON_GetObjectItem(j, "response"), *ans = cJSON_GetObjectItem(j, "answer");
        const cJSON *label = cJSON_GetObjectItem(j, "correct"), *mode = cJSON_GetObjectItem(j, "mode");
        const cJSON *note = cJSON_GetObjectItem(j, "note");
        EXPECT(cJSON_IsString(resp) && cJSON_IsString(ans) && cJSON_IsBool(label), "case %d: bad fields", total + 1);
        verify_mode m = VERIFY_MODE_MATH;
        if (cJSON_IsString(mode)) EXPECT(verify_mode_parse(mode->valuestring, &m), "case %d: bad mode", total + 1);
        verify_answer(m, resp->valuestring, ans->valuestring, &res);
        bool want = cJSON_IsTrue(label);
        if (res.correct != want) mismatches++;
        EXPECT(res.correct == want, "case %d (%s): response ...%s | answer %s | extracted \"%s\": got %d, want %d",
               total + 1, cJSON_IsString(note) ? note->valuestring : "",
               resp->valuestring + (strlen(resp->valuestring) > 60 ? strlen(resp->valuestring) - 60 : 0),
               ans->valuestring, res.has_extracted ? res.extracted : "(null)", res.correct, want);
        total++;
        n_true += want;
        cJSON_Delete(j);
    }
    free(data);
    EXPECT(total >= 150, "only %d labelled cases", total);
    EXPECT(n_true >= 30 && total - n_true >= 30, "cases must hold both labels: %d true of %d", n_true, total);
    fprintf(stderr, "    %d labelled cases (%d true, %d false), %d mismatches\n", total, n_true, total - n_true,
            mismatches);
}

static void expect_extract(const char *text, const char *want) {
    const char *s;
    size_t n;
    bool ok = verify_extract_boxed(text, strlen(text), &s, &n);
    if (!want) {
        EXPECT(!ok, "extract(%s): expected none, got \"%.*s\"", text, ok ? (int)n : 0, ok ? s : "");
        return;
    }
    EXPECT(ok && n == strlen(want) && memcmp(s, want, n) == 0, "extract(%s): got \"%.*s\", want \"%s\"", text,
           ok ? (int)n : 6, ok ? s : "(none)", want);
}

static void test_extraction(void) {
    expect_extract("so $\\boxed{5}$.", "5");
    expect_extract("\\boxed{3} then \\boxed{4}", "4");
    expect_extract("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}");
    expect_extract("\\boxed{\\{1,2\\}}", "\\{1,2\\}");
    expect_extract("\\fbox{7}", "7");
    expect_extract("\\boxed{1} and \\fbox{2}", "2");
    expect_extract("$\\boxed 7$ done", "7");
    expect_extract("answer \\boxed 42", "42");
    expect_extract("\\boxed {8}", "8");
    expect_extract("\\boxed{5", NULL);          /* unbalanced */
    expect_extract("\\boxed{1} \\boxed{2", NULL); /* the last box is unbalanced */
    expect_extract("no box here", NULL);
    expect_extract("\\boxed", NULL);
    expect_extract("\\boxed{}", "");
}

static void expect_norm(const char *in, const char *want) {
    char out[8192];
    bool ok = verify_normalize(in, out, sizeof out);
    EXPECT(ok && strcmp(out, want) == 0, "normalize(%s): got \"%s\", want \"%s\"", in, ok ? out : "(failed)", want);
}

static void test_normalization(void) {
    /* the MATH strip_string steps */
    expect_norm("1\n2", "12");
    expect_norm("10,\\!080", "10080");
    expect_norm("\\tfrac{1}{3}", "\\frac{1}{3}");
    expect_norm("\\dfrac{1}{3}", "\\frac{1}{3}");
    expect_norm("\\left( 1, 2 \\right)", "(1,2)");
    expect_norm("90^{\\circ}", "90");
    expect_norm("90^\\circ", "90");
    expect_norm("\\$5", "5");
    expect_norm("5.4 \\text{ cents}", "5.4");
    expect_norm("10\\%", "10");
    expect_norm("10%", "10");
    expect_norm("x + .5", "x+0.5");
    expect_norm(".5", "\\frac{1}{2}");
    expect_norm("x = 5", "5");
    expect_norm("k=5", "5");
    expect_norm("y = 2x + 1", "2x+1");
    expect_norm("5x + 2y = 3", "5x+2y=3"); /* long left-hand side stays */
    expect_norm("\\sqrt3", "\\sqrt{3}");
    expect_norm("2\\sqrt 2", "2\\sqrt{2}");
    expect_norm("\\frac12", "\\frac{1}{2}");
    expect_norm("\\frac1{2}", "\\frac{1}{2}");
    expect_norm("\\frac{1}2", "\\frac{1}{2}");
    expect_norm("\\frac{270}7", "\\frac{270}{7}");
    expect_norm("0.5", "\\frac{1}{2}");
    expect_norm("3/4", "\\frac{3}{4}");
    expect_norm("-3/4", "-\\frac{3}{4}");
    /* additions */
    expect_norm("\\text{(C)}", "C");
    expect_norm("\\textbf{Evelyn}", "Evelyn");
    expect_norm("864 \\mbox{ inches}^2", "864");
    expect_norm("1,000", "1000");
    expect_norm("11,111,111,100", "11111111100");
    expect_norm("1,234.5", "1234.5");
    expect_norm("(1,234)", "(1,234)"); /* a tuple keeps its comma */
    expect_norm("1,2", "1,2");
    expect_norm("1,2345", "1,2345");
    expect_norm("025", "25");
    expect_norm("-007", "-7");
    expect_norm("5.0", "5");
    expect_norm("5.00", "5");
    expect_norm("0.50", "\\frac{1}{2}");
    expect_norm("-0", "0");
    expect_norm("\\displaystyle 3", "3");
    expect_norm("1\\,000", "1000");
    expect_norm("a\\;b\\:c", "abc");
    expect_norm("30\\degree", "30");
    expect_norm("5.", "5");
    expect_norm("x \\in [-2,7]", "[-2,7]");
    expect_norm("4210_{5}", "4210_5");
    expect_norm("\\\\frac{1}{2}", "\\frac{1}{2}"); /* doubled escape */
    expect_norm("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}");
    char big[VERIFY_MAX_ANSWER + 2];
    memset(big, '1', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char out[64];
    EXPECT(!verify_normalize(big, out, sizeof out), "over-long answers are refused");
}

static void expect_eval(const char *expr, double want) {
    double v = NAN;
    bool ok = verify_eval(expr, &v);
    EXPECT(ok, "eval(%s) failed", expr);
    if (ok) EXPECT_CLOSE(v, want, 1e-12, 1e-12, expr);
}

static void expect_no_eval(const char *expr) {
    double v;
    EXPECT(!verify_eval(expr, &v), "eval(%s) should not be understood, got %g", expr, v);
}

static void test_evaluator(void) {
    expect_eval("1+2*3", 7);
    expect_eval("(1+2)*3", 9);
    expect_eval("2^{10}", 1024);
    expect_eval("2^10", 1024);
    expect_eval("-2^2", -4);
    expect_eval("2^-1", 0.5);
    expect_eval("2^3^2", 512); /* right-associative */
    expect_eval("\\frac{1}{2}+\\frac{1}{3}", 5.0 / 6.0);
    expect_eval("\\frac12", 0.5);
    expect_eval("\\dfrac{3}{4}", 0.75);
    expect_eval("2\\pi", 2 * M_PI);
    expect_eval("3\\sqrt{2}", 3 * sqrt(2));
    expect_eval("\\sqrt[3]{27}", 3);
    expect_eval("\\sqrt[3]{-8}", -2);
    expect_eval("\\frac{3\\sqrt{3}}{4}", 3 * sqrt(3) / 4);
    expect_eval("5!", 120);
    expect_eval("\\frac{1}{10!}", 1.0 / 3628800.0);
    expect_eval("1.5\\times10^{3}", 1500);
    expect_eval("1.5e3", 1500);
    expect_eval("6.72e-5", 6.72e-5);
    expect_eval("2\\cdot 3", 6);
    expect_eval("12\\div 4", 3);
    expect_eval("(1+2)(3+4)", 21);
    expect_eval("\\sin{\\frac{\\pi}{6}}", 0.5);
    expect_eval("\\cos(0)", 1);
    expect_eval("\\ln{1}", 0);
    expect_eval("137\\frac{1}{2}", 137.5); /* mixed number */
    expect_eval("-1\\frac{4}{5}", -1.8);
    expect_eval("{2}", 2);
    expect_eval(".5", 0.5);
    expect_no_eval("\\pm 2");
    expect_no_eval("2004!");  /* overflows: never equal by accident */
    expect_no_eval("\\infty");
    expect_no_eval("x");      /* variables only inside verify_equivalent */
    expect_no_eval("1/0");
    expect_no_eval("\\sqrt{-1}");
    expect_no_eval("east");
    expect_no_eval("(1");
    expect_no_eval("1)");
    expect_no_eval("52_8");
    expect_no_eval("");
    expect_no_eval("1.5!");
}

static void test_equivalence_rules(void) {
    EXPECT(verify_equivalent("\\frac{1}{2}", "0.5"), "fraction vs decimal");
    EXPECT(verify_equivalent("x^2+2x+1", "(x+1)^2"), "polynomial identity");
    EXPECT(!verify_equivalent("x^2+2x+1", "(x+1)^3"), "different polynomials");
    EXPECT(!verify_equivalent("x^2", "y^2"), "different variables");
    EXPECT(verify_equivalent("\\ln x", "\\ln{x}"), "a command's argument after a space");
    EXPECT(!verify_equivalent("\\sqrt{x^2}", "x"), "|x| is not x (sign-mixed points)");
    EXPECT(!verify_equivalent("\\sqrt{x}", "x"), "different functions");
    EXPECT(!verify_equivalent("1000000", "1000001"), "integers are compared exactly");
    EXPECT(verify_equivalent("1.0000001", "1.00000015"), "decimals within 1e-6 relative");
    EXPECT(!verify_equivalent("1.0001", "1"), "decimals outside the tolerance");
    EXPECT(!verify_equivalent("(1,2)", "[1,2]"), "brackets must match");
    EXPECT(verify_equivalent("\\{3,1,2\\}", "\\{1,2,3\\}"), "sets are unordered");
    EXPECT(!verify_equivalent("\\{1,2\\}", "\\{1,2,3\\}"), "set sizes differ");
    EXPECT(!verify_equivalent("\\{1,1\\}", "\\{1,2\\}"), "multiset matching uses each element once");
    EXPECT(!verify_equivalent("", "0"), "empty answer");
    EXPECT(!verify_equivalent("\\frac{1}{2004!}", "\\frac{1}{2006!}"), "overflowing factorials");
    EXPECT(!verify_equivalent("\\unknown{1}", "\\unknown{2}"), "unknown syntax is not equal by default");
    EXPECT(verify_equivalent("\\unknown{1}", "\\unknown{1}"), "unknown syntax, identical strings");
}

static void test_gsm8k(void) {
    char out[512];
    EXPECT(verify_gsm8k_extract("a 1 b 2\n#### 3", out, sizeof out) && strcmp(out, "3") == 0, "#### number");
    EXPECT(verify_gsm8k_extract("a 1 b #### $1,000.", out, sizeof out) && strcmp(out, "1000") == 0, "#### $1,000");
    EXPECT(verify_gsm8k_extract("costs $1,234.50 total", out, sizeof out) && strcmp(out, "1234.50") == 0,
           "last number with commas");
    EXPECT(verify_gsm8k_extract("it was -5 degrees", out, sizeof out) && strcmp(out, "-5") == 0, "negative");
    EXPECT(verify_gsm8k_extract("16-3-4=9", out, sizeof out) && strcmp(out, "9") == 0, "minus between numbers");
    EXPECT(verify_gsm8k_extract("\\boxed{12} after 3 steps", out, sizeof out) && strcmp(out, "12") == 0, "box");
    EXPECT(!verify_gsm8k_extract("no numbers", out, sizeof out), "no number");
    verify_gsm8k("so 7", "not a number", &res);
    EXPECT(!res.correct && res.has_extracted, "a non-numeric reference is never matched");
}

/* Runs one input in both modes (also swapped) and checks the time of each call: the best of 3 runs, so that
 * a preemption on this shared 2-core machine is not mistaken for slow code (slow code is slow every time). */
static double worst_ms;
static void timed(const char *what, const char *response, const char *answer) {
    for (int m = 0; m < 2; m++) {
        for (int swap = 0; swap < 2; swap++) {
            double dt = 1e9;
            for (int rep = 0; rep < 3; rep++) {
                double t0 = now_ms();
                verify_answer(m ? VERIFY_MODE_GSM8K : VERIFY_MODE_MATH, swap ? answer : response,
                              swap ? response : answer, &res);
                double t = now_ms() - t0;
                if (t < dt) dt = t;
            }
            if (dt > worst_ms) worst_ms = dt;
            EXPECT(dt < 10.0, "%s (mode %d, swap %d): %.2f ms", what, m, swap, dt);
        }
    }
}

static char *repeat(const char *head, const char *unit, size_t count, const char *tail) {
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *s = xmalloc(hl + ul * count + tl + 1), *p = s;
    memcpy(p, head, hl), p += hl;
    for (size_t i = 0; i < count; i++) memcpy(p, unit, ul), p += ul;
    memcpy(p, tail, tl + 1);
    return s;
}

static void test_pathological_inputs(void) {
    struct {
        const char *what, *head, *unit;
        size_t count;
        const char *tail;
    } cases[] = {
        {"10k nested braces", "\\boxed{", "{", 10000, "1"},
        {"10k nested braces, closed", "\\boxed{", "{", 10000, ""},
        {"100 KB of digits", "", "1234567890", 10000, ""},
        {"100 KB of digits boxed", "\\boxed{", "1234567890", 10000, "}"},
        {"unbalanced boxes", "", "\\boxed{", 14000, ""},
        {"many closed boxes", "", "\\boxed{1}", 11000, ""},
        {"space-form boxes", "", "\\boxed ", 14000, "$"},
        {"many ####", "", "#### ", 20000, ""},
        {"minus chain", "\\boxed{", "-", 2000, "1}"},
        {"paren chain", "\\boxed{", "(", 1000, "1}"},
        {"frac chain", "\\boxed{", "\\frac{", 300, "1}"},
        {"sqrt chain", "\\boxed{", "\\sqrt", 400, "2}"},
        {"power tower", "\\boxed{", "2^", 1000, "2}"},
        {"long tuple", "\\boxed{(", "1,", 1000, "1)}"},
        {"long set", "\\boxed{\\{", "x,", 60, "1\\}}"},
        {"nested sets", "\\boxed{", "\\{1,", 300, "2}"},
        {"text wrappers", "\\boxed{", "\\text{", 200, "a}"},
        {"factorials", "\\boxed{", "3!", 600, "}"},
        {"letters", "\\boxed{", "x", 2000, "}"},
        {"pm chain", "\\boxed{", "1\\pm", 400, "1}"},
        {"commas", "", "1,", 50000, ""},
        {"dots", "", ".", 100000, ""},
        {"backslashes", "", "\\", 100000, ""},
        {"cup chain", "\\boxed{", "(1,2)\\cup", 200, "(3,4)}"},
        {"matrix rows", "\\boxed{\\begin{pmatrix}", "1&2\\\\", 300, "\\end{pmatrix}}"},
    };
    for (size_t k = 0; k < S2D_ARRAY_LEN(cases); k++) {
        char *s = repeat(cases[k].head, cases[k].unit, cases[k].count, cases[k].tail);
        timed(cases[k].what, s, s);
        timed(cases[k].what, s, "1");
        /* the structure against a near copy: element-wise comparison runs to the end */
        char *t = xstrdup(s);
        size_t n = strlen(t);
        for (size_t i = n; i-- > 0;)
            if (t[i] >= '0' && t[i] <= '8') {
                t[i]++;
                break;
            }
        timed(cases[k].what, s, t);
        free(t);
        free(s);
    }
}

static void test_fuzz_corpus(void) {
    char dir[4096];
    path_join(dir, sizeof dir, root(), "tests/fuzz/corpus_verify");
    DIR *d = opendir(dir);
    EXPECT(d != NULL, "cannot open %s", dir);
    if (!d) return;
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[8192];
        path_join(path, sizeof path, dir, e->d_name);
        char *data;
        size_t len;
        s2d_err err;
        if (!read_file(path, &data, &len, &err)) continue;
        /* same split as the fuzzer: response, NUL, answer */
        const char *answer = memchr(data, '\0', len) ? data + strlen(data) + 1 : "";
        if (answer > data + len) answer = "";
        timed(e->d_name, data, answer);
        free(data);
        files++;
    }
    closedir(d);
    EXPECT(files > 0, "the fuzz corpus is empty");
    fprintf(stderr, "    %d corpus files; slowest call so far %.3f ms\n", files, worst_ms);
}

int main(void) {
    RUN_TEST(test_labelled_cases);
    RUN_TEST(test_extraction);
    RUN_TEST(test_normalization);
    RUN_TEST(test_evaluator);
    RUN_TEST(test_equivalence_rules);
    RUN_TEST(test_gsm8k);
    RUN_TEST(test_pathological_inputs);
    RUN_TEST(test_fuzz_corpus);
    fprintf(stderr, "    slowest verify call: %.3f ms\n", worst_ms);
    return TEST_SUMMARY();
}
