/* h5io_logs.c: rollout logs and metrics tables (layouts in h5io.h), as extendible 1-D datasets. */
#include "io/h5io_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- extendible 1-D datasets (rollout logs, metrics) ---- */

typedef struct {
    hid_t d;
    hid_t memtype;
    hsize_t n; /* current length */
} ext_ds;

static bool ext_create(hid_t f, const char *name, hid_t memtype, hid_t filetype, hsize_t chunk, ext_ds *x) {
    hsize_t zero = 0, unlim = H5S_UNLIMITED;
    hid_t sp = H5Screate_simple(1, &zero, &unlim);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, 1, &chunk);
    hid_t lc = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lc, 1);
    x->d = H5Dcreate2(f, name, filetype, sp, lc, pl, H5P_DEFAULT);
    x->memtype = memtype;
    x->n = 0;
    H5Pclose(lc);
    H5Pclose(pl);
    H5Sclose(sp);
    return x->d >= 0;
}
static bool ext_open(hid_t f, const char *name, hid_t memtype, ext_ds *x) {
    x->d = h5_link_exists(f, name) ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
    x->memtype = memtype;
    if (x->d < 0) return false;
    hid_t sp = H5Dget_space(x->d);
    bool ok = H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, &x->n, NULL) >= 0;
    H5Sclose(sp);
    return ok;
}
/* Appends k values of memtype; data NULL appends k copies of *fill. */
static bool ext_append(ext_ds *x, const void *data, hsize_t k, const void *fill, size_t elem) {
    if (k == 0) return true;
    void *tmp = NULL;
    if (!data) {
        tmp = xmalloc(k * elem);
        for (hsize_t i = 0; i < k; i++) memcpy((char *)tmp + i * elem, fill, elem);
        data = tmp;
    }
    hsize_t new_n = x->n + k;
    bool ok = H5Dset_extent(x->d, &new_n) >= 0;
    if (ok) {
        hid_t fs = H5Dget_space(x->d), ms = H5Screate_simple(1, &k, NULL);
        ok = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &x->n, NULL, &k, NULL) >= 0 &&
             H5Dwrite(x->d, x->memtype, ms, fs, H5P_DEFAULT, data) >= 0;
        H5Sclose(ms);
        H5Sclose(fs);
    }
    if (ok) x->n = new_n;
    free(tmp);
    return ok;
}
static void ext_close(ext_ds *x) {
    if (x->d >= 0) H5Dclose(x->d);
    x->d = -1;
}

/* ---- rollout log ---- */

enum { RL_STAGE, RL_STEP, RL_VERSION, RL_SEQ_BEGIN, RL_NSEQS, RL_OFFSETS, RL_PROMPT, RL_REWARD, RL_ADV, RL_TOKENS,
       RL_LP_BEH, RL_LP_TEA, RL_LP_REF, RL_COUNT };
static const char *const RL_NAMES[RL_COUNT] = {
    "steps/stage", "steps/step",      "steps/policy_version", "steps/seq_begin", "steps/n_seqs",
    "seqs/offsets", "seqs/prompt_len", "seqs/reward",          "seqs/advantage",  "tokens",
    "logp/behaviour", "logp/teacher", "logp/reference"};

struct rollout_log {
    hid_t f;
    char *path;
    ext_ds ds[RL_COUNT];
};

static void rl_types(int i, hid_t *mem, hid_t *file) {
    switch (i) {
    case RL_STAGE: case RL_NSEQS: case RL_PROMPT: case RL_TOKENS:
        *mem = H5T_NATIVE_INT32, *file = H5T_STD_I32LE;
        break;
    case RL_STEP: case RL_VERSION: case RL_SEQ_BEGIN: case RL_OFFSETS:
        *mem = H5T_NATIVE_INT64, *file = H5T_STD_I64LE;
        break;
    default:
        *mem = H5T_NATIVE_FLOAT, *file = H5T_IEEE_F32LE;
    }
}

static void rollout_log_free(rollout_log *log) {
    for (int i = 0; i < RL_COUNT; i++) ext_close(&log->ds[i]);
    if (log->f >= 0) H5Fclose(log->f);
    free(log->path);
    free(log);
}

