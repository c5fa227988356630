/* arith_task.c: deterministic multi-step integer arithmetic problems with worked solutions. */
#include "io/arith_task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

#define ARITH_STREAM 0xA7170000ull
#define ARITH_SPLIT_KEY 0x5EEDA7117ull /* fixed: the split of a problem never depends on a config's seed */
#define ARITH_MAX_OPS 8
#define ARITH_MISCONCEPTION_KEY 0x1EF7707219ull /* which worked solutions carry the misconception */

const char *const arith_split_names[ARITH_N_SPLITS] = {"train", "heldout", "test", "sft",
                                                       "teacher_rl", "bridge", "student_rl", "val"};
#define split_names arith_split_names

bool arith_split_parse(const char *name, arith_split *out, s2d_err *err) {
    int i = name_index(name, split_names, ARITH_N_SPLITS);
    if (i >= 0) return *out = (arith_split)i, true;
    return err_set(err,
                   "unknown arithmetic split '%s' (choose train, heldout, test, sft, teacher_rl, bridge, "
                   "student_rl, val)",
                   name);
}

const char *arith_split_name(arith_split s) { return split_names[s]; }

/* FNV-1a of a problem's text: the key of its split, its misconception draw and the dedup set. */
static uint64_t text_hash(const char *text) {
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = text; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    return h;
}

/* FNV-1a of the text, then one Philox block keyed by the fixed split key: w[0] picks train/heldout/test,
 * w[1] the study part of a train problem (independent of w[0]). */
static void split_words(const char *problem, uint32_t w[4]) {
    philox4x32(ARITH_SPLIT_KEY, text_hash(problem), 0, w);
}

arith_split arith_split_of(const char *problem) {
    uint32_t w[4];
    split_words(problem, w);
    uint32_t bucket = w[0] % 10;
    return bucket < 8 ? ARITH_TRAIN : bucket == 8 ? ARITH_HELDOUT : ARITH_TEST;
}

arith_split arith_study_split_of(const char *problem) {
    uint32_t w[4];
    split_words(problem, w);
    uint32_t bucket = w[0] % 10;
    if (bucket >= 8) return bucket == 8 ? ARITH_HELDOUT : ARITH_TEST;
    /* train is 80 % of the space: eighths of it are 10 % each (sft 3/8, bridge 2/8, the rest 1/8) */
    static const arith_split part[8] = {ARITH_SFT,    ARITH_SFT,        ARITH_SFT,        ARITH_TEACHER_RL,
                                        ARITH_BRIDGE, ARITH_BRIDGE,     ARITH_STUDENT_RL, ARITH_VAL};
    return part[w[1] % 8];
}

bool arith_in_split(const char *problem, arith_split s) {
    if (s <= ARITH_TEST) return arith_split_of(problem) == s;
    return arith_study_split_of(problem) == s;
}

/* Tokens of an expression: n+1 values and n operators. */
typedef struct {
    int n_ops;
    long long val[ARITH_MAX_OPS + 1];
    char op[ARITH_MAX_OPS];
} expr;

static int expr_print(const expr *e, char *buf, size_t cap) {
    int at = 0;
    for (int i = 0; i <= e->n_ops; i++) {
        at += snprintf(buf + at, cap - (size_t)at, "%lld", e->val[i]);
        if (i < e->n_ops) at += snprintf(buf + at, cap - (size_t)at, "%c", e->op[i]);
    }
    return at;
}

/* Applies one operation in the given order: ARITH_ORDER_TRUE the first '*' if any, else the first + or -;
 * ARITH_ORDER_LEFT_TO_RIGHT always the first; ARITH_ORDER_SUMS_RIGHT_TO_LEFT the first '*' if any, else the last
 * + or -. */
static void expr_reduce_once(expr *e, arith_order order) {
    int k = order == ARITH_ORDER_SUMS_RIGHT_TO_LEFT ? e->n_ops - 1 : 0;
    for (int i = 0; i < e->n_ops && order != ARITH_ORDER_LEFT_TO_RIGHT; i++)
        if (e->op[i] == '*') {
            k = i;
            break;
        }
    long long a = e->val[k], b = e->val[k + 1];
    long long r = e->op[k] == '*' ? a * b : e->op[k] == '+' ? a + b : a - b;
    e->val[k] = r;
    for (int i = k + 1; i < e->n_ops; i++) e->val[i] = e->val[i + 1];
    for (int i = k; i < e->n_ops - 1; i++) e->op[i] = e->op[i + 1];
    e->n_ops--;
}

static bool expr_parse(const char *s, expr *e) {
    e->n_ops = 0;
    for (;;) {
        if (*s < '0' || *s > '9') return false;
        long long v = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9') {
            if (++digits > 9) return false;
            v = v * 10 + (*s++ - '0');
        }
        e->val[e->n_ops] = v;
        if (*s == '\0') return true;
        if (*s != '+' && *s != '-' && *s != '*') return false;
        if (e->n_ops == ARITH_MAX_OPS) return false;
        e->op[e->n_ops++] = *s++;
    }
}

bool arith_eval_order(const char *problem, arith_order order, long long *value) {
    expr e;
    if (!expr_parse(problem, &e)) return false;
    while (e.n_ops > 0) expr_reduce_once(&e, order);
    *value = e.val[0];
    return true;
}

bool arith_eval(const char *problem, long long *value) { return arith_eval_order(problem, ARITH_ORDER_TRUE, value); }

/* The order the worked solution of this problem follows: the misconception's (left_to_right or right_to_left,
 * at most one is set) where it gives another value and a keyed hash of the text and the seed, uniform in
 * [0, 1), falls under its share; else the true order. */
