/* h5io_ckpt.c: checkpoints (layout in h5io.h): save, load (through a binding for the models), find, list. */
#include "io/h5io_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/half.h"
#include "core/log.h"

/* ---- checkpoints: save ---- */

void ckpt_path(char *out, size_t n, const char *dir, int stage_index, long step) {
    char name[64];
    snprintf(name, sizeof name, "ckpt-%02d-%09ld.h5", stage_index, step);
    path_join(out, n, dir, name);
}

static bool save_model(hid_t f, const char *path, const ckpt_model *cm, s2d_err *err) {
    if (!h5_valid_name(cm->name)) return err_set(err, "%s: bad model name '%s' (empty or contains '/')", path, cm->name ? cm->name : "");
    char gpath[256];
    snprintf(gpath, sizeof gpath, "/models/%s", cm->name);
    if (h5_link_exists(f, gpath)) return err_set(err, "%s: model '%s' given twice", path, cm->name);
    hid_t g = H5Gcreate2(f, gpath, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return err_set(err, "%s: cannot create group %s", path, gpath);
    const char *json = cm->config_json ? cm->config_json : "";
    bool ok = h5_attr_str(g, "config_json", json) && h5_attr_u64(g, "config_json_checksum", h5_checksum(json, strlen(json))) &&
              h5_attr_i64(g, "n_params", (int64_t)cm->n_params) &&
              h5_attr_i64(g, "n_tensors", cm->n_tensors) && h5_attr_str(g, "dtype", cm->bf16 ? "bf16" : "f32");
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
            ok = h5_dataset_write(g, t->name, H5T_NATIVE_UINT16, H5T_STD_U16LE, t->ndim, dims, half, &d) &&
                 h5_attr_str(d, "dtype", "bf16");
        } else {
            ok = h5_dataset_write(g, t->name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, t->ndim, dims, src, &d);
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
    ok = h5_dataset_write(g, "m", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 1, &n, o->m, NULL) &&
         h5_dataset_write(g, "v", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, 1, &n, o->v, NULL) &&
         h5_dataset_write(g, "segments", H5T_NATIVE_INT64, H5T_STD_I64LE, 2, sdims, segs, NULL) &&
         h5_attr_i64(g, "step", o->step) && h5_attr_f64(g, "beta1", o->beta1) && h5_attr_f64(g, "beta2", o->beta2) &&
         h5_attr_f64(g, "eps", o->eps) && h5_attr_f64(g, "weight_decay", o->weight_decay);
    free(segs);
    H5Gclose(g);
    if (!ok) return err_set(err, "%s: cannot write the optimizer state %s", path, gpath);
    return true;
}

static bool save_contents(hid_t f, const char *path, const ckpt_state *s, s2d_err *err) {
    if (!h5_attr_str(f, "format", H5_CKPT_FORMAT) || !h5_attr_i64(f, "format_version", H5_CKPT_VERSION) ||
        !h5_attr_i64(f, "stage_index", s->stage_index) || !h5_attr_str(f, "stage_name", s->stage_name ? s->stage_name : "") ||
        !h5_attr_i64(f, "step", s->step))
        return err_set(err, "%s: cannot write the root attributes", path);
    if (s->config_text && !h5_text_dataset_write(f, "config", s->config_text))
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
        if (!h5_valid_name(u->key)) return err_set(err, "%s: bad state key '%s' (empty or contains '/')", path, u->key ? u->key : "");
        snprintf(name, sizeof name, "/state/%s", u->key);
        if (h5_link_exists(f, name)) return err_set(err, "%s: state key '%s' given twice", path, u->key);
        hsize_t n = u->n;
        uint64_t dummy = 0;
        if (!h5_dataset_write(f, name, H5T_NATIVE_UINT64, H5T_STD_U64LE, 1, &n, u->n ? u->values : &dummy, NULL))
            return err_set(err, "%s: cannot write dataset %s", path, name);
    }
    for (int i = 0; i < s->n_texts; i++) {
        char name[256];
        if (!h5_valid_name(s->texts[i].key)) return err_set(err, "%s: bad text key '%s'", path, s->texts[i].key ? s->texts[i].key : "");
        snprintf(name, sizeof name, "/text/%s", s->texts[i].key);
        if (h5_link_exists(f, name)) return err_set(err, "%s: text key '%s' given twice", path, s->texts[i].key);
        if (!h5_text_dataset_write(f, name, s->texts[i].text ? s->texts[i].text : ""))
            return err_set(err, "%s: cannot write dataset %s", path, name);
    }
    /* Last: a reader trusts the file only when this is set. */
    if (!h5_attr_i64(f, "complete", 1)) return err_set(err, "%s: cannot write the complete attribute", path);
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
    if (ok) ok = h5_seal(tmp, err); /* h5io_seal.c: checked before any reader lets libhdf5 parse the file */
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
    hid_t f = h5_open_ro(path, err);
    if (f < 0) return -1;
    char *format = h5_attr_read_str(f, "format");
    int64_t version = 0, complete = 0;
    bool ok = false;
    if (!format || strcmp(format, H5_CKPT_FORMAT) != 0)
        err_set(err, "%s: not an s2d checkpoint (root attribute format = '%s')", path, format ? format : "(none)");
    else if (!h5_attr_read_i64(f, "format_version", &version) || version != H5_CKPT_VERSION)
        err_set(err, "%s: checkpoint format_version %lld, this s2d reads %d", path, (long long)version, H5_CKPT_VERSION);
    else if (!h5_attr_read_i64(f, "complete", &complete) || complete != 1)
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
    if (!h5_link_exists(g, t->name)) return err_set(err, "%s: dataset %s/%s is missing", path, gname, t->name);
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
        char *dt = h5_attr_read_str(d, "dtype");
        H5T_class_t cls = H5Tget_class(ty);
        size_t size = H5Tget_size(ty);
        if (dt && strcmp(dt, "bf16") == 0) {
            if (cls != H5T_INTEGER || size != 2)
                ok = err_set(err, "%s: dataset %s/%s says dtype bf16 but is not uint16", path, gname, t->name);
            else if (H5Dread(d, H5T_NATIVE_UINT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, half) < 0)
                ok = err_set(err, "%s: cannot read dataset %s/%s (truncated?)", path, gname, t->name);
            else if (!h5_checksum_ok(d, half, t->numel * sizeof(uint16_t), path, dname, err))
                ok = false;
            else bf16_to_f32_array(half, dst, t->numel);
            *is_bf16 = true;
        } else if (cls != H5T_FLOAT) {
            ok = err_set(err, "%s: dataset %s/%s is not float (and has no dtype = bf16 attribute)", path, gname, t->name);
        } else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
            ok = err_set(err, "%s: cannot read dataset %s/%s (truncated?)", path, gname, t->name);
        } else {
            ok = h5_checksum_ok(d, dst, t->numel * sizeof(float), path, dname, err);
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
    if (!h5_valid_name(name) || !h5_link_exists(f, "models") || !h5_link_exists(f, gname)) {
        char **names = NULL;
        int n = 0;
        char list[512] = "";
        hid_t mg = h5_link_exists(f, "models") ? H5Gopen2(f, "models", H5P_DEFAULT) : -1;
        if (mg >= 0 && h5_group_names(mg, &names, &n))
            for (int i = 0; i < n; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
        if (mg >= 0) H5Gclose(mg);
        h5_free_names(names, n);
        return err_set(err, "%s: no model '%s' in the checkpoint (it has: %s)", path, name, n ? list : "none");
    }
    hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
    if (g < 0) return err_set(err, "%s: cannot open group %s", path, gname);
    char *json = h5_attr_read_str(g, "config_json");
    if (!json) {
        H5Gclose(g);
        return err_set(err, "%s: group %s has no config_json attribute", path, gname);
    }
    uint64_t want_sum = 0;
    if (H5Aexists(g, "config_json_checksum") > 0 &&
        (!h5_attr_read_u64(g, "config_json_checksum", &want_sum) || want_sum != h5_checksum(json, strlen(json)))) {
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
        if (!h5_group_names(g, &names, &n)) ok = err_set(err, "%s: cannot list group %s", path, gname);
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
    bool ok = g >= 0 && h5_group_names(g, names, n);
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
        enum { CHUNK = 1 << 16 }; /* floats: a multiple of 8 bytes, as h5_cksum_update wants */
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
            h = h5_cksum_update(h, buf, (size_t)cnt * sizeof(float));
            size_t lo = S2D_MAX(at, offset), hi = S2D_MIN(at + (size_t)cnt, offset + count);
            if (lo < hi) memcpy(out + (lo - offset), buf + (lo - at), (hi - lo) * sizeof(float));
        }
        free(buf);
        if (ok && (!h5_attr_read_u64(d, "checksum", &want) || want != h))
            ok = err_set(err, "%s: dataset %s is corrupted (checksum mismatch)", path, name);
    } else {
        hsize_t start = offset, cnt = count;
        hid_t mem = H5Screate_simple(1, &cnt, NULL);
        H5Sselect_hyperslab(sp, H5S_SELECT_SET, &start, NULL, &cnt, NULL);
        if (count && H5Dread(d, H5T_NATIVE_FLOAT, mem, sp, H5P_DEFAULT, out) < 0)
            ok = err_set(err, "%s: cannot read dataset %s (truncated?)", path, name);
        H5Sclose(mem);
        if (ok) ok = h5_checksum_ok(d, out, count * sizeof(float), path, name, err);
    }
    H5Sclose(sp);
    H5Dclose(d);
    return ok;
}

