/* h5io_seal.c: the seal appended to a checkpoint after HDF5 closes it, checked before HDF5 opens it.
 *
 * Why: libhdf5 follows some damaged metadata (a flipped byte in a link table, say) into a crash or a heap
 * error instead of an error code, and its own checksums do not cover every structure. The seal hashes every
 * byte HDF5 parses as structure, so a damaged file is refused by name before libhdf5 reads any of it. Tensor
 * data is left out of that hash on purpose: each dataset has its own checksum, so a flip there is still named
 * by dataset (and `s2d inspect` can still summarise the file).
 *
 * Layout, after the HDF5 bytes [0, E) (HDF5 ignores bytes past its end of file):
 *   body   u64 n, then n x (u64 offset, u64 length): the raw-data ranges of the contiguous datasets
 *   footer "S2DSEAL1", u64 body_len, u64 body_hash, u64 meta_hash, u64 E, u64 footer_hash, "S2DSEAL1"
 * all little-endian. meta_hash is h5_cksum_update over each gap between the ranges in [0, E), in order;
 * body_hash covers the body, footer_hash the footer's first 40 bytes. The magic is written twice so that no
 * single damaged byte can make a sealed file look unsealed. */
#include "io/h5io_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SEAL_MAGIC "S2DSEAL1"
#define SEAL_FOOTER 56 /* 7 words */
#define SEAL_CHUNK (1u << 20)

typedef struct {
    uint64_t offset, length;
} seal_range;

typedef struct {
    seal_range *r;
    size_t n, cap;
} seal_ranges;

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int range_by_offset(const void *a, const void *b) {
    uint64_t x = ((const seal_range *)a)->offset, y = ((const seal_range *)b)->offset;
    return x < y ? -1 : x > y;
}

static herr_t collect_range(hid_t loc, const char *name, const H5O_info_t *info, void *arg) {
    if (info->type != H5O_TYPE_DATASET) return 0;
    seal_ranges *rs = arg;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return -1;
    haddr_t off = H5Dget_offset(d); /* HADDR_UNDEF unless contiguous and allocated */
    hsize_t len = H5Dget_storage_size(d);
    H5Dclose(d);
    if (off == HADDR_UNDEF || len == 0) return 0; /* compact data lives in its object header: sealed with it */
    if (rs->n == rs->cap) {
        rs->cap = rs->cap ? 2 * rs->cap : 64;
        rs->r = xrealloc(rs->r, rs->cap * sizeof *rs->r);
    }
    rs->r[rs->n++] = (seal_range){(uint64_t)off, (uint64_t)len};
    return 0;
}

/* Hash of [0, end) minus the ranges (sorted, disjoint, inside [0, end)). */
static bool hash_gaps(FILE *fp, uint64_t end, const seal_range *r, size_t n, uint64_t *out) {
    unsigned char *buf = xmalloc(SEAL_CHUNK);
    uint64_t h = CKSUM_INIT, pos = 0;
    bool ok = true;
    for (size_t i = 0; i <= n && ok; i++) {
        uint64_t gap_end = i < n ? r[i].offset : end;
        if (fseeko(fp, (off_t)pos, SEEK_SET) != 0) ok = false;
        while (ok && pos < gap_end) {
            size_t want = gap_end - pos < SEAL_CHUNK ? (size_t)(gap_end - pos) : SEAL_CHUNK;
            if (fread(buf, 1, want, fp) != want) ok = false;
            else h = h5_cksum_update(h, buf, want), pos += want;
        }
        if (i < n) pos = r[i].offset + r[i].length;
    }
    free(buf);
    *out = h;
    return ok;
}

