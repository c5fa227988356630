/* safetensors.c: the reader (mmap + validation, single file or sharded index); the writer is safetensors_write.c. */
#include "io/safetensors_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#include "core/half.h"
#include "core/json.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; so must the host be");

enum { HEADER_LEN_BYTES = 8 };
static const uint64_t MAX_HEADER_BYTES = 100000000; /* as the reference reader */
static const double MAX_EXACT_INT = 9007199254740992.0; /* 2^53: JSON numbers arrive as doubles */

/* ---- dtypes ---- */

const st_dtype_desc st_dtype_table[ST_DTYPE_COUNT] = {
    [ST_F32] = {"F32", 4, 15},     [ST_F16] = {"F16", 2, 11},         [ST_BF16] = {"BF16", 2, 12},
    [ST_F64] = {"F64", 8, 17},     [ST_I32] = {"I32", 4, 13},         [ST_I64] = {"I64", 8, 18},
    [ST_I16] = {"I16", 2, 9},      [ST_I8] = {"I8", 1, 5},            [ST_U8] = {"U8", 1, 4},
    [ST_U16] = {"U16", 2, 10},     [ST_U32] = {"U32", 4, 14},         [ST_U64] = {"U64", 8, 19},
    [ST_BOOL] = {"BOOL", 1, 0},    [ST_F8_E4M3] = {"F8_E4M3", 1, 7}, [ST_F8_E5M2] = {"F8_E5M2", 1, 6},
};

const char *st_dtype_name(st_dtype dtype) {
    return (unsigned)dtype < ST_DTYPE_COUNT ? st_dtype_table[dtype].name : "?";
}
size_t st_dtype_size(st_dtype dtype) { return (unsigned)dtype < ST_DTYPE_COUNT ? st_dtype_table[dtype].size : 0; }
bool st_dtype_from_name(const char *name, st_dtype *out) {
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        if (strcmp(name, st_dtype_table[d].name) == 0) {
            *out = (st_dtype)d;
            return true;
        }
    }
    return false;
}

/* ---- the open set ---- */

typedef struct {
    char *path;
    const uint8_t *bytes; /* whole file image */
    size_t len;
    bool mapped; /* munmap on close (false for st_open_memory) */
    st_tensor *tensors; /* sorted by name */
    int n_tensors;
    char **meta_keys, **meta_values;
    int n_meta;
} st_file;

struct st_set {
    st_file *files;
    int n_files;
    const st_tensor **by_name; /* every tensor of the set, sorted by name */
    int n;
};

