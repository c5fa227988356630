/* verify.c: answer extraction, normalisation and equivalence for the sparse reward (see verify.h).
 * Every pass is linear in its input; recursion is depth-limited; total comparison work is budgeted. */
#include "text/verify_internal.h"

#include "core/common.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------------ */
/* small string helpers (more in verify_internal.h)                                                        */


/* Copies a string of cap NORM_CAP through `tmp`, replacing every `from` with `to`. */
static bool replace_all(char *s, char *tmp, const char *from, const char *to) {
    size_t fl = strlen(from), tl = strlen(to), n = strlen(s);
    if (!strstr(s, from)) return true;
    outbuf o = {tmp, 0, NORM_CAP, true};
    tmp[0] = '\0';
    for (size_t i = 0; i < n;) {
        if (starts(s + i, n - i, from)) {
            out_put(&o, to, tl);
            i += fl;
        } else {
            out_ch(&o, s[i++]);
        }
    }
    if (!o.ok) return false;
    memcpy(s, tmp, o.len + 1);
    return true;
}


/* ------------------------------------------------------------------------------------------------------ */
/* extraction                                                                                               */

bool verify_extract_boxed(const char *text, size_t len, const char **start, size_t *n) {
    /* Walk the occurrences from the last one back; the first usable one wins. */
    for (size_t pos = len; pos > 0;) {
        pos--;
        if (text[pos] != '\\' || pos + 1 >= len || (text[pos + 1] != 'b' && text[pos + 1] != 'f')) continue;
        size_t name = 0;
        if (starts(text + pos, len - pos, "\\boxed")) name = 6;
        else if (starts(text + pos, len - pos, "\\fbox")) name = 5;
        else continue;
        size_t i = pos + name;
        if (i < len && text[i] == '{') {
            long close = match_brace(text, len, i);
            if (close < 0) return false; /* the last box is unbalanced: no answer */
            *start = text + i + 1;
            *n = (size_t)close - i - 1;
            return true;
        }
        if (i < len && text[i] == ' ') { /* "\boxed 5": up to the next '$' or the end */
            while (i < len && text[i] == ' ') i++;
            if (i < len && text[i] == '{') { /* "\boxed {5}" */
                long close = match_brace(text, len, i);
                if (close < 0) return false;
                *start = text + i + 1;
                *n = (size_t)close - i - 1;
                return true;
            }
            size_t j = i;
            while (j < len && text[j] != '$') j++;
            const char *s = text + i;
            size_t m = j - i;
            trim_span(&s, &m);
            if (m == 0) continue;
            *start = s;
            *n = m;
            return true;
        }
        /* "\boxedfoo" or "\boxed" at the end: not a box, keep looking further back */
    }
    return false;
}

/* ------------------------------------------------------------------------------------------------------ */
/* normalisation                                                                                            */

/* Removes `\name{X}` wrappers (keeping X) for text-like commands, repeatedly (bounded). */
static bool unwrap_text_commands(char *s, char *tmp) {
    static const char *const names[] = {"\\text",   "\\textbf", "\\textrm",   "\\textit", "\\mbox",
                                        "\\mathrm", "\\mathbf", "\\textnormal", "\\mathit", "\\operatorname"};
    for (int round = 0; round < 64; round++) {
        size_t n = strlen(s);
        bool changed = false;
        for (size_t i = 0; i < n && !changed; i++) {
            if (s[i] != '\\') continue;
            for (size_t k = 0; k < S2D_ARRAY_LEN(names); k++) {
                size_t l = strlen(names[k]);
                if (!starts(s + i, n - i, names[k]) || i + l >= n || s[i + l] != '{') continue;
                long close = match_brace(s, n, i + l);
                if (close < 0) continue;
                /* s[0..i) + content + s[close+1..n) */
                outbuf o = {tmp, 0, NORM_CAP, true};
                out_put(&o, s, i);
                out_put(&o, s + i + l + 1, (size_t)close - (i + l + 1));
                out_put(&o, s + close + 1, n - (size_t)close - 1);
                if (!o.ok) return false;
                memcpy(s, tmp, o.len + 1);
                changed = true;
                break;
            }
        }
        if (!changed) return true;
    }
    return true;
}

