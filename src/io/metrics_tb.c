/* metrics_tb.c: the metrics.jsonl → TensorBoard mirror (a flat JSON scanner that allocates nothing). */
#include "io/metrics_tb.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEY_CAP 128

struct metrics_tb {
    tb_writer *w;
    int fd;                 /* the followed metrics file */
    char path[4096];
    long line_no;           /* lines mirrored so far */
    size_t have;            /* bytes of an incomplete line kept in buf */
    char buf[METRICS_TB_MAX_LINE];
    char tags[TB_MAX_SCALARS][TB_MAX_TAG + 1];
    const char *tag_ptrs[TB_MAX_SCALARS];
    float values[TB_MAX_SCALARS];
};

/* ---- a scanner for the flat objects of metrics.jsonl: string keys; number, string, null, true, false values
 * (nested objects and arrays are skipped) ---- */
typedef struct {
    const char *p, *end;
} scan;

static void ws(scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\r' || *s->p == '\n')) s->p++;
}

/* Four hex digits at p, or -1. */
static long hex4(const char *p) {
    long v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A JSON string at s->p into out [cap], unescaped (\uXXXX, surrogate pairs included, as UTF-8). */
static bool scan_string(scan *s, char *out, size_t cap) {
    if (s->p >= s->end || *s->p != '"') return false;
    s->p++;
    size_t n = 0;
    while (s->p < s->end && *s->p != '"') {
        char c = *s->p++;
        if (c == '\\') {
            if (s->p >= s->end) return false;
            char e = *s->p++;
            if (e == 'u') {
                long cp = s->end - s->p >= 4 ? hex4(s->p) : -1;
                if (cp < 0) return false;
                s->p += 4;
                if (cp >= 0xD800 && cp < 0xDC00) { /* a high surrogate: its low half must follow */
                    long lo = s->end - s->p >= 6 && s->p[0] == '\\' && s->p[1] == 'u' ? hex4(s->p + 2) : -1;
                    if (lo < 0xDC00 || lo >= 0xE000) return false;
                    s->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp < 0xE000) {
                    return false;
                }
                unsigned char u[4];
                int k = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
                if (k == 1) u[0] = (unsigned char)cp;
                else if (k == 2) u[0] = (unsigned char)(0xC0 | cp >> 6), u[1] = (unsigned char)(0x80 | (cp & 63));
                else if (k == 3)
                    u[0] = (unsigned char)(0xE0 | cp >> 12), u[1] = (unsigned char)(0x80 | (cp >> 6 & 63)),
                    u[2] = (unsigned char)(0x80 | (cp & 63));
                else
                    u[0] = (unsigned char)(0xF0 | cp >> 18), u[1] = (unsigned char)(0x80 | (cp >> 12 & 63)),
                    u[2] = (unsigned char)(0x80 | (cp >> 6 & 63)), u[3] = (unsigned char)(0x80 | (cp & 63));
                if (n + (size_t)k >= cap) return false;
                for (int i = 0; i < k; i++) out[n++] = (char)u[i];
                continue;
            }
            c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : e;
        }
        if (n + 1 >= cap) return false;
        out[n++] = c;
    }
    if (s->p >= s->end) return false;
    s->p++;
    out[n] = '\0';
    return true;
}

/* Skips a nested object or array (strings may hold brackets). */
static bool skip_nested(scan *s) {
    int depth = 0;
    bool in_str = false;
    for (; s->p < s->end; s->p++) {
        char c = *s->p;
        if (in_str) {
            if (c == '\\') s->p++;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            s->p++;
            return true;
        }
    }
    return false;
}

static bool literal(scan *s, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || strncmp(s->p, word, n) != 0) return false;
    s->p += n;
    return true;
}

