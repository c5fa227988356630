/* verify_internal.h: what verify.c (extraction, normalisation, equivalence) and verify_eval.c (the expression
 * evaluator) share. Not part of the interface: include text/verify.h. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <ctype.h>
#include <string.h>

#include "text/verify.h"

#define NORM_CAP (2 * VERIFY_MAX_ANSWER + 64) /* normalisation may grow a string a little (" ." → " 0.") */
#define EVAL_MAX_DEPTH 200                    /* recursion limit of the expression evaluator */
#define EQUIV_MAX_DEPTH 8                     /* nesting of tuples/sets/matrices compared */
#define EQUIV_MAX_ITEMS 64                    /* elements per tuple/set/matrix compared */
#define EQUIV_WORK_BUDGET 1000000             /* characters examined by one verify_equivalent call */
#define NUMBER_MAX_LEN 256                    /* longer digit runs are not numbers */
#define REL_TOL 1e-6

static inline bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
static inline bool starts(const char *s, size_t n, const char *lit) {
    size_t l = strlen(lit);
    return n >= l && memcmp(s, lit, l) == 0;
}

/* A growing output string in a fixed buffer; `ok` goes false (and stays) on overflow. */
typedef struct {
    char *s;
    size_t len, cap;
    bool ok;
} outbuf;

static inline void out_put(outbuf *o, const char *p, size_t n) {
    if (!o->ok) return;
    if (o->len + n + 1 > o->cap) {
        o->ok = false;
        return;
    }
    memcpy(o->s + o->len, p, n);
    o->len += n;
    o->s[o->len] = '\0';
}
static inline void out_ch(outbuf *o, char c) { out_put(o, &c, 1); }

static inline void trim_span(const char **s, size_t *n) {
    while (*n && isspace((unsigned char)**s)) (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

/* Index of the '}' matching the '{' at s[open], or -1. Raw brace counting, as in the MATH reference code. */
static inline long match_brace(const char *s, size_t n, size_t open) {
    int depth = 0;
    for (size_t i = open; i < n; i++) {
        if (s[i] == '{') depth++;
        else if (s[i] == '}' && --depth == 0) return (long)i;
    }
    return -1;
}

static inline bool is_integer_literal(const char *s, size_t n) {
    size_t i = (n && s[0] == '-') ? 1 : 0;
    if (i == n) return false;
    for (; i < n; i++)
        if (!is_digit(s[i])) return false;
    return true;
}

/* Evaluates s[0..n) (no spaces) with letter values vars[52] (a-z, A-Z; NULL: no variables allowed); *used gets a
 * bit per letter seen. False when the evaluator does not understand it or the value is not finite. */
bool verify_eval_span(const char *s, size_t n, const double *vars, double *value, uint64_t *used);
/* Canonical form of a pure number literal, in place: "025" → "25", "5.0" → "5", "0.50" → "0.5", "-0" → "0". */
void verify_canonical_number(char *s);
/* Equal within the relative tolerance REL_TOL. */
bool verify_close(double a, double b);
/* The value of variable `letter` (0..51) at generic point `point` (0..2). */
double verify_variable_value(int point, int letter);