/* "\sqrt3" → "\sqrt{3}", "\sqrt\pi" → "\sqrt{\pi}" (fix_sqrt). */
static bool fix_sqrt(char *s, char *tmp) {
    size_t n = strlen(s);
    if (!strstr(s, "\\sqrt")) return true;
    outbuf o = {tmp, 0, NORM_CAP, true};
    for (size_t i = 0; i < n;) {
        if (!starts(s + i, n - i, "\\sqrt")) {
            out_ch(&o, s[i++]);
            continue;
        }
        out_put(&o, "\\sqrt", 5);
        i += 5;
        size_t j = i;
        while (j < n && s[j] == ' ') j++;
        if (j >= n || s[j] == '{' || s[j] == '[') continue;
        if (s[j] == '\\') {
            size_t k = j + 1;
            while (k < n && is_letter(s[k])) k++;
            if (k == j + 1) continue;
            out_ch(&o, '{');
            out_put(&o, s + j, k - j);
            out_ch(&o, '}');
            i = k;
        } else if (isalnum((unsigned char)s[j])) {
            out_ch(&o, '{');
            out_ch(&o, s[j]);
            out_ch(&o, '}');
            i = j + 1;
        }
    }
    if (!o.ok) return false;
    memcpy(s, tmp, o.len + 1);
    return true;
}

/* Braces both arguments of every \frac: "\frac12" → "\frac{1}{2}", "\frac{270}7" → "\frac{270}{7}"
 * (fix_fracs, generalised). Recurses into braced arguments (depth-limited). */
static void fix_fracs_range(const char *s, size_t a, size_t b, outbuf *o, int depth) {
    for (size_t i = a; i < b && o->ok;) {
        if (!(depth < 32 && starts(s + i, b - i, "\\frac") && !(i + 5 < b && is_letter(s[i + 5])))) {
            out_ch(o, s[i++]);
            continue;
        }
        out_put(o, "\\frac", 5);
        i += 5;
        for (int arg = 0; arg < 2 && i < b; arg++) {
            if (s[i] == '{') {
                long close = match_brace(s, b, i);
                if (close < 0) break; /* unbalanced: copy the rest as is */
                out_ch(o, '{');
                fix_fracs_range(s, i + 1, (size_t)close, o, depth + 1);
                out_ch(o, '}');
                i = (size_t)close + 1;
            } else if (s[i] == '\\') {
                size_t k = i + 1;
                while (k < b && is_letter(s[k])) k++;
                if (k == i + 1) break;
                out_ch(o, '{');
                out_put(o, s + i, k - i);
                out_ch(o, '}');
                i = k;
            } else if (s[i] == '}' || s[i] == '^' || s[i] == '_') {
                break;
            } else {
                out_ch(o, '{');
                out_ch(o, s[i]);
                out_ch(o, '}');
                i++;
            }
        }
    }
}

static bool fix_fracs(char *s, char *tmp) {
    if (!strstr(s, "\\frac")) return true;
    outbuf o = {tmp, 0, NORM_CAP, true};
    tmp[0] = '\0';
    fix_fracs_range(s, 0, strlen(s), &o, 0);
    if (!o.ok) return false;
    memcpy(s, tmp, o.len + 1);
    return true;
}

/* -?digits only. */

/* -?digits.digits */
static bool is_decimal_literal(const char *s, size_t n) {
    size_t i = (n && s[0] == '-') ? 1 : 0, digits = 0, dots = 0;
    if (i == n) return false;
    for (; i < n; i++) {
        if (is_digit(s[i])) digits++;
        else if (s[i] == '.' && dots == 0) dots++;
        else return false;
    }
    return digits > 0;
}

