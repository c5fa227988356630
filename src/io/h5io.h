/* h5io.h: s2d's HDF5 files (DESIGN §5): training checkpoints, rollout logs and metrics tables.
 *
 * All three are plain HDF5 (serial library, 1.10 API) that h5py reads directly. Every function that reads or
 * writes returns false and fills an s2d_err naming the file and the dataset on bad input or I/O failure.
 *
 * ---- Checkpoint layout (format "s2d-checkpoint", version H5_CKPT_VERSION) ----
 *   /                      attrs: format = "s2d-checkpoint", format_version (int64), stage_index (int64),
 *                                 stage_name (string), step (int64), complete (int64 1, written LAST)
 *   /config                string dataset: the resolved run config (YAML text); absent when none was given
 *   /models/<name>/        one group per named model; attrs: config_json (HF config.json text), n_params
 *                          (int64), n_tensors (int64), dtype ("f32" | "bf16")
 *   /models/<name>/<HF tensor name>   one GLOBAL dataset per tensor, HF shape ([out, in] for linears):
 *                          float32, or uint16 bf16 bit patterns with attr dtype = "bf16"
 *   /optim/<name>/m, /v    float32 [n_params]: AdamW moments, flat, in the model's tensor-table order
 *                          (model.h offsets); attrs step, beta1, beta2, eps, weight_decay
 *   /optim/<name>/segments int64 [n_segments, 3]: (offset, numel, decay) of the weight-decay segments
 *   /state/<key>           uint64 [n]: RNG states, data cursors, label counters (see conventions below)
 *   /text/<key>            string datasets: any other text the caller wants back
 * Names (model names, tensor names, keys) are used verbatim as HDF5 link names and must not contain '/' or
 * be empty ('/' would make HDF5 groups; HF tensor names never contain one). Tensors are global (not shards),
 * so a checkpoint loads the same whatever number of learners wrote it or reads it.
 *
 * Key conventions for /state (uint64 arrays; not enforced): "rng.<who>" = rng_stream (seed, stream, counter,
 * used) or any state words; "cursor.<dataset>" = (seed, epoch, position); "labels.<stage>" = labelled examples
 * consumed. Signed values are stored as their two's-complement bits.
 *
 * Integrity: every dataset has a "checksum" attribute (uint64, h5_checksum of its data as written; group
 * /models/<name> has config_json_checksum), verified by every reader here; strings are fixed-length (never in
 * the global heap) and files use the 1.8+ format, whose metadata HDF5 checksums. ckpt_save then appends a seal
 * (h5io_seal.c: a hash of every byte outside tensor data), checked by h5_open_ro before libhdf5 parses
 * anything, because libhdf5 can crash on damaged structures its checksums do not cover. Files without checksum
 * attributes or a seal (written before they existed) load unchecked by them.
 *
 * Crash safety: ckpt_save writes "<path>.tmp.<pid>" (registered with s2d_tmp_register, so die() removes it),
 * sets the `complete` attribute last, closes, fsyncs and renames it to <path>. ckpt_find_latest ignores temp
 * names and any file without complete = 1.
 *
 * Models travel as named arrays (io depends only on core): a ckpt_model is a config.json text, a flat float
 * buffer and its tensor table, and optionally AdamW state as arrays. model/model_ckpt.h makes them from an s2d
 * model (model_ckpt_view) and gives the binding that turns a loaded config back into a model
 * (model_ckpt_binding); algo/optim.h does the same for AdamW (adamw_ckpt_view).
 *
 * Usage (save):
 *     ckpt_model mods[2]; model_ckpt_view("policy", &policy, false, &mods[0]); ... mods[0].opt = &optim_arrays;
 *     uint64_t cur[3] = {seed, epoch, pos};
 *     ckpt_u64 st[] = {{.key = "cursor.math_train", .values = cur, .n = 3}};
 *     ckpt_state s = {.stage_index = 2, .stage_name = "bridge_opd", .step = 40, .config_text = yaml,
 *                     .models = mods, .n_models = 2, .u64s = st, .n_u64s = 1};
 *     char path[4096]; ckpt_path(path, sizeof path, dir, s.stage_index, s.step);
 *     if (!ckpt_save(path, &s, &err)) die("%s", err.msg);
 * Usage (resume):
 *     char path[4096]; bool found;
 *     if (!ckpt_find_latest(dir, path, sizeof path, &found, &err)) die(...);
 *     ckpt_state s; if (found && !ckpt_load(path, &model_ckpt_binding, &s, &err)) die(...);
 *     model *policy = ckpt_find_model(&s, "policy")->object; const ckpt_u64 *c = ckpt_find_u64(&s, "cursor.math_train");
 *     ... take what you need ...
 *     ckpt_state_free(&s);
 * ZeRO-1 learners can read only their slice of the moments with ckpt_read_optim_range. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

#define H5_CKPT_FORMAT "s2d-checkpoint"
#define H5_CKPT_VERSION 1
#define H5_ROLLOUT_FORMAT "s2d-rollouts"
#define H5_METRICS_FORMAT "s2d-metrics"

/* One tensor of a model: its HF name and shape, at `offset` floats into the model's flat parameter buffer. */
typedef struct {
    const char *name;
    int ndim;         /* 1 or 2 */
    int64_t shape[2]; /* HF layout: [out, in] for linears */
    size_t numel;
    size_t offset;
} ckpt_tensor;

