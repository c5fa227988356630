/* dataset.c: JSONL math datasets → {id, prompt, answer}; dedup; shuffling cursor; hash splits. */
#include "io/dataset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/rng.h"

static const char *const FORMAT_NAMES[] = {"auto", "math", "gsm8k", "aime", "generic"};

bool ds_format_parse(const char *name, ds_format *out, s2d_err *err) {
    int i = name_index(name, FORMAT_NAMES, (int)S2D_ARRAY_LEN(FORMAT_NAMES));
    if (i >= 0) return *out = (ds_format)i, true;
    return err_set(err, "unknown dataset format '%s' (expected one of math, gsm8k, aime, generic, auto)", name);
}

const char *ds_format_name(ds_format f) {
    return (unsigned)f < S2D_ARRAY_LEN(FORMAT_NAMES) ? FORMAT_NAMES[f] : "?";
}

/* ------------------------------------------------------------------ string storage */

static size_t text_add(dataset *ds, const char *s, size_t len) {
    if (ds->text_len + len + 1 > ds->text_cap) {
        size_t cap = ds->text_cap ? ds->text_cap : 4096;
        while (cap < ds->text_len + len + 1) cap *= 2;
        ds->text = xrealloc(ds->text, cap);
        ds->text_cap = cap;
    }
    size_t off = ds->text_len;
    memcpy(ds->text + off, s, len);
    ds->text[off + len] = '\0';
    ds->text_len += len + 1;
    return off;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* [*b, *e) = s without leading/trailing ASCII whitespace. */
static void trim_range(const char *s, const char **b, const char **e) {
    const char *end = s + strlen(s);
    while (*s && is_space(*s)) s++;
    while (end > s && is_space(end[-1])) end--;
    *b = s;
    *e = end;
}

/* ------------------------------------------------------------------ \boxed{} */

bool ds_last_boxed(const char *text, char **out) {
    static const char *const cmds[] = {"\\boxed", "\\fbox"};
    const char *best = NULL;
    size_t best_len = 0;
    for (size_t c = 0; c < S2D_ARRAY_LEN(cmds); c++) {
        size_t cl = strlen(cmds[c]);
        for (const char *p = strstr(text, cmds[c]); p; p = strstr(p + 1, cmds[c]))
            if (!best || p > best) best = p, best_len = cl;
    }
    if (!best) return false;
    const char *p = best + best_len;
    while (*p == ' ') p++;
    if (*p != '{') return false;
    const char *start = ++p;
    int depth = 1;
    for (; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++; /* \{ and \} are literal braces, not grouping */
        } else if (*p == '{') {
            depth++;
        } else if (*p == '}' && --depth == 0) {
            size_t len = (size_t)(p - start);
            *out = xmalloc(len + 1);
            memcpy(*out, start, len);
            (*out)[len] = '\0';
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ loading */

typedef struct {
    size_t id, prompt, answer, subject, level; /* offsets into ds->text */
    int line;
} rec_off;

static bool field_string(const cJSON *obj, const char *field, const char *path, long line, const char *fmt,
                         const char **out, s2d_err *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (!f) return err_set(err, "%s:%ld: record has no '%s' field (format %s)", path, line, field, fmt);
    if (!cJSON_IsString(f))
        return err_set(err, "%s:%ld: field '%s' is not a string (format %s)", path, line, field, fmt);
    *out = f->valuestring;
    return true;
}

/* A string, or a number written back as JSON text (integers without a fraction). out is malloc'd. */
static bool field_scalar_text(const cJSON *f, char **out) {
    if (cJSON_IsString(f)) {
        *out = xstrdup(f->valuestring);
        return true;
    }
    if (cJSON_IsNumber(f)) {
        char buf[64];
        double v = f->valuedouble;
        if (v == (double)(long long)v && v > -9e15 && v < 9e15)
            snprintf(buf, sizeof buf, "%lld", (long long)v);
        else
            snprintf(buf, sizeof buf, "%.17g", v);
        *out = xstrdup(buf);
        return true;
    }
    return false;
}

/* An optional id field `key` of format fmt as text into *id (absent: *id stays NULL). */
static bool optional_id(const cJSON *obj, const char *key, const char *path, long line, const char *fmt, char **id,
                        s2d_err *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (f && !field_scalar_text(f, id))
        return err_set(err, "%s:%ld: field '%s' is not a string or number (format %s)", path, line, key, fmt);
    return true;
}

static bool is_integer_text(const char *s) {
    if (*s == '+' || *s == '-') s++;
    if (!*s) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

static ds_format detect_format(const cJSON *obj) {
    if (cJSON_GetObjectItemCaseSensitive(obj, "problem") &&
        (cJSON_GetObjectItemCaseSensitive(obj, "solution") || cJSON_GetObjectItemCaseSensitive(obj, "answer"))) {
        /* AIME sets written with `problem` and a numeric answer and no solution read as aime */
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, "answer");
        if (!cJSON_GetObjectItemCaseSensitive(obj, "solution") && cJSON_IsNumber(a)) return DS_AIME;
        return DS_MATH;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, "question") && cJSON_GetObjectItemCaseSensitive(obj, "answer"))
        return DS_GSM8K;
    if (cJSON_GetObjectItemCaseSensitive(obj, "prompt") && cJSON_GetObjectItemCaseSensitive(obj, "answer"))
        return DS_AIME;
    return DS_AUTO;
}

/* One record → strings appended to ds->text. */
static bool parse_record(dataset *ds, const cJSON *obj, const ds_load_opts *o, const char *path, long line,
                         rec_off *r, s2d_err *err) {
    const char *fmt = ds_format_name(ds->format);
    const char *prompt = NULL;
    char *answer = NULL, *id = NULL;
    const cJSON *f;
    switch (ds->format) {
    case DS_MATH: {
        if (!field_string(obj, "problem", path, line, fmt, &prompt, err)) return false;
        f = cJSON_GetObjectItemCaseSensitive(obj, "answer");
        if (f) {
            if (!cJSON_IsString(f) && !cJSON_IsNumber(f))
                return err_set(err, "%s:%ld: field 'answer' is not a string (format math)", path, line);
            field_scalar_text(f, &answer);
        } else {
            const char *solution;
            f = cJSON_GetObjectItemCaseSensitive(obj, "solution");
            if (!f)
                return err_set(err, "%s:%ld: record has neither an 'answer' nor a 'solution' field (format math)",
                               path, line);
            if (!field_string(obj, "solution", path, line, fmt, &solution, err)) return false;
            if (!ds_last_boxed(solution, &answer))
                return err_set(err, "%s:%ld: record has no 'answer' field and its 'solution' has no complete "
                                    "\\boxed{...} (format math)", path, line);
        }
        if (!optional_id(obj, "unique_id", path, line, "math", &id, err)) return free(answer), false;
        break;
    }
    case DS_GSM8K: {
        const char *full;
        if (!field_string(obj, "question", path, line, fmt, &prompt, err)) return false;
        if (!field_string(obj, "answer", path, line, fmt, &full, err)) return false;
        const char *mark = strstr(full, "#### ");
        if (!mark) return err_set(err, "%s:%ld: 'answer' has no final \"#### N\" line (format gsm8k)", path, line);
        const char *b, *e;
        trim_range(mark + 5, &b, &e);
        answer = xmalloc((size_t)(e - b) + 1);
        size_t n = 0;
        for (const char *p = b; p < e; p++)
            if (*p != ',') answer[n++] = *p;
        answer[n] = '\0';
        if (n == 0) {
            free(answer);
            return err_set(err, "%s:%ld: the \"#### \" line of 'answer' is empty (format gsm8k)", path, line);
        }
        break;
    }
    case DS_AIME: {
        const char *pf = cJSON_GetObjectItemCaseSensitive(obj, "prompt") ? "prompt" : "problem";
        if (!cJSON_GetObjectItemCaseSensitive(obj, pf))
            return err_set(err, "%s:%ld: record has no 'prompt' or 'problem' field (format aime)", path, line);
        if (!field_string(obj, pf, path, line, fmt, &prompt, err)) return false;
        f = cJSON_GetObjectItemCaseSensitive(obj, "answer");
        if (!f) return err_set(err, "%s:%ld: record has no 'answer' field (format aime)", path, line);
        if (!field_scalar_text(f, &answer) || !is_integer_text(answer)) {
            char shown[80];
            snprintf(shown, sizeof shown, "%s", answer ? answer : "(not a string or number)");
            free(answer);
            return err_set(err, "%s:%ld: 'answer' is not an integer: %s (format aime)", path, line, shown);
        }
        if (!optional_id(obj, "id", path, line, "aime", &id, err)) return free(answer), false;
        break;
    }
    case DS_GENERIC: {
        if (!o->prompt_field || !o->answer_field)
            return err_set(err, "%s: the generic format needs the prompt and answer field names", path);
        if (!field_string(obj, o->prompt_field, path, line, fmt, &prompt, err)) return false;
        f = cJSON_GetObjectItemCaseSensitive(obj, o->answer_field);
        if (!f) return err_set(err, "%s:%ld: record has no '%s' field (format generic)", path, line, o->answer_field);
        if (!field_scalar_text(f, &answer))
            return err_set(err, "%s:%ld: field '%s' is not a string or number (format generic)", path, line,
                           o->answer_field);
        if (o->id_field) {
            f = cJSON_GetObjectItemCaseSensitive(obj, o->id_field);
            if (!f || !field_scalar_text(f, &id)) {
                free(answer);
                return err_set(err, "%s:%ld: record has no string or number '%s' field (format generic)", path,
                               line, o->id_field);
            }
        }
        break;
    }
    default:
        return err_set(err, "%s: no dataset format chosen", path);
    }
    const char *b, *e;
    trim_range(prompt, &b, &e);
    if (b == e) {
        free(answer);
        free(id);
        return err_set(err, "%s:%ld: the prompt is empty (format %s)", path, line, fmt);
    }
    if (!id) {
        char buf[32];
        snprintf(buf, sizeof buf, "%ld", line);
        id = xstrdup(buf);
    }
    /* MATH's optional breakdown keys: "subject" (string) and "level" (1..5, or "Level 3" in the original) */
    char *tags[2] = {NULL, NULL};
    static const char *const tag_names[2] = {"subject", "level"};
    for (int k = 0; k < 2; k++) {
        f = cJSON_GetObjectItemCaseSensitive(obj, tag_names[k]);
        if (f && !cJSON_IsNull(f) && !field_scalar_text(f, &tags[k])) {
            free(answer), free(id), free(tags[0]);
            return err_set(err, "%s:%ld: field '%s' is not a string or number (format %s)", path, line, tag_names[k],
                           fmt);
        }
    }
    r->prompt = text_add(ds, prompt, strlen(prompt));
    r->answer = text_add(ds, answer, strlen(answer));
    r->id = text_add(ds, id, strlen(id));
    r->subject = text_add(ds, tags[0] ? tags[0] : "", tags[0] ? strlen(tags[0]) : 0);
    r->level = text_add(ds, tags[1] ? tags[1] : "", tags[1] ? strlen(tags[1]) : 0);
    free(tags[0]), free(tags[1]);
    r->line = (int)line;
    free(answer);
    free(id);
    return true;
}

void dataset_free(dataset *ds) {
    free(ds->rec);
    free(ds->source);
    free(ds->text);
    memset(ds, 0, sizeof *ds);
}

bool dataset_load(dataset *ds, const char *path, const ds_load_opts *opts, s2d_err *err) {
    memset(ds, 0, sizeof *ds);
    ds_load_opts dflt = {.format = DS_AUTO};
    const ds_load_opts *o = opts ? opts : &dflt;
    FILE *fp = fopen_regular(path, err); /* a FIFO would block in fopen() */
    if (!fp) return false;
    ds->source = xstrdup(path);
    ds->format = o->format;
    rec_off *offs = NULL;
    int cap = 0;
    char *buf = NULL;
    size_t bufcap = 0;
    ssize_t len;
    long line = 0;
    bool ok = true;
    while (ok && (len = getline(&buf, &bufcap, fp)) >= 0) {
        line++;
        if ((size_t)len != strlen(buf)) {
            ok = err_set(err, "%s:%ld: invalid JSON (the line contains a NUL byte)", path, line);
            break;
        }
        const char *b, *e;
        trim_range(buf, &b, &e);
        if (b == e) continue;
        const char *end = NULL;
        cJSON *obj = cJSON_ParseWithOpts(b, &end, 0);
        if (obj) {
            const char *rest = end;
            while (rest < e && is_space(*rest)) rest++;
            if (rest != e) {
                cJSON_Delete(obj);
                obj = NULL;
                end = rest;
            }
        }
        if (!obj) {
            const char *at = end ? end : cJSON_GetErrorPtr();
            long col = at && at >= buf && at <= buf + len ? (long)(at - buf) + 1 : 0;
            ok = err_set(err, "%s:%ld: invalid JSON (near column %ld)", path, line, col);
            break;
        }
        if (!cJSON_IsObject(obj)) {
            cJSON_Delete(obj);
            ok = err_set(err, "%s:%ld: a record must be a JSON object", path, line);
            break;
        }
        if (ds->format == DS_AUTO) {
            ds->format = detect_format(obj);
            if (ds->format == DS_AUTO) {
                cJSON_Delete(obj);
                ok = err_set(err, "%s:%ld: cannot tell the dataset format from the fields (want problem/solution, "
                                  "question/answer or prompt/answer): name it (math, gsm8k, aime, generic)",
                             path, line);
                break;
            }
        }
        if (ds->n == cap) {
            cap = cap ? 2 * cap : 1024;
            offs = xrealloc(offs, (size_t)cap * sizeof *offs);
        }
        ok = parse_record(ds, obj, o, path, line, &offs[ds->n], err);
        if (ok) ds->n++;
        cJSON_Delete(obj);
    }
    if (ok && ferror(fp)) ok = err_set(err, "%s: read error: %s", path, strerror(errno));
    fclose(fp);
    free(buf);
    if (ok && ds->n == 0) ok = err_set(err, "%s: no records", path);
    if (!ok) {
        free(offs);
        dataset_free(ds);
        return false;
    }
    ds->rec = xmalloc((size_t)ds->n * sizeof *ds->rec);
    for (int i = 0; i < ds->n; i++) {
        ds->rec[i].id = ds->text + offs[i].id;
        ds->rec[i].prompt = ds->text + offs[i].prompt;
        ds->rec[i].answer = ds->text + offs[i].answer;
        ds->rec[i].subject = ds->text + offs[i].subject;
        ds->rec[i].level = ds->text + offs[i].level;
        ds->rec[i].line = offs[i].line;
    }
    free(offs);
    return true;
}

/* ------------------------------------------------------------------ dedup */

static uint64_t fnv1a(const char *b, const char *e) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; b < e; b++) h = (h ^ (uint8_t)*b) * 0x100000001b3ull;
    return h;
}