static void file_free(st_file *f) {
    for (int i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    if (f->mapped && f->len > 0) munmap((void *)f->bytes, f->len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

void st_close(st_set *set) {
    if (!set) return;
    for (int i = 0; i < set->n_files; i++) file_free(&set->files[i]);
    free(set->files);
    free(set->by_name);
    free(set);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}
static int cmp_tensor_ptr_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static const st_tensor *file_find(const st_file *f, const char *name) {
    st_tensor key = {.name = name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
}

/* ---- header parsing and validation ---- */

bool st_utf8_valid(const uint8_t *s, size_t n, size_t *bad_at) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) {
            *bad_at = i;
            return false;
        }
        i += (size_t)k;
    }
    return true;
}

/* A JSON number that is a non-negative integer small enough to be exact. */
static bool json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double d = item->valuedouble;
    if (!(d >= 0) || d > MAX_EXACT_INT || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static void shape_str(const st_tensor *t, char *buf, size_t n) {
    size_t w = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && w < n; d++)
        w += (size_t)snprintf(buf + w, n - w, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    if (w < n) snprintf(buf + w, n - w, "]");
}

/* One tensor entry of the header into t (name already set); data_offsets into *begin, *end. */
static bool parse_entry(const char *label, const cJSON *entry, st_tensor *t, uint64_t *begin, uint64_t *end,
                        s2d_err *err) {
    const char *name = t->name;
    if (!cJSON_IsObject(entry))
        return err_set(err, "%s: tensor \"%s\": entry is %s, not an object", label, name, json_kind(entry));
    for (const cJSON *a = entry->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (strcmp(a->string, b->string) == 0)
                return err_set(err, "%s: tensor \"%s\": field \"%s\" appears twice", label, name, a->string);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!dtype) return err_set(err, "%s: tensor \"%s\": missing \"dtype\"", label, name);
    if (!shape) return err_set(err, "%s: tensor \"%s\": missing \"shape\"", label, name);
    if (!offsets) return err_set(err, "%s: tensor \"%s\": missing \"data_offsets\"", label, name);

    if (!cJSON_IsString(dtype))
        return err_set(err, "%s: tensor \"%s\": dtype is %s, not a string", label, name, json_kind(dtype));
    if (!st_dtype_from_name(dtype->valuestring, &t->dtype))
        return err_set(err, "%s: tensor \"%s\": unknown dtype \"%s\" (supported: F32 F16 BF16 F64 I64 I32 I16 I8 "
                            "U64 U32 U16 U8 BOOL F8_E4M3 F8_E5M2)",
                       label, name, dtype->valuestring);

    if (!cJSON_IsArray(shape))
        return err_set(err, "%s: tensor \"%s\": shape is %s, not an array", label, name, json_kind(shape));
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return err_set(err, "%s: tensor \"%s\": shape has %d dims, more than the %d supported", label, name, ndim,
                       ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    int d = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next, d++) {
        uint64_t v;
        if (!json_uint(dim, &v))
            return err_set(err, "%s: tensor \"%s\": shape[%d] is not a non-negative integer", label, name, d);
        t->shape[d] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel))
            return err_set(err, "%s: tensor \"%s\": element count of the shape overflows", label, name);
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)st_dtype_size(t->dtype), &nbytes) || nbytes > SIZE_MAX)
        return err_set(err, "%s: tensor \"%s\": byte size of the shape overflows", label, name);
    t->numel = (int64_t)numel;
    t->nbytes = (size_t)nbytes;

    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 || !json_uint(offsets->child, begin) ||
        !json_uint(offsets->child->next, end))
        return err_set(err, "%s: tensor \"%s\": data_offsets must be [begin, end] with non-negative integers", label,
                       name);
    if (*begin > *end)
        return err_set(err, "%s: tensor \"%s\": data_offsets begin %" PRIu64 " is after end %" PRIu64, label, name,
                       *begin, *end);
    if (*end - *begin != nbytes) {
        char s[256];
        shape_str(t, s, sizeof s);
        return err_set(err,
                       "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64
                       " bytes, but shape %s of %s needs %" PRIu64 " bytes (size does not match shape)",
                       label, name, *begin, *end, *end - *begin, s, st_dtype_name(t->dtype), nbytes);
    }
    return true;
}

