/* safetensors.h: Hugging Face safetensors checkpoints in and out.
 *
 * File format: 8-byte little-endian u64 N, then N bytes of UTF-8 JSON header, then the data region.
 * Header: {"__metadata__": {str: str, ...} (optional), "<tensor>": {"dtype": "BF16", "shape": [..],
 * "data_offsets": [begin, end]}, ...}; offsets are relative to the data region.
 *
 * Reading (mmap, read-only). Every rule of the reference reader (Rust `safetensors`) is checked, each with its
 * own message naming the file (and tensor): file at least 8 bytes; N <= 100 MB ("header length ... exceeds");
 * 8+N <= file size ("header length ... runs past"); header valid UTF-8, valid JSON (trailing spaces allowed, as
 * the writer pads with them), an object; `__metadata__` a map of string -> string; each tensor has dtype (known), shape (non-negative
 * integers), data_offsets ([begin, end], begin <= end); end - begin == prod(shape) * dtype size (overflow
 * checked); offsets, sorted by begin, start at 0 and are contiguous (no gap, no overlap); the last ends
 * exactly at the end of the file; tensor names are unique; no field appears twice in an entry.
 * Limitations (ours, with clear errors): at most ST_MAX_DIMS dims; sub-byte dtypes (F4, F6_*) unsupported;
 * JSON numbers are read as doubles, so integers must be <= 2^53 (1.0 is accepted as 1).
 *
 * A model directory: `model.safetensors`, or `model.safetensors.index.json` ({"weight_map": {tensor: shard}})
 * plus its shards. Every shard is opened and validated; each tensor the index names must be in its shard, and
 * every tensor of a shard must be named in the index for that shard.
 *
 * Usage:
 *     st_set *set; s2d_err err;
 *     if (!st_open_dir("path/to/model", &set, &err)) die("%s", err.msg);
 *     const st_tensor *t = st_find(set, "model.embed_tokens.weight");   // NULL if absent
 *     CHECK_OK(st_read_f32(t, buf, n, &err), &err);                      // F32/BF16/F16 -> fp32, n == numel
 *     st_close(set);
 * Tensor pointers stay valid until st_close. `data` points into the mapping and may be unaligned for its
 * dtype: use st_read_* (or memcpy) rather than casting it. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

typedef enum {
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_F64,
    ST_I32,
    ST_I64,
    ST_I16,
    ST_I8,
    ST_U8,
    ST_U16,
    ST_U32,
    ST_U64,
    ST_BOOL,
    ST_F8_E4M3,
    ST_F8_E5M2,
    ST_DTYPE_COUNT
} st_dtype;

const char *st_dtype_name(st_dtype dtype); /* "F32", "BF16", ... as in the file */
size_t st_dtype_size(st_dtype dtype);      /* bytes per element */
bool st_dtype_from_name(const char *name, st_dtype *out);

enum { ST_MAX_DIMS = 8 };

typedef struct {
    const char *name;
    st_dtype dtype;
    int ndim;                    /* 0 for a scalar */
    int64_t shape[ST_MAX_DIMS];  /* shape[0..ndim) */
    int64_t numel;               /* product of shape (1 for a scalar) */
    const void *data;            /* into the read-only mapping; may be unaligned */
    size_t nbytes;               /* numel * st_dtype_size(dtype) */
    const char *file;            /* path of the file that holds it (for messages) */
} st_tensor;

typedef struct st_set st_set; /* one file or all shards of a model: tensors by name */

/* One .safetensors file. */
bool st_open_file(const char *path, st_set **out, s2d_err *err);
/* A model directory: model.safetensors if present, else model.safetensors.index.json and its shards. */
bool st_open_dir(const char *dir, st_set **out, s2d_err *err);
/* An index file (…index.json) and the shards it names (relative to the index's directory). */
bool st_open_index(const char *index_path, st_set **out, s2d_err *err);
/* A file image already in memory (not copied: buf must outlive the set); label names it in messages.
 * Same validation as st_open_file (use it for fuzzing or for images received over the network). */
bool st_open_memory(const void *buf, size_t len, const char *label, st_set **out, s2d_err *err);
void st_close(st_set *set);

const st_tensor *st_find(const st_set *set, const char *name); /* NULL if absent; O(log n) */
int st_count(const st_set *set);
const st_tensor *st_at(const st_set *set, int i); /* 0 <= i < st_count, sorted by name */
/* `__metadata__` value of the (first) file, NULL if absent. */
const char *st_metadata(const st_set *set, const char *key);

/* Copies t into out as fp32 (F32 exact, BF16/F16 widened). False unless count == t->numel and the dtype
 * is F32, BF16 or F16; the message names the tensor and its file. */
bool st_read_f32(const st_tensor *t, float *out, size_t count, s2d_err *err);
/* Integer tensors: I32 or I64 (I64 values must fit in int32 for st_read_i32). count must equal numel. */
bool st_read_i32(const st_tensor *t, int32_t *out, size_t count, s2d_err *err);
bool st_read_i64(const st_tensor *t, int64_t *out, size_t count, s2d_err *err);
/* Checks that t has exactly this shape (ndim dims); the message shows both shapes. */
bool st_check_shape(const st_tensor *t, int ndim, const int64_t *shape, s2d_err *err);

/* ---- writing ---- */

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const float *f32;   /* fp32 values, stored as the writer's float dtype (F32, BF16 or F16), or */
    const int32_t *i32; /* int32 values, stored raw as I32. Exactly one of f32 / i32 is set. */
} st_write_tensor;

typedef struct {
    const char *key, *value;
} st_meta;

/* Writes one file atomically (on any error no file is left at path). float_dtype: ST_F32, ST_BF16 or
 * ST_F16. Tensors are laid out sorted by (element size descending, name), as the reference writer does; the
 * header lists __metadata__ first (keys in the given order) then tensors in that same order, padded with
 * spaces to a multiple of 8 bytes. meta may be NULL when n_meta == 0. */
bool st_write(const char *path, const st_write_tensor *tensors, int n, st_dtype float_dtype, const st_meta *meta,
              int n_meta, s2d_err *err);

/* Writes a sharded checkpoint into dir: <basename>-0000i-of-0000N.safetensors plus
 * <basename>.safetensors.index.json ({"metadata": {"total_size": bytes of tensor data}, "weight_map": {..}}),
 * filling shards greedily in the writer's order so each holds at most max_shard_bytes of data (a tensor
 * larger than that gets a shard of its own). If everything fits in one shard it writes <basename>.safetensors
 * and no index, as Hugging Face does. All files are written to temporary names and renamed only when every
 * one is complete. Writes *n_shards when non-NULL. After success it deletes files of an earlier save under the
 * same base name that this one does not use (<basename>.safetensors, the index, <basename>-NNNNN-of-MMMMM with
 * another MMMMM), as Hugging Face does, so the directory never holds two checkpoints. */
bool st_write_sharded(const char *dir, const char *basename, const st_write_tensor *tensors, int n,
                      st_dtype float_dtype, const st_meta *meta, int n_meta, size_t max_shard_bytes, int *n_shards,
                      s2d_err *err);
