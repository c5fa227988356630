/* h5io.c: HDF5 checkpoints, rollout logs and metrics tables (layouts in h5io.h). */
#include "io/h5io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/half.h"
#include "core/log.h"

/* HDF5 prints its error stack on stderr by default; we report our own messages instead. */
static void h5_quiet(void) {
    static bool done;
    if (!done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        done = true;
    }
}

static bool valid_name(const char *s) { return s && s[0] && !strchr(s, '/') && strcmp(s, ".") != 0; }

/* ---- small writers ---- */

static bool attr_write(hid_t loc, const char *name, hid_t type, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    hid_t a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = a >= 0 && H5Awrite(a, type, v) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return ok;
}
static bool attr_i64(hid_t loc, const char *name, int64_t v) { return attr_write(loc, name, H5T_NATIVE_INT64, &v); }
static bool attr_u64(hid_t loc, const char *name, uint64_t v) { return attr_write(loc, name, H5T_NATIVE_UINT64, &v); }
static bool attr_f64(hid_t loc, const char *name, double v) { return attr_write(loc, name, H5T_NATIVE_DOUBLE, &v); }

/* Per-dataset checksum (attribute "checksum", uint64): FNV-1a 64 over the data's bytes taken as little-endian
 * 64-bit words, then the tail bytes one by one. Chunked callers feed multiples of 8 bytes. */
#define CKSUM_INIT 0xcbf29ce484222325ULL
#define CKSUM_PRIME 0x100000001b3ULL
static uint64_t cksum_update(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * CKSUM_PRIME;
    }
    for (; i < n; i++) h = (h ^ p[i]) * CKSUM_PRIME;
    return h;
}
uint64_t h5_checksum(const void *data, size_t n) { return cksum_update(CKSUM_INIT, data, n); }

/* Strings are written fixed-length (stored in the object itself): a variable-length string lives in HDF5's
 * global heap, whose unchecked heap ids make a flipped byte crash the reader (H5HG_read). */
static hid_t fixed_str_type(const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}
static hid_t vlen_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}
static bool attr_str(hid_t loc, const char *name, const char *s) {
    hid_t t = fixed_str_type(s);
    bool ok = attr_write(loc, name, t, s);
    H5Tclose(t);
    return ok;
}
static bool text_dataset_write(hid_t loc, const char *name, const char *s) {
    hid_t t = fixed_str_type(s), sp = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = d >= 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) >= 0 &&
              attr_u64(d, "checksum", h5_checksum(s, strlen(s)));
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
    return ok;
}
static bool dataset_write(hid_t loc, const char *name, hid_t memtype, hid_t filetype, int rank, const hsize_t *dims,
                          const void *data, hid_t *out_d) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(loc, name, filetype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    size_t nbytes = (size_t)H5Sget_simple_extent_npoints(sp) * H5Tget_size(memtype);
    bool ok = d >= 0 && H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0 &&
              attr_u64(d, "checksum", h5_checksum(data, nbytes));
    H5Sclose(sp);
    if (out_d && ok) *out_d = d;
    else if (d >= 0) H5Dclose(d);
    return ok;
}

/* ---- small readers ---- */

/* A numeric attribute is read only when it is one value of a numeric class of at most 8 bytes (a damaged
 * type or space is refused, never converted or read past the 8 bytes of *v). */
static bool attr_read_num(hid_t loc, const char *name, hid_t memtype, void *v) {
    if (H5Aexists(loc, name) <= 0) return false;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return false;
    hid_t sp = H5Aget_space(a), ty = H5Aget_type(a);
    H5T_class_t cls = ty >= 0 ? H5Tget_class(ty) : H5T_NO_CLASS;
    size_t size = ty >= 0 ? H5Tget_size(ty) : 0;
    bool ok = sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1 && (cls == H5T_INTEGER || cls == H5T_FLOAT) &&
              size >= 1 && size <= 8 && H5Aread(a, memtype, v) >= 0;
    if (ty >= 0) H5Tclose(ty);
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    return ok;
}
static bool attr_read_i64(hid_t loc, const char *name, int64_t *v) { return attr_read_num(loc, name, H5T_NATIVE_INT64, v); }
static bool attr_read_u64(hid_t loc, const char *name, uint64_t *v) { return attr_read_num(loc, name, H5T_NATIVE_UINT64, v); }
static bool attr_read_f64(hid_t loc, const char *name, double *v) { return attr_read_num(loc, name, H5T_NATIVE_DOUBLE, v); }

/* Checks data just read from dataset d (nbytes in memory, as written) against its checksum attribute. A dataset
 * without one (a checkpoint of format_version 1) is not checked. */
static bool checksum_ok(hid_t d, const void *data, size_t nbytes, const char *path, const char *dname, s2d_err *err) {
    if (H5Aexists(d, "checksum") <= 0) return true;
    uint64_t want = 0;
    if (!attr_read_u64(d, "checksum", &want))
        return err_set(err, "%s: dataset %s: damaged checksum attribute (the file is corrupted)", path, dname);
    uint64_t got = h5_checksum(data, nbytes);
    if (got != want)
        return err_set(err, "%s: dataset %s is corrupted (checksum %016llx, written as %016llx)", path, dname,
                       (unsigned long long)got, (unsigned long long)want);
    return true;
}

/* A scalar string from an attribute (is_attr) or a dataset, variable or fixed length; malloc'd. */
static char *string_read(hid_t obj, bool is_attr) {
    hid_t ft = is_attr ? H5Aget_type(obj) : H5Dget_type(obj);
    if (ft < 0) return NULL;
    hid_t sp = is_attr ? H5Aget_space(obj) : H5Dget_space(obj);
    bool one = sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1; /* a damaged space would overrun the buffer */
    if (sp >= 0) H5Sclose(sp);
    char *out = NULL;
    size_t fsize = H5Tget_size(ft);
    if (one && H5Tget_class(ft) == H5T_STRING && fsize > 0 && fsize < ((size_t)1 << 32)) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = vlen_str_type();
            char *s = NULL;
            herr_t rc = is_attr ? H5Aread(obj, mt, &s) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &s);
            if (rc >= 0 && s) {
                out = xstrdup(s);
                H5free_memory(s);
            }
            H5Tclose(mt);
        } else {
            size_t size = H5Tget_size(ft);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, size + 1);
            H5Tset_cset(mt, H5Tget_cset(ft)); /* HDF5 does not convert between ASCII and UTF-8 */
            char *buf = xcalloc(size + 2, 1);
            herr_t rc = is_attr ? H5Aread(obj, mt, buf) : H5Dread(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
            if (rc >= 0) out = buf;
            else free(buf);
            H5Tclose(mt);
        }
    }
    H5Tclose(ft);
    return out;
}
static char *attr_read_str(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    char *s = string_read(a, true);
    H5Aclose(a);
    return s;
}
/* NULL when unreadable; *corrupt (may be NULL) set when it was read but fails its checksum. */
static char *text_dataset_read(hid_t loc, const char *name, bool *corrupt) {
    if (corrupt) *corrupt = false;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return NULL;
    char *s = string_read(d, false);
    if (s && !checksum_ok(d, s, strlen(s), "", name, NULL)) {
        if (corrupt) *corrupt = true;
        free(s);
        s = NULL;
    }
    H5Dclose(d);
    return s;
}
static bool link_exists(hid_t loc, const char *name) { return H5Lexists(loc, name, H5P_DEFAULT) > 0; }

