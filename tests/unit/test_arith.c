/* Arithmetic task: values against an independent evaluator and hand-worked cases, worked solutions that
 * the verifier accepts, disjoint and deterministic splits, and the demo tokenizer round trip. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/arith_task.h"
#include "test.h"
#include "text/tokenizer.h"
#include "text/verify.h"

/* Independent reference: shunting-free two-pass evaluation (products of runs, then a signed sum). */
static long long ref_eval(const char *s) {
    long long sum = 0, term = 0;
    int sign = 1;
    bool have = false;
    while (*s) {
        long long v = strtoll(s, (char **)&s, 10);
        term = have ? term * v : v;
        have = true;
        if (*s == '*') {
            s++;
            continue;
        }
        sum += sign * term;
        have = false;
        if (*s == '+') sign = 1, s++;
        else if (*s == '-') sign = -1, s++;
    }
    return sum;
}

static void test_hand_cases(void) {
    long long v;
    EXPECT(arith_eval("3+4*2", &v) && v == 11, "3+4*2 = %lld", v);
    EXPECT(arith_eval("2-3-4", &v) && v == -5, "2-3-4 = %lld (left associative)", v);
    EXPECT(arith_eval("2*3-4*5", &v) && v == -14, "2*3-4*5 = %lld", v);
    EXPECT(arith_eval("7", &v) && v == 7, "7");
    EXPECT(!arith_eval("3+", &v), "3+ must not parse");
    EXPECT(!arith_eval("3/4", &v), "/ is not an operator");
    EXPECT_CLOSE(ref_eval("9*9-8+7*6*5"), 81 - 8 + 210, 0, 0, "reference evaluator");
}

static void test_sets(void) {
    s2d_err err;
    arith_params p = {.n_ops = 2, .max_operand = 9, .seed = 11};
    arith_set sets[3];
    for (int s = 0; s < 3; s++) EXPECT(arith_make(&p, (arith_split)s, s == 0 ? 800 : 150, &sets[s], &err), "%s", err.msg);
    int wrong = 0, unverified = 0, bad_chain = 0, wrong_split = 0;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < sets[s].n; i++) {
            long long want = ref_eval(sets[s].problem[i]);
            if (atoll(sets[s].answer[i]) != want) wrong++;
            if (arith_split_of(sets[s].problem[i]) != (arith_split)s) wrong_split++;
            verify_result vr;
            verify_math(sets[s].solution[i], sets[s].answer[i], &vr);
            if (!vr.correct) unverified++;
            /* every link of the chain "a=b=c \boxed{c}" has the value of the problem */
            char chain[1024];
            snprintf(chain, sizeof chain, "%s", sets[s].solution[i]);
            *strchr(chain, ' ') = '\0';
            for (char *tok = strtok(chain, "="); tok; tok = strtok(NULL, "="))
                if (tok[0] != '-' && ref_eval(tok) != want) bad_chain++;
        }
    EXPECT(wrong == 0, "%d answers differ from the reference evaluator", wrong);
    EXPECT(unverified == 0, "%d worked solutions rejected by the verifier", unverified);
    EXPECT(bad_chain == 0, "%d solution steps with the wrong value", bad_chain);
    EXPECT(wrong_split == 0, "%d problems in the wrong split", wrong_split);
    int overlap = 0, dups = 0;
    for (int a = 0; a < 3; a++)
        for (int i = 0; i < sets[a].n; i++)
            for (int b = a; b < 3; b++)
                for (int j = (a == b ? i + 1 : 0); j < sets[b].n; j++)
                    if (strcmp(sets[a].problem[i], sets[b].problem[j]) == 0) { if (a == b) dups++; else overlap++; }
    EXPECT(overlap == 0, "%d problems shared between splits", overlap);
    EXPECT(dups == 0, "%d duplicates within a split", dups);
    /* determinism: same seed, same problems; another seed, another order */
    arith_set again, other;
    EXPECT(arith_make(&p, ARITH_TEST, 150, &again, &err), "%s", err.msg);
    int same = 0;
    for (int i = 0; i < 150; i++) same += strcmp(again.problem[i], sets[2].problem[i]) == 0;
    EXPECT(same == 150, "same seed gave %d/150 equal problems", same);
    p.seed = 12;
    EXPECT(arith_make(&p, ARITH_TEST, 150, &other, &err), "%s", err.msg);
    same = 0;
    for (int i = 0; i < 150; i++) same += strcmp(other.problem[i], sets[2].problem[i]) == 0;
    EXPECT(same < 20, "another seed gave %d/150 equal problems in order", same);
    arith_free(&again), arith_free(&other);
    for (int s = 0; s < 3; s++) arith_free(&sets[s]);
    /* the problem space is finite: asking for too many fails with a clear message */
    arith_params tiny = {.n_ops = 1, .max_operand = 2, .seed = 1};
    arith_set t;
    EXPECT(!arith_make(&tiny, ARITH_TRAIN, 100, &t, &err) && strstr(err.msg, "distinct"), "%s", err.msg);
}

