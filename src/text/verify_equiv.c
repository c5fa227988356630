/* verify_equiv.c: equivalence of two normalised answers (verify_equivalent): tuples, sets, intervals and
 * matrices element by element, numbers within REL_TOL, expressions by evaluation at generic points, ± expanded.
 * Recursion is depth-limited and the work per call budgeted (verify_internal.h). */
#include "text/verify_internal.h"

#include "core/common.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------------ */
/* equivalence                                                                                              */

typedef struct {
    long work;
} equiv_ctx;

typedef struct {
    size_t start[EQUIV_MAX_ITEMS], len[EQUIV_MAX_ITEMS];
    int count;
} split_list;

/* Splits s[a..b) at top-level occurrences of `sep` (depth over (), [], {}); false if too many parts or the
 * brackets go negative. */
static bool split_top(const char *s, size_t a, size_t b, const char *sep, split_list *out) {
    size_t sl = strlen(sep);
    int depth = 0;
    out->count = 0;
    size_t piece = a;
    for (size_t i = a; i < b; i++) {
        char c = s[i];
        if (c == '(' || c == '[' || c == '{') depth++;
        else if (c == ')' || c == ']' || c == '}') {
            if (--depth < 0) return false;
        } else if (depth == 0 && starts(s + i, b - i, sep)) {
            if (out->count >= EQUIV_MAX_ITEMS - 1) return false;
            out->start[out->count] = piece;
            out->len[out->count++] = i - piece;
            piece = i + sl;
            i += sl - 1;
        }
    }
    if (depth != 0) return false;
    out->start[out->count] = piece;
    out->len[out->count++] = b - piece;
    return true;
}

/* Does the bracket opening at s[0] close exactly at s[n-1]? (any of ( [ closing with ) ]) */
static bool outer_brackets(const char *s, size_t n) {
    if (n < 2 || (s[0] != '(' && s[0] != '[') || (s[n - 1] != ')' && s[n - 1] != ']')) return false;
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '(' || c == '[' || c == '{') depth++;
        else if ((c == ')' || c == ']' || c == '}') && --depth == 0) return i == n - 1;
    }
    return false;
}

static bool equiv_norm(equiv_ctx *ctx, const char *a, size_t an, const char *b, size_t bn, int depth);

static bool equiv_lists_ordered(equiv_ctx *ctx, const char *a, const split_list *la, const char *b,
                                const split_list *lb, int depth) {
    if (la->count != lb->count) return false;
    for (int k = 0; k < la->count; k++)
        if (!equiv_norm(ctx, a + la->start[k], la->len[k], b + lb->start[k], lb->len[k], depth + 1)) return false;
    return true;
}

/* Multiset match: every element of a pairs with a distinct equal element of b (greedy suffices because
 * equivalence of normalised answers is transitive in practice). */
static bool equiv_lists_unordered(equiv_ctx *ctx, const char *a, const split_list *la, const char *b,
                                  const split_list *lb, int depth) {
    if (la->count != lb->count) return false;
    bool taken[EQUIV_MAX_ITEMS] = {false};
    for (int i = 0; i < la->count; i++) {
        int found = -1;
        for (int j = 0; j < lb->count && found < 0; j++)
            if (!taken[j] && equiv_norm(ctx, a + la->start[i], la->len[i], b + lb->start[j], lb->len[j], depth + 1))
                found = j;
        if (found < 0) return false;
        taken[found] = true;
    }
    return true;
}

/* \begin{NAME}BODY\end{NAME}: body span and name span; false if not a whole matrix environment. */
static bool matrix_parts(const char *s, size_t n, size_t *name_a, size_t *name_n, size_t *body_a, size_t *body_n) {
    if (!starts(s, n, "\\begin{")) return false;
    size_t na = 7, ne = na;
    while (ne < n && is_letter(s[ne])) ne++;
    if (ne >= n || s[ne] != '}' || ne == na) return false;
    size_t nn = ne - na;
    size_t tail = 5 + nn + 1; /* "\end{" NAME "}" */
    if (n < ne + 1 + tail) return false;
    const char *t = s + n - tail;
    if (memcmp(t, "\\end{", 5) != 0 || memcmp(t + 5, s + na, nn) != 0 || t[5 + nn] != '}') return false;
    *name_a = na;
    *name_n = nn;
    *body_a = ne + 1;
    *body_n = (size_t)(t - s) - (ne + 1);
    return true;
}