rollout_log *rollout_log_open(const char *path, s2d_err *err) {
    h5_quiet();
    rollout_log *log = xcalloc(1, sizeof *log);
    log->path = xstrdup(path);
    for (int i = 0; i < RL_COUNT; i++) log->ds[i].d = -1;
    bool exists = access(path, F_OK) == 0;
    if (exists) {
        char *format = NULL;
        if (!h5_file_format(path, &format, err) || strcmp(format, H5_ROLLOUT_FORMAT) != 0) {
            if (format) err_set(err, "%s: exists and is not an s2d rollout log (format '%s')", path, format);
            free(format);
            rollout_log_free((log->f = -1, log));
            return NULL;
        }
        free(format);
        log->f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        if (log->f < 0) {
            err_set(err, "%s: cannot open for appending", path);
            rollout_log_free(log);
            return NULL;
        }
        for (int i = 0; i < RL_COUNT; i++) {
            hid_t mem, file;
            rl_types(i, &mem, &file);
            if (!ext_open(log->f, RL_NAMES[i], mem, &log->ds[i])) {
                err_set(err, "%s: dataset /%s is missing or not 1-D", path, RL_NAMES[i]);
                rollout_log_free(log);
                return NULL;
            }
        }
        return log;
    }
    log->f = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    if (log->f < 0) {
        err_set(err, "%s: cannot create: %s", path, strerror(errno));
        rollout_log_free(log);
        return NULL;
    }
    bool ok = h5_attr_str(log->f, "format", H5_ROLLOUT_FORMAT) && h5_attr_i64(log->f, "format_version", 1);
    for (int i = 0; i < RL_COUNT && ok; i++) {
        hid_t mem, file;
        rl_types(i, &mem, &file);
        hsize_t chunk = i < RL_OFFSETS ? 256 : i < RL_TOKENS ? 4096 : 65536;
        ok = ext_create(log->f, RL_NAMES[i], mem, file, chunk, &log->ds[i]);
    }
    int64_t zero = 0;
    if (ok) ok = ext_append(&log->ds[RL_OFFSETS], &zero, 1, NULL, sizeof zero);
    if (!ok) {
        err_set(err, "%s: cannot create the rollout datasets", path);
        rollout_log_free(log);
        unlink(path);
        return NULL;
    }
    return log;
}

bool rollout_log_append(rollout_log *log, const rollout_step *st, s2d_err *err) {
    const int S = st->n_seqs;
    if (S < 0 || !st->offsets || st->offsets[0] != 0)
        return err_set(err, "%s: step %ld: offsets must start at 0", log->path, st->step);
    for (int i = 0; i < S; i++)
        if (st->offsets[i + 1] < st->offsets[i])
            return err_set(err, "%s: step %ld: offsets decrease at sequence %d", log->path, st->step, i);
    const hsize_t T = (hsize_t)st->offsets[S];
    ext_ds *ds = log->ds;
    int64_t token_base = (int64_t)ds[RL_TOKENS].n, seq_begin = (int64_t)ds[RL_PROMPT].n;
    int64_t *offs = xmalloc((size_t)(S ? S : 1) * sizeof(int64_t));
    for (int i = 0; i < S; i++) offs[i] = token_base + st->offsets[i + 1];
    int32_t stage = st->stage, nseq = S, zero32 = 0;
    int64_t step = st->step, version = st->policy_version;
    float nan = NAN;
    /* per-token and per-sequence data first, the step row last: a reader trusts rows of /steps */
    bool ok = ext_append(&ds[RL_TOKENS], st->tokens, T, &zero32, 4) &&
              ext_append(&ds[RL_LP_BEH], st->logp_behaviour, T, &nan, 4) &&
              ext_append(&ds[RL_LP_TEA], st->logp_teacher, T, &nan, 4) &&
              ext_append(&ds[RL_LP_REF], st->logp_reference, T, &nan, 4) &&
              ext_append(&ds[RL_OFFSETS], offs, (hsize_t)S, NULL, 8) &&
              ext_append(&ds[RL_PROMPT], st->prompt_len, (hsize_t)S, &zero32, 4) &&
              ext_append(&ds[RL_REWARD], st->reward, (hsize_t)S, &nan, 4) &&
              ext_append(&ds[RL_ADV], st->advantage, (hsize_t)S, &nan, 4) &&
              ext_append(&ds[RL_STAGE], &stage, 1, NULL, 4) && ext_append(&ds[RL_STEP], &step, 1, NULL, 8) &&
              ext_append(&ds[RL_VERSION], &version, 1, NULL, 8) &&
              ext_append(&ds[RL_SEQ_BEGIN], &seq_begin, 1, NULL, 8) && ext_append(&ds[RL_NSEQS], &nseq, 1, NULL, 4) &&
              H5Fflush(log->f, H5F_SCOPE_GLOBAL) >= 0;
    free(offs);
    if (!ok) return err_set(err, "%s: cannot append step %ld (disk full?)", log->path, st->step);
    return true;
}