/* "1,000" / "11,111,111,100" / "1,234.5" → commas dropped; "1,2" and "(1,234)" are left alone. */
static void drop_thousands_separators(char *s) {
    size_t n = strlen(s), i = (s[0] == '-') ? 1 : 0, lead = 0;
    while (i < n && is_digit(s[i])) i++, lead++;
    if (lead < 1 || lead > 3 || i >= n || s[i] != ',') return;
    while (i < n && s[i] == ',') {
        for (int k = 1; k <= 3; k++)
            if (i + (size_t)k >= n || !is_digit(s[i + k])) return;
        i += 4;
        if (i < n && is_digit(s[i])) return; /* a group of more than 3 digits */
    }
    if (i < n) {
        if (s[i] != '.') return;
        size_t j = i + 1;
        if (j >= n) return;
        for (; j < n; j++)
            if (!is_digit(s[j])) return;
    }
    size_t w = 0;
    for (size_t r = 0; r < n; r++)
        if (s[r] != ',') s[w++] = s[r];
    s[w] = '\0';
}

/* Canonical form of a pure number literal: "025" → "25", "5.0" → "5", "0.50" → "0.5", "-0" → "0". */
void verify_canonical_number(char *s) {
    size_t n = strlen(s);
    if (!is_decimal_literal(s, n)) return;
    bool neg = s[0] == '-';
    char *d = s + (neg ? 1 : 0);
    size_t m = strlen(d);
    char *dot = memchr(d, '.', m);
    if (dot) { /* trailing zeros of the fraction, then a bare '.' */
        while (m > 0 && d[m - 1] == '0') d[--m] = '\0';
        if (m > 0 && d[m - 1] == '.') d[--m] = '\0';
    }
    size_t lead = 0; /* leading zeros, keeping one before '.' or alone */
    while (lead + 1 < m && d[lead] == '0' && d[lead + 1] != '.') lead++;
    if (lead) memmove(d, d + lead, m - lead + 1), m -= lead;
    if (m == 0) strcpy(d, "0"), m = 1;
    if (d[0] == '.') { /* ".5" */
        memmove(d + 1, d, m + 1);
        d[0] = '0';
        m++;
    }
    if (neg && strcmp(d, "0") == 0) memmove(s, d, 2);
}