/* Names of the links in group `loc` (malloc'd). */
static bool group_names(hid_t loc, char ***names, int *n) {
    H5G_info_t info;
    if (H5Gget_info(loc, &info) < 0) return false;
    *n = (int)info.nlinks;
    *names = xcalloc(info.nlinks ? info.nlinks : 1, sizeof(char *));
    for (hsize_t i = 0; i < info.nlinks; i++) {
        ssize_t len = H5Lget_name_by_idx(loc, ".", H5_INDEX_NAME, H5_ITER_INC, i, NULL, 0, H5P_DEFAULT);
        if (len < 0) {
            h5_free_names(*names, (int)i);
            return false;
        }
        (*names)[i] = xmalloc((size_t)len + 1);
        H5Lget_name_by_idx(loc, ".", H5_INDEX_NAME, H5_ITER_INC, i, (*names)[i], (size_t)len + 1, H5P_DEFAULT);
    }
    return true;
}

void h5_free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Opens an existing file read-only; the error says why it is not readable. */
static hid_t open_ro(const char *path, s2d_err *err) {
    h5_quiet();
    if (access(path, R_OK) != 0) {
        err_set(err, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    if (!check_regular(path, err)) return -1; /* HDF5 would block opening a FIFO */
    if (H5Fis_hdf5(path) <= 0) {
        err_set(err, "%s: not an HDF5 file", path);
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) err_set(err, "%s: cannot open as HDF5 (truncated or corrupted?)", path);
    return f;
}

/* ---- checkpoints: save ---- */

void ckpt_path(char *out, size_t n, const char *dir, int stage_index, long step) {
    char name[64];
    snprintf(name, sizeof name, "ckpt-%02d-%09ld.h5", stage_index, step);
    path_join(out, n, dir, name);
}

static bool save_model(hid_t f, const char *path, const ckpt_model *cm, s2d_err *err) {
    if (!valid_name(cm->name)) return err_set(err, "%s: bad model name '%s' (empty or contains '/')", path, cm->name ? cm->name : "");
    char gpath[256];
    snprintf(gpath, sizeof gpath, "/models/%s", cm->name);
    if (link_exists(f, gpath)) return err_set(err, "%s: model '%s' given twice", path, cm->name);
    hid_t g = H5Gcreate2(f, gpath, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return err_set(err, "%s: cannot create group %s", path, gpath);
    const char *json = cm->config_json ? cm->config_json : "";
    bool ok = attr_str(g, "config_json", json) && attr_u64(g, "config_json_checksum", h5_checksum(json, strlen(json))) &&
              attr_i64(g, "n_params", (int64_t)cm->n_params) &&
              attr_i64(g, "n_tensors", cm->n_tensors) && attr_str(g, "dtype", cm->bf16 ? "bf16" : "f32");
    if (!ok) {
        H5Gclose(g);
        return err_set(err, "%s: cannot write the attributes of %s", path, gpath);
    }
    size_t max_numel = 0;
    for (int i = 0; i < cm->n_tensors; i++) max_numel = S2D_MAX(max_numel, cm->tensors[i].numel);
    uint16_t *half = cm->bf16 ? xmalloc(max_numel * sizeof(uint16_t)) : NULL;
    for (int i = 0; i < cm->n_tensors && ok; i++) {
        const ckpt_tensor *t = &cm->tensors[i];
        hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
        if (t->offset + t->numel > cm->n_params)
            ok = err_set(err, "%s: tensor %s of model '%s' lies outside its %zu parameters", path, t->name, cm->name,
                         cm->n_params);
        if (!ok) break;
        const float *src = cm->params + t->offset;
        hid_t d = -1;
        if (cm->bf16) {
            f32_to_bf16_array(src, half, t->numel);
            ok = dataset_write(g, t->name, H5T_NATIVE_UINT16, H5T_STD_U16LE, t->ndim, dims, half, &d) &&
                 attr_str(d, "dtype", "bf16");
        } else {
            ok = dataset_write(g, t->name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, t->ndim, dims, src, &d);
        }
        if (d >= 0) H5Dclose(d);
        if (!ok) err_set(err, "%s: cannot write dataset %s/%s", path, gpath, t->name);
    }
    free(half);
    H5Gclose(g);
    if (!ok || !cm->opt) return ok;

    const ckpt_optim *o = cm->opt;
    if (o->n != cm->n_params)
        return err_set(err, "%s: optimizer of model '%s' has %zu floats, the model %zu parameters", path, cm->name,
                       o->n, cm->n_params);
    snprintf(gpath, sizeof gpath, "/optim/%s", cm->name);
    g = H5Gcreate2(f, gpath, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return err_set(err, "%s: cannot create group %s", path, gpath);
    hsize_t n = o->n;
    int64_t *segs = xmalloc((size_t)o->n_segments * 3 * sizeof(int64_t));
    for (int i = 0; i < o->n_segments; i++) {
        segs[3 * i] = (int64_t)o->segments[i].offset;
        segs[3 * i + 1] = (int64_t)o->segments[i].numel;
        segs[3 * i + 2] = o->segments[i].decay;
    }
    hsize_t sdims[2] = {(hsize_t)o->n_segments, 3};
    ok = dataset_write(g, "m", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 1, &n, o->m, NULL) &&
         dataset_write(g, "v", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 1, &n, o->v, NULL) &&
         dataset_write(g, "segments", H5T_NATIVE_INT64, H5T_STD_I64LE, 2, sdims, segs, NULL) &&
         attr_i64(g, "step", o->step) && attr_f64(g, "beta1", o->beta1) && attr_f64(g, "beta2", o->beta2) &&
         attr_f64(g, "eps", o->eps) && attr_f64(g, "weight_decay", o->weight_decay);
    free(segs);
    H5Gclose(g);
    if (!ok) return err_set(err, "%s: cannot write the optimizer state %s", path, gpath);
    return true;
}

static bool save_contents(hid_t f, const char *path, const ckpt_state *s, s2d_err *err) {
    if (!attr_str(f, "format", H5_CKPT_FORMAT) || !attr_i64(f, "format_version", H5_CKPT_VERSION) ||
        !attr_i64(f, "stage_index", s->stage_index) || !attr_str(f, "stage_name", s->stage_name ? s->stage_name : "") ||
        !attr_i64(f, "step", s->step))
        return err_set(err, "%s: cannot write the root attributes", path);
    if (s->config_text && !text_dataset_write(f, "config", s->config_text))
        return err_set(err, "%s: cannot write dataset /config", path);
    const char *groups[] = {"models", "optim", "state", "text"};
    for (size_t i = 0; i < S2D_ARRAY_LEN(groups); i++) {
        hid_t g = H5Gcreate2(f, groups[i], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) return err_set(err, "%s: cannot create group /%s", path, groups[i]);
        H5Gclose(g);
    }
    for (int i = 0; i < s->n_models; i++)
        if (!save_model(f, path, &s->models[i], err)) return false;
    for (int i = 0; i < s->n_u64s; i++) {
        const ckpt_u64 *u = &s->u64s[i];
        char name[256];
        if (!valid_name(u->key)) return err_set(err, "%s: bad state key '%s' (empty or contains '/')", path, u->key ? u->key : "");
        snprintf(name, sizeof name, "/state/%s", u->key);
        if (link_exists(f, name)) return err_set(err, "%s: state key '%s' given twice", path, u->key);
        hsize_t n = u->n;
        uint64_t dummy = 0;
        if (!dataset_write(f, name, H5T_NATIVE_UINT64, H5T_STD_U64LE, 1, &n, u->n ? u->values : &dummy, NULL))
            return err_set(err, "%s: cannot write dataset %s", path, name);
    }
    for (int i = 0; i < s->n_texts; i++) {
        char name[256];
        if (!valid_name(s->texts[i].key)) return err_set(err, "%s: bad text key '%s'", path, s->texts[i].key ? s->texts[i].key : "");
        snprintf(name, sizeof name, "/text/%s", s->texts[i].key);
        if (link_exists(f, name)) return err_set(err, "%s: text key '%s' given twice", path, s->texts[i].key);
        if (!text_dataset_write(f, name, s->texts[i].text ? s->texts[i].text : ""))
            return err_set(err, "%s: cannot write dataset %s", path, name);
    }
    /* Last: a reader trusts the file only when this is set. */
    if (!attr_i64(f, "complete", 1)) return err_set(err, "%s: cannot write the complete attribute", path);
    return true;
}

bool ckpt_save(const char *path, const ckpt_state *s, s2d_err *err) {
    h5_quiet();
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    /* the 1.8+ file format: superblock, object headers (with their attributes) and B-trees carry checksums,
     * so HDF5 itself refuses damaged metadata instead of following it */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) return err_set(err, "%s: cannot create: %s", tmp, strerror(errno));
    s2d_tmp_register(tmp);
    bool ok = save_contents(f, path, s, err);
    if (H5Fclose(f) < 0 && ok) ok = err_set(err, "%s: closing the file failed (disk full?)", tmp);
    if (ok) {
        int fd = open(tmp, O_RDONLY);
        if (fd < 0 || fsync(fd) != 0) ok = err_set(err, "%s: fsync failed: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
    }
    if (ok && rename(tmp, path) != 0) ok = err_set(err, "%s: cannot rename %s: %s", path, tmp, strerror(errno));
    if (!ok) unlink(tmp);
    s2d_tmp_unregister(tmp);
    if (ok) log_info("checkpoint %s: stage %d (%s), step %ld, %d model(s)", path, s->stage_index,
                     s->stage_name ? s->stage_name : "", s->step, s->n_models);
    return ok;
}

/* ---- checkpoints: load ---- */

/* Opens path and checks it is a complete checkpoint of a version we read. */
static hid_t ckpt_open(const char *path, s2d_err *err) {
    hid_t f = open_ro(path, err);
    if (f < 0) return -1;
    char *format = attr_read_str(f, "format");
    int64_t version = 0, complete = 0;
    bool ok = false;
    if (!format || strcmp(format, H5_CKPT_FORMAT) != 0)
        err_set(err, "%s: not an s2d checkpoint (root attribute format = '%s')", path, format ? format : "(none)");
    else if (!attr_read_i64(f, "format_version", &version) || version != H5_CKPT_VERSION)
        err_set(err, "%s: checkpoint format_version %lld, this s2d reads %d", path, (long long)version, H5_CKPT_VERSION);
    else if (!attr_read_i64(f, "complete", &complete) || complete != 1)
        err_set(err, "%s: incomplete checkpoint (no complete attribute: the writer stopped early)", path);
    else ok = true;
    free(format);
    if (!ok) {
        H5Fclose(f);
        return -1;
    }
    return f;
}

/* Reads one dataset of n floats (fp32, or uint16 bf16 with dtype attr) with the expected shape. */
static bool read_tensor(hid_t g, const char *path, const char *gname, const ckpt_tensor *t, float *dst,
                        uint16_t *half, bool *is_bf16, s2d_err *err) {
    if (!link_exists(g, t->name)) return err_set(err, "%s: dataset %s/%s is missing", path, gname, t->name);
    hid_t d = H5Dopen2(g, t->name, H5P_DEFAULT);
    if (d < 0) return err_set(err, "%s: cannot open dataset %s/%s", path, gname, t->name);
    char dname[600];
    snprintf(dname, sizeof dname, "%s/%s", gname, t->name);
    hid_t sp = H5Dget_space(d), ty = H5Dget_type(d);
    hsize_t dims[2] = {0, 0};
    int rank = H5Sget_simple_extent_ndims(sp);
    bool ok = true;
    if (rank != t->ndim || H5Sget_simple_extent_dims(sp, dims, NULL) < 0 || dims[0] != (hsize_t)t->shape[0] ||
        (t->ndim == 2 && dims[1] != (hsize_t)t->shape[1])) {
        char have[64], want[64];
        if (rank == 2) snprintf(have, sizeof have, "[%llu, %llu]", (unsigned long long)dims[0], (unsigned long long)dims[1]);
        else if (rank == 1) snprintf(have, sizeof have, "[%llu]", (unsigned long long)dims[0]);
        else snprintf(have, sizeof have, "rank %d", rank);
        if (t->ndim == 2) snprintf(want, sizeof want, "[%lld, %lld]", (long long)t->shape[0], (long long)t->shape[1]);
        else snprintf(want, sizeof want, "[%lld]", (long long)t->shape[0]);
        ok = err_set(err, "%s: dataset %s/%s has shape %s, the model config wants %s", path, gname, t->name, have, want);
    } else {
        char *dt = attr_read_str(d, "dtype");
        H5T_class_t cls = H5Tget_class(ty);
        size_t size = H5Tget_size(ty);
        if (dt && strcmp(dt, "bf16") == 0) {
            if (cls != H5T_INTEGER || size != 2)
                ok = err_set(err, "%s: dataset %s/%s says dtype bf16 but is not uint16", path, gname, t->name);
            else if (H5Dread(d, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, half) < 0)
                ok = err_set(err, "%s: cannot read dataset %s/%s (truncated?)", path, gname, t->name);
            else if (!checksum_ok(d, half, t->numel * sizeof(uint16_t), path, dname, err))
                ok = false;
            else bf16_to_f32_array(half, dst, t->numel);
            *is_bf16 = true;
        } else if (cls != H5T_FLOAT) {
            ok = err_set(err, "%s: dataset %s/%s is not float (and has no dtype = bf16 attribute)", path, gname, t->name);
        } else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
            ok = err_set(err, "%s: cannot read dataset %s/%s (truncated?)", path, gname, t->name);
        } else {
            ok = checksum_ok(d, dst, t->numel * sizeof(float), path, dname, err);
        }
        free(dt);
    }
    H5Tclose(ty);
    H5Sclose(sp);
    H5Dclose(d);
    return ok;
}

static bool load_model_from(hid_t f, const char *path, const char *name, const ckpt_binding *b, ckpt_model *cm,
                            s2d_err *err) {
    memset(cm, 0, sizeof *cm);
    char gname[256];
    snprintf(gname, sizeof gname, "/models/%s", name);
    if (!valid_name(name) || !link_exists(f, "models") || !link_exists(f, gname)) {
        char **names = NULL;
        int n = 0;
        char list[512] = "";
        hid_t mg = link_exists(f, "models") ? H5Gopen2(f, "models", H5P_DEFAULT) : -1;
        if (mg >= 0 && group_names(mg, &names, &n))
            for (int i = 0; i < n; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
        if (mg >= 0) H5Gclose(mg);
        h5_free_names(names, n);
        return err_set(err, "%s: no model '%s' in the checkpoint (it has: %s)", path, name, n ? list : "none");
    }
    hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
    if (g < 0) return err_set(err, "%s: cannot open group %s", path, gname);
    char *json = attr_read_str(g, "config_json");
    if (!json) {
        H5Gclose(g);
        return err_set(err, "%s: group %s has no config_json attribute", path, gname);
    }
    uint64_t want_sum = 0;
    if (H5Aexists(g, "config_json_checksum") > 0 &&
        (!attr_read_u64(g, "config_json_checksum", &want_sum) || want_sum != h5_checksum(json, strlen(json)))) {
        free(json);
        H5Gclose(g);
        return err_set(err, "%s: attribute %s/config_json is corrupted (checksum mismatch)", path, gname);
    }
    char where[512];
    snprintf(where, sizeof where, "%s:%s/config_json", path, gname);
    cm->name = xstrdup(name);
    cm->config_json = json;
    bool ok = b->make(json, where, cm, err);
    if (!ok) {
        H5Gclose(g);
        ckpt_model_free(cm);
        return false;
    }
    cm->binding = b;
    size_t max_numel = 0;
    for (int i = 0; i < cm->n_tensors; i++) max_numel = S2D_MAX(max_numel, cm->tensors[i].numel);
    uint16_t *half = xmalloc((max_numel ? max_numel : 1) * sizeof(uint16_t));
    bool bf16 = false;
    for (int i = 0; i < cm->n_tensors && ok; i++)
        ok = read_tensor(g, path, gname, &cm->tensors[i], cm->params + cm->tensors[i].offset, half, &bf16, err);
    free(half);
    if (ok) { /* nothing the config does not explain */
        char **names = NULL;
        int n = 0;
        if (!group_names(g, &names, &n)) ok = err_set(err, "%s: cannot list group %s", path, gname);
        for (int i = 0; ok && i < n; i++) {
            bool known = false;
            for (int j = 0; j < cm->n_tensors && !known; j++) known = strcmp(cm->tensors[j].name, names[i]) == 0;
            if (!known) ok = err_set(err, "%s: dataset %s/%s is not a tensor of this model config", path, gname, names[i]);
        }
        h5_free_names(names, n);
    }
    H5Gclose(g);
    if (!ok) {
        ckpt_model_free(cm);
        return false;
    }
    cm->bf16 = bf16;
    return true;
}

void ckpt_model_free(ckpt_model *cm) {
    if (cm->binding && cm->object) cm->binding->release(cm);
    if (cm->opt) {
        free(cm->opt->m);
        free(cm->opt->v);
        free(cm->opt->segments);
        free(cm->opt);
    }
    free(cm->name);
    free(cm->config_json);
    memset(cm, 0, sizeof *cm);
}

bool ckpt_load_model(const char *path, const char *name, const ckpt_binding *b, ckpt_model *out, s2d_err *err) {
    memset(out, 0, sizeof *out);
    hid_t f = ckpt_open(path, err);
    if (f < 0) return false;
    bool ok = load_model_from(f, path, name, b, out, err);
    H5Fclose(f);
    return ok;
}

bool ckpt_model_names(const char *path, char ***names, int *n, s2d_err *err) {
    hid_t f = ckpt_open(path, err);
    if (f < 0) return false;
    hid_t g = H5Gopen2(f, "models", H5P_DEFAULT);
    bool ok = g >= 0 && group_names(g, names, n);
    if (g >= 0) H5Gclose(g);
    H5Fclose(f);
    if (!ok) return err_set(err, "%s: cannot list group /models", path);
    return true;
}

/* Reads a 1-D float dataset range [offset, offset + count). */
static bool read_f32_range(hid_t loc, const char *path, const char *name, size_t offset, size_t count, size_t want_n,
                           float *out, s2d_err *err) {
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return err_set(err, "%s: dataset %s is missing", path, name);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[1] = {0};
    bool ok = true;
    if (H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0 || dims[0] != want_n)
        ok = err_set(err, "%s: dataset %s has %llu values, expected %zu", path, name, (unsigned long long)dims[0], want_n);
    else if (offset + count > want_n)
        ok = err_set(err, "%s: range [%zu, %zu) is outside dataset %s of %zu values", path, offset, offset + count, name,
                     want_n);
    else if (H5Aexists(d, "checksum") > 0 && !(offset == 0 && count == want_n)) {
        /* a slice of a checksummed dataset: stream all of it through the checksum, keep the slice */
        enum { CHUNK = 1 << 16 }; /* floats: a multiple of 8 bytes, as cksum_update wants */
        float *buf = xmalloc(CHUNK * sizeof(float));
        uint64_t h = CKSUM_INIT, want = 0;
        for (size_t at = 0; ok && at < want_n; at += CHUNK) {
            hsize_t start = at, cnt = S2D_MIN((size_t)CHUNK, want_n - at);
            hid_t mem = H5Screate_simple(1, &cnt, NULL);
            H5Sselect_hyperslab(sp, H5S_SELECT_SET, &start, NULL, &cnt, NULL);
            if (H5Dread(d, H5T_NATIVE_FLOAT, mem, sp, H5P_DEFAULT, buf) < 0)
                ok = err_set(err, "%s: cannot read dataset %s (truncated?)", path, name);
            H5Sclose(mem);
            if (!ok) break;
            h = cksum_update(h, buf, (size_t)cnt * sizeof(float));
            size_t lo = S2D_MAX(at, offset), hi = S2D_MIN(at + (size_t)cnt, offset + count);
            if (lo < hi) memcpy(out + (lo - offset), buf + (lo - at), (hi - lo) * sizeof(float));
        }
        free(buf);
        if (ok && (!attr_read_u64(d, "checksum", &want) || want != h))
            ok = err_set(err, "%s: dataset %s is corrupted (checksum mismatch)", path, name);
    } else {
        hsize_t start = offset, cnt = count;
        hid_t mem = H5Screate_simple(1, &cnt, NULL);
        H5Sselect_hyperslab(sp, H5S_SELECT_SET, &start, NULL, &cnt, NULL);
        if (count && H5Dread(d, H5T_NATIVE_FLOAT, mem, sp, H5P_DEFAULT, out) < 0)
            ok = err_set(err, "%s: cannot read dataset %s (truncated?)", path, name);
        H5Sclose(mem);
        if (ok) ok = checksum_ok(d, out, count * sizeof(float), path, name, err);
    }
    H5Sclose(sp);
    H5Dclose(d);
    return ok;
}

static bool optim_n_params(hid_t f, const char *path, const char *name, size_t *n, s2d_err *err) {
    char gname[256];
    snprintf(gname, sizeof gname, "/models/%s", name);
    int64_t np = 0;
    hid_t g = link_exists(f, "models") && link_exists(f, gname) ? H5Gopen2(f, gname, H5P_DEFAULT) : -1;
    bool ok = g >= 0 && attr_read_i64(g, "n_params", &np) && np > 0;
    if (g >= 0) H5Gclose(g);
    if (!ok) return err_set(err, "%s: no model '%s' (or its n_params attribute) in the checkpoint", path, name);
    *n = (size_t)np;
    return true;
}

bool ckpt_read_optim_range(const char *path, const char *name, size_t offset, size_t count, float *m_out,
                           float *v_out, long *step, s2d_err *err) {
    hid_t f = ckpt_open(path, err);
    if (f < 0) return false;
    char gname[256];
    size_t n = 0;
    snprintf(gname, sizeof gname, "/optim/%s", name);
    bool ok = valid_name(name) && optim_n_params(f, path, name, &n, err);
    if (ok && (!link_exists(f, "optim") || !link_exists(f, gname)))
        ok = err_set(err, "%s: no optimizer state for model '%s' (group %s)", path, name, gname);
    if (ok) {
        hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
        int64_t st = 0;
        char dm[300], dv[300];
        snprintf(dm, sizeof dm, "%s/m", gname);
        snprintf(dv, sizeof dv, "%s/v", gname);
        ok = read_f32_range(f, path, dm, offset, count, n, m_out, err) &&
             read_f32_range(f, path, dv, offset, count, n, v_out, err);
        if (ok && !attr_read_i64(g, "step", &st)) ok = err_set(err, "%s: %s has no step attribute", path, gname);
        if (ok && step) *step = (long)st;
        H5Gclose(g);
    }
    H5Fclose(f);
    return ok;
}

static bool load_optim(hid_t f, const char *path, const char *name, size_t n_params, ckpt_optim **out, s2d_err *err) {
    char gname[256];
    snprintf(gname, sizeof gname, "/optim/%s", name);
    *out = NULL;
    if (!link_exists(f, "optim") || !link_exists(f, gname)) return true; /* none stored */
    hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
    if (g < 0) return err_set(err, "%s: cannot open group %s", path, gname);
    double b1, b2, eps, wd;
    int64_t step;
    if (!attr_read_f64(g, "beta1", &b1) || !attr_read_f64(g, "beta2", &b2) || !attr_read_f64(g, "eps", &eps) ||
        !attr_read_f64(g, "weight_decay", &wd) || !attr_read_i64(g, "step", &step)) {
        H5Gclose(g);
        return err_set(err, "%s: group %s lacks one of the attributes step, beta1, beta2, eps, weight_decay", path, gname);
    }
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1 && eps > 0)) {
        H5Gclose(g);
        return err_set(err, "%s: %s has bad hyper-parameters beta1=%g beta2=%g eps=%g", path, gname, b1, b2, eps);
    }
    ckpt_optim *o = xcalloc(1, sizeof *o);
    *o = (ckpt_optim){.n = n_params, .m = xmalloc((n_params ? n_params : 1) * sizeof(float)),
                      .v = xmalloc((n_params ? n_params : 1) * sizeof(float)), .step = (long)step, .beta1 = b1,
                      .beta2 = b2, .eps = eps, .weight_decay = wd};
    char dm[300], dv[300];
    snprintf(dm, sizeof dm, "%s/m", gname);
    snprintf(dv, sizeof dv, "%s/v", gname);
    bool ok = read_f32_range(f, path, dm, 0, n_params, n_params, o->m, err) &&
              read_f32_range(f, path, dv, 0, n_params, n_params, o->v, err);
    /* segments [k, 3]: must tile [0, n) in order */
    if (ok) {
        hid_t d = H5Dopen2(g, "segments", H5P_DEFAULT);
        hsize_t dims[2] = {0, 0};
        hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
        if (d < 0 || H5Sget_simple_extent_ndims(sp) != 2 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0 ||
            dims[1] != 3 || dims[0] == 0) {
            ok = err_set(err, "%s: dataset %s/segments is missing or not [k, 3]", path, gname);
        } else {
            int64_t *raw = xmalloc(dims[0] * 3 * sizeof(int64_t));
            ckpt_segment *segs = xmalloc(dims[0] * sizeof *segs);
            char dname[300];
            snprintf(dname, sizeof dname, "%s/segments", gname);
            if (H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0)
                ok = err_set(err, "%s: cannot read dataset %s/segments", path, gname);
            else ok = checksum_ok(d, raw, dims[0] * 3 * sizeof(int64_t), path, dname, err);
            int64_t at = 0;
            for (hsize_t i = 0; ok && i < dims[0]; i++) {
                if (raw[3 * i] != at || raw[3 * i + 1] <= 0 || raw[3 * i] + raw[3 * i + 1] > (int64_t)n_params)
                    ok = err_set(err, "%s: %s/segments row %llu does not continue the tiling of [0, %zu)", path, gname,
                                 (unsigned long long)i, n_params);
                segs[i] = (ckpt_segment){(size_t)raw[3 * i], (size_t)raw[3 * i + 1], raw[3 * i + 2] != 0};
                at += raw[3 * i + 1];
            }
            if (ok && at != (int64_t)n_params)
                ok = err_set(err, "%s: %s/segments cover %lld of %zu floats", path, gname, (long long)at, n_params);
            free(raw);
            if (ok) o->segments = segs, o->n_segments = (int)dims[0];
            else free(segs);
        }
        if (sp >= 0) H5Sclose(sp);
        if (d >= 0) H5Dclose(d);
    }
    H5Gclose(g);
    if (!ok) {
        free(o->m);
        free(o->v);
        free(o->segments);
        free(o);
        return false;
    }
    *out = o;
    return true;
}

static bool load_contents(hid_t f, const char *path, const ckpt_binding *b, ckpt_state *s, s2d_err *err) {
    int64_t stage = 0, step = 0;
    if (!attr_read_i64(f, "stage_index", &stage) || !attr_read_i64(f, "step", &step))
        return err_set(err, "%s: root attributes stage_index/step are missing", path);
    s->stage_index = (int)stage;
    s->step = (long)step;
    s->stage_name = attr_read_str(f, "stage_name");
    if (!s->stage_name) s->stage_name = xstrdup("");
    bool corrupt = false;
    if (link_exists(f, "config") && !(s->config_text = text_dataset_read(f, "config", &corrupt)))
        return err_set(err, corrupt ? "%s: dataset /config is corrupted (checksum mismatch)"
                                    : "%s: cannot read string dataset /config", path);

    char **names = NULL;
    int n = 0;
    hid_t g = link_exists(f, "models") ? H5Gopen2(f, "models", H5P_DEFAULT) : -1;
    if (g < 0 || !group_names(g, &names, &n)) {
        if (g >= 0) H5Gclose(g);
        return err_set(err, "%s: group /models is missing or unreadable", path);
    }
    H5Gclose(g);
    s->models = xcalloc((size_t)(n ? n : 1), sizeof *s->models);
    for (int i = 0; i < n; i++) {
        ckpt_model *cm = &s->models[i];
        if (!load_model_from(f, path, names[i], b, cm, err)) break;
        s->n_models = i + 1;
        if (!load_optim(f, path, cm->name, cm->n_params, &cm->opt, err)) break;
    }
    h5_free_names(names, n);
    if (s->n_models != n) return false;
    if (n && link_exists(f, "optim")) { /* the break above stopped at a failed optimizer load */
        for (int i = 0; i < n; i++) {
            char gname[256];
            snprintf(gname, sizeof gname, "/optim/%s", s->models[i].name);
            if (link_exists(f, gname) && !s->models[i].opt) return false;
        }
    }

    if (link_exists(f, "state")) {
        g = H5Gopen2(f, "state", H5P_DEFAULT);
        if (g < 0 || !group_names(g, &names, &n)) {
            if (g >= 0) H5Gclose(g);
            return err_set(err, "%s: group /state is unreadable", path);
        }
        s->u64s = xcalloc((size_t)(n ? n : 1), sizeof *s->u64s);
        bool ok = true;
        for (int i = 0; i < n && ok; i++) {
            ckpt_u64 *u = &s->u64s[i];
            u->key = names[i];
            names[i] = NULL;
            s->n_u64s = i + 1;
            hid_t d = H5Dopen2(g, u->key, H5P_DEFAULT);
            hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
            hsize_t dims[1] = {0};
            if (d < 0 || H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
                ok = err_set(err, "%s: dataset /state/%s is not a 1-D array", path, u->key);
            } else {
                u->n = dims[0];
                u->values = xcalloc(dims[0] ? dims[0] : 1, sizeof(uint64_t));
                char dname[300];
                snprintf(dname, sizeof dname, "/state/%s", u->key);
                if (dims[0] && H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, u->values) < 0)
                    ok = err_set(err, "%s: cannot read dataset /state/%s", path, u->key);
                else ok = checksum_ok(d, u->values, dims[0] * sizeof(uint64_t), path, dname, err);
            }
            if (sp >= 0) H5Sclose(sp);
            if (d >= 0) H5Dclose(d);
        }
        h5_free_names(names, n);
        H5Gclose(g);
        if (!ok) return false;
    }
    if (link_exists(f, "text")) {
        g = H5Gopen2(f, "text", H5P_DEFAULT);
        if (g < 0 || !group_names(g, &names, &n)) {
            if (g >= 0) H5Gclose(g);
            return err_set(err, "%s: group /text is unreadable", path);
        }
        s->texts = xcalloc((size_t)(n ? n : 1), sizeof *s->texts);
        bool ok = true;
        for (int i = 0; i < n && ok; i++) {
            s->texts[i].key = names[i];
            names[i] = NULL;
            s->n_texts = i + 1;
            if (!(s->texts[i].text = text_dataset_read(g, s->texts[i].key, &corrupt)))
                ok = err_set(err, corrupt ? "%s: dataset /text/%s is corrupted (checksum mismatch)"
                                          : "%s: cannot read string dataset /text/%s", path, s->texts[i].key);
        }
        h5_free_names(names, n);
        H5Gclose(g);
        if (!ok) return false;
    }
    return true;
}

bool ckpt_load(const char *path, const ckpt_binding *b, ckpt_state *out, s2d_err *err) {
    memset(out, 0, sizeof *out);
    hid_t f = ckpt_open(path, err);
    if (f < 0) return false;
    bool ok = load_contents(f, path, b, out, err);
    H5Fclose(f);
    if (!ok) ckpt_state_free(out);
    return ok;
}

void ckpt_state_free(ckpt_state *s) {
    for (int i = 0; i < s->n_models; i++) ckpt_model_free(&s->models[i]);
    for (int i = 0; i < s->n_u64s; i++) {
        free(s->u64s[i].key);
        free(s->u64s[i].values);
    }
    for (int i = 0; i < s->n_texts; i++) {
        free(s->texts[i].key);
        free(s->texts[i].text);
    }
    free(s->models);
    free(s->u64s);
    free(s->texts);
    free(s->stage_name);
    free(s->config_text);
    memset(s, 0, sizeof *s);
}

ckpt_model *ckpt_find_model(const ckpt_state *s, const char *name) {
    for (int i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i].name, name) == 0) return &s->models[i];
    return NULL;
}
const ckpt_u64 *ckpt_find_u64(const ckpt_state *s, const char *key) {
    for (int i = 0; i < s->n_u64s; i++)
        if (strcmp(s->u64s[i].key, key) == 0) return &s->u64s[i];
    return NULL;
}
const char *ckpt_find_text(const ckpt_state *s, const char *key) {
    for (int i = 0; i < s->n_texts; i++)
        if (strcmp(s->texts[i].key, key) == 0) return s->texts[i].text;
    return NULL;
}