int dataset_dedup(dataset *ds) {
    size_t cap = 16;
    while (cap < 2 * (size_t)ds->n) cap *= 2;
    int32_t *table = xmalloc(cap * sizeof *table); /* index of a kept record, -1 empty */
    for (size_t i = 0; i < cap; i++) table[i] = -1;
    int kept = 0;
    for (int i = 0; i < ds->n; i++) {
        const char *b, *e;
        trim_range(ds->rec[i].prompt, &b, &e);
        size_t len = (size_t)(e - b);
        size_t slot = fnv1a(b, e) & (cap - 1);
        bool dup = false;
        while (table[slot] >= 0) {
            const char *kb, *ke;
            trim_range(ds->rec[table[slot]].prompt, &kb, &ke);
            if ((size_t)(ke - kb) == len && memcmp(kb, b, len) == 0) {
                dup = true;
                break;
            }
            slot = (slot + 1) & (cap - 1);
        }
        if (dup) continue;
        ds->rec[kept] = ds->rec[i];
        table[slot] = kept++;
    }
    free(table);
    int removed = ds->n - kept;
    ds->n = kept;
    return removed;
}

/* ------------------------------------------------------------------ shuffling */

void ds_permutation(uint64_t seed, int64_t epoch, int n, int32_t *perm) {
    rng_stream r;
    rng_stream_init(&r, seed, DS_SHUFFLE_STREAM + (uint64_t)epoch);
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_next_below(&r, (uint64_t)i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void ds_sampler_init(ds_sampler *s, int n, uint64_t seed) {
    CHECK(n > 0, "ds_sampler_init: empty dataset");
    s->n = n;
    s->cur = (ds_cursor){.seed = seed, .epoch = 0, .position = 0};
    s->perm = xmalloc((size_t)n * sizeof *s->perm);
    ds_permutation(seed, 0, n, s->perm);
}

bool ds_sampler_restore(ds_sampler *s, int n, ds_cursor cur, s2d_err *err) {
    if (n <= 0) return err_set(err, "data cursor: the dataset is empty");
    if (cur.epoch < 0 || cur.position < 0 || cur.position > n)
        return err_set(err, "data cursor: epoch %lld, position %lld does not fit a dataset of %d records",
                       (long long)cur.epoch, (long long)cur.position, n);
    s->n = n;
    s->cur = cur;
    s->perm = xmalloc((size_t)n * sizeof *s->perm);
    ds_permutation(cur.seed, cur.epoch, n, s->perm);
    return true;
}

void ds_sampler_next(ds_sampler *s, int k, int32_t *out) {
    for (int i = 0; i < k; i++) {
        if (s->cur.position == s->n) {
            s->cur.epoch++;
            s->cur.position = 0;
            ds_permutation(s->cur.seed, s->cur.epoch, s->n, s->perm);
        }
        out[i] = s->perm[s->cur.position++];
    }
}

void ds_sampler_free(ds_sampler *s) {
    free(s->perm);
    s->perm = NULL;
}

/* ------------------------------------------------------------------ splits */

uint64_t ds_prompt_hash(const char *prompt, uint64_t seed) {
    const char *b, *e;
    trim_range(prompt, &b, &e);
    uint32_t w[4];
    philox4x32(seed, fnv1a(b, e), 0x5B117, w);
    return ((uint64_t)w[0] << 32) | w[1];
}

bool ds_split_fraction(const dataset *ds, uint64_t seed, int n_parts, const double *fractions, int *part_of,
                       int64_t *part_counts, s2d_err *err) {
    if (n_parts < 1) return err_set(err, "split: need at least one part");
    double total = 0;
    for (int p = 0; p < n_parts; p++) {
        if (!(fractions[p] >= 0 && fractions[p] <= 1))
            return err_set(err, "split: fraction %d is %g, not in [0, 1]", p, fractions[p]);
        total += fractions[p];
    }
    if (total > 1 + 1e-9) return err_set(err, "split: fractions sum to %g, more than 1", total);
    for (int p = 0; p <= n_parts; p++) part_counts[p] = 0;
    for (int i = 0; i < ds->n; i++) {
        double u = (double)(ds_prompt_hash(ds->rec[i].prompt, seed) >> 11) * 0x1.0p-53;
        int part = -1;
        double cum = 0;
        for (int p = 0; p < n_parts; p++) {
            cum += fractions[p];
            if (u < cum) {
                part = p;
                break;
            }
        }
        part_of[i] = part;
        part_counts[part < 0 ? n_parts : part]++;
    }
    return true;
}

typedef struct {
    uint64_t key;
    const ds_record *r;
    int index;
} split_item;

static int trimmed_cmp(const char *a, const char *b) {
    const char *ab, *ae, *bb, *be;
    trim_range(a, &ab, &ae);
    trim_range(b, &bb, &be);
    size_t la = (size_t)(ae - ab), lb = (size_t)(be - bb);
    int c = memcmp(ab, bb, S2D_MIN(la, lb));
    return c ? c : (la > lb) - (la < lb);
}

/* Order by hash, then by content, so the result never depends on file order. */
static int split_cmp(const void *pa, const void *pb) {
    const split_item *a = pa, *b = pb;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    int c = trimmed_cmp(a->r->prompt, b->r->prompt);
    if (!c) c = strcmp(a->r->answer, b->r->answer);
    if (!c) c = strcmp(a->r->id, b->r->id);
    return c;
}

bool ds_split_count(const dataset *ds, uint64_t seed, int n_parts, const int64_t *counts, int *part_of,
                    int64_t *part_counts, s2d_err *err) {
    if (n_parts < 1) return err_set(err, "split: need at least one part");
    int64_t total = 0;
    for (int p = 0; p < n_parts; p++) {
        if (counts[p] < 0) return err_set(err, "split: count %d is negative", p);
        total += counts[p];
    }
    if (total > ds->n)
        return err_set(err, "split: the parts ask for %lld records, but %s has only %d", (long long)total,
                       ds->source ? ds->source : "the dataset", ds->n);
    split_item *items = xmalloc((size_t)ds->n * sizeof *items);
    for (int i = 0; i < ds->n; i++)
        items[i] = (split_item){.key = ds_prompt_hash(ds->rec[i].prompt, seed), .r = &ds->rec[i], .index = i};
    qsort(items, (size_t)ds->n, sizeof *items, split_cmp);
    for (int p = 0; p <= n_parts; p++) part_counts[p] = 0;
    int p = 0;
    for (int i = 0; i < ds->n; i++) {
        while (p < n_parts && part_counts[p] == counts[p]) p++;
        int part = p < n_parts ? p : -1;
        part_of[items[i].index] = part;
        part_counts[part < 0 ? n_parts : part]++;
    }
    free(items);
    return true;
}

void dataset_subset(const dataset *ds, const int *part_of, int part, dataset *out) {
    memset(out, 0, sizeof *out);
    out->format = ds->format;
    out->source = xstrdup(ds->source ? ds->source : "");
    int n = 0;
    for (int i = 0; i < ds->n; i++) n += part_of[i] == part;
    rec_off *offs = xmalloc((size_t)(n ? n : 1) * sizeof *offs);
    int k = 0;
    for (int i = 0; i < ds->n; i++) {
        if (part_of[i] != part) continue;
        const ds_record *r = &ds->rec[i];
        offs[k].prompt = text_add(out, r->prompt, strlen(r->prompt));
        offs[k].answer = text_add(out, r->answer, strlen(r->answer));
        offs[k].id = text_add(out, r->id, strlen(r->id));
        offs[k].subject = text_add(out, r->subject, strlen(r->subject));
        offs[k].level = text_add(out, r->level, strlen(r->level));
        offs[k].line = r->line;
        k++;
    }
    out->n = n;
    out->rec = xmalloc((size_t)(n ? n : 1) * sizeof *out->rec);
    for (int i = 0; i < n; i++) {
        out->rec[i].prompt = out->text + offs[i].prompt;
        out->rec[i].answer = out->text + offs[i].answer;
        out->rec[i].id = out->text + offs[i].id;
        out->rec[i].subject = out->text + offs[i].subject;
        out->rec[i].level = out->text + offs[i].level;
        out->rec[i].line = offs[i].line;
    }
    free(offs);
}