bool rollout_log_close(rollout_log *log, s2d_err *err) {
    if (!log) return true;
    for (int i = 0; i < RL_COUNT; i++) ext_close(&log->ds[i]);
    bool ok = H5Fclose(log->f) >= 0;
    log->f = -1;
    if (!ok) err_set(err, "%s: closing failed", log->path);
    rollout_log_free(log);
    return ok;
}

/* ---- metrics table ---- */

#define EXTRA_NAME_MAX (3 * 64 + 1) /* an escaped name */

struct metrics_log {
    hid_t f;
    char *path;
    int n_fields;
    ext_ds stage, step;
    ext_ds *cols; /* [n_fields] */
    int n_extra;  /* extras: /reward/<escaped name> columns, in order of appearance */
    char extra_names[METRICS_MAX_EXTRAS][EXTRA_NAME_MAX];
    ext_ds extra[METRICS_MAX_EXTRAS];
};

/* name percent-escaped into one HDF5 link name: '%' -> %25, '/' -> %2F, a name "." or "" -> %2E / %00. */
static bool extra_escape(const char *name, char *out, size_t cap) {
    size_t n = 0;
    if (!name[0] || strcmp(name, ".") == 0) return snprintf(out, cap, "%s", name[0] ? "%2E" : "%00") < (int)cap;
    for (const char *p = name; *p; p++) {
        if (n + 4 > cap) return false;
        if (*p == '%' || *p == '/') n += (size_t)snprintf(out + n, cap - n, "%%%02X", (unsigned char)*p);
        else out[n++] = *p;
    }
    out[n] = '\0';
    return true;
}

static herr_t collect_extra(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g, (void)info;
    metrics_log *log = data;
    if (log->n_extra == METRICS_MAX_EXTRAS || strlen(name) >= EXTRA_NAME_MAX) return 1; /* stop: too many */
    snprintf(log->extra_names[log->n_extra++], EXTRA_NAME_MAX, "%s", name);
    return 0;
}

/* Opens the /reward columns of an existing table; each must have the table's length. */
static bool extras_open(metrics_log *log, s2d_err *err) {
    if (!h5_link_exists(log->f, "reward")) return true;
    hid_t g = H5Gopen2(log->f, "reward", H5P_DEFAULT);
    if (g < 0) return err_set(err, "%s: /reward is not a group", log->path);
    hsize_t idx = 0;
    herr_t r = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_extra, log);
    H5Gclose(g);
    if (r != 0) return err_set(err, "%s: /reward holds more than %d columns", log->path, METRICS_MAX_EXTRAS);
    char p[EXTRA_NAME_MAX + 8];
    for (int i = 0; i < log->n_extra; i++) log->extra[i].d = -1;
    for (int i = 0; i < log->n_extra; i++) {
        snprintf(p, sizeof p, "reward/%s", log->extra_names[i]);
        if (!ext_open(log->f, p, H5T_NATIVE_DOUBLE, &log->extra[i]) || log->extra[i].n != log->step.n)
            return err_set(err, "%s: column /%s is missing or has the wrong length", log->path, p);
    }
    return true;
}

static void metrics_log_free(metrics_log *log) {
    ext_close(&log->stage);
    ext_close(&log->step);
    for (int i = 0; i < log->n_fields && log->cols; i++) ext_close(&log->cols[i]);
    for (int i = 0; i < log->n_extra; i++) ext_close(&log->extra[i]);
    if (log->f >= 0) H5Fclose(log->f);
    free(log->cols);
    free(log->path);
    free(log);
}