/* pmatrix, bmatrix, matrix, Bmatrix are the same matrix; vmatrix (a determinant) and others are distinct. */
static int matrix_kind(const char *name, size_t n) {
    static const char *const same[] = {"pmatrix", "bmatrix", "matrix", "Bmatrix"};
    for (size_t k = 0; k < S2D_ARRAY_LEN(same); k++)
        if (strlen(same[k]) == n && memcmp(same[k], name, n) == 0) return 0;
    if (n == 7 && memcmp(name, "vmatrix", 7) == 0) return 1;
    if (n == 7 && memcmp(name, "Vmatrix", 7) == 0) return 2;
    return -1; /* any other environment: only the same name matches */
}

static bool equiv_matrix(equiv_ctx *ctx, const char *a, size_t an, const char *b, size_t bn, int depth) {
    size_t aa, al, ba, bl, ab, abn, bb, bbn;
    if (!matrix_parts(a, an, &aa, &al, &ab, &abn) || !matrix_parts(b, bn, &ba, &bl, &bb, &bbn)) return false;
    int kind_a = matrix_kind(a + aa, al), kind_b = matrix_kind(b + ba, bl);
    if (kind_a != kind_b || (kind_a < 0 && (al != bl || memcmp(a + aa, b + ba, al) != 0))) return false;
    split_list ra, rb;
    if (!split_top(a, ab, ab + abn, "\\\\", &ra) || !split_top(b, bb, bb + bbn, "\\\\", &rb)) return false;
    /* a trailing "\\" leaves an empty last row */
    if (ra.count > 1 && ra.len[ra.count - 1] == 0) ra.count--;
    if (rb.count > 1 && rb.len[rb.count - 1] == 0) rb.count--;
    if (ra.count != rb.count) return false;
    for (int r = 0; r < ra.count; r++) {
        split_list ca, cb;
        if (!split_top(a, ra.start[r], ra.start[r] + ra.len[r], "&", &ca) ||
            !split_top(b, rb.start[r], rb.start[r] + rb.len[r], "&", &cb))
            return false;
        if (!equiv_lists_ordered(ctx, a, &ca, b, &cb, depth)) return false;
    }
    return true;
}

typedef enum { K_MATRIX, K_UNION, K_SET, K_BRACKET, K_LIST, K_EQUATION, K_SCALAR } answer_kind;

static answer_kind classify(const char *s, size_t n, split_list *parts) {
    size_t x1, x2, x3, x4;
    if (matrix_parts(s, n, &x1, &x2, &x3, &x4)) return K_MATRIX;
    if (split_top(s, 0, n, "\\cup", parts) && parts->count > 1) return K_UNION;
    if (n >= 4 && starts(s, n, "\\{") && s[n - 2] == '\\' && s[n - 1] == '}' && match_brace(s, n, 1) == (long)n - 1 &&
        split_top(s, 2, n - 2, ",", parts))
        return K_SET;
    if (outer_brackets(s, n) && split_top(s, 1, n - 1, ",", parts) && parts->count > 1) return K_BRACKET;
    if (split_top(s, 0, n, ",", parts) && parts->count > 1) return K_LIST;
    if (split_top(s, 0, n, "=", parts) && parts->count == 2) return K_EQUATION;
    return K_SCALAR;
}

static bool equiv_scalar(const char *a, size_t an, const char *b, size_t bn) {
    if (is_integer_literal(a, an) && is_integer_literal(b, bn)) return false; /* equal strings handled earlier */
    double va, vb;
    uint64_t ua, ub;
    double vars[52];
    for (int k = 0; k < 52; k++) vars[k] = verify_variable_value(0, k);
    if (!verify_eval_span(a, an, vars, &va, &ua) || !verify_eval_span(b, bn, vars, &vb, &ub)) return false;
    if (ua != ub || !verify_close(va, vb)) return false;
    if (ua == 0) return true;
    /* same variables: must also agree at the two sign-mixed points; a point outside both domains (sqrt of a
     * negative on both sides) is skipped, outside only one domain means different functions */
    int agreeing = 1;
    for (int point = 1; point < 3; point++) {
        for (int k = 0; k < 52; k++) vars[k] = verify_variable_value(point, k);
        bool oka = verify_eval_span(a, an, vars, &va, &ua), okb = verify_eval_span(b, bn, vars, &vb, &ub);
        if (oka != okb) return false;
        if (!oka) continue;
        if (!verify_close(va, vb)) return false;
        agreeing++;
    }
    return agreeing >= 2;
}