/* AdamW state as arrays (the optimizer itself lives in algo/). Segments tile [0, n) in order. */
typedef struct {
    size_t offset, numel;
    bool decay;
} ckpt_segment;
typedef struct {
    size_t n;
    float *m, *v; /* [n] each */
    long step;
    double beta1, beta2, eps, weight_decay;
    ckpt_segment *segments; /* [n_segments] */
    int n_segments;
} ckpt_optim;

typedef struct ckpt_binding ckpt_binding;

/* One named model as arrays. Save: everything is the caller's; opt (optional) adds /optim/<name>; bf16 stores the
 * parameters as bf16. Load: name, config_json and opt (or NULL when the checkpoint holds no optimizer state) are
 * malloc'd; the binding's make() supplies params, n_params, tensors and object (the model it built); bf16 tells
 * how they were stored. ckpt_state_free / ckpt_model_free release all of it. */
typedef struct {
    char *name;
    char *config_json;          /* HF config.json text */
    size_t n_params;
    float *params;              /* [n_params], host memory */
    const ckpt_tensor *tensors; /* [n_tensors], in flat-buffer order */
    int n_tensors;
    bool bf16;
    ckpt_optim *opt;
    void *object;                /* load: what binding->make built; NULL on save */
    const ckpt_binding *binding; /* load: the binding that releases object */
} ckpt_model;

/* How a loaded model comes to life above io: make() builds the tensor table and parameter buffer that
 * config_json describes (filling n_params, params, tensors, n_tensors, object) or fails with an error naming
 * `where`; release() frees what make() built. */
struct ckpt_binding {
    bool (*make)(const char *config_json, const char *where, ckpt_model *cm, s2d_err *err);
    void (*release)(ckpt_model *cm);
};

typedef struct {
    char *key;
    uint64_t *values; /* [n] */
    size_t n;
} ckpt_u64;

typedef struct {
    char *key;
    char *text;
} ckpt_text;

/* The state of a run at a checkpoint. Save: everything is the caller's (config_text, stage_name may be
 * NULL). Load: everything is malloc'd by ckpt_load and released by ckpt_state_free. */
typedef struct {
    int stage_index;
    char *stage_name;
    long step;
    char *config_text; /* resolved config text */
    ckpt_model *models;
    int n_models;
    ckpt_u64 *u64s;
    int n_u64s;
    ckpt_text *texts;
    int n_texts;
} ckpt_state;

