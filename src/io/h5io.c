/* h5io.c: the shared HDF5 helpers (names, attributes, checksummed datasets, strings) and the generic readers;
 * checkpoints are in h5io_ckpt.c, rollout logs and metrics in h5io_logs.c, s2d inspect's summary in
 * h5io_summary.c (layouts in h5io.h). */
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

/* HDF5 prints its error stack on stderr by default; we report our own messages instead. */
void h5_quiet(void) {
    static bool done;
    if (!done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        done = true;
    }
}

bool h5_valid_name(const char *s) { return s && s[0] && !strchr(s, '/') && strcmp(s, ".") != 0; }

/* ---- small writers ---- */

static bool h5_attr_write(hid_t loc, const char *name, hid_t type, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    hid_t a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = a >= 0 && H5Awrite(a, type, v) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return ok;
}
bool h5_attr_i64(hid_t loc, const char *name, int64_t v) { return h5_attr_write(loc, name, H5T_NATIVE_INT64, &v); }
bool h5_attr_u64(hid_t loc, const char *name, uint64_t v) { return h5_attr_write(loc, name, H5T_NATIVE_UINT64, &v); }
bool h5_attr_f64(hid_t loc, const char *name, double v) { return h5_attr_write(loc, name, H5T_NATIVE_DOUBLE, &v); }

/* Per-dataset checksum (attribute "checksum", uint64): FNV-1a 64 over the data's bytes taken as little-endian
 * 64-bit words, then the tail bytes one by one. Chunked callers feed multiples of 8 bytes. */
uint64_t h5_cksum_update(uint64_t h, const void *data, size_t n) {
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
uint64_t h5_checksum(const void *data, size_t n) { return h5_cksum_update(CKSUM_INIT, data, n); }

/* Strings are written fixed-length (stored in the object itself): a variable-length string lives in HDF5's
 * global heap, whose unchecked heap ids make a flipped byte crash the reader (H5HG_read). */
static hid_t h5_fixed_str_type(const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}
static hid_t h5_vlen_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}
bool h5_attr_str(hid_t loc, const char *name, const char *s) {
    hid_t t = h5_fixed_str_type(s);
    bool ok = h5_attr_write(loc, name, t, s);
    H5Tclose(t);
    return ok;
}
bool h5_text_dataset_write(hid_t loc, const char *name, const char *s) {
    hid_t t = h5_fixed_str_type(s), sp = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = d >= 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) >= 0 &&
              h5_attr_u64(d, "checksum", h5_checksum(s, strlen(s)));
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
    return ok;
}
bool h5_dataset_write(hid_t loc, const char *name, hid_t memtype, hid_t filetype, int rank, const hsize_t *dims,
                          const void *data, hid_t *out_d) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(loc, name, filetype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    size_t nbytes = (size_t)H5Sget_simple_extent_npoints(sp) * H5Tget_size(memtype);
    bool ok = d >= 0 && H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0 &&
              h5_attr_u64(d, "checksum", h5_checksum(data, nbytes));
    H5Sclose(sp);
    if (out_d && ok) *out_d = d;
    else if (d >= 0) H5Dclose(d);
    return ok;
}

/* ---- small readers ---- */

/* A numeric attribute is read only when it is one value of a numeric class of at most 8 bytes (a damaged
 * type or space is refused, never converted or read past the 8 bytes of *v). */
static bool h5_attr_read_num(hid_t loc, const char *name, hid_t memtype, void *v) {
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
bool h5_attr_read_i64(hid_t loc, const char *name, int64_t *v) { return h5_attr_read_num(loc, name, H5T_NATIVE_INT64, v); }
bool h5_attr_read_u64(hid_t loc, const char *name, uint64_t *v) { return h5_attr_read_num(loc, name, H5T_NATIVE_UINT64, v); }
bool h5_attr_read_f64(hid_t loc, const char *name, double *v) { return h5_attr_read_num(loc, name, H5T_NATIVE_DOUBLE, v); }

/* Checks data just read from dataset d (nbytes in memory, as written) against its checksum attribute. A dataset
 * without one (a checkpoint of format_version 1) is not checked. */
bool h5_checksum_ok(hid_t d, const void *data, size_t nbytes, const char *path, const char *dname, s2d_err *err) {
    if (H5Aexists(d, "checksum") <= 0) return true;
    uint64_t want = 0;
    if (!h5_attr_read_u64(d, "checksum", &want))
        return err_set(err, "%s: dataset %s: damaged checksum attribute (the file is corrupted)", path, dname);
    uint64_t got = h5_checksum(data, nbytes);
    if (got != want)
        return err_set(err, "%s: dataset %s is corrupted (checksum %016llx, written as %016llx)", path, dname,
                       (unsigned long long)got, (unsigned long long)want);
    return true;
}

/* A scalar string from an attribute (is_attr) or a dataset, variable or fixed length; malloc'd. */
char *h5_string_read(hid_t obj, bool is_attr) {
    hid_t ft = is_attr ? H5Aget_type(obj) : H5Dget_type(obj);
    if (ft < 0) return NULL;
    hid_t sp = is_attr ? H5Aget_space(obj) : H5Dget_space(obj);
    bool one = sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1; /* a damaged space would overrun the buffer */
    if (sp >= 0) H5Sclose(sp);
    char *out = NULL;
    size_t fsize = H5Tget_size(ft);
    if (one && H5Tget_class(ft) == H5T_STRING && fsize > 0 && fsize < ((size_t)1 << 32)) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = h5_vlen_str_type();
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
char *h5_attr_read_str(hid_t loc, const char *name) {
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    char *s = h5_string_read(a, true);
    H5Aclose(a);
    return s;
}
/* NULL when unreadable; *corrupt (may be NULL) set when it was read but fails its checksum. */
char *h5_text_dataset_read(hid_t loc, const char *name, bool *corrupt) {
    if (corrupt) *corrupt = false;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return NULL;
    char *s = h5_string_read(d, false);
    if (s && !h5_checksum_ok(d, s, strlen(s), "", name, NULL)) {
        if (corrupt) *corrupt = true;
        free(s);
        s = NULL;
    }
    H5Dclose(d);
    return s;
}
bool h5_link_exists(hid_t loc, const char *name) { return H5Lexists(loc, name, H5P_DEFAULT) > 0; }

/* Names of the links in group `loc` (malloc'd). */
bool h5_group_names(hid_t loc, char ***names, int *n) {
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
hid_t h5_open_ro(const char *path, s2d_err *err) {
    h5_quiet();
    if (access(path, R_OK) != 0) {
        err_set(err, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    if (!check_regular(path, err)) return -1; /* HDF5 would block opening a FIFO */
    if (h5_seal_check(path, err) < 0) return -1; /* damaged structure: libhdf5 could crash following it */
    if (H5Fis_hdf5(path) <= 0) {
        err_set(err, "%s: not an HDF5 file", path);
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) err_set(err, "%s: cannot open as HDF5 (truncated or corrupted?)", path);
    return f;
}


/* ---- generic readers ---- */

static bool read_whole(const char *path, const char *dataset, hid_t memtype, size_t elem, void **out, size_t *n,
                       s2d_err *err) {
    hid_t f = h5_open_ro(path, err);
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
    hid_t f = h5_open_ro(path, err);
    if (f < 0) return false;
    *format = h5_attr_read_str(f, "format");
    H5Fclose(f);
    if (!*format) return err_set(err, "%s: HDF5 file without an s2d format attribute", path);
    return true;
}
