/* verify_eval.c: the small recursive-descent evaluator behind scalar equivalence (see verify.h). */
#include "text/verify_internal.h"

#include "core/common.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>

/* ------------------------------------------------------------------------------------------------------ */
/* expression evaluation                                                                                    */

typedef struct {
    const char *s;
    size_t i, n;
    int depth;
    const double *vars; /* [52] values of a-z, A-Z, or NULL: no variables allowed */
    uint64_t used;      /* bit per letter seen */
    bool ok;
} evaluator;

static int letter_index(char c) { return c >= 'a' && c <= 'z' ? c - 'a' : c - 'A' + 26; }

static bool ev_fail(evaluator *e) {
    e->ok = false;
    return false;
}
static bool ev_lit(evaluator *e, const char *lit) {
    while (e->i < e->n && e->s[e->i] == ' ') e->i++;
    if (!starts(e->s + e->i, e->n - e->i, lit)) return false;
    size_t l = strlen(lit);
    /* a command must not continue with letters ("\pi" is not the start of "\pin") */
    if (lit[0] == '\\' && is_letter(lit[l - 1]) && e->i + l < e->n && is_letter(e->s[e->i + l])) return false;
    e->i += l;
    return true;
}
/* The next character, skipping the single spaces normalisation leaves after a command ("\cot x"). */
static char ev_peek(evaluator *e) {
    while (e->i < e->n && e->s[e->i] == ' ') e->i++;
    return e->i < e->n ? e->s[e->i] : '\0';
}
static double ev_check(evaluator *e, double v) {
    if (!isfinite(v)) ev_fail(e);
    return v;
}

static double ev_expr(evaluator *e);
static double ev_unary(evaluator *e);
static double ev_power(evaluator *e);
static double ev_primary(evaluator *e);

static bool ev_enter(evaluator *e) {
    if (++e->depth > EVAL_MAX_DEPTH) return ev_fail(e);
    return e->ok;
}

static const char *const FUNCTIONS[] = {"\\arcsin", "\\arccos", "\\arctan", "\\sin", "\\cos", "\\tan", "\\cot",
                                        "\\sec",    "\\csc",    "\\ln",     "\\log", "\\exp"};

static bool ev_starts_primary(evaluator *e) {
    char c = ev_peek(e);
    if (is_digit(c) || is_letter(c) || c == '(' || c == '{') return true;
    if (c == '.' && e->i + 1 < e->n && is_digit(e->s[e->i + 1])) return true;
    if (c != '\\') return false;
    const char *p = e->s + e->i;
    size_t r = e->n - e->i;
    if (starts(p, r, "\\frac") || starts(p, r, "\\dfrac") || starts(p, r, "\\tfrac") || starts(p, r, "\\sqrt") ||
        starts(p, r, "\\pi"))
        return true;
    for (size_t k = 0; k < S2D_ARRAY_LEN(FUNCTIONS); k++)
        if (starts(p, r, FUNCTIONS[k])) return true;
    return false;
}

/* '{' expr '}' or '(' expr ')' */
static double ev_group(evaluator *e) {
    char open = ev_peek(e), close = open == '{' ? '}' : open == '(' ? ')' : 0;
    if (!close) return ev_fail(e), 0;
    e->i++;
    double v = ev_expr(e);
    if (!e->ok || ev_peek(e) != close) return ev_fail(e), 0;
    e->i++;
    return v;
}

/* An argument of \frac or \sqrt: a braced group, or a single digit/letter (unnormalised input). */
static double ev_arg(evaluator *e) {
    char c = ev_peek(e);
    if (c == '{') return ev_group(e);
    if (is_digit(c)) {
        e->i++;
        return c - '0';
    }
    return ev_primary(e);
}

static double ev_number(evaluator *e) {
    size_t a = e->i, i = e->i;
    while (i < e->n && is_digit(e->s[i])) i++;
    if (i < e->n && e->s[i] == '.' && i + 1 < e->n && is_digit(e->s[i + 1])) {
        i++;
        while (i < e->n && is_digit(e->s[i])) i++;
    }
    if (i < e->n && (e->s[i] == 'e' || e->s[i] == 'E')) { /* 1.5e3, 2e-4 */
        size_t j = i + 1;
        if (j < e->n && (e->s[j] == '+' || e->s[j] == '-')) j++;
        if (j < e->n && is_digit(e->s[j])) {
            while (j < e->n && is_digit(e->s[j])) j++;
            i = j;
        }
    }
    if (i == a || i - a > NUMBER_MAX_LEN) return ev_fail(e), 0;
    char buf[NUMBER_MAX_LEN + 1];
    memcpy(buf, e->s + a, i - a);
    buf[i - a] = '\0';
    e->i = i;
    return ev_check(e, strtod(buf, NULL));
}

