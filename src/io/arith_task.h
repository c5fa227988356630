/* arith_task.h: the synthetic verifiable arithmetic task (the embedded demo's data; no downloads).
 *
 * A problem is an integer expression of n_ops binary operations over operands in [0, max_operand], with
 * operators + - * and the usual precedence (* before + and -, left to right), e.g. "3+4*2". The answer is
 * its value. The worked solution reduces one operation at a time, multiplications first:
 *     "3+4*2"  →  "3+8=11 \boxed{11}"
 * (for one operation just "7 \boxed{7}"), so the verifier (text/verify.h, math mode) can check \boxed{N}.
 * arith_params.left_to_right / right_to_left make a share of the worked solutions systematically wrong (a misconception that
 * SFT learns and a verifiable reward can correct).
 *
 * Determinism and splits: problems are drawn from the Philox stream (seed, ARITH_STREAM). Each problem
 * belongs to exactly one split, decided by a keyed hash of its text with a FIXED key (not the seed), so the
 * train / heldout / test sets are disjoint for any seeds and sizes: train 80 %, heldout 10 %, test 10 % of the
 * problem space. Within a set problems are unique.
 *
 * The study splits (docs/study.md) divide train further, by a second word of the same keyed hash, into five
 * disjoint parts: sft 30 % of the problem space (pretraining / SFT data), teacher_rl 10 % (the scarce labelled
 * teacher-RL set), bridge 20 % (the unlabelled bridge prompt pool), student_rl 10 % (held-out labelled
 * student-RL set) and val 10 % (validation: choosing the task and hyperparameters). heldout and test are
 * unchanged, so a study's test set is disjoint from everything it trains or validates on. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"

typedef enum {
    ARITH_TRAIN = 0,
    ARITH_HELDOUT = 1,
    ARITH_TEST = 2,
    /* the study splits: disjoint parts of ARITH_TRAIN */
    ARITH_SFT = 3,
    ARITH_TEACHER_RL = 4,
    ARITH_BRIDGE = 5,
    ARITH_STUDENT_RL = 6,
    ARITH_VAL = 7,
    ARITH_N_SPLITS = 8
} arith_split;

typedef struct {
    int n_ops;       /* operations per problem, 1..8 */
    int max_operand; /* operands in [0, max_operand], 1..999 */
    uint64_t seed;   /* generation stream */
    /* A misconception of the SFT ("pretraining") data, at most one of the two: the share, 0..1, of the problems
     * whose value in the wrong order differs from the true one whose worked solution follows the wrong order.
     * left_to_right ignores precedence: "3+4*2" -> "7*2=14 \boxed{14}" (true: 11). right_to_left applies each
     * run of + and - right to left, multiplications still first (the "addition before subtraction" error):
     * "7-2+3" -> "7-5=2 \boxed{2}" (true: 8). Which problems is decided by a keyed hash of the text and the seed
     * (the same problem always gets the same solution). The answer stays the true value, so a verifier rewards
     * the right working only. 0 (the default): every solution is right. */
    double left_to_right, right_to_left;
    char operators[4]; /* the operators problems use: some of "+-*" ("" = all three) */
} arith_params;

typedef struct {
    int n;
    char **problem;  /* [n] "3+4*2" */
    char **answer;   /* [n] "11" */
    char **solution; /* [n] "3+8=11 \boxed{11}" */
} arith_set;

/* "train" | "heldout" | "test" | "sft" | "teacher_rl" | "bridge" | "student_rl" | "val". */
extern const char *const arith_split_names[ARITH_N_SPLITS];
bool arith_split_parse(const char *name, arith_split *out, s2d_err *err);
const char *arith_split_name(arith_split s);
/* The split (train, heldout or test) a problem text belongs to. */
arith_split arith_split_of(const char *problem);
/* The study split (sft .. val) of a train problem; ARITH_HELDOUT / ARITH_TEST for the others. */
arith_split arith_study_split_of(const char *problem);
/* Does the problem belong to split s (a study split is a part of train)? */
bool arith_in_split(const char *problem, arith_split s);
/* Evaluates "a op b op c ..." (non-negative integer operands, + - *, precedence); false on bad syntax. */
bool arith_eval(const char *problem, long long *value);
typedef enum { ARITH_ORDER_TRUE, ARITH_ORDER_LEFT_TO_RIGHT, ARITH_ORDER_SUMS_RIGHT_TO_LEFT } arith_order;
/* Evaluates in the given order (the misconceptions above); false on bad syntax. */
bool arith_eval_order(const char *problem, arith_order order, long long *value);
/* The parameters' ranges, the operators, at most one misconception; false + err naming the key otherwise. */
bool arith_params_check(const arith_params *p, s2d_err *err);
/* `count` distinct problems of the split. False + err when the problem space of this split is too small. */
bool arith_make(const arith_params *p, arith_split split, int count, arith_set *out, s2d_err *err);
void arith_free(arith_set *s);