static arith_order solution_order(const arith_params *p, const char *text, const expr *e) {
    const arith_order wrong = p->left_to_right > 0 ? ARITH_ORDER_LEFT_TO_RIGHT : ARITH_ORDER_SUMS_RIGHT_TO_LEFT;
    const double share = p->left_to_right > 0 ? p->left_to_right : p->right_to_left;
    if (share <= 0) return ARITH_ORDER_TRUE;
    expr a = *e, b = *e;
    while (a.n_ops > 0) expr_reduce_once(&a, ARITH_ORDER_TRUE);
    while (b.n_ops > 0) expr_reduce_once(&b, wrong);
    if (a.val[0] == b.val[0]) return ARITH_ORDER_TRUE;
    uint32_t w[4];
    philox4x32(ARITH_MISCONCEPTION_KEY ^ p->seed, text_hash(text), 0, w);
    return (double)w[0] / 4294967296.0 < share ? wrong : ARITH_ORDER_TRUE;
}

bool arith_params_check(const arith_params *p, s2d_err *err) {
    if (p->n_ops < 1 || p->n_ops > ARITH_MAX_OPS)
        return err_set(err, "arithmetic task: ops = %d, expected 1..%d", p->n_ops, ARITH_MAX_OPS);
    if (p->max_operand < 1 || p->max_operand > 999)
        return err_set(err, "arithmetic task: max_operand = %d, expected 1..999", p->max_operand);
    if (!(p->left_to_right >= 0 && p->left_to_right <= 1))
        return err_set(err, "arithmetic task: left_to_right = %g, expected 0..1", p->left_to_right);
    if (!(p->right_to_left >= 0 && p->right_to_left <= 1))
        return err_set(err, "arithmetic task: right_to_left = %g, expected 0..1", p->right_to_left);
    if (p->operators[0] && strspn(p->operators, "+-*") != strlen(p->operators))
        return err_set(err, "arithmetic task: operators = '%s', expected some of + - *", p->operators);
    if (p->left_to_right > 0 && p->right_to_left > 0)
        return err_set(err, "arithmetic task: left_to_right and right_to_left are both set; give at most one");
    return true;
}

bool arith_make(const arith_params *p, arith_split split, int count, arith_set *out, s2d_err *err) {
    memset(out, 0, sizeof *out);
    if (!arith_params_check(p, err)) return false;
    if (count < 1) return err_set(err, "arithmetic task: size = %d, expected >= 1", count);
    /* the operators drawn from, in the order "+-*" (the default draws exactly as before the key existed) */
    char ops[4];
    int n_ops_kinds = 0;
    for (const char *c = "+-*"; *c; c++)
        if (!p->operators[0] || strchr(p->operators, *c)) ops[n_ops_kinds++] = *c;
    out->problem = xcalloc((size_t)count, sizeof(char *));
    out->answer = xcalloc((size_t)count, sizeof(char *));
    out->solution = xcalloc((size_t)count, sizeof(char *));
    /* Open-addressing set of the texts taken so far (dedup within the split). */
    size_t cap = 1;
    while (cap < (size_t)count * 4) cap <<= 1;
    char **seen = xcalloc(cap, sizeof(char *));
    rng_stream r;
    rng_stream_init(&r, p->seed, ARITH_STREAM);
    long attempts = 0, max_attempts = 200L * count + 100000;
    char text[256], sol[1024];
    while (out->n < count && attempts++ < max_attempts) {
        expr e = {.n_ops = p->n_ops};
        for (int i = 0; i <= p->n_ops; i++) e.val[i] = (long long)rng_next_below(&r, (uint64_t)p->max_operand + 1);
        for (int i = 0; i < p->n_ops; i++) e.op[i] = ops[rng_next_below(&r, (uint64_t)n_ops_kinds)];
        expr_print(&e, text, sizeof text);
        if (!arith_in_split(text, split)) continue;
        size_t slot = text_hash(text) & (cap - 1);
        bool dup = false;
        while (seen[slot]) {
            if (strcmp(seen[slot], text) == 0) {
                dup = true;
                break;
            }
            slot = (slot + 1) & (cap - 1);
        }
        if (dup) continue;
        long long truth;
        if (!arith_eval(text, &truth)) continue; /* cannot happen: the text was printed from e */
        const arith_order order = solution_order(p, text, &e);
        int at = 0;
        while (e.n_ops > 0) {
            expr_reduce_once(&e, order);
            if (e.n_ops > 0) {
                at += expr_print(&e, sol + at, sizeof sol - (size_t)at);
                at += snprintf(sol + at, sizeof sol - (size_t)at, "=");
            }
        }
        char ans[32], worked[32];
        snprintf(ans, sizeof ans, "%lld", truth);
        snprintf(worked, sizeof worked, "%lld", e.val[0]);
        snprintf(sol + at, sizeof sol - (size_t)at, "%s \\boxed{%s}", worked, worked);
        int i = out->n++;
        out->problem[i] = xstrdup(text);
        out->answer[i] = xstrdup(ans);
        out->solution[i] = xstrdup(sol);
        seen[slot] = out->problem[i];
    }
    free(seen);
    if (out->n < count) {
        int got = out->n;
        arith_free(out);
        return err_set(err,
                       "arithmetic task: only %d distinct %s problems with ops = %d, max_operand = %d (asked for "
                       "%d); lower size or raise ops / max_operand",
                       got, split_names[split], p->n_ops, p->max_operand, count);
    }
    return true;
}

void arith_free(arith_set *s) {
    for (int i = 0; i < s->n; i++) free(s->problem[i]), free(s->answer[i]), free(s->solution[i]);
    free(s->problem), free(s->answer), free(s->solution);
    memset(s, 0, sizeof *s);
}