/* The study splits: parts of train, disjoint from each other, heldout and test, in the documented shares of the
 * problem space (ops 2, operands 0..9: 9000 problems). */
static void test_study_splits(void) {
    s2d_err err;
    arith_params p = {.n_ops = 2, .max_operand = 9, .seed = 3};
    int count[ARITH_N_SPLITS] = {0}, total = 0, not_train = 0;
    char text[32];
    const char ops[3] = {'+', '-', '*'};
    for (int a = 0; a <= 9; a++)
        for (int b = 0; b <= 9; b++)
            for (int c = 0; c <= 9; c++)
                for (int o1 = 0; o1 < 3; o1++)
                    for (int o2 = 0; o2 < 3; o2++) {
                        snprintf(text, sizeof text, "%d%c%d%c%d", a, ops[o1], b, ops[o2], c);
                        arith_split s = arith_study_split_of(text);
                        count[s]++, total++;
                        int in = 0;
                        for (int k = 0; k < ARITH_N_SPLITS; k++) in += k != ARITH_TRAIN && arith_in_split(text, k);
                        if (in != 1) not_train++; /* exactly one of heldout, test or a study split */
                        if (s >= ARITH_SFT && !arith_in_split(text, ARITH_TRAIN)) not_train++;
                    }
    EXPECT(total == 9000 && not_train == 0, "%d problems; %d in none or several study splits", total, not_train);
    const double share[ARITH_N_SPLITS] = {0, 0.1, 0.1, 0.3, 0.1, 0.2, 0.1, 0.1};
    for (int s = 1; s < ARITH_N_SPLITS; s++)
        EXPECT(fabs(count[s] / 9000.0 - share[s]) < 0.02, "%s: %d problems, want about %.0f %%", arith_split_names[s],
               count[s], share[s] * 100);
    /* sets drawn from the study splits are disjoint and each problem is in its split */
    arith_set sets[5];
    for (int s = 0; s < 5; s++) EXPECT(arith_make(&p, (arith_split)(ARITH_SFT + s), 300, &sets[s], &err), "%s", err.msg);
    int overlap = 0, wrong = 0;
    for (int a = 0; a < 5; a++)
        for (int i = 0; i < sets[a].n; i++) {
            wrong += arith_study_split_of(sets[a].problem[i]) != (arith_split)(ARITH_SFT + a);
            for (int b = a + 1; b < 5; b++)
                for (int j = 0; j < sets[b].n; j++) overlap += strcmp(sets[a].problem[i], sets[b].problem[j]) == 0;
        }
    EXPECT(overlap == 0 && wrong == 0, "%d shared problems, %d in the wrong split", overlap, wrong);
    for (int s = 0; s < 5; s++) arith_free(&sets[s]);
    arith_split sp;
    EXPECT(arith_split_parse("bridge", &sp, &err) && sp == ARITH_BRIDGE, "parse bridge");
    EXPECT(!arith_split_parse("valid", &sp, &err) && strstr(err.msg, "student_rl"), "%s", err.msg);
}

/* Independent references for the misconceptions: strictly left to right; products first, then the sum
 * of the terms applied right to left (a-b+c = a-(b+c)). */
static long long ref_eval_left_to_right(const char *s) {
    long long acc = strtoll(s, (char **)&s, 10);
    while (*s) {
        char op = *s++;
        long long v = strtoll(s, (char **)&s, 10);
        acc = op == '*' ? acc * v : op == '+' ? acc + v : acc - v;
    }
    return acc;
}

static long long ref_eval_sums_right_to_left(const char *s) {
    long long term[16];
    char op[16];
    int n = 0;
    term[0] = strtoll(s, (char **)&s, 10);
    while (*s) {
        char o = *s++;
        long long v = strtoll(s, (char **)&s, 10);
        if (o == '*') term[n] *= v;
        else op[n++] = o, term[n] = v;
    }
    long long acc = term[n];
    for (int i = n - 1; i >= 0; i--) acc = op[i] == '+' ? term[i] + acc : term[i] - acc;
    return acc;
}

/* The first link of the wrong working of a two-operation problem: "a+b*c" -> "(a+b)*c" left to right;
 * "a-b+c" -> "a-(b+c)" right to left (only problems without a product differ there). */