static bool equiv_norm(equiv_ctx *ctx, const char *a, size_t an, const char *b, size_t bn, int depth) {
    ctx->work += (long)(an + bn) + 1;
    if (ctx->work > EQUIV_WORK_BUDGET || depth > EQUIV_MAX_DEPTH) return false;
    if (an == bn && memcmp(a, b, an) == 0) return true;
    if (an == 0 || bn == 0) return false;
    /* element strings inside structures may still carry a choice-letter or number form difference */
    split_list pa, pb;
    answer_kind ka = classify(a, an, &pa), kb = classify(b, bn, &pb);
    if (ka != kb) return false;
    switch (ka) {
    case K_MATRIX: return equiv_matrix(ctx, a, an, b, bn, depth);
    case K_UNION:
    case K_SET:
    case K_LIST: return equiv_lists_unordered(ctx, a, &pa, b, &pb, depth);
    case K_BRACKET:
        if (a[0] != b[0] || a[an - 1] != b[bn - 1]) return false; /* [a,b) is not (a,b) */
        return equiv_lists_ordered(ctx, a, &pa, b, &pb, depth);
    case K_EQUATION: return equiv_lists_ordered(ctx, a, &pa, b, &pb, depth);
    case K_SCALAR: break;
    }
    /* elements of structures are compared in normalised form of the whole; a single element such as "0.50"
     * inside a tuple gets its number canonicalised here */
    if (depth > 0 && an < NORM_CAP && bn < NORM_CAP) {
        char ea[NORM_CAP], eb[NORM_CAP];
        memcpy(ea, a, an);
        ea[an] = '\0';
        memcpy(eb, b, bn);
        eb[bn] = '\0';
        verify_canonical_number(ea);
        verify_canonical_number(eb);
        if (strcmp(ea, eb) == 0) return true;
        return equiv_scalar(ea, strlen(ea), eb, strlen(eb));
    }
    return equiv_scalar(a, an, b, bn);
}

/* "1\pm\sqrt{5}" → "1+\sqrt{5},1-\sqrt{5}", also per element of a set or a bare list ("\{1\pm\sqrt{5},-2\}").
 * Only an element with one top-level \pm whose right side is a single term is expanded. False if nothing
 * was expanded (or it does not fit). */
static bool expand_pm(const char *s, char *out, size_t cap) {
    size_t n = strlen(s), a = 0, b = n;
    bool set = n >= 4 && starts(s, n, "\\{") && s[n - 2] == '\\' && s[n - 1] == '}';
    if (set) a = 2, b = n - 2;
    split_list el;
    if (!split_top(s, a, b, ",", &el)) return false;
    outbuf o = {out, 0, cap, true};
    out[0] = '\0';
    if (set) out_put(&o, "\\{", 2);
    bool expanded = false;
    for (int k = 0; k < el.count; k++) {
        const char *e = s + el.start[k];
        size_t m = el.len[k], pm = 0;
        int count = 0, depth = 0;
        for (size_t i = 0; i < m; i++) {
            char c = e[i];
            if (c == '(' || c == '[' || c == '{') depth++;
            else if (c == ')' || c == ']' || c == '}') depth--;
            else if (depth == 0 && starts(e + i, m - i, "\\pm") && !(i + 3 < m && is_letter(e[i + 3]))) count++, pm = i;
        }
        bool single_term = count == 1 && pm + 3 < m;
        depth = 0;
        for (size_t i = pm + 4; single_term && i < m; i++) { /* "1\pm 2x+3" is ambiguous: leave it */
            char c = e[i];
            if (c == '(' || c == '[' || c == '{') depth++;
            else if (c == ')' || c == ']' || c == '}') depth--;
            else if (depth == 0 && (c == '+' || c == '-') && e[i - 1] != '^') single_term = false;
        }
        if (k) out_ch(&o, ',');
        if (!single_term) {
            out_put(&o, e, m);
            continue;
        }
        expanded = true;
        for (int sign = 0; sign < 2; sign++) {
            if (sign) out_ch(&o, ',');
            out_put(&o, e, pm);
            out_ch(&o, sign ? '-' : '+');
            out_put(&o, e + pm + 3, m - pm - 3);
        }
    }
    if (set) out_put(&o, "\\}", 2);
    return expanded && o.ok;
}

bool verify_equivalent(const char *a, const char *b) {
    char na[NORM_CAP], nb[NORM_CAP];
    if (!verify_normalize(a, na, sizeof na) || !verify_normalize(b, nb, sizeof nb)) return false;
    if (na[0] == '\0' || nb[0] == '\0') return false; /* nothing left to compare */
    equiv_ctx ctx = {0};
    if (equiv_norm(&ctx, na, strlen(na), nb, strlen(nb), 0)) return true;
    if (!strstr(na, "\\pm") && !strstr(nb, "\\pm")) return false;
    /* a \pm stands for both signs: compare the expanded lists (either side may be written out) */
    char ea[NORM_CAP], eb[NORM_CAP];
    const char *xa = expand_pm(na, ea, sizeof ea) ? ea : na;
    const char *xb = expand_pm(nb, eb, sizeof eb) ? eb : nb;
    if (xa == na && xb == nb) return false;
    return equiv_norm(&ctx, xa, strlen(xa), xb, strlen(xb), 0);
}