metrics_log *metrics_log_open(const char *path, const char *const *fields, int n_fields, s2d_err *err) {
    h5_quiet();
    metrics_log *log = xcalloc(1, sizeof *log);
    log->path = xstrdup(path);
    log->n_fields = n_fields;
    log->stage.d = log->step.d = -1;
    log->cols = xcalloc((size_t)(n_fields ? n_fields : 1), sizeof *log->cols);
    for (int i = 0; i < n_fields; i++) log->cols[i].d = -1;
    log->f = -1;
    size_t joined_len = 1;
    for (int i = 0; i < n_fields; i++) {
        if (!h5_valid_name(fields[i]) || strcmp(fields[i], "stage") == 0 || strcmp(fields[i], "step") == 0 ||
            strchr(fields[i], ',')) {
            err_set(err, "%s: bad metrics field name '%s'", path, fields[i] ? fields[i] : "");
            metrics_log_free(log);
            return NULL;
        }
        joined_len += strlen(fields[i]) + 1;
    }
    char *joined = xcalloc(joined_len, 1);
    for (int i = 0; i < n_fields; i++) {
        if (i) strcat(joined, ",");
        strcat(joined, fields[i]);
    }
    bool ok = true;
    if (access(path, F_OK) == 0) {
        char *format = NULL;
        if (!h5_file_format(path, &format, err) || strcmp(format, H5_METRICS_FORMAT) != 0) {
            if (format) err_set(err, "%s: exists and is not an s2d metrics table (format '%s')", path, format);
            ok = false;
        }
        free(format);
        if (ok && (log->f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT)) < 0)
            ok = err_set(err, "%s: cannot open for appending", path);
        char *have = ok ? h5_attr_read_str(log->f, "fields") : NULL;
        if (ok && (!have || strcmp(have, joined) != 0))
            ok = err_set(err, "%s: has fields '%s', this run writes '%s'", path, have ? have : "(none)", joined);
        free(have);
        if (ok) ok = ext_open(log->f, "stage", H5T_NATIVE_INT32, &log->stage) &&
                     ext_open(log->f, "step", H5T_NATIVE_INT64, &log->step);
        for (int i = 0; ok && i < n_fields; i++)
            if (!ext_open(log->f, fields[i], H5T_NATIVE_DOUBLE, &log->cols[i]) || log->cols[i].n != log->step.n)
                ok = err_set(err, "%s: column /%s is missing or has the wrong length", path, fields[i]);
        if (ok) ok = extras_open(log, err);
        if (!ok && err->msg[0] == '\0') err_set(err, "%s: damaged metrics table", path);
    } else {
        log->f = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
        if (log->f < 0) ok = err_set(err, "%s: cannot create: %s", path, strerror(errno));
        if (ok)
            ok = h5_attr_str(log->f, "format", H5_METRICS_FORMAT) && h5_attr_i64(log->f, "format_version", 1) &&
                 h5_attr_str(log->f, "fields", joined) &&
                 ext_create(log->f, "stage", H5T_NATIVE_INT32, H5T_STD_I32LE, 1024, &log->stage) &&
                 ext_create(log->f, "step", H5T_NATIVE_INT64, H5T_STD_I64LE, 1024, &log->step);
        for (int i = 0; ok && i < n_fields; i++)
            ok = ext_create(log->f, fields[i], H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1024, &log->cols[i]);
        if (!ok && log->f >= 0) {
            err_set(err, "%s: cannot create the metrics datasets", path);
            metrics_log_free(log);
            unlink(path);
            free(joined);
            return NULL;
        }
    }
    free(joined);
    if (!ok) {
        metrics_log_free(log);
        return NULL;
    }
    return log;
}

bool metrics_log_append(metrics_log *log, int stage, long step, const double *values, s2d_err *err) {
    return metrics_log_append_extras(log, stage, step, values, NULL, NULL, 0, err);
}