typedef struct {
    uint64_t begin, end;
    int index; /* into the tensor array */
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static bool parse_metadata(const char *label, const cJSON *meta, st_file *f, s2d_err *err) {
    if (!cJSON_IsObject(meta))
        return err_set(err, "%s: __metadata__ is %s; it must be an object of string values", label, json_kind(meta));
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = xcalloc((size_t)n, sizeof *f->meta_keys);
    f->meta_values = xcalloc((size_t)n, sizeof *f->meta_values);
    for (const cJSON *kv = meta->child; kv; kv = kv->next) {
        if (!cJSON_IsString(kv))
            return err_set(err, "%s: __metadata__ value of \"%s\" is %s; metadata must map strings to strings", label,
                           kv->string, json_kind(kv));
        for (int i = 0; i < f->n_meta; i++)
            if (strcmp(f->meta_keys[i], kv->string) == 0)
                return err_set(err, "%s: __metadata__ has the key \"%s\" twice", label, kv->string);
        f->meta_keys[f->n_meta] = xstrdup(kv->string);
        f->meta_values[f->n_meta] = xstrdup(kv->valuestring);
        f->n_meta++;
    }
    return true;
}

/* Parses and validates the image f->bytes[0..len) (f->path names it); fills tensors and metadata. On failure
 * the caller frees f. */
static bool parse_file(st_file *f, s2d_err *err) {
    const char *label = f->path;
    const uint8_t *buf = f->bytes;
    size_t len = f->len;
    if (len < HEADER_LEN_BYTES)
        return err_set(err, "%s: file is %zu bytes, too small to hold the 8-byte header length (truncated file?)",
                       label, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
    if (n > MAX_HEADER_BYTES)
        return err_set(err, "%s: header length %" PRIu64 " exceeds the limit of %" PRIu64 " bytes", label, n,
                       MAX_HEADER_BYTES);
    if (HEADER_LEN_BYTES + n > len)
        return err_set(err, "%s: header length %" PRIu64 " runs past the end of the file (%zu bytes; truncated file?)",
                       label, n, len);
    const char *header = (const char *)buf + HEADER_LEN_BYTES;
    size_t bad_at;
    if (!st_utf8_valid((const uint8_t *)header, (size_t)n, &bad_at))
        return err_set(err, "%s: header is not valid UTF-8 (at header byte %zu)", label, bad_at);

    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(header, (size_t)n, &parse_end, 0);
    if (!root) {
        size_t at = parse_end && parse_end >= header ? (size_t)(parse_end - header) : 0;
        return err_set(err, "%s: header is not valid JSON (parse error near header byte %zu of %" PRIu64 ")", label,
                       at, n);
    }
    for (const char *p = parse_end; p < header + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return err_set(err, "%s: header is not valid JSON (trailing data at header byte %zu)", label,
                           (size_t)(p - header));
        }
    }
    bool ok = false;
    span *spans = NULL;
    if (!cJSON_IsObject(root)) {
        err_set(err, "%s: header is %s, not a JSON object", label, json_kind(root));
        goto done;
    }

    int n_items = cJSON_GetArraySize(root), n_tensors = 0;
    bool seen_meta = false;
    f->tensors = xcalloc((size_t)n_items, sizeof *f->tensors);
    spans = xcalloc((size_t)n_items, sizeof *spans);
    for (const cJSON *item = root->child; item; item = item->next) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (seen_meta) {
                err_set(err, "%s: header has \"__metadata__\" twice", label);
                goto done;
            }
            seen_meta = true;
            if (!parse_metadata(label, item, f, err)) goto done;
            continue;
        }
        st_tensor *t = &f->tensors[n_tensors];
        t->name = xstrdup(item->string);
        t->file = f->path;
        f->n_tensors = ++n_tensors;
        span *s = &spans[n_tensors - 1];
        if (!parse_entry(label, item, t, &s->begin, &s->end, err)) goto done;
        s->index = n_tensors - 1;
    }

    /* Offsets sorted by (begin, end) must tile the data region exactly. */
    uint64_t data_len = (uint64_t)len - HEADER_LEN_BYTES - n;
    qsort(spans, (size_t)n_tensors, sizeof *spans, cmp_span);
    uint64_t expect = 0;
    const char *prev = NULL;
    for (int i = 0; i < n_tensors; i++) {
        const span *s = &spans[i];
        const char *name = f->tensors[s->index].name;
        if (!prev && s->begin > 0) {
            err_set(err, "%s: the first tensor \"%s\" begins at data byte %" PRIu64 " instead of 0", label, name,
                    s->begin);
            goto done;
        }
        if (s->begin > expect) {
            err_set(err,
                    "%s: gap in the data: tensor \"%s\" begins at byte %" PRIu64 " but \"%s\" ends at byte %" PRIu64
                    " (offsets must be contiguous)",
                    label, name, s->begin, prev, expect);
            goto done;
        }
        if (s->begin < expect) {
            err_set(err,
                    "%s: tensor \"%s\" (bytes %" PRIu64 "..%" PRIu64 ") overlaps tensor \"%s\", which ends at byte %" PRIu64,
                    label, name, s->begin, s->end, prev, expect);
            goto done;
        }
        expect = s->end;
        prev = name;
    }
    if (expect > data_len) {
        err_set(err,
                "%s: tensors need %" PRIu64 " bytes of data but the file has only %" PRIu64
                " after the header (truncated file?)",
                label, expect, data_len);
        goto done;
    }
    if (expect < data_len) {
        err_set(err,
                "%s: %" PRIu64 " extra bytes after the last tensor: the tensors cover %" PRIu64
                " bytes but the data region is %" PRIu64 " bytes (size must match exactly)",
                label, data_len - expect, expect, data_len);
        goto done;
    }
    const uint8_t *data = buf + HEADER_LEN_BYTES + n;
    for (int i = 0; i < n_tensors; i++) f->tensors[spans[i].index].data = data + spans[i].begin;

    qsort(f->tensors, (size_t)n_tensors, sizeof *f->tensors, cmp_tensor_name);
    for (int i = 1; i < n_tensors; i++) {
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
            err_set(err, "%s: duplicate tensor name \"%s\" in the header", label, f->tensors[i].name);
            goto done;
        }
    }
    ok = true;