bool verify_normalize(const char *answer, char *out, size_t cap) {
    size_t n = strlen(answer);
    if (n > VERIFY_MAX_ANSWER || cap == 0) return false;
    char s[NORM_CAP], tmp[NORM_CAP];
    /* linebreaks and tabs go; "\\" before a letter is a doubled escape ("\\frac"), before anything else it
     * is a matrix row break and is kept (the MATH code turns every "\\" into "\"). */
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        char c = answer[i];
        if (c == '\n' || c == '\r') continue;
        if (c == '\t') c = ' ';
        if (c == '\\' && i + 1 < n && answer[i + 1] == '\\') { /* a pair: row break or doubled escape */
            if (i + 2 < n && is_letter(answer[i + 2])) {
                s[w++] = '\\';
            } else {
                s[w++] = '\\';
                s[w++] = '\\';
            }
            i++;
            continue;
        }
        if (c == '\\' && i + 1 < n && answer[i + 1] == ' ') { /* "\ " is a space */
            s[w++] = ' ';
            i++;
            continue;
        }
        s[w++] = c;
    }
    s[w] = '\0';
    static const char *const drop[] = {"\\!", "\\displaystyle", "\\left", "\\right", "^{\\circ}", "^\\circ",
                                       "^{\\degree}", "^\\degree", "\\degree", "\\circ", "\xc2\xb0", "\\$",
                                       "$", "\\,", "\\;", "\\:", "\\quad", "\\qquad", "\\limits"};
    static const char *const repl[][2] = {{"tfrac", "frac"}, {"dfrac", "frac"}, {"~", " "},
                                          {"\\le ", "\\le"}, {"\\leq", "\\le"}, {"\\ge ", "\\ge"},
                                          {"\\geq", "\\ge"}, {"\\neq", "\\ne"}};
    for (size_t k = 0; k < S2D_ARRAY_LEN(repl); k++)
        if (!replace_all(s, tmp, repl[k][0], repl[k][1])) return false;
    for (size_t k = 0; k < S2D_ARRAY_LEN(drop); k++)
        if (!replace_all(s, tmp, drop[k], "")) return false;
    /* units: "5.4 \text{ cents}" → "5.4 " (remove_right_units) */
    static const char *const unit_marks[] = {"\\text{ ", "\\mbox{ ", "\\textrm{ "};
    for (size_t k = 0; k < S2D_ARRAY_LEN(unit_marks); k++) {
        char *u = strstr(s, unit_marks[k]);
        if (u && u != s) *u = '\0';
    }
    if (!unwrap_text_commands(s, tmp)) return false;
    if (!replace_all(s, tmp, "\\%", "") || !replace_all(s, tmp, "%", "")) return false;
    if (!replace_all(s, tmp, " .", " 0.") || !replace_all(s, tmp, "{.", "{0.")) return false;
    /* trim */
    {
        const char *p = s;
        size_t m = strlen(s);
        trim_span(&p, &m);
        memmove(s, p, m);
        s[m] = '\0';
    }
    if (s[0] == '.') {
        size_t m = strlen(s);
        if (m + 2 > NORM_CAP) return false;
        memmove(s + 1, s, m + 1);
        s[0] = '0';
    }
    /* "x = 5", "k=5": a short left-hand side goes */
    {
        char *eq = strchr(s, '=');
        if (eq && !strchr(eq + 1, '=')) {
            size_t lhs = 0;
            for (char *p = s; p < eq; p++)
                if (*p != ' ') lhs++;
            if (lhs <= 2) memmove(s, eq + 1, strlen(eq + 1) + 1);
        }
    }
    if (!fix_sqrt(s, tmp)) return false;
    /* spaces go, except one between a command and a letter ("\cot x" must not become the unknown "\cotx") */
    w = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] != ' ') {
            s[w++] = s[i];
            continue;
        }
        size_t k = w;
        while (k > 0 && is_letter(s[k - 1])) k--;
        size_t next = i;
        while (s[next] == ' ') next++;
        if (k > 0 && k < w && s[k - 1] == '\\' && is_letter(s[next])) s[w++] = ' ';
        i = next - 1;
    }
    s[w] = '\0';
    /* "x\in[-2,7]" → "[-2,7]" */
    if (is_letter(s[0]) && starts(s + 1, strlen(s + 1), "\\in") && !is_letter(s[4])) memmove(s, s + 4, strlen(s + 4) + 1);
    if (!fix_fracs(s, tmp)) return false;
    /* "4210_{5}" → "4210_5": braces around a one-character subscript */
    w = 0;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] == '_' && s[i + 1] == '{' && s[i + 2] && isalnum((unsigned char)s[i + 2]) && s[i + 3] == '}') {
            s[w++] = '_';
            s[w++] = s[i + 2];
            i += 3;
        } else {
            s[w++] = s[i];
        }
    }
    s[w] = '\0';
    /* a sentence-ending period: "5." */
    w = strlen(s);
    if (w > 1 && s[w - 1] == '.' && s[w - 2] != '.') s[--w] = '\0';
    drop_thousands_separators(s);
    verify_canonical_number(s);
    if (strcmp(s, "0.5") == 0) strcpy(s, "\\frac{1}{2}");
    /* fix_a_slash_b: "3/4" → "\frac{3}{4}" (integers only) */
    {
        char *slash = strchr(s, '/');
        if (slash && is_integer_literal(s, (size_t)(slash - s)) && is_integer_literal(slash + 1, strlen(slash + 1)) &&
            slash[1] != '-') {
            bool neg = s[0] == '-';
            char num[NORM_CAP];
            size_t nl = (size_t)(slash - s) - (neg ? 1 : 0);
            memcpy(num, s + (neg ? 1 : 0), nl);
            num[nl] = '\0';
            int r = snprintf(tmp, NORM_CAP, "%s\\frac{%s}{%s}", neg ? "-" : "", num, slash + 1);
            if (r < 0 || (size_t)r >= NORM_CAP) return false;
            memcpy(s, tmp, (size_t)r + 1);
        }
    }
    /* "(C)" → "C": a parenthesised single choice letter */
    if (s[0] == '(' && is_letter(s[1]) && s[1] >= 'A' && s[1] <= 'Z' && s[2] == ')' && s[3] == '\0') {
        s[0] = s[1];
        s[1] = '\0';
    }
    size_t m = strlen(s);
    if (m + 1 > cap) return false;
    memcpy(out, s, m + 1);
    return true;
}