static int file_newest_first(const void *a, const void *b) {
    const ckpt_file *x = a, *y = b;
    if (x->stage != y->stage) return x->stage > y->stage ? -1 : 1;
    return x->step > y->step ? -1 : x->step < y->step ? 1 : 0;
}

bool ckpt_list(const char *dir, ckpt_file **out, size_t *n_out, s2d_err *err) {
    *out = NULL, *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) return err_set(err, "%s: cannot read directory: %s", dir, strerror(errno));
    ckpt_file *c = NULL;
    size_t nc = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int stage, used = 0;
        long step;
        /* exactly ckpt-SS-NNNNNNNNN.h5: temp files ("....h5.tmp.PID") do not match */
        if (sscanf(e->d_name, "ckpt-%d-%ld.h5%n", &stage, &step, &used) != 2 || used == 0 || e->d_name[used] != '\0')
            continue;
        if (nc == cap) c = xrealloc(c, (cap = cap ? 2 * cap : 16) * sizeof *c);
        char path[4096];
        path_join(path, sizeof path, dir, e->d_name);
        c[nc++] = (ckpt_file){stage, step, xstrdup(path)};
    }
    closedir(d);
    if (nc) qsort(c, nc, sizeof *c, file_newest_first);
    *out = c, *n_out = nc;
    return true;
}