done:
    free(spans);
    cJSON_Delete(root);
    return ok;
}

/* Maps path into f and validates it. */
static bool file_open(const char *path, st_file *f, s2d_err *err) {
    memset(f, 0, sizeof *f);
    f->path = xstrdup(path);
    int fd = open_regular(path, err); /* a FIFO would block in open() */
    if (fd < 0) goto fail;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        err_set(err, "%s: not a regular file", path);
        close(fd);
        goto fail;
    }
    f->len = (size_t)st.st_size;
    if (f->len > 0) {
        void *p = mmap(NULL, f->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            err_set(err, "%s: cannot mmap %zu bytes: %s", path, f->len, strerror(errno));
            close(fd);
            f->len = 0;
            goto fail;
        }
        f->bytes = p;
        f->mapped = true;
    }
    close(fd);
    if (parse_file(f, err)) return true;
fail:
    file_free(f);
    return false;
}

static st_set *set_new(int n_files) {
    st_set *set = xcalloc(1, sizeof *set);
    set->files = xcalloc((size_t)n_files, sizeof *set->files);
    set->n_files = n_files;
    return set;
}

/* A set of one file: its (already sorted) tensors are the index. */
static st_set *set_of_one(st_file *f) {
    st_set *set = set_new(1);
    set->files[0] = *f;
    set->n = f->n_tensors;
    set->by_name = xcalloc((size_t)set->n, sizeof *set->by_name);
    for (int i = 0; i < set->n; i++) set->by_name[i] = &set->files[0].tensors[i];
    return set;
}

bool st_open_file(const char *path, st_set **out, s2d_err *err) {
    st_file f;
    if (!file_open(path, &f, err)) return false;
    *out = set_of_one(&f);
    return true;
}

bool st_open_memory(const void *buf, size_t len, const char *label, st_set **out, s2d_err *err) {
    st_file f = {.path = xstrdup(label), .bytes = buf, .len = len, .mapped = false};
    if (!parse_file(&f, err)) {
        file_free(&f);
        return false;
    }
    *out = set_of_one(&f);
    return true;
}

/* Shard names come from the index: keep them inside the model directory. */
static bool shard_name_ok(const char *s) {
    if (s[0] == '\0' || s[0] == '/') return false;
    for (const char *p = s; *p; p = strchr(p, '/') ? strchr(p, '/') + 1 : p + strlen(p))
        if (strncmp(p, "..", 2) == 0 && (p[2] == '/' || p[2] == '\0')) return false;
    return true;
}

typedef struct {
    const char *tensor, *shard;
    int file; /* index into set->files */
} map_entry;

static int cmp_map_tensor(const void *a, const void *b) {
    return strcmp(((const map_entry *)a)->tensor, ((const map_entry *)b)->tensor);
}

