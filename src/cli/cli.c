#include "cli/cli.h"

#include "core/log.h"
#include "ops/ops.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

void jsonl_reader_init(jsonl_reader *r, FILE *fp, const char *name) {
    r->fp = fp;
    r->name = name;
    r->lineno = 0;
    r->buf = NULL;
    r->cap = 0;
}

cJSON *jsonl_next(jsonl_reader *r) {
    for (;;) {
        ssize_t len = getline(&r->buf, &r->cap, r->fp);
        if (len < 0) return NULL;
        r->lineno++;
        const char *p = r->buf;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (*p == '\0') continue; /* blank line */
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithOpts(r->buf, &end, 0);
        if (!j) {
            long col = end ? (long)(end - r->buf) + 1 : 0;
            die("%s:%ld: invalid JSON near column %ld", r->name, r->lineno, col);
        }
        while (end && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
        if (end && *end != '\0') {
            cJSON_Delete(j);
            die("%s:%ld: trailing characters after the JSON value (one value per line)", r->name, r->lineno);
        }
        return j;
    }
}

void jsonl_reader_free(jsonl_reader *r) {
    free(r->buf);
    r->buf = NULL;
}

int32_t *json_int_array(const cJSON *j, int *n, const jsonl_reader *where) {
    if (!cJSON_IsArray(j)) die("%s:%ld: expected a JSON array of token ids", where->name, where->lineno);
    int count = cJSON_GetArraySize(j);
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)(count > 0 ? count : 1));
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        double v = cJSON_IsNumber(e) ? e->valuedouble : NAN;
        if (!(v >= INT32_MIN && v <= INT32_MAX) || v != floor(v))
            die("%s:%ld: element %d is not an integer token id", where->name, where->lineno, i);
        ids[i++] = (int32_t)v;
    }
    /* cJSON reads 2.0 and 2e0 as the integer 2: a token id is written as an integer, so refuse the source
     * text's fractions and exponents (the array holds only numbers here, so any '.', 'e', 'E' is one) */
    if (where->buf) {
        int elem = 0;
        for (const char *p = where->buf; *p; p++) {
            if (*p == ',') elem++;
            else if (*p == '.' || *p == 'e' || *p == 'E')
                die("%s:%ld: element %d is not an integer token id (written with a fraction or exponent)",
                    where->name, where->lineno, elem);
        }
    }
    *n = count;
    return ids;
}

void print_int_array(FILE *out, const int32_t *v, int n) {
    fputc('[', out);
    for (int i = 0; i < n; i++) fprintf(out, i ? ",%d" : "%d", v[i]);
    fputs("]\n", out);
}

void print_float_array(FILE *out, const float *v, int n) {
    fputc('[', out);
    for (int i = 0; i < n; i++) {
        if (i) fputc(',', out);
        if (isfinite(v[i])) fprintf(out, "%.9g", (double)v[i]);
        else fputs(v[i] < 0 ? "-1e999" : "1e999", out); /* JSON has no inf; NaN never expected here */
    }
    fputs("]\n", out);
}

void cli_options_reset(void) { optind = 0; } /* 0: glibc re-initialises its scan (and permutation) */

int cli_option(const char *cmd, int argc, char **argv, const struct option *opts, void (*usage)(FILE *),
               const char **value, const char **flag) {
    static char name[96];
    opterr = 0; /* our messages, not getopt's */
    int index = -1;
    int c = getopt_long(argc, argv, ":h", opts, &index);
    *value = optarg;
    *flag = name;
    if (c == -1) return -1;
    const char *arg = argv[optind - 1] ? argv[optind - 1] : "";
    if (index >= 0) snprintf(name, sizeof name, "--%s", opts[index].name);
    else snprintf(name, sizeof name, "%.*s", (int)strcspn(arg, "="), arg);
    if (c == 'h') return 'h';
    if (c == ':') die("%s: %s needs a value", cmd, name);
    if (c == '?') {
        if (optopt && index < 0) { /* a long flag given "=value", or an unknown short option */
            for (int i = 0; opts[i].name; i++)
                if (opts[i].val == optopt && opts[i].has_arg == no_argument) die("%s: %s takes no value", cmd, name);
        }
        if (usage) usage(stderr);
        die("%s: unknown option '%s'", cmd, name);
    }
    return c;
}

long flag_long(const char *flag, const char *value, long min, long max) {
    if (!value) die("%s needs a value", flag);
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end != '\0') die("%s: '%s' is not an integer", flag, value);
    if (v < min || v > max) die("%s: %ld is out of range [%ld, %ld]", flag, v, min, max);
    return v;
}

double flag_double(const char *flag, const char *value, double min, double max) {
    if (!value) die("%s needs a value", flag);
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end != '\0' || !isfinite(v)) die("%s: '%s' is not a number", flag, value);
    if (v < min || v > max) die("%s: %g is out of range [%g, %g]", flag, v, min, max);
    return v;
}

void cli_use_device(const char *spec) {
    ops_queue *q;
    s2d_err err;
    if (!ops_open(spec, &q, &err)) die_hint("s2d devices", "--device: %s", err.msg);
    ops_set_default(q);
    log_info("device: %s (%s backend)", q->name, ops_backend_name(q->be));
}