/* "<dir>/ckpt-<stage_index, 2 digits>-<step, 9 digits>.h5": names sort in (stage, step) order. */
void ckpt_path(char *out, size_t n, const char *dir, int stage_index, long step);
bool ckpt_save(const char *path, const ckpt_state *s, s2d_err *err);
/* Loads everything (all models, optimizer states, keys, texts). Fails on a file that is not a complete s2d
 * checkpoint of a known version, or on any tensor whose shape or type disagrees with its model's config. */
bool ckpt_load(const char *path, const ckpt_binding *b, ckpt_state *out, s2d_err *err);
void ckpt_state_free(ckpt_state *s);
ckpt_model *ckpt_find_model(const ckpt_state *s, const char *name); /* NULL if absent */
const ckpt_u64 *ckpt_find_u64(const ckpt_state *s, const char *key); /* NULL if absent */
const char *ckpt_find_text(const ckpt_state *s, const char *key);   /* NULL if absent */

/* Loads only model `name` (no optimizer state) through the binding; release with ckpt_model_free.
 * The error lists the models the file has when `name` is not one of them. */
bool ckpt_load_model(const char *path, const char *name, const ckpt_binding *b, ckpt_model *out, s2d_err *err);
void ckpt_model_free(ckpt_model *cm);
/* Model names in the file (malloc'd array of malloc'd strings; free with h5_free_names). */
bool ckpt_model_names(const char *path, char ***names, int *n, s2d_err *err);
void h5_free_names(char **names, int n);
/* AdamW moments [offset, offset + count) of model `name`, into m_out and v_out ([count] each), and the step. */
bool ckpt_read_optim_range(const char *path, const char *name, size_t offset, size_t count, float *m_out,
                           float *v_out, long *step, s2d_err *err);
/* Newest complete checkpoint in dir by (stage, step) among files named as ckpt_path makes them; temp files
 * and files without complete = 1 (or unreadable ones) are skipped. found = false when there is none. An
 * unreadable dir is an error. */
bool ckpt_find_latest(const char *dir, char *out, size_t n, bool *found, s2d_err *err);
/* The files named exactly ckpt-SS-STEP.h5 in dir (no temps), newest first (by stage, then step); paths are
 * malloc'd (ckpt_list_free). */
typedef struct {
    int stage;
    long step;
    char *path;
} ckpt_file;
bool ckpt_list(const char *dir, ckpt_file **out, size_t *n, s2d_err *err);
void ckpt_list_free(ckpt_file *files, size_t n);
/* Loads (ckpt_load, every checksum verified) the newest checkpoint in dir that loads; each newer one that does
 * not (damaged, incomplete, unreadable) is skipped with a warning naming it and why. found = false (and st
 * zeroed) when none loads. An unreadable dir is an error. */
bool ckpt_load_latest(const char *dir, char *out, size_t n, const ckpt_binding *b, ckpt_state *st, bool *found,
                      s2d_err *err);

/* ---- Rollout log layout (format "s2d-rollouts"; every dataset 1-D, chunked, extendible) ----
 *   per step   (N steps):   /steps/stage int32, /steps/step int64, /steps/policy_version int64,
 *                           /steps/seq_begin int64 (first sequence of the step), /steps/n_seqs int32
 *   per sequence (S total): /seqs/offsets int64 [S + 1]: GLOBAL CSR offsets into /tokens (offsets[0] = 0),
 *                           /seqs/prompt_len int32, /seqs/reward float32, /seqs/advantage float32
 *   per token  (T total):   /tokens int32, /logp/behaviour, /logp/teacher, /logp/reference float32 — the
 *                           log-prob arrays are aligned with /tokens in the caller's row convention and hold
 *                           NaN where a step did not provide them.
 * Reading with h5py: seq i = f["tokens"][f["seqs/offsets"][i]:f["seqs/offsets"][i+1]].
 * Offsets are int64 (not int32) so a long run can log more than 2^31 tokens. */