bool st_open_index(const char *index_path, st_set **out, s2d_err *err) {
    char *text = NULL;
    size_t text_len = 0;
    if (!read_file(index_path, &text, &text_len, err)) return false;
    cJSON *root = cJSON_ParseWithLength(text, text_len);
    free(text);
    if (!root) return err_set(err, "%s: index is not valid JSON", index_path);
    const cJSON *wm = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!wm || !cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return err_set(err, "%s: index has no \"weight_map\" object", index_path);
    }
    bool ok = false;
    st_set *set = NULL;
    int n = cJSON_GetArraySize(wm);
    map_entry *map = xcalloc((size_t)n, sizeof *map);
    char **shards = xcalloc((size_t)n, sizeof *shards); /* distinct shard names, first-seen order */
    int n_shards = 0, i = 0;
    for (const cJSON *kv = wm->child; kv; kv = kv->next, i++) {
        if (!cJSON_IsString(kv)) {
            err_set(err, "%s: weight_map[\"%s\"] is %s, not a shard file name", index_path, kv->string, json_kind(kv));
            goto done;
        }
        if (!shard_name_ok(kv->valuestring)) {
            err_set(err, "%s: weight_map[\"%s\"] = \"%s\" is not a file inside the model directory", index_path,
                    kv->string, kv->valuestring);
            goto done;
        }
        map[i].tensor = kv->string;
        map[i].shard = kv->valuestring;
        int s = 0;
        while (s < n_shards && strcmp(shards[s], kv->valuestring) != 0) s++;
        if (s == n_shards) shards[n_shards++] = kv->valuestring;
        map[i].file = s;
    }
    qsort(map, (size_t)n, sizeof *map, cmp_map_tensor);
    for (i = 1; i < n; i++) {
        if (strcmp(map[i - 1].tensor, map[i].tensor) == 0) {
            err_set(err, "%s: weight_map names tensor \"%s\" twice", index_path, map[i].tensor);
            goto done;
        }
    }

    /* Shard paths are relative to the directory of the index. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", index_path);
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = '\0';
    else snprintf(dir, sizeof dir, ".");
    set = set_new(n_shards);
    set->n_files = 0;
    for (int s = 0; s < n_shards; s++) {
        char path[4096];
        path_join(path, sizeof path, dir, shards[s]);
        if (access(path, F_OK) != 0) {
            err_set(err, "%s: shard \"%s\" named in the weight_map is missing (%s: %s)", index_path, shards[s], path,
                    strerror(errno));
            goto done;
        }
        if (!file_open(path, &set->files[s], err)) {
            err_prefix(err, "%s: shard \"%s\"", index_path, shards[s]);
            goto done;
        }
        set->n_files++;
    }

    set->n = n;
    set->by_name = xcalloc((size_t)n, sizeof *set->by_name);
    for (i = 0; i < n; i++) {
        const st_file *f = &set->files[map[i].file];
        const st_tensor *t = file_find(f, map[i].tensor);
        if (!t) {
            err_set(err, "%s: index names tensor \"%s\" in shard %s, but that shard has no such tensor", index_path,
                    map[i].tensor, map[i].shard);
            goto done;
        }
        set->by_name[i] = t;
    }
    /* The reverse: a tensor stored in a shard but not mapped to it would be silently invisible. */
    for (int s = 0; s < set->n_files; s++) {
        const st_file *f = &set->files[s];
        for (int k = 0; k < f->n_tensors; k++) {
            map_entry key = {.tensor = f->tensors[k].name};
            const map_entry *m = bsearch(&key, map, (size_t)n, sizeof *map, cmp_map_tensor);
            if (!m || m->file != s) {
                err_set(err, "%s: shard %s holds tensor \"%s\", but the index %s", index_path, shards[s],
                        f->tensors[k].name, m ? "maps it to another shard" : "does not list it");
                goto done;
            }
        }
    }
    ok = true;
done:
    free(map);
    free(shards);
    cJSON_Delete(root);
    if (!ok) {
        st_close(set);
        return false;
    }
    *out = set;
    return true;
}

bool st_open_dir(const char *dir, st_set **out, s2d_err *err) {
    char path[4096];
    path_join(path, sizeof path, dir, "model.safetensors");
    if (access(path, F_OK) == 0) return st_open_file(path, out, err);
    path_join(path, sizeof path, dir, "model.safetensors.index.json");
    if (access(path, F_OK) == 0) return st_open_index(path, out, err);
    return err_set(err, "%s: no model.safetensors or model.safetensors.index.json in this directory", dir);
}

const st_tensor *st_find(const st_set *set, const char *name) {
    st_tensor key = {.name = name};
    const st_tensor *kp = &key;
    const st_tensor *const *hit = bsearch(&kp, set->by_name, (size_t)set->n, sizeof *set->by_name,
                                          cmp_tensor_ptr_name);
    return hit ? *hit : NULL;
}

int st_count(const st_set *set) { return set->n; }