void ckpt_list_free(ckpt_file *files, size_t n) {
    for (size_t i = 0; i < n; i++) free(files[i].path);
    free(files);
}

bool ckpt_find_latest(const char *dir, char *out, size_t n, bool *found, s2d_err *err) {
    *found = false;
    ckpt_file *c;
    size_t nc;
    if (!ckpt_list(dir, &c, &nc, err)) return false;
    for (size_t i = 0; i < nc && !*found; i++) {
        s2d_err skip;
        hid_t f = ckpt_open(c[i].path, &skip);
        if (f < 0) {
            log_warn("resume: skipping %s", skip.msg);
            continue;
        }
        H5Fclose(f);
        snprintf(out, n, "%s", c[i].path);
        *found = true;
    }
    ckpt_list_free(c, nc);
    return true;
}

bool ckpt_load_latest(const char *dir, char *out, size_t n, const ckpt_binding *b, ckpt_state *st, bool *found,
                      s2d_err *err) {
    *found = false;
    memset(st, 0, sizeof *st);
    ckpt_file *c;
    size_t nc;
    if (!ckpt_list(dir, &c, &nc, err)) return false;
    for (size_t i = 0; i < nc && !*found; i++) {
        s2d_err why;
        if (ckpt_load(c[i].path, b, st, &why)) {
            snprintf(out, n, "%s", c[i].path);
            *found = true;
        } else {
            log_warn("resume: skipping damaged or incomplete checkpoint %s", why.msg);
        }
    }
    ckpt_list_free(c, nc);
    return true;
}

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
    x->d = link_exists(f, name) ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
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
    bool ok = attr_str(log->f, "format", H5_ROLLOUT_FORMAT) && attr_i64(log->f, "format_version", 1);
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

