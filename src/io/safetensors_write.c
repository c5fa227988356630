/* safetensors_write.c: the atomic safetensors writer (single file or shards + index), byte-compatible with the
 * reference writer's layout. */
#include "io/safetensors_internal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/half.h"
#include "core/json.h"

/* ---- writing ---- */

typedef struct {
    char *s;
    size_t len, cap;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = S2D_MAX(b->cap * 2, b->len + n + 1 + 256);
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}
static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    CHECK(w >= 0 && (size_t)w < sizeof tmp, "sb_printf: formatted text too long");
    sb_put(b, tmp, (size_t)w);
}
static void sb_put_cb(void *b, const char *s, size_t n) { sb_put(b, s, n); }
/* A JSON string literal, escaped as serde_json (the reference writer) does. */
static void sb_json_string(strbuf *b, const char *s) { json_put_string(sb_put_cb, b, s, strlen(s)); }

typedef struct {
    const st_write_tensor *t;
    st_dtype dtype;
    uint64_t numel, nbytes;
} plan_item;

static st_dtype item_dtype(const st_write_tensor *t, st_dtype float_dtype) { return t->f32 ? float_dtype : ST_I32; }

static int cmp_plan(const void *a, const void *b) {
    const plan_item *x = a, *y = b;
    int ox = st_dtype_table[x->dtype].order, oy = st_dtype_table[y->dtype].order;
    if (ox != oy) return oy - ox; /* descending dtype order, as the reference writer */
    return strcmp(x->t->name, y->t->name);
}

static bool string_ok(const char *s) {
    size_t bad;
    return st_utf8_valid((const uint8_t *)s, strlen(s), &bad);
}

static int cmp_plan_ptr_name(const void *a, const void *b) {
    return strcmp((*(const plan_item *const *)a)->t->name, (*(const plan_item *const *)b)->t->name);
}
/* Pointers to plan[0..n) sorted by tensor name (caller frees). */
static const plan_item **plan_by_name(const plan_item *plan, int n) {
    const plan_item **by_name = xcalloc((size_t)n, sizeof *by_name);
    for (int i = 0; i < n; i++) by_name[i] = &plan[i];
    qsort(by_name, (size_t)n, sizeof *by_name, cmp_plan_ptr_name);
    return by_name;
}

/* Validates the inputs and returns them in write order (caller frees). */
static plan_item *make_plan(const char *out, const st_write_tensor *tensors, int n, st_dtype float_dtype,
                            const st_meta *meta, int n_meta, s2d_err *err) {
    if (float_dtype != ST_F32 && float_dtype != ST_BF16 && float_dtype != ST_F16) {
        err_set(err, "%s: float dtype %s cannot be written (use F32, BF16 or F16)", out, st_dtype_name(float_dtype));
        return NULL;
    }
    if (n < 0 || n_meta < 0 || (n > 0 && !tensors) || (n_meta > 0 && !meta)) {
        err_set(err, "%s: bad tensor or metadata list", out);
        return NULL;
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value || !string_ok(meta[i].key) || !string_ok(meta[i].value)) {
            err_set(err, "%s: metadata entry %d needs a UTF-8 key and value", out, i);
            return NULL;
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(meta[i].key, meta[j].key) == 0) {
                err_set(err, "%s: metadata key \"%s\" given twice", out, meta[i].key);
                return NULL;
            }
        }
    }
    plan_item *plan = xcalloc((size_t)n, sizeof *plan);
    for (int i = 0; i < n; i++) {
        const st_write_tensor *t = &tensors[i];
        plan[i].t = t;
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0 || !string_ok(t->name)) {
            err_set(err, "%s: tensor %d has no usable name (non-empty UTF-8, not __metadata__)", out, i);
            goto fail;
        }
        if ((t->f32 != NULL) == (t->i32 != NULL)) {
            err_set(err, "%s: tensor \"%s\": set exactly one of f32 and i32", out, t->name);
            goto fail;
        }
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS) {
            err_set(err, "%s: tensor \"%s\": ndim %d is outside [0, %d]", out, t->name, t->ndim, ST_MAX_DIMS);
            goto fail;
        }
        plan[i].dtype = item_dtype(t, float_dtype);
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel)) {
                err_set(err, "%s: tensor \"%s\": bad shape (dim %d = %" PRId64 ")", out, t->name, d, t->shape[d]);
                goto fail;
            }
        }
        plan[i].numel = numel;
        if (__builtin_mul_overflow(numel, (uint64_t)st_dtype_size(plan[i].dtype), &plan[i].nbytes)) {
            err_set(err, "%s: tensor \"%s\": byte size overflows", out, t->name);
            goto fail;
        }
    }
    qsort(plan, (size_t)n, sizeof *plan, cmp_plan);
    const plan_item **by_name = plan_by_name(plan, n);
    for (int i = 1; i < n; i++) {
        if (strcmp(by_name[i - 1]->t->name, by_name[i]->t->name) == 0) {
            err_set(err, "%s: duplicate tensor name \"%s\"", out, by_name[i]->t->name);
            free(by_name);
            goto fail;
        }
    }
    free(by_name);
    return plan;