static void wrong_first_link(const char *prob, bool ltr, char *out, size_t cap) {
    const char *s = prob;
    long long a = strtoll(s, (char **)&s, 10);
    char o1 = *s++;
    long long b = strtoll(s, (char **)&s, 10);
    char o2 = *s++;
    long long c = strtoll(s, NULL, 10);
    if (ltr) snprintf(out, cap, "%lld%c%lld", o1 == '*' ? a * b : o1 == '+' ? a + b : a - b, o2, c);
    else snprintf(out, cap, "%lld%c%lld", a, o1, o2 == '+' ? b + c : b - c);
}

/* left_to_right / right_to_left: the same problems and answers as without them; exactly the worked solutions
 * of a share of the problems whose value in the wrong order differs follow that order (the boxed value, and
 * the first link the wrong operation applied), the share close to the one asked, the same problems chosen at
 * every size; 0 changes nothing, 1 takes every such problem, bad values and both at once are refused. */
static void test_misconceptions(void) {
    s2d_err err;
    for (int kind = 0; kind < 2; kind++) {
        const bool ltr = kind == 0;
        const char *what = ltr ? "left_to_right" : "right_to_left";
        const double shares[3] = {0.0, 0.6, 1.0};
        arith_set sets[3];
        for (int k = 0; k < 3; k++) {
            arith_params p = {.n_ops = 2, .max_operand = 9, .seed = 1};
            *(ltr ? &p.left_to_right : &p.right_to_left) = shares[k];
            EXPECT(arith_make(&p, ARITH_SFT, 2000, &sets[k], &err), "%s", err.msg);
        }
        int differing = 0, taken = 0, bad = 0, unchanged = 0;
        for (int i = 0; i < sets[0].n; i++) {
            const char *prob = sets[0].problem[i];
            if (strcmp(prob, sets[1].problem[i]) || strcmp(prob, sets[2].problem[i]) ||
                strcmp(sets[0].answer[i], sets[1].answer[i]) || strcmp(sets[0].answer[i], sets[2].answer[i])) {
                bad++;
                continue;
            }
            long long truth = ref_eval(prob), wrong = ltr ? ref_eval_left_to_right(prob) : ref_eval_sums_right_to_left(prob);
            long long v;
            if (!arith_eval_order(prob, ltr ? ARITH_ORDER_LEFT_TO_RIGHT : ARITH_ORDER_SUMS_RIGHT_TO_LEFT, &v) || v != wrong)
                bad++;
            char want_true[64], want_wrong[64], first[64];
            snprintf(want_true, sizeof want_true, "\\boxed{%lld}", truth);
            snprintf(want_wrong, sizeof want_wrong, "\\boxed{%lld}", wrong);
            if (!strstr(sets[0].solution[i], want_true)) bad++;
            if (truth == wrong) {
                unchanged += !strcmp(sets[0].solution[i], sets[1].solution[i]) &&
                             !strcmp(sets[0].solution[i], sets[2].solution[i]);
                continue;
            }
            differing++;
            if (!strstr(sets[2].solution[i], want_wrong)) bad++;
            bool took = strstr(sets[1].solution[i], want_wrong) != NULL;
            if (!took && strcmp(sets[1].solution[i], sets[0].solution[i]) != 0) bad++;
            taken += took;
            wrong_first_link(prob, ltr, first, sizeof first);
            if (strncmp(sets[2].solution[i], first, strlen(first)) != 0) bad++;
        }
        int same_total = sets[0].n - differing;
        EXPECT(bad == 0, "%s: %d problems, answers or solutions not as specified", what, bad);
        EXPECT(unchanged == same_total, "%s: problems with one value keep their solution (%d of %d)", what, unchanged,
               same_total);
        EXPECT(differing > 200, "%s: the misconception has problems to act on (%d of %d)", what, differing, sets[0].n);
        double share = (double)taken / differing, se = sqrt(0.6 * 0.4 / differing);
        EXPECT(fabs(share - 0.6) < 4 * se, "%s 0.6: share %.3f of %d problems (4 SE = %.3f)", what, share, differing,
               4 * se);
        arith_params p = {.n_ops = 2, .max_operand = 9, .seed = 1};
        *(ltr ? &p.left_to_right : &p.right_to_left) = 0.6;
        arith_set small;
        EXPECT(arith_make(&p, ARITH_SFT, 300, &small, &err), "%s", err.msg);
        int same_solutions = 0;
        for (int i = 0; i < small.n; i++) same_solutions += strcmp(small.solution[i], sets[1].solution[i]) == 0;
        EXPECT(same_solutions == small.n, "%s: a smaller set has the same solutions (%d of %d)", what, same_solutions,
               small.n);
        arith_free(&small);
        *(ltr ? &p.left_to_right : &p.right_to_left) = 1.5;
        EXPECT(!arith_make(&p, ARITH_SFT, 10, &small, &err) && strstr(err.msg, what), "%s 1.5 is refused: %s", what,
               err.msg);
        for (int k = 0; k < 3; k++) arith_free(&sets[k]);
    }
    arith_params both = {.n_ops = 2, .max_operand = 9, .seed = 1, .left_to_right = 0.5, .right_to_left = 0.5};
    arith_set none;
    EXPECT(!arith_make(&both, ARITH_SFT, 10, &none, &err) && strstr(err.msg, "at most one"), "both refused: %s",
           err.msg);
}

