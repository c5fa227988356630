/* h5io_internal.h: the small HDF5 readers and writers shared by h5io.c (helpers, generic readers),
 * h5io_ckpt.c (checkpoints), h5io_logs.c (rollout logs, metrics tables) and h5io_summary.c (s2d inspect).
 * Not part of the io interface: include io/h5io.h. */
#pragma once
#include <hdf5.h>

#include "io/h5io.h"

/* Per-dataset checksum (h5_checksum): FNV-1a 64 state; chunked callers feed multiples of 8 bytes. */
#define CKSUM_INIT 0xcbf29ce484222325ULL
#define CKSUM_PRIME 0x100000001b3ULL

void h5_quiet(void);
bool h5_valid_name(const char *s);
bool h5_attr_i64(hid_t loc, const char *name, int64_t v);
bool h5_attr_u64(hid_t loc, const char *name, uint64_t v);
bool h5_attr_f64(hid_t loc, const char *name, double v);
uint64_t h5_cksum_update(uint64_t h, const void *data, size_t n);
bool h5_attr_str(hid_t loc, const char *name, const char *s);
bool h5_text_dataset_write(hid_t loc, const char *name, const char *s);
bool h5_dataset_write(hid_t loc, const char *name, hid_t memtype, hid_t filetype, int rank, const hsize_t *dims,
                      const void *data, hid_t *out_d);
bool h5_attr_read_i64(hid_t loc, const char *name, int64_t *v);
bool h5_attr_read_u64(hid_t loc, const char *name, uint64_t *v);
bool h5_attr_read_f64(hid_t loc, const char *name, double *v);
bool h5_checksum_ok(hid_t d, const void *data, size_t nbytes, const char *path, const char *dname, s2d_err *err);
char *h5_attr_read_str(hid_t loc, const char *name);
char *h5_text_dataset_read(hid_t loc, const char *name, bool *corrupt);
bool h5_link_exists(hid_t loc, const char *name);
bool h5_group_names(hid_t loc, char ***names, int *n);
hid_t h5_open_ro(const char *path, s2d_err *err);
/* h5io_seal.c: h5_seal appends the seal to a closed file; h5_seal_check returns 1 (sealed, intact), 0 (no seal:
 * written before seals) or -1 (damaged, err set) without letting libhdf5 parse the file. */
bool h5_seal(const char *path, s2d_err *err);
int h5_seal_check(const char *path, s2d_err *err);