bool metrics_log_append_extras(metrics_log *log, int stage, long step, const double *values,
                               const char *const *extra_names, const double *extra_values, int n_extra,
                               s2d_err *err) {
    int32_t s32 = stage;
    int64_t s64 = step;
    bool ok = true;
    const double nan = NAN;
    char esc[EXTRA_NAME_MAX], p[EXTRA_NAME_MAX + 8];
    for (int k = 0; k < n_extra; k++) { /* a name seen for the first time: a column, NaN in the earlier rows */
        if (!extra_escape(extra_names[k], esc, sizeof esc))
            return err_set(err, "%s: extra metric name '%s' is too long", log->path, extra_names[k]);
        int j = 0;
        while (j < log->n_extra && strcmp(log->extra_names[j], esc) != 0) j++;
        if (j < log->n_extra) continue;
        if (log->n_extra == METRICS_MAX_EXTRAS)
            return err_set(err, "%s: more than %d extra metrics ('%s')", log->path, METRICS_MAX_EXTRAS, extra_names[k]);
        snprintf(p, sizeof p, "reward/%s", esc);
        if (!ext_create(log->f, p, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1024, &log->extra[j]) ||
            !ext_append(&log->extra[j], NULL, log->step.n, &nan, 8))
            return err_set(err, "%s: cannot create the column /%s (disk full?)", log->path, p);
        snprintf(log->extra_names[j], EXTRA_NAME_MAX, "%s", esc);
        log->n_extra++;
    }
    for (int j = 0; ok && j < log->n_extra; j++) { /* every extra column gets this row: its value or NaN */
        const double *v = &nan;
        for (int k = 0; k < n_extra; k++)
            if (extra_escape(extra_names[k], esc, sizeof esc) && strcmp(esc, log->extra_names[j]) == 0)
                v = &extra_values[k];
        ok = ext_append(&log->extra[j], v, 1, NULL, 8);
    }
    for (int i = 0; ok && i < log->n_fields; i++) ok = ext_append(&log->cols[i], &values[i], 1, NULL, 8);
    ok = ok && ext_append(&log->stage, &s32, 1, NULL, 4) && ext_append(&log->step, &s64, 1, NULL, 8) &&
         H5Fflush(log->f, H5F_SCOPE_GLOBAL) >= 0;
    if (!ok) return err_set(err, "%s: cannot append the metrics of step %ld (disk full?)", log->path, step);
    return true;
}

bool metrics_log_close(metrics_log *log, s2d_err *err) {
    if (!log) return true;
    ext_close(&log->stage);
    ext_close(&log->step);
    for (int i = 0; i < log->n_fields; i++) ext_close(&log->cols[i]);
    for (int i = 0; i < log->n_extra; i++) ext_close(&log->extra[i]);
    bool ok = H5Fclose(log->f) >= 0;
    log->f = -1;
    if (!ok) err_set(err, "%s: closing failed", log->path);
    metrics_log_free(log);
    return ok;
}

bool metrics_log_copy_extras(const char *from, const char *to, long keep, s2d_err *err) {
    h5_quiet();
    metrics_log src = {.f = H5Fopen(from, H5F_ACC_RDONLY, H5P_DEFAULT), .path = (char *)from};
    if (src.f < 0) return err_set(err, "%s: cannot open", from);
    bool ok = true;
    if (h5_link_exists(src.f, "reward")) {
        hid_t g = H5Gopen2(src.f, "reward", H5P_DEFAULT);
        hsize_t idx = 0;
        ok = g >= 0 && H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_extra, &src) == 0;
        if (g >= 0) H5Gclose(g);
        if (!ok) err_set(err, "%s: cannot list /reward", from);
    }
    H5Fclose(src.f);
    hid_t dst = ok && src.n_extra ? H5Fopen(to, H5F_ACC_RDWR, H5P_DEFAULT) : -1;
    if (ok && src.n_extra && dst < 0) ok = err_set(err, "%s: cannot open for writing", to);
    char p[EXTRA_NAME_MAX + 8];
    for (int i = 0; ok && i < src.n_extra; i++) {
        snprintf(p, sizeof p, "reward/%s", src.extra_names[i]);
        double *v = NULL;
        size_t n = 0;
        ext_ds x = {.d = -1};
        ok = h5_read_f64(from, p, &v, &n, err);
        if (ok && n < (size_t)keep) ok = err_set(err, "%s: column /%s has %zu rows, fewer than %ld", from, p, n, keep);
        if (ok && !(ext_create(dst, p, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1024, &x) &&
                    ext_append(&x, v, (hsize_t)keep, NULL, 8)))
            ok = err_set(err, "%s: cannot write the column /%s", to, p);
        ext_close(&x);
        free(v);
    }
    if (dst >= 0 && H5Fclose(dst) < 0 && ok) ok = err_set(err, "%s: closing failed", to);
    return ok;
}