static bool optim_n_params(hid_t f, const char *path, const char *name, size_t *n, s2d_err *err) {
    char gname[256];
    snprintf(gname, sizeof gname, "/models/%s", name);
    int64_t np = 0;
    hid_t g = h5_link_exists(f, "models") && h5_link_exists(f, gname) ? H5Gopen2(f, gname, H5P_DEFAULT) : -1;
    bool ok = g >= 0 && h5_attr_read_i64(g, "n_params", &np) && np > 0;
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
    bool ok = h5_valid_name(name) && optim_n_params(f, path, name, &n, err);
    if (ok && (!h5_link_exists(f, "optim") || !h5_link_exists(f, gname)))
        ok = err_set(err, "%s: no optimizer state for model '%s' (group %s)", path, name, gname);
    if (ok) {
        hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
        int64_t st = 0;
        char dm[300], dv[300];
        snprintf(dm, sizeof dm, "%s/m", gname);
        snprintf(dv, sizeof dv, "%s/v", gname);
        ok = read_f32_range(f, path, dm, offset, count, n, m_out, err) &&
             read_f32_range(f, path, dv, offset, count, n, v_out, err);
        if (ok && !h5_attr_read_i64(g, "step", &st)) ok = err_set(err, "%s: %s has no step attribute", path, gname);
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
    if (!h5_link_exists(f, "optim") || !h5_link_exists(f, gname)) return true; /* none stored */
    hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
    if (g < 0) return err_set(err, "%s: cannot open group %s", path, gname);
    double b1, b2, eps, wd;
    int64_t step;
    if (!h5_attr_read_f64(g, "beta1", &b1) || !h5_attr_read_f64(g, "beta2", &b2) || !h5_attr_read_f64(g, "eps", &eps) ||
        !h5_attr_read_f64(g, "weight_decay", &wd) || !h5_attr_read_i64(g, "step", &step)) {
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
            else ok = h5_checksum_ok(d, raw, dims[0] * 3 * sizeof(int64_t), path, dname, err);
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
    if (!h5_attr_read_i64(f, "stage_index", &stage) || !h5_attr_read_i64(f, "step", &step))
        return err_set(err, "%s: root attributes stage_index/step are missing", path);
    s->stage_index = (int)stage;
    s->step = (long)step;
    s->stage_name = h5_attr_read_str(f, "stage_name");
    if (!s->stage_name) s->stage_name = xstrdup("");
    bool corrupt = false;
    if (h5_link_exists(f, "config") && !(s->config_text = h5_text_dataset_read(f, "config", &corrupt)))
        return err_set(err, corrupt ? "%s: dataset /config is corrupted (checksum mismatch)"
                                    : "%s: cannot read string dataset /config", path);

    char **names = NULL;
    int n = 0;
    hid_t g = h5_link_exists(f, "models") ? H5Gopen2(f, "models", H5P_DEFAULT) : -1;
    if (g < 0 || !h5_group_names(g, &names, &n)) {
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
    if (n && h5_link_exists(f, "optim")) { /* the break above stopped at a failed optimizer load */
        for (int i = 0; i < n; i++) {
            char gname[256];
            snprintf(gname, sizeof gname, "/optim/%s", s->models[i].name);
            if (h5_link_exists(f, gname) && !s->models[i].opt) return false;
        }
    }

    if (h5_link_exists(f, "state")) {
        g = H5Gopen2(f, "state", H5P_DEFAULT);
        if (g < 0 || !h5_group_names(g, &names, &n)) {
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
                else ok = h5_checksum_ok(d, u->values, dims[0] * sizeof(uint64_t), path, dname, err);
            }
            if (sp >= 0) H5Sclose(sp);
            if (d >= 0) H5Dclose(d);
        }
        h5_free_names(names, n);
        H5Gclose(g);
        if (!ok) return false;
    }
    if (h5_link_exists(f, "text")) {
        g = H5Gopen2(f, "text", H5P_DEFAULT);
        if (g < 0 || !h5_group_names(g, &names, &n)) {
            if (g >= 0) H5Gclose(g);
            return err_set(err, "%s: group /text is unreadable", path);
        }
        s->texts = xcalloc((size_t)(n ? n : 1), sizeof *s->texts);
        bool ok = true;
        for (int i = 0; i < n && ok; i++) {
            s->texts[i].key = names[i];
            names[i] = NULL;
            s->n_texts = i + 1;
            if (!(s->texts[i].text = h5_text_dataset_read(g, s->texts[i].key, &corrupt)))
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