struct metrics_log {
    hid_t f;
    char *path;
    int n_fields;
    ext_ds stage, step;
    ext_ds *cols; /* [n_fields] */
};

static void metrics_log_free(metrics_log *log) {
    ext_close(&log->stage);
    ext_close(&log->step);
    for (int i = 0; i < log->n_fields && log->cols; i++) ext_close(&log->cols[i]);
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
        if (!valid_name(fields[i]) || strcmp(fields[i], "stage") == 0 || strcmp(fields[i], "step") == 0 ||
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
        char *have = ok ? attr_read_str(log->f, "fields") : NULL;
        if (ok && (!have || strcmp(have, joined) != 0))
            ok = err_set(err, "%s: has fields '%s', this run writes '%s'", path, have ? have : "(none)", joined);
        free(have);
        if (ok) ok = ext_open(log->f, "stage", H5T_NATIVE_INT32, &log->stage) &&
                     ext_open(log->f, "step", H5T_NATIVE_INT64, &log->step);
        for (int i = 0; ok && i < n_fields; i++)
            if (!ext_open(log->f, fields[i], H5T_NATIVE_DOUBLE, &log->cols[i]) || log->cols[i].n != log->step.n)
                ok = err_set(err, "%s: column /%s is missing or has the wrong length", path, fields[i]);
        if (!ok && err->msg[0] == '\0') err_set(err, "%s: damaged metrics table", path);
    } else {
        log->f = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
        if (log->f < 0) ok = err_set(err, "%s: cannot create: %s", path, strerror(errno));
        if (ok)
            ok = attr_str(log->f, "format", H5_METRICS_FORMAT) && attr_i64(log->f, "format_version", 1) &&
                 attr_str(log->f, "fields", joined) &&
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
    int32_t s32 = stage;
    int64_t s64 = step;
    bool ok = true;
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
    bool ok = H5Fclose(log->f) >= 0;
    log->f = -1;
    if (!ok) err_set(err, "%s: closing failed", log->path);
    metrics_log_free(log);
    return ok;
}

/* ---- generic readers ---- */

static bool read_whole(const char *path, const char *dataset, hid_t memtype, size_t elem, void **out, size_t *n,
                       s2d_err *err) {
    hid_t f = open_ro(path, err);
    if (f < 0) return false;
    bool ok = true;
    hid_t d = H5Lexists(f, dataset, H5P_DEFAULT) > 0 ? H5Dopen2(f, dataset, H5P_DEFAULT) : -1;
    if (d < 0) ok = err_set(err, "%s: no dataset %s", path, dataset);
    else {
        hid_t sp = H5Dget_space(d);
        hssize_t np = H5Sget_simple_extent_npoints(sp);
        *n = np > 0 ? (size_t)np : 0;
        *out = xmalloc((*n ? *n : 1) * elem);
        if (*n && H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0) {
            ok = err_set(err, "%s: cannot read dataset %s as %s (truncated or wrong type?)", path, dataset,
                         elem == 4 ? "float32" : "a number");
            free(*out);
            *out = NULL;
        }
        H5Sclose(sp);
        H5Dclose(d);
    }
    H5Fclose(f);
    return ok;
}
bool h5_read_f32(const char *path, const char *dataset, float **out, size_t *n, s2d_err *err) {
    return read_whole(path, dataset, H5T_NATIVE_FLOAT, sizeof(float), (void **)out, n, err);
}
bool h5_read_f64(const char *path, const char *dataset, double **out, size_t *n, s2d_err *err) {
    return read_whole(path, dataset, H5T_NATIVE_DOUBLE, sizeof(double), (void **)out, n, err);
}
bool h5_read_i64(const char *path, const char *dataset, int64_t **out, size_t *n, s2d_err *err) {
    return read_whole(path, dataset, H5T_NATIVE_INT64, sizeof(int64_t), (void **)out, n, err);
}

bool h5_file_format(const char *path, char **format, s2d_err *err) {
    *format = NULL;
    hid_t f = open_ro(path, err);
    if (f < 0) return false;
    *format = attr_read_str(f, "format");
    H5Fclose(f);
    if (!*format) return err_set(err, "%s: HDF5 file without an s2d format attribute", path);
    return true;
}

/* ---- summary (s2d inspect) ---- */

static void print_dims(FILE *out, hid_t d) {
    hid_t sp = H5Dget_space(d);
    hsize_t dims[8];
    int rank = H5Sget_simple_extent_ndims(sp);
    if (rank < 0 || rank > 8) rank = 0;
    H5Sget_simple_extent_dims(sp, dims, NULL);
    fputc('[', out);
    for (int i = 0; i < rank; i++) fprintf(out, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    fputc(']', out);
    H5Sclose(sp);
}

/* ", qwen3: hidden 64, layers 2, heads 4/2, vocab 512" from a config.json text (nothing when it does not parse). */
static void summary_model_config(const char *json, FILE *out) {
    cJSON *c = json ? cJSON_Parse(json) : NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "model_type");
    const char *keys[] = {"hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size"};
    double v[5];
    bool ok = cJSON_IsString(type);
    for (int i = 0; i < 5 && ok; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(c, keys[i]);
        ok = cJSON_IsNumber(x);
        if (ok) v[i] = x->valuedouble;
    }
    if (ok)
        fprintf(out, ", %s: hidden %.0f, layers %.0f, heads %.0f/%.0f, vocab %.0f", type->valuestring, v[0], v[1], v[2],
                v[3], v[4]);
    cJSON_Delete(c);
}

static bool summary_checkpoint(hid_t f, const char *path, bool list_tensors, FILE *out, s2d_err *err) {
    int64_t version = 0, complete = 0, stage = 0, step = 0;
    attr_read_i64(f, "format_version", &version);
    attr_read_i64(f, "complete", &complete);
    attr_read_i64(f, "stage_index", &stage);
    attr_read_i64(f, "step", &step);
    char *stage_name = attr_read_str(f, "stage_name");
    fprintf(out, "kind: checkpoint (format %s version %lld, %s)\n", H5_CKPT_FORMAT, (long long)version,
            complete == 1 ? "complete" : "INCOMPLETE");
    fprintf(out, "stage: %lld (%s)\nstep: %lld\n", (long long)stage, stage_name ? stage_name : "", (long long)step);
    free(stage_name);
    char **names = NULL;
    int n = 0;
    hid_t mg = link_exists(f, "models") ? H5Gopen2(f, "models", H5P_DEFAULT) : -1;
    if (mg < 0 || !group_names(mg, &names, &n)) {
        if (mg >= 0) H5Gclose(mg);
        return err_set(err, "%s: group /models is missing or unreadable", path);
    }
    fprintf(out, "models: %d\n", n);
    for (int i = 0; i < n; i++) {
        hid_t g = H5Gopen2(mg, names[i], H5P_DEFAULT);
        int64_t np = 0, nt = 0;
        attr_read_i64(g, "n_params", &np);
        attr_read_i64(g, "n_tensors", &nt);
        char *dtype = attr_read_str(g, "dtype"), *json = attr_read_str(g, "config_json");
        fprintf(out, "model %s: %lld tensors, %lld parameters, %s", names[i], (long long)nt, (long long)np,
                dtype ? dtype : "?");
        summary_model_config(json, out);
        char og[256];
        snprintf(og, sizeof og, "/optim/%s", names[i]);
        if (link_exists(f, "optim") && link_exists(f, og)) {
            hid_t o = H5Gopen2(f, og, H5P_DEFAULT);
            int64_t ostep = 0;
            attr_read_i64(o, "step", &ostep);
            fprintf(out, ", optimizer state (AdamW step %lld)", (long long)ostep);
            H5Gclose(o);
        }
        fputc('\n', out);
        if (list_tensors) {
            char **tn = NULL;
            int k = 0;
            if (group_names(g, &tn, &k))
                for (int j = 0; j < k; j++) {
                    hid_t d = H5Dopen2(g, tn[j], H5P_DEFAULT);
                    if (d < 0) continue;
                    fprintf(out, "  %s ", tn[j]);
                    print_dims(out, d);
                    fputc('\n', out);
                    H5Dclose(d);
                }
            h5_free_names(tn, k);
        }
        free(dtype);
        free(json);
        H5Gclose(g);
    }
    h5_free_names(names, n);
    H5Gclose(mg);
    if (link_exists(f, "state")) {
        hid_t g = H5Gopen2(f, "state", H5P_DEFAULT);
        if (g >= 0 && group_names(g, &names, &n)) {
            for (int i = 0; i < n; i++) {
                hid_t d = H5Dopen2(g, names[i], H5P_DEFAULT);
                if (d < 0) continue;
                hid_t sp = H5Dget_space(d);
                hssize_t np = H5Sget_simple_extent_npoints(sp);
                fprintf(out, "state %s:", names[i]);
                if (np > 0 && np <= 16) {
                    uint64_t v[16];
                    if (H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0)
                        for (hssize_t j = 0; j < np; j++) fprintf(out, " %llu", (unsigned long long)v[j]);
                } else {
                    fprintf(out, " (%lld values)", (long long)np);
                }
                fputc('\n', out);
                H5Sclose(sp);
                H5Dclose(d);
            }
            h5_free_names(names, n);
        }
        if (g >= 0) H5Gclose(g);
    }
    char *config = link_exists(f, "config") ? text_dataset_read(f, "config", NULL) : NULL;
    if (config) {
        fprintf(out, "config (first lines):\n");
        const char *p = config;
        for (int line = 0; line < 12 && *p; line++) {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            fprintf(out, "  %.*s\n", len, p);
            p += len + (nl ? 1 : 0);
        }
        if (*p) fprintf(out, "  ...\n");
        free(config);
    }
    return true;
}

static bool summary_rollouts(const char *path, FILE *out, s2d_err *err) {
    int64_t *stage = NULL, *step = NULL, *offs = NULL;
    float *reward = NULL;
    size_t n_steps = 0, n2 = 0, n_off = 0, n_rew = 0;
    bool ok = h5_read_i64(path, "steps/stage", &stage, &n_steps, err) && h5_read_i64(path, "steps/step", &step, &n2, err) &&
              h5_read_i64(path, "seqs/offsets", &offs, &n_off, err) &&
              h5_read_f32(path, "seqs/reward", &reward, &n_rew, err);
    if (ok && (n2 != n_steps || n_off != n_rew + 1))
        ok = err_set(err, "%s: inconsistent rollout log (%zu steps vs %zu, %zu offsets for %zu sequences)", path, n_steps,
                     n2, n_off, n_rew);
    if (ok) {
        double sum = 0;
        size_t counted = 0;
        for (size_t i = 0; i < n_rew; i++)
            if (!isnan(reward[i])) sum += reward[i], counted++;
        fprintf(out, "kind: rollout log (format %s)\n", H5_ROLLOUT_FORMAT);
        fprintf(out, "steps: %zu\nsequences: %zu\ntokens: %lld\n", n_steps, n_rew, (long long)offs[n_off - 1]);
        if (counted) fprintf(out, "mean reward: %.6g (over %zu sequences)\n", sum / (double)counted, counted);
        else fprintf(out, "mean reward: none recorded\n");
        if (n_steps)
            fprintf(out, "first: stage %lld step %lld\nlast: stage %lld step %lld\n", (long long)stage[0],
                    (long long)step[0], (long long)stage[n_steps - 1], (long long)step[n_steps - 1]);
    }
    free(stage);
    free(step);
    free(offs);
    free(reward);
    return ok;
}

static bool summary_metrics(hid_t f, const char *path, FILE *out, s2d_err *err) {
    char *fields = attr_read_str(f, "fields");
    int64_t *step = NULL;
    size_t n = 0;
    if (!fields) return err_set(err, "%s: metrics table without a fields attribute", path);
    bool ok = h5_read_i64(path, "step", &step, &n, err);
    if (ok) {
        fprintf(out, "kind: metrics table (format %s)\nrows: %zu\nfields: %s\n", H5_METRICS_FORMAT, n, fields);
        if (n) {
            fprintf(out, "last row: step %lld", (long long)step[n - 1]);
            char *save = NULL, *copy = xstrdup(fields);
            for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                double *col = NULL;
                size_t k = 0;
                if (h5_read_f64(path, tok, &col, &k, err) && k == n) fprintf(out, ", %s %.6g", tok, col[n - 1]);
                free(col);
            }
            free(copy);
            fputc('\n', out);
        }
    }
    free(fields);
    free(step);
    return ok;
}

bool h5_summary(const char *path, bool list_tensors, FILE *out, s2d_err *err) {
    char *format = NULL;
    if (!h5_file_format(path, &format, err)) return false;
    hid_t f = open_ro(path, err);
    if (f < 0) {
        free(format);
        return false;
    }
    fprintf(out, "file: %s\n", path);
    bool ok;
    if (strcmp(format, H5_CKPT_FORMAT) == 0) ok = summary_checkpoint(f, path, list_tensors, out, err);
    else if (strcmp(format, H5_ROLLOUT_FORMAT) == 0) ok = summary_rollouts(path, out, err);
    else if (strcmp(format, H5_METRICS_FORMAT) == 0) ok = summary_metrics(f, path, out, err);
    else ok = err_set(err, "%s: unknown s2d file format '%s'", path, format);
    H5Fclose(f);
    free(format);
    return ok;
}