int metrics_tb_record(const char *line, size_t n, char (*tags)[TB_MAX_TAG + 1], float *values, int cap,
                      int64_t *global_step, s2d_err *err) {
    scan s = {line, line + n};
    char key[KEY_CAP], str[KEY_CAP], stage[KEY_CAP] = "", event[KEY_CAP] = "";
    int count = 0;
    bool has_step = false;
    ws(&s);
    if (s.p >= s.end || *s.p++ != '{') return err_set(err, "not a JSON object"), -1;
    ws(&s);
    if (s.p < s.end && *s.p == '}') s.p++;
    else {
        for (;;) {
            ws(&s);
            if (!scan_string(&s, key, sizeof key)) return err_set(err, "expected a key (a string of < %d bytes)", KEY_CAP), -1;
            ws(&s);
            if (s.p >= s.end || *s.p++ != ':') return err_set(err, "expected ':' after \"%s\"", key), -1;
            ws(&s);
            if (s.p >= s.end) return err_set(err, "\"%s\" has no value", key), -1;
            char c = *s.p;
            if (c == '"') {
                if (!scan_string(&s, str, sizeof str)) return err_set(err, "\"%s\": bad or over-long string", key), -1;
                if (strcmp(key, "stage") == 0) snprintf(stage, sizeof stage, "%s", str);
                if (strcmp(key, "event") == 0) snprintf(event, sizeof event, "%s", str);
            } else if (c == '{' || c == '[') {
                if (!skip_nested(&s)) return err_set(err, "\"%s\": unterminated value", key), -1;
            } else if (literal(&s, "null") || literal(&s, "true") || literal(&s, "false")) {
                /* not a scalar */
            } else {
                char num[64];
                size_t k = 0;
                while (s.p < s.end && k + 1 < sizeof num && strchr("+-.eE0123456789", *s.p)) num[k++] = *s.p++;
                num[k] = '\0';
                char *e;
                double v = strtod(num, &e);
                if (k == 0 || *e != '\0') return err_set(err, "\"%s\": not a number", key), -1;
                if (strcmp(key, "global_step") == 0) {
                    *global_step = (int64_t)v, has_step = true;
                } else if (strcmp(key, "step") != 0) {
                    if (count >= cap) return err_set(err, "more than %d numbers in one record", cap), -1;
                    snprintf(tags[count], TB_MAX_TAG + 1, "%s", key); /* the tag is made once stage is known */
                    values[count++] = (float)v;
                }
            }
            ws(&s);
            if (s.p < s.end && *s.p == ',') {
                s.p++;
                continue;
            }
            if (s.p < s.end && *s.p == '}') {
                s.p++;
                break;
            }
            return err_set(err, "expected ',' or '}' after \"%s\"", key), -1;
        }
    }
    ws(&s);
    if (s.p != s.end) return err_set(err, "text after the object"), -1;
    if (!stage[0] || !has_step) return 0;
    for (int i = 0; i < count; i++) {
        snprintf(key, sizeof key, "%s", tags[i]);
        /* eval lines of runs before the rename named their problem count "samples": one tag for both */
        if (strcmp(event, "eval") == 0 && strcmp(key, "samples") == 0) snprintf(key, sizeof key, "problems");
        int len = snprintf(tags[i], TB_MAX_TAG + 1, "%s/%s%s%s", stage, event, event[0] ? "_" : "", key);
        if (len > TB_MAX_TAG) return err_set(err, "tag %s/%s%s%s is longer than %d bytes", stage, event, event[0] ? "_" : "", key, TB_MAX_TAG), -1;
    }
    return count;
}

bool tb_remove_event_files(const char *dir, const char *keep, int *removed, s2d_err *err) {
    *removed = 0;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? true : err_set(err, "%s: cannot read: %s", dir, strerror(errno));
    struct dirent *e;
    char p[4096];
    bool ok = true;
    while (ok && (e = readdir(d))) {
        if (strncmp(e->d_name, "events.out.tfevents.", 20) != 0 || (keep && strcmp(e->d_name, keep) == 0)) continue;
        path_join(p, sizeof p, dir, e->d_name);
        if (unlink(p) != 0) ok = err_set(err, "%s: cannot remove: %s", p, strerror(errno));
        else (*removed)++;
    }
    closedir(d);
    return ok;
}

metrics_tb *metrics_tb_open(const char *tb_dir, const char *jsonl_path, s2d_err *err) {
    metrics_tb *m = xcalloc(1, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", jsonl_path);
    if ((m->fd = open_regular(jsonl_path, err)) < 0) return free(m), NULL;
    if (!(m->w = tb_open(tb_dir, err))) return close(m->fd), free(m), NULL;
    int removed;
    if (!tb_remove_event_files(tb_dir, tb_file_name(m->w), &removed, err)) {
        tb_close(m->w, NULL), close(m->fd), free(m);
        return NULL;
    }
    for (int i = 0; i < TB_MAX_SCALARS; i++) m->tag_ptrs[i] = m->tags[i];
    return m;
}

const char *metrics_tb_path(const metrics_tb *m) { return tb_path(m->w); }

bool metrics_tb_sync(metrics_tb *m, s2d_err *err) {
    double now = tb_wall_time();
    for (;;) {
        ssize_t got = read(m->fd, m->buf + m->have, sizeof m->buf - m->have);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return err_set(err, "%s: read failed: %s", m->path, strerror(errno));
        if (got == 0) break;
        m->have += (size_t)got;
        size_t at = 0;
        for (;;) { /* every complete line in buf */
            char *nl = memchr(m->buf + at, '\n', m->have - at);
            if (!nl) break;
            size_t len = (size_t)(nl - (m->buf + at));
            m->line_no++;
            int64_t step = 0;
            bool blank = true;
            for (size_t i = 0; i < len && blank; i++) blank = m->buf[at + i] == ' ' || m->buf[at + i] == '\r';
            int n = blank ? 0 : metrics_tb_record(m->buf + at, len, m->tags, m->values, TB_MAX_SCALARS, &step, err);
            if (n < 0) return err_prefix(err, "%s:%ld", m->path, m->line_no);
            if (!tb_scalars(m->w, step, now, n, m->tag_ptrs, m->values, err)) return false;
            at += len + 1;
        }
        if (at == 0 && m->have == sizeof m->buf)
            return err_set(err, "%s:%ld: a line longer than %d bytes", m->path, m->line_no + 1, METRICS_TB_MAX_LINE);
        memmove(m->buf, m->buf + at, m->have - at); /* keep the incomplete tail */
        m->have -= at;
    }
    return tb_flush(m->w, err);
}

bool metrics_tb_close(metrics_tb *m, s2d_err *err) {
    if (!m) return true;
    bool ok = metrics_tb_sync(m, err);
    s2d_err e2;
    if (!tb_close(m->w, ok ? err : &e2)) ok = false;
    close(m->fd);
    free(m);
    return ok;
}