bool h5_seal(const char *path, s2d_err *err) {
    h5_quiet();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return err_set(err, "%s: cannot reopen to seal it", path);
    seal_ranges rs = {0};
    bool ok = H5Ovisit2(f, H5_INDEX_NAME, H5_ITER_INC, collect_range, &rs, H5O_INFO_BASIC) >= 0;
    H5Fclose(f);
    if (!ok) {
        free(rs.r);
        return err_set(err, "%s: cannot list its datasets to seal it", path);
    }
    if (rs.n) qsort(rs.r, rs.n, sizeof *rs.r, range_by_offset);
    FILE *fp = fopen(path, "r+b");
    if (!fp) {
        free(rs.r);
        return err_set(err, "%s: cannot open to seal it: %s", path, strerror(errno));
    }
    uint64_t end = 0, meta = 0;
    ok = fseeko(fp, 0, SEEK_END) == 0 && (end = (uint64_t)ftello(fp)) > 0 && hash_gaps(fp, end, rs.r, rs.n, &meta);
    size_t body_len = 8 + 16 * rs.n;
    unsigned char *body = xmalloc(body_len), foot[SEAL_FOOTER];
    put_u64(body, rs.n);
    for (size_t i = 0; i < rs.n; i++) put_u64(body + 8 + 16 * i, rs.r[i].offset), put_u64(body + 16 + 16 * i, rs.r[i].length);
    memcpy(foot, SEAL_MAGIC, 8);
    put_u64(foot + 8, body_len);
    put_u64(foot + 16, h5_checksum(body, body_len));
    put_u64(foot + 24, meta);
    put_u64(foot + 32, end);
    put_u64(foot + 40, h5_checksum(foot, 40));
    memcpy(foot + 48, SEAL_MAGIC, 8);
    ok = ok && fseeko(fp, (off_t)end, SEEK_SET) == 0 && fwrite(body, 1, body_len, fp) == body_len &&
         fwrite(foot, 1, SEAL_FOOTER, fp) == SEAL_FOOTER;
    if (fclose(fp) != 0) ok = false;
    free(body);
    free(rs.r);
    return ok ? true : err_set(err, "%s: writing its seal failed (disk full?)", path);
}

int h5_seal_check(const char *path, s2d_err *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return err_set(err, "%s: cannot read: %s", path, strerror(errno)), -1;
    struct stat st;
    unsigned char foot[SEAL_FOOTER];
    if (fstat(fileno(fp), &st) != 0 || st.st_size < SEAL_FOOTER ||
        fseeko(fp, st.st_size - SEAL_FOOTER, SEEK_SET) != 0 || fread(foot, 1, SEAL_FOOTER, fp) != SEAL_FOOTER) {
        fclose(fp);
        return 0; /* too short for a seal: HDF5's own checks decide */
    }
    bool m1 = memcmp(foot, SEAL_MAGIC, 8) == 0, m2 = memcmp(foot + 48, SEAL_MAGIC, 8) == 0;
    if (!m1 && !m2) {
        fclose(fp);
        return 0; /* written before seals existed */
    }
    const char *why = NULL;
    uint64_t size = (uint64_t)st.st_size, body_len = get_u64(foot + 8), end = get_u64(foot + 32);
    unsigned char *body = NULL;
    if (!m1 || !m2 || get_u64(foot + 40) != h5_checksum(foot, 40)) why = "its seal's footer is damaged";
    else if (body_len < 8 || (body_len - 8) % 16 || body_len > size - SEAL_FOOTER || end != size - SEAL_FOOTER - body_len)
        why = "its seal's footer does not match the file's length (truncated or appended to)";
    else {
        body = xmalloc((size_t)body_len);
        if (fseeko(fp, (off_t)end, SEEK_SET) != 0 || fread(body, 1, (size_t)body_len, fp) != body_len ||
            h5_checksum(body, (size_t)body_len) != get_u64(foot + 16))
            why = "its seal's range table is damaged";
    }
    seal_range *r = NULL;
    size_t n = 0;
    if (!why) {
        n = (size_t)get_u64(body);
        if (n != (body_len - 8) / 16) why = "its seal's range table is damaged";
        else {
            r = xmalloc((n ? n : 1) * sizeof *r);
            for (size_t i = 0; i < n && !why; i++) {
                r[i] = (seal_range){get_u64(body + 8 + 16 * i), get_u64(body + 16 + 16 * i)};
                uint64_t lo = i ? r[i - 1].offset + r[i - 1].length : 0;
                if (r[i].offset < lo || r[i].length > end || r[i].offset > end - r[i].length)
                    why = "its seal's range table is damaged";
            }
        }
    }
    uint64_t meta = 0;
    if (!why && !hash_gaps(fp, end, r, n, &meta)) why = "reading it failed";
    else if (!why && meta != get_u64(foot + 24))
        why = "its HDF5 structure (outside tensor data) is corrupted: seal checksum mismatch; not opened";
    fclose(fp);
    free(body);
    free(r);
    if (why) return err_set(err, "%s: %s", path, why), -1;
    return 1;
}