/* ------------------------------------------------------------------------------------------------------ */
/* results                                                                                                  */

/* Copies s[0..n) into the result, cut on a UTF-8 boundary if too long. */
static void set_extracted(verify_result *out, const char *s, size_t n) {
    out->has_extracted = true;
    if (n > VERIFY_MAX_ANSWER) {
        n = VERIFY_MAX_ANSWER;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--; /* s[n] continues a sequence: back off */
    }
    memcpy(out->extracted, s, n);
    out->extracted[n] = '\0';
}

static void result_clear(verify_result *out) {
    out->correct = false;
    out->has_extracted = false;
    out->extracted[0] = '\0';
}

void verify_math(const char *response, const char *answer, verify_result *out) {
    result_clear(out);
    const char *box;
    size_t n;
    if (!verify_extract_boxed(response, strlen(response), &box, &n)) return;
    set_extracted(out, box, n);
    if (n > VERIFY_MAX_ANSWER) return;
    const char *ref = answer, *rbox;
    size_t rn = strlen(answer);
    if (verify_extract_boxed(answer, rn, &rbox, &rn)) ref = rbox;
    if (rn > VERIFY_MAX_ANSWER) return;
    char refbuf[VERIFY_MAX_ANSWER + 1];
    memcpy(refbuf, ref, rn);
    refbuf[rn] = '\0';
    out->correct = verify_equivalent(out->extracted, refbuf);
}

/* The number token starting at s[i] (with optional '-' handled by the caller): [0-9,]*(.[0-9]+)? Returns its
 * end; the token must contain a digit. */
static size_t number_end(const char *s, size_t n, size_t i) {
    size_t j = i;
    bool dot = false;
    while (j < n) {
        if (is_digit(s[j])) j++;
        else if (s[j] == ',' && j + 1 < n && is_digit(s[j + 1]) && j > i) j++;
        else if (s[j] == '.' && !dot && j + 1 < n && is_digit(s[j + 1])) dot = true, j++;
        else break;
    }
    return j;
}

/* Cleans a number token into out: commas dropped. False if empty or too long. */
static bool clean_number(const char *s, size_t n, char *out, size_t cap) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ',') continue;
        if (w + 2 > cap || w >= NUMBER_MAX_LEN) return false;
        out[w++] = s[i];
    }
    out[w] = '\0';
    return w > 0 && out[w - 1] != '-';
}

/* Last number in s[a..b) into out. */
static bool last_number(const char *s, size_t a, size_t b, char *out, size_t cap) {
    size_t best_a = 0, best_n = 0;
    bool found = false;
    for (size_t i = a; i < b;) {
        bool digit_start = is_digit(s[i]) || (s[i] == '.' && i + 1 < b && is_digit(s[i + 1]));
        if (!digit_start) {
            i++;
            continue;
        }
        size_t j = number_end(s, b, i);
        if (j == i) { /* a lone '.' */
            i++;
            continue;
        }
        size_t st = i;
        if (st > a && s[st - 1] == '-' && (st - 1 == a || !isalnum((unsigned char)s[st - 2]))) st--;
        if (j - st <= NUMBER_MAX_LEN) best_a = st, best_n = j - st, found = true;
        i = j;
    }
    return found && clean_number(s + best_a, best_n, out, cap);
}