/* operators: only the ones asked for appear, all three appear by default, and "+-*" draws exactly the default
 * set; others are refused. */
static void test_operators(void) {
    s2d_err err;
    arith_params dflt = {.n_ops = 3, .max_operand = 9, .seed = 4}, all = dflt, sums = dflt, bad = dflt;
    snprintf(all.operators, sizeof all.operators, "+-*");
    snprintf(sums.operators, sizeof sums.operators, "+-");
    snprintf(bad.operators, sizeof bad.operators, "+/");
    arith_set a, b, c, none;
    EXPECT(arith_make(&dflt, ARITH_TEST, 500, &a, &err) && arith_make(&all, ARITH_TEST, 500, &b, &err) &&
               arith_make(&sums, ARITH_TEST, 500, &c, &err),
           "%s", err.msg);
    int same = 0, with_mul = 0, sums_mul = 0, wrong = 0;
    for (int i = 0; i < 500; i++) {
        same += !strcmp(a.problem[i], b.problem[i]) && !strcmp(a.solution[i], b.solution[i]);
        with_mul += strchr(a.problem[i], '*') != NULL;
        sums_mul += strchr(c.problem[i], '*') != NULL;
        wrong += atoll(c.answer[i]) != ref_eval(c.problem[i]);
    }
    EXPECT(same == 500, "\"+-*\" draws the default set (%d of 500 equal)", same);
    EXPECT(with_mul > 200 && sums_mul == 0, "products: %d by default, %d with \"+-\"", with_mul, sums_mul);
    EXPECT(wrong == 0, "\"+-\" answers (%d wrong)", wrong);
    EXPECT(!arith_make(&bad, ARITH_TEST, 10, &none, &err) && strstr(err.msg, "operators"), "'+/' refused: %s", err.msg);
    arith_free(&a), arith_free(&b), arith_free(&c);
}

static void test_demo_tokenizer(void) {
    s2d_err err;
    tokenizer *tok;
    EXPECT(tok_load("configs/demo/tokenizer", &tok, &err), "%s", err.msg);
    if (!tok) return;
    EXPECT(tok_vocab_size(tok) <= 512, "vocab %d must fit the tiny presets (512)", tok_vocab_size(tok));
    int32_t im_start = tok_token_id(tok, "<|im_start|>"), im_end = tok_token_id(tok, "<|im_end|>");
    EXPECT(im_start >= 256 && im_end >= 256 && tok_token_id(tok, "<|endoftext|>") >= 256, "special tokens");
    const char *text = "<|im_start|>user\n3+4*2<|im_end|>\n<|im_start|>assistant\n3+8=11 \\boxed{11}<|im_end|>";
    tok_ids ids = {0};
    EXPECT(tok_encode(tok, text, strlen(text), &ids, &err) > 0, "%s", err.msg);
    /* bytes map to their own ids; the specials and merges (user, assistant, boxed) are single tokens */
    EXPECT(ids.n > 0 && ids.ids[0] == im_start, "first id %d, want <|im_start|> %d", ids.ids[0], im_start);
    EXPECT(ids.n == 26, "encoded into %zu ids, want 26", ids.n);
    int n_digit = 0;
    for (size_t i = 0; i < ids.n; i++) n_digit += ids.ids[i] >= '0' && ids.ids[i] <= '9';
    EXPECT(n_digit == 9, "digit ids (= byte values): %d, want 9", n_digit);
    tok_bytes out = {0};
    EXPECT(tok_decode(tok, ids.ids, ids.n, &out, &err) && strcmp(out.bytes, text) == 0, "round trip: %s", out.bytes);
    tok_ids_free(&ids), tok_bytes_free(&out), tok_free(tok);
}

int main(void) {
    RUN_TEST(test_hand_cases);
    RUN_TEST(test_sets);
    RUN_TEST(test_study_splits);
    RUN_TEST(test_misconceptions);
    RUN_TEST(test_operators);
    RUN_TEST(test_demo_tokenizer);
    return TEST_SUMMARY();
}