fail:
    free(plan);
    return NULL;
}

/* Header JSON for plan[0..n), padded with spaces to a multiple of 8 bytes. */
static void build_header(strbuf *h, const plan_item *plan, int n, const st_meta *meta, int n_meta) {
    sb_puts(h, "{");
    bool first = true;
    if (n_meta > 0) {
        sb_puts(h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_puts(h, ",");
            sb_json_string(h, meta[i].key);
            sb_puts(h, ":");
            sb_json_string(h, meta[i].value);
        }
        sb_puts(h, "}");
        first = false;
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const st_write_tensor *t = plan[i].t;
        if (!first) sb_puts(h, ",");
        first = false;
        sb_json_string(h, t->name);
        sb_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(plan[i].dtype));
        for (int d = 0; d < t->ndim; d++) sb_printf(h, "%s%" PRId64, d ? "," : "", t->shape[d]);
        sb_printf(h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", offset, offset + plan[i].nbytes);
        offset += plan[i].nbytes;
    }
    sb_puts(h, "}");
    while (h->len % 8 != 0) sb_puts(h, " ");
}

/* Writes one complete file for plan[0..n) into an open atomic file. */
static bool write_body(atomic_file *af, const plan_item *plan, int n, const st_meta *meta, int n_meta, s2d_err *err) {
    strbuf h = {0};
    build_header(&h, plan, n, meta, n_meta);
    uint8_t len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    bool ok = fwrite(len_bytes, 1, 8, af->fp) == 8 && fwrite(h.s, 1, h.len, af->fp) == h.len;
    free(h.s);
    enum { CHUNK = 1 << 15 };
    uint16_t *half_buf = NULL;
    for (int i = 0; ok && i < n; i++) {
        const st_write_tensor *t = plan[i].t;
        size_t numel = (size_t)plan[i].numel;
        if (t->i32) {
            ok = fwrite(t->i32, sizeof(int32_t), numel, af->fp) == numel;
        } else if (plan[i].dtype == ST_F32) {
            ok = fwrite(t->f32, sizeof(float), numel, af->fp) == numel;
        } else {
            if (!half_buf) half_buf = xmalloc(CHUNK * sizeof *half_buf);
            for (size_t at = 0; ok && at < numel; at += CHUNK) {
                size_t k = S2D_MIN((size_t)CHUNK, numel - at);
                if (plan[i].dtype == ST_BF16) f32_to_bf16_array(t->f32 + at, half_buf, k);
                else f32_to_f16_array(t->f32 + at, half_buf, k);
                ok = fwrite(half_buf, sizeof *half_buf, k, af->fp) == k;
            }
        }
    }
    free(half_buf);
    if (!ok) return err_set(err, "%s: write failed: %s", af->path, strerror(errno));
    return true;
}

bool st_write(const char *path, const st_write_tensor *tensors, int n, st_dtype float_dtype, const st_meta *meta,
              int n_meta, s2d_err *err) {
    plan_item *plan = make_plan(path, tensors, n, float_dtype, meta, n_meta, err);
    if (!plan) return false;
    atomic_file af;
    bool ok = atomic_open(&af, path, err);
    if (ok) {
        ok = write_body(&af, plan, n, meta, n_meta, err);
        if (ok) ok = atomic_commit(&af, err);
        else atomic_abort(&af);
    }
    free(plan);
    return ok;
}

/* After a successful write, files of an earlier save under the same base name that the new one does not
 * use would make the directory ambiguous (st_open_dir prefers model.safetensors over an index), so they go:
 * <basename>.safetensors, <basename>.safetensors.index.json and <basename>-NNNNN-of-MMMMM.safetensors, except
 * those just written. Hugging Face's save_pretrained does the same clean-up. */
static void remove_stale(const char *dir, const char *basename, int n_shards) {
    DIR *d = opendir(dir);
    if (!d) return;
    size_t bl = strlen(basename);
    char single[1024], index[1024], path[4096];
    snprintf(single, sizeof single, "%s.safetensors", basename);
    snprintf(index, sizeof index, "%s.safetensors.index.json", basename);
    for (struct dirent *e; (e = readdir(d));) {
        const char *f = e->d_name;
        bool stale = false;
        if (strcmp(f, single) == 0) stale = n_shards > 1;
        else if (strcmp(f, index) == 0) stale = n_shards == 1;
        else if (strncmp(f, basename, bl) == 0 && f[bl] == '-') {
            int i, n, used = 0;
            if (sscanf(f + bl, "-%5d-of-%5d.safetensors%n", &i, &n, &used) == 2 && f[bl + (size_t)used] == '\0' &&
                strlen(f + bl) == strlen("-00001-of-00001.safetensors"))
                stale = n != n_shards || n_shards == 1;
        }
        if (stale) {
            path_join(path, sizeof path, dir, f);
            unlink(path);
        }
    }
    closedir(d);
}