typedef struct {
    int stage;
    long step;
    long policy_version;
    int n_seqs;
    const int32_t *offsets;       /* [n_seqs + 1] local CSR offsets, offsets[0] = 0, non-decreasing */
    const int32_t *tokens;        /* [offsets[n_seqs]] */
    const int32_t *prompt_len;    /* [n_seqs] or NULL (stored as 0) */
    const float *reward;          /* [n_seqs] or NULL (NaN) */
    const float *advantage;       /* [n_seqs] or NULL (NaN) */
    const float *logp_behaviour;  /* [T] or NULL (NaN) */
    const float *logp_teacher;    /* [T] or NULL (NaN) */
    const float *logp_reference;  /* [T] or NULL (NaN) */
} rollout_step;

typedef struct rollout_log rollout_log;
/* Creates path, or opens an existing rollout log to append to it. */
rollout_log *rollout_log_open(const char *path, s2d_err *err);
/* Appends one step; the file is flushed so a reader sees every appended step. */
bool rollout_log_append(rollout_log *log, const rollout_step *st, s2d_err *err);
bool rollout_log_close(rollout_log *log, s2d_err *err);

/* ---- Metrics table (format "s2d-metrics"): one row per step, columns as 1-D extendible datasets ----
 *   /stage int32 [N], /step int64 [N], /<field> float64 [N] for each field; attr fields = comma-joined names.
 * h5py: {k: f[k][:] for k in f.keys()} is the table. */
typedef struct metrics_log metrics_log;
/* Creates path with these fields, or opens an existing table, which must have exactly these fields. */
metrics_log *metrics_log_open(const char *path, const char *const *fields, int n_fields, s2d_err *err);
bool metrics_log_append(metrics_log *log, int stage, long step, const double *values /* [n_fields] */,
                        s2d_err *err);
/* Extras: columns named at run time (a reward command's reward/<name> step means), /reward/<name> float64 [N]
 * beside the fixed ones, at most METRICS_MAX_EXTRAS: NaN in the rows that did not report the name (a new name's
 * column is back-filled with NaN). Names are percent-escaped into one dataset name ('%' -> %25, '/' -> %2F,
 * "." -> %2E). metrics_log_append = this with no extras (every extra column gets NaN). */
enum { METRICS_MAX_EXTRAS = 32 };
bool metrics_log_append_extras(metrics_log *log, int stage, long step, const double *values /* [n_fields] */,
                               const char *const *extra_names, const double *extra_values /* [n_extra] */,
                               int n_extra, s2d_err *err);
/* The first keep rows of the extra columns of table `from` into table `to` (a table cut on resume). */
bool metrics_log_copy_extras(const char *from, const char *to, long keep, s2d_err *err);
bool metrics_log_close(metrics_log *log, s2d_err *err);

/* ---- generic readers (inspect, tests): a whole 1-D or N-D dataset, converted to the asked type ---- */
bool h5_read_f32(const char *path, const char *dataset, float **out, size_t *n, s2d_err *err);
bool h5_read_f64(const char *path, const char *dataset, double **out, size_t *n, s2d_err *err);
bool h5_read_i64(const char *path, const char *dataset, int64_t **out, size_t *n, s2d_err *err);
/* The root attribute "format" ("s2d-checkpoint", "s2d-rollouts", "s2d-metrics"), malloc'd; false + err when
 * the file is not HDF5 or has no format attribute. */
bool h5_file_format(const char *path, char **format, s2d_err *err);
/* The checksum stored with every checkpoint dataset (attribute "checksum", uint64): FNV-1a 64 over the bytes
 * as 64-bit little-endian words, then the tail bytes. */
uint64_t h5_checksum(const void *data, size_t n);

/* Human-readable summary of an s2d HDF5 file on out (s2d inspect): kind, stage/step, models with tensor
 * counts, parameter counts (and every tensor's shape with list_tensors), optimizer and state keys, a config
 * excerpt; rollout logs: steps, sequences, tokens, mean reward; metrics tables: rows, fields, last row.
 * Reads metadata and the small per-step arrays only (never a model's parameters). */
bool h5_summary(const char *path, bool list_tensors, FILE *out, s2d_err *err);