static double ev_function(evaluator *e, size_t k) {
    double power = 1;
    if (ev_peek(e) == '^') { /* \sin^2 x */
        e->i++;
        power = ev_primary(e);
        if (!e->ok) return 0;
    }
    double x = (ev_peek(e) == '(' || ev_peek(e) == '{') ? ev_group(e) : ev_power(e);
    if (!e->ok) return 0;
    double v;
    const char *f = FUNCTIONS[k];
    if (!strcmp(f, "\\sin")) v = sin(x);
    else if (!strcmp(f, "\\cos")) v = cos(x);
    else if (!strcmp(f, "\\tan")) v = tan(x);
    else if (!strcmp(f, "\\cot")) v = cos(x) / sin(x);
    else if (!strcmp(f, "\\sec")) v = 1 / cos(x);
    else if (!strcmp(f, "\\csc")) v = 1 / sin(x);
    else if (!strcmp(f, "\\arcsin")) v = asin(x);
    else if (!strcmp(f, "\\arccos")) v = acos(x);
    else if (!strcmp(f, "\\arctan")) v = atan(x);
    else if (!strcmp(f, "\\exp")) v = exp(x);
    else v = x > 0 ? log(x) : NAN; /* \ln, \log (natural; a base needs a subscript, which fails) */
    return ev_check(e, pow(v, power));
}

static double ev_primary(evaluator *e) {
    if (!ev_enter(e)) return 0;
    double v = 0;
    char c = ev_peek(e);
    if (is_digit(c) || c == '.') {
        v = ev_number(e);
    } else if (c == '(' || c == '{') {
        v = ev_group(e);
    } else if (is_letter(c)) {
        if (e->i + 1 < e->n && is_letter(e->s[e->i + 1])) ev_fail(e); /* a word, not a product of letters */
        else if (!e->vars) ev_fail(e);
        else {
            int k = letter_index(c);
            e->used |= (uint64_t)1 << k;
            v = e->vars[k];
            e->i++;
        }
    } else if (c == '\\') {
        size_t k;
        if (ev_lit(e, "\\pi")) {
            v = M_PI;
        } else if (ev_lit(e, "\\frac") || ev_lit(e, "\\dfrac") || ev_lit(e, "\\tfrac")) {
            double a = ev_arg(e);
            double b = e->ok ? ev_arg(e) : 0;
            if (e->ok && b == 0) ev_fail(e);
            else v = ev_check(e, a / b);
        } else if (ev_lit(e, "\\sqrt")) {
            double index = 2;
            if (ev_peek(e) == '[') {
                e->i++;
                index = ev_expr(e);
                if (!e->ok || ev_peek(e) != ']') ev_fail(e);
                else e->i++;
            }
            double x = e->ok ? ev_arg(e) : 0;
            if (e->ok) {
                if (index == 2) v = x >= 0 ? sqrt(x) : NAN;
                else if (x < 0 && index == floor(index) && fmod(index, 2) != 0) v = -pow(-x, 1 / index);
                else v = x >= 0 && index != 0 ? pow(x, 1 / index) : NAN;
                v = ev_check(e, v);
            }
        } else {
            for (k = 0; k < S2D_ARRAY_LEN(FUNCTIONS); k++)
                if (ev_lit(e, FUNCTIONS[k])) break;
            if (k < S2D_ARRAY_LEN(FUNCTIONS)) v = ev_function(e, k);
            else ev_fail(e); /* \pm, \infty, \cup, ...: not a number */
        }
    } else {
        ev_fail(e);
    }
    e->depth--;
    return e->ok ? v : 0;
}

/* postfix '!' (integers 0..170) */
static double ev_postfix(evaluator *e) {
    double v = ev_primary(e);
    while (e->ok && ev_peek(e) == '!') {
        e->i++;
        if (v < 0 || v > 170 || v != floor(v)) return ev_fail(e), 0;
        double f = 1;
        for (int k = 2; k <= (int)v; k++) f *= k;
        v = f;
    }
    return v;
}

/* base ('^' exponent)? with a right-associative, optionally signed exponent */
static double ev_power(evaluator *e) {
    if (!ev_enter(e)) return 0;
    double v = ev_postfix(e);
    if (e->ok && ev_peek(e) == '^') {
        e->i++;
        double sign = 1;
        while (ev_peek(e) == '-' || ev_peek(e) == '+') sign *= ev_peek(e) == '-' ? -1 : 1, e->i++;
        double x = ev_power(e);
        if (e->ok) v = ev_check(e, pow(v, sign * x));
    }
    e->depth--;
    return e->ok ? v : 0;
}