enum { MAX_SHARDS = 48 }; /* every shard stays a registered temp file until all are complete */

bool st_write_sharded(const char *dir, const char *basename, const st_write_tensor *tensors, int n,
                      st_dtype float_dtype, const st_meta *meta, int n_meta, size_t max_shard_bytes, int *n_shards_out,
                      s2d_err *err) {
    if (!basename || !basename[0] || strchr(basename, '/'))
        return err_set(err, "%s: shard base name \"%s\" must be a plain file name", dir, basename ? basename : "");
    if (max_shard_bytes == 0) return err_set(err, "%s: max_shard_bytes must be positive", dir);
    plan_item *plan = make_plan(dir, tensors, n, float_dtype, meta, n_meta, err);
    if (!plan) return false;

    /* Greedy: start a new shard when the next tensor would push a non-empty one past the limit. */
    int *first = xcalloc((size_t)n + 2, sizeof *first); /* shard s holds plan[first[s] .. first[s+1]) */
    int n_shards = 1;
    uint64_t in_shard = 0, total = 0;
    for (int i = 0; i < n; i++) {
        if (in_shard > 0 && in_shard + plan[i].nbytes > max_shard_bytes) {
            first[n_shards++] = i;
            in_shard = 0;
        }
        in_shard += plan[i].nbytes;
        total += plan[i].nbytes;
    }
    first[n_shards] = n;
    bool ok = false;
    atomic_file *files = NULL;
    int n_open = 0;
    if (n_shards > MAX_SHARDS) {
        err_set(err, "%s: %d shards is more than the %d this writer supports; raise max_shard_bytes", dir, n_shards,
                MAX_SHARDS);
        goto done;
    }
    char path[4096], name[1024];
    if (n_shards == 1) {
        snprintf(name, sizeof name, "%s.safetensors", basename);
        path_join(path, sizeof path, dir, name);
        ok = st_write(path, tensors, n, float_dtype, meta, n_meta, err);
        if (ok) remove_stale(dir, basename, 1);
        goto done;
    }

    files = xcalloc((size_t)n_shards + 1, sizeof *files);
    strbuf index = {0};
    sb_printf(&index, "{\n  \"metadata\": {\n    \"total_size\": %" PRIu64 "\n  },\n  \"weight_map\": {", total);
    /* weight_map sorted by tensor name, as Hugging Face writes it */
    int *shard_of = xcalloc((size_t)n, sizeof *shard_of);
    for (int s = 0; s < n_shards; s++)
        for (int i = first[s]; i < first[s + 1]; i++) shard_of[i] = s;
    const plan_item **by_name = plan_by_name(plan, n);
    for (int i = 0; i < n; i++) {
        int s = shard_of[by_name[i] - plan];
        snprintf(name, sizeof name, "%s-%05d-of-%05d.safetensors", basename, s + 1, n_shards);
        sb_puts(&index, i ? ",\n    " : "\n    ");
        sb_json_string(&index, by_name[i]->t->name);
        sb_puts(&index, ": ");
        sb_json_string(&index, name);
    }
    sb_puts(&index, "\n  }\n}\n");
    free(by_name);
    free(shard_of);

    bool good = true;
    for (int s = 0; good && s < n_shards; s++) {
        snprintf(name, sizeof name, "%s-%05d-of-%05d.safetensors", basename, s + 1, n_shards);
        path_join(path, sizeof path, dir, name);
        good = atomic_open(&files[s], path, err);
        if (!good) break;
        n_open++;
        good = write_body(&files[s], plan + first[s], first[s + 1] - first[s], meta, n_meta, err);
        if (good) good = fflush(files[s].fp) == 0 || err_set(err, "%s: write failed: %s", path, strerror(errno));
    }
    if (good) {
        snprintf(name, sizeof name, "%s.safetensors.index.json", basename);
        path_join(path, sizeof path, dir, name);
        good = atomic_open(&files[n_shards], path, err);
        if (good) {
            n_open++;
            good = fwrite(index.s, 1, index.len, files[n_shards].fp) == index.len ||
                   err_set(err, "%s: write failed: %s", path, strerror(errno));
        }
    }
    free(index.s);
    if (!good) {
        for (int s = 0; s < n_open; s++) atomic_abort(&files[s]);
        goto done;
    }
    /* Everything is written: rename into place, the index last. If a rename fails, undo the ones done. */
    for (int s = 0; s <= n_shards; s++) {
        if (!atomic_commit(&files[s], err)) {
            for (int u = 0; u < s; u++) unlink(files[u].path);
            for (int u = s + 1; u <= n_shards; u++) atomic_abort(&files[u]);
            goto done;
        }
    }
    remove_stale(dir, basename, n_shards);
    ok = true;
done:
    if (ok && n_shards_out) *n_shards_out = n_shards;
    free(files);
    free(first);
    free(plan);
    return ok;
}
