/* dataset.h: labelled math problems from JSON lines: {id, prompt, answer} records, de-duplication,
 * deterministic per-epoch shuffling with a savable cursor, and order-independent splits.
 *
 * Formats (one JSON object per line; blank lines are skipped):
 *   math    MATH / MATH-500: prompt = `problem`; answer = `answer` if present, else the content of the LAST
 *           \boxed{...} in `solution` (braces matched, \{ \} escapes skipped); id = `unique_id` or the line.
 *   gsm8k   prompt = `question`; answer = the text after "#### " in `answer`, trimmed, commas removed.
 *   aime    prompt = `prompt` or `problem`; answer = `answer`, a JSON integer or a string of digits (kept as
 *           written, e.g. "023"); id = `id` if present, else the line.
 *   generic prompt/answer/id fields named by the caller (id optional).
 *   Any format: optional `subject` and `level` fields (string or number) are kept for breakdowns (s2d eval).
 *   auto    the format is chosen from the first record's fields (problem → math, question → gsm8k,
 *           prompt → aime).
 * Errors name FILE:LINE and the reason ("invalid JSON", "record has no 'answer' field (format gsm8k)").
 * Nothing is dropped silently: the loader reports how many records it read, and dedup how many it removed. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"

typedef enum { DS_AUTO, DS_MATH, DS_GSM8K, DS_AIME, DS_GENERIC } ds_format;

typedef struct {
    const char *id;     /* unique_id, id field, or the 1-based line number as text */
    const char *prompt; /* the problem text */
    const char *answer; /* the reference answer (string) */
    const char *subject; /* optional "subject" field (MATH: "Algebra", ...), "" when absent */
    const char *level;   /* optional "level" field as text (MATH-500: "3"; MATH: "Level 3"), "" when absent */
    int line;           /* line in the source file */
} ds_record;

/* All strings live in one buffer (`text`); records point into it. */
typedef struct {
    ds_record *rec; /* [n] */
    int n;
    ds_format format; /* the format used (resolved when loaded with DS_AUTO) */
    char *source;     /* file path */
    char *text;       /* string storage */
    size_t text_len, text_cap;
} dataset;

typedef struct {
    ds_format format;
    /* generic format only: field names (id_field may be NULL: the line number is the id) */
    const char *prompt_field, *answer_field, *id_field;
} ds_load_opts;

/* "math" | "gsm8k" | "aime" | "generic" | "auto". */
bool ds_format_parse(const char *name, ds_format *out, s2d_err *err);
const char *ds_format_name(ds_format f);

bool dataset_load(dataset *ds, const char *path, const ds_load_opts *opts, s2d_err *err);
void dataset_free(dataset *ds);

/* Content of the last \boxed{...} (or \fbox{...}) in text, braces matched; false when there is none or it
 * is unbalanced. out is malloc'd. */
bool ds_last_boxed(const char *text, char **out);

/* Removes records whose prompt (whitespace-trimmed) equals an earlier one's; keeps the first; returns the
 * number removed. */
int dataset_dedup(dataset *ds);

/* Deterministic shuffling. The permutation for epoch e is a Fisher-Yates shuffle driven by the Philox stream
 * (seed, DS_SHUFFLE_STREAM + e); the cursor {seed, epoch, position} is all the state there is. */
typedef struct {
    uint64_t seed;
    int64_t epoch;    /* 0-based */
    int64_t position; /* records of this epoch already handed out */
} ds_cursor;

typedef struct {
    ds_cursor cur;
    int n;
    int32_t *perm; /* [n] order of epoch cur.epoch */
} ds_sampler;

#define DS_SHUFFLE_STREAM 0x5D15000000000000ull

/* Writes the permutation of [0, n) for (seed, epoch) into perm. */
void ds_permutation(uint64_t seed, int64_t epoch, int n, int32_t *perm);
void ds_sampler_init(ds_sampler *s, int n, uint64_t seed);
/* Restores a saved cursor (checks position <= n). */
bool ds_sampler_restore(ds_sampler *s, int n, ds_cursor cur, s2d_err *err);
/* Next k record indices into out[k]; crosses into the next epoch (reshuffled) when one runs out. */
void ds_sampler_next(ds_sampler *s, int k, int32_t *out);
void ds_sampler_free(ds_sampler *s);

/* Deterministic split into parts. Each record's place is decided by a keyed hash of its trimmed prompt
 * (Philox keyed by seed), so the split does not depend on file order:
 *  - by fraction: part p takes the records whose hash falls in [F_{p-1}, F_p) of [0, 1) (F = cumulative sum;
 *    the fractions must sum to at most 1; the rest is unassigned, part -1);
 *  - by count: records sorted by hash; the first counts[0] go to part 0, the next counts[1] to part 1, ...
 *    (sum <= n; the rest is unassigned).
 * part_of[n] gets each record's part, part_counts[n_parts + 1] the sizes (the last entry: unassigned). */
bool ds_split_fraction(const dataset *ds, uint64_t seed, int n_parts, const double *fractions, int *part_of,
                       int64_t *part_counts, s2d_err *err);
bool ds_split_count(const dataset *ds, uint64_t seed, int n_parts, const int64_t *counts, int *part_of,
                    int64_t *part_counts, s2d_err *err);
/* The records of one part, in their original order, copied into a new dataset. */
void dataset_subset(const dataset *ds, const int *part_of, int part, dataset *out);
/* The split key of a prompt (trimmed) under seed: exposed for tests. */
uint64_t ds_prompt_hash(const char *prompt, uint64_t seed);