const st_tensor *st_at(const st_set *set, int i) {
    CHECK(i >= 0 && i < set->n, "st_at: index %d out of range [0, %d)", i, set->n);
    return set->by_name[i];
}

const char *st_metadata(const st_set *set, const char *key) {
    if (set->n_files == 0) return NULL;
    const st_file *f = &set->files[0];
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

/* ---- typed reads (data may be unaligned: memcpy each element) ---- */

/* True when count matches; read functions return early for empty tensors (out may then be NULL). */
static bool check_count(const st_tensor *t, size_t count, s2d_err *err) {
    if (count != (size_t)t->numel) {
        char s[256];
        shape_str(t, s, sizeof s);
        return err_set(err, "%s: tensor \"%s\": has %" PRId64 " elements (shape %s) but %zu were expected", t->file,
                       t->name, t->numel, s, count);
    }
    return true;
}

bool st_read_f32(const st_tensor *t, float *out, size_t count, s2d_err *err) {
    if (!check_count(t, count, err)) return false;
    if (count == 0 && (t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16)) return true;
    const uint8_t *src = t->data;
    switch (t->dtype) {
    case ST_F32:
        memcpy(out, src, count * sizeof(float));
        return true;
    case ST_BF16:
#pragma omp parallel for schedule(static) if (count >= (1 << 16))
        for (size_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = bf16_to_f32(h);
        }
        return true;
    case ST_F16:
#pragma omp parallel for schedule(static) if (count >= (1 << 16))
        for (size_t i = 0; i < count; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = f16_to_f32(h);
        }
        return true;
    default:
        return err_set(err, "%s: tensor \"%s\": dtype %s cannot be read as floats (need F32, BF16 or F16)", t->file,
                       t->name, st_dtype_name(t->dtype));
    }
}

bool st_read_i64(const st_tensor *t, int64_t *out, size_t count, s2d_err *err) {
    if (!check_count(t, count, err)) return false;
    if (count == 0 && (t->dtype == ST_I32 || t->dtype == ST_I64)) return true;
    const uint8_t *src = t->data;
    if (t->dtype == ST_I64) {
        memcpy(out, src, count * sizeof(int64_t));
        return true;
    }
    if (t->dtype == ST_I32) {
        for (size_t i = 0; i < count; i++) {
            int32_t v;
            memcpy(&v, src + 4 * i, 4);
            out[i] = v;
        }
        return true;
    }
    return err_set(err, "%s: tensor \"%s\": dtype %s cannot be read as integers (need I32 or I64)", t->file, t->name,
                   st_dtype_name(t->dtype));
}

bool st_read_i32(const st_tensor *t, int32_t *out, size_t count, s2d_err *err) {
    if (!check_count(t, count, err)) return false;
    if (count == 0 && (t->dtype == ST_I32 || t->dtype == ST_I64)) return true;
    const uint8_t *src = t->data;
    if (t->dtype == ST_I32) {
        memcpy(out, src, count * sizeof(int32_t));
        return true;
    }
    if (t->dtype == ST_I64) {
        for (size_t i = 0; i < count; i++) {
            int64_t v;
            memcpy(&v, src + 8 * i, 8);
            if (v < INT32_MIN || v > INT32_MAX)
                return err_set(err, "%s: tensor \"%s\": element %zu = %" PRId64 " does not fit in int32", t->file,
                               t->name, i, v);
            out[i] = (int32_t)v;
        }
        return true;
    }
    return err_set(err, "%s: tensor \"%s\": dtype %s cannot be read as integers (need I32 or I64)", t->file, t->name,
                   st_dtype_name(t->dtype));
}

bool st_check_shape(const st_tensor *t, int ndim, const int64_t *shape, s2d_err *err) {
    bool same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (same) return true;
    char got[256], want[256];
    shape_str(t, got, sizeof got);
    st_tensor w = {.ndim = ndim};
    for (int d = 0; d < ndim && d < ST_MAX_DIMS; d++) w.shape[d] = shape[d];
    shape_str(&w, want, sizeof want);
    return err_set(err, "%s: tensor \"%s\": shape %s, expected %s", t->file, t->name, got, want);
}