/* The "####" rule: the number right after the last "####" (spaces, '$' skipped). */
static bool hash_number(const char *s, size_t n, char *out, size_t cap) {
    const char *last = NULL; /* one backward scan (repeated strstr would be quadratic on "#### #### ...") */
    for (size_t i = n; i >= 4 && !last; i--)
        if (s[i - 1] == '#' && s[i - 2] == '#' && s[i - 3] == '#' && s[i - 4] == '#') last = s + i - 4;
    if (!last) return false;
    size_t i = (size_t)(last - s) + 4;
    while (i < n && (s[i] == ' ' || s[i] == '$' || s[i] == '#')) i++;
    size_t st = i;
    if (i < n && s[i] == '-') i++;
    size_t j = number_end(s, n, i);
    if (j == i || j - st > NUMBER_MAX_LEN) return false;
    return clean_number(s + st, j - st, out, cap);
}

bool verify_gsm8k_extract(const char *response, char *out, size_t cap) {
    size_t n = strlen(response);
    if (hash_number(response, n, out, cap)) return true;
    const char *box;
    size_t bn;
    if (verify_extract_boxed(response, n, &box, &bn)) {
        size_t a = (size_t)(box - response);
        if (last_number(response, a, a + bn, out, cap)) return true;
    }
    return last_number(response, 0, n, out, cap);
}

/* Numeric equality of two cleaned number strings: integers exactly, others to REL_TOL. */
static bool gsm8k_numbers_equal(const char *a, const char *b) {
    char ca[NUMBER_MAX_LEN + 2], cb[NUMBER_MAX_LEN + 2];
    snprintf(ca, sizeof ca, "%s", a);
    snprintf(cb, sizeof cb, "%s", b);
    verify_canonical_number(ca);
    verify_canonical_number(cb);
    if (!is_decimal_literal(ca, strlen(ca)) || !is_decimal_literal(cb, strlen(cb))) return false;
    if (strcmp(ca, cb) == 0) return true;
    if (is_integer_literal(ca, strlen(ca)) && is_integer_literal(cb, strlen(cb))) return false;
    double x = strtod(ca, NULL), y = strtod(cb, NULL);
    return isfinite(x) && isfinite(y) && verify_close(x, y);
}

void verify_gsm8k(const char *response, const char *answer, verify_result *out) {
    result_clear(out);
    char pred[NUMBER_MAX_LEN + 2], ref[NUMBER_MAX_LEN + 2];
    if (!verify_gsm8k_extract(response, pred, sizeof pred)) return;
    set_extracted(out, pred, strlen(pred));
    size_t an = strlen(answer);
    if (!hash_number(answer, an, ref, sizeof ref)) {
        /* the whole answer string: "18", "$1,000", " 42 " */
        const char *p = answer;
        trim_span(&p, &an);
        while (an && (*p == '$')) p++, an--;
        while (an && (p[an - 1] == '.')) an--;
        size_t st = (an && p[0] == '-') ? 1 : 0;
        if (number_end(p, an, st) != an || an == st || !clean_number(p, an, ref, sizeof ref)) return;
    }
    out->correct = gsm8k_numbers_equal(pred, ref);
}

void verify_answer(verify_mode mode, const char *response, const char *answer, verify_result *out) {
    if (mode == VERIFY_MODE_GSM8K) verify_gsm8k(response, answer, out);
    else verify_math(response, answer, out);
}

bool verify_mode_parse(const char *name, verify_mode *mode) {
    if (strcmp(name, "math") == 0) *mode = VERIFY_MODE_MATH;
    else if (strcmp(name, "gsm8k") == 0) *mode = VERIFY_MODE_GSM8K;
    else return false;
    return true;
}