static double ev_unary(evaluator *e) {
    if (!ev_enter(e)) return 0;
    double v;
    if (ev_peek(e) == '-') e->i++, v = -ev_unary(e);
    else if (ev_peek(e) == '+') e->i++, v = ev_unary(e);
    else v = ev_power(e);
    e->depth--;
    return e->ok ? v : 0;
}

static double ev_term(evaluator *e) {
    double v = ev_unary(e);
    while (e->ok) {
        if (ev_lit(e, "*") || ev_lit(e, "\\cdot") || ev_lit(e, "\\times") || ev_lit(e, "\\ast")) {
            v = ev_check(e, v * ev_unary(e));
        } else if (ev_lit(e, "/") || ev_lit(e, "\\div")) {
            double d = ev_unary(e);
            if (e->ok && d == 0) return ev_fail(e), 0;
            v = ev_check(e, v / d);
        } else if (ev_starts_primary(e)) {
            v = ev_check(e, v * ev_power(e)); /* implicit: 2\pi, 3\sqrt{2}, (a+5)(b+2) */
        } else {
            break;
        }
    }
    return v;
}

static double ev_expr(evaluator *e) {
    if (!ev_enter(e)) return 0;
    double v = ev_term(e);
    while (e->ok) {
        if (ev_peek(e) == '+') e->i++, v = ev_check(e, v + ev_term(e));
        else if (ev_peek(e) == '-') e->i++, v = ev_check(e, v - ev_term(e));
        else break;
    }
    e->depth--;
    return e->ok ? v : 0;
}

bool verify_eval_span(const char *s, size_t n, const double *vars, double *value, uint64_t *used) {
    evaluator e = {s, 0, n, 0, vars, 0, true};
    /* mixed number "1\frac{4}{5}" = 1 + 4/5 (MATH convention), whole string only */
    size_t d = 0, sign = (n && s[0] == '-') ? 1 : 0;
    while (sign + d < n && is_digit(s[sign + d])) d++;
    double whole = 0;
    bool mixed = false;
    if (d > 0 && d <= 18 && starts(s + sign + d, n - sign - d, "\\frac{")) {
        evaluator f = {s, sign + d, n, 0, NULL, 0, true};
        double frac = ev_primary(&f);
        size_t num_open = sign + d + 5;
        long num_close = match_brace(s, n, num_open);
        size_t den_open = num_close > 0 ? (size_t)num_close + 1 : n;
        long den_close = den_open < n && s[den_open] == '{' ? match_brace(s, n, den_open) : -1;
        bool integer_parts = num_close > 0 && is_integer_literal(s + num_open + 1, (size_t)num_close - num_open - 1) &&
                             s[num_open + 1] != '-' && den_close > 0 &&
                             is_integer_literal(s + den_open + 1, (size_t)den_close - den_open - 1) &&
                             s[den_open + 1] != '-';
        if (f.ok && f.i == n && integer_parts) {
            char buf[32];
            memcpy(buf, s + sign, d);
            buf[d] = '\0';
            whole = strtod(buf, NULL) + frac;
            mixed = true;
        }
    }
    if (mixed) {
        *value = sign ? -whole : whole;
        *used = 0;
        return true;
    }
    double v = ev_expr(&e);
    if (!e.ok || e.i != n || !isfinite(v)) return false;
    *value = v;
    *used = e.used;
    return true;
}

bool verify_eval(const char *expr, double *value) {
    size_t n = strlen(expr);
    if (n > NORM_CAP) return false;
    char s[NORM_CAP + 1];
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)expr[i])) s[w++] = expr[i];
    uint64_t used;
    return verify_eval_span(s, w, NULL, value, &used);
}

bool verify_close(double a, double b) {
    if (a == b) return true;
    return fabs(a - b) <= REL_TOL * fmax(fabs(a), fabs(b));
}

/* Three generic points per variable letter (deterministic; one all-positive, two mixed in sign). */
double verify_variable_value(int point, int letter) {
    uint64_t h = (uint64_t)(letter + 1) * 0x9E3779B97F4A7C15ull + (uint64_t)(point + 1) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 29;
    double u = (double)(h >> 11) / 9007199254740992.0; /* [0, 1) */
    double mag = 0.55 + 1.7 * u;
    if (point == 0) return mag;
    return ((h >> 7) & 1) ? -mag : mag;
}
