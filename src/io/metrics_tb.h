/* metrics_tb.h: OUT/metrics.jsonl mirrored into TensorBoard scalars (OUT/tensorboard/, tb_events.h).
 *
 * The mirror follows the metrics file as its writer appends to it and turns every record (one flat JSON object
 * per line) that has a "stage" and a "global_step" into one event at that global step: each numeric field K
 * (other than step and global_step; null, strings and booleans are skipped) becomes the scalar "<stage>/K", or
 * "<stage>/<event>_K" in a record with "event": E (eval lines: "<stage>/eval_accuracy"). Because it reads what
 * was written, the event file holds exactly the numbers of metrics.jsonl, including what a resumed run copies
 * back from its checkpoint. Depends on core and io only. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"
#include "io/tb_events.h"

/* The longest metrics line the mirror accepts (bytes). */
#define METRICS_TB_MAX_LINE 65536

typedef struct metrics_tb metrics_tb;
/* Opens a new event file in tb_dir (created if needed), then removes every other "events.out.tfevents.*" file
 * there (an earlier session's: a resumed run rewrites the whole history), and follows jsonl_path from its
 * first byte. NULL + err on failure. */
metrics_tb *metrics_tb_open(const char *tb_dir, const char *jsonl_path, s2d_err *err);
/* Mirrors the complete lines appended to the followed file since the last call and flushes the event file
 * (the caller flushes its own writer first). Allocates nothing. False + err naming the file and line number on
 * a malformed line or a write error. */
bool metrics_tb_sync(metrics_tb *m, s2d_err *err);
/* The event file's path. */
const char *metrics_tb_path(const metrics_tb *m);
/* Syncs once more, closes both files (m is freed even on failure). */
bool metrics_tb_close(metrics_tb *m, s2d_err *err);

/* One record's scalars: fills tags [cap][TB_MAX_TAG + 1], values [cap] and *global_step from the JSON object
 * line[0..n). Returns how many (0 when the record has no stage or no global_step: it is not mirrored), or -1 +
 * err when the line is not a flat JSON object, a tag is too long or there are more than cap numbers. */
int metrics_tb_record(const char *line, size_t n, char (*tags)[TB_MAX_TAG + 1], float *values, int cap,
                      int64_t *global_step, s2d_err *err);

/* Removes the "events.out.tfevents.*" files in dir except the one named keep (may be NULL); *removed counts
 * them. A missing dir is not an error. */
bool tb_remove_event_files(const char *dir, const char *keep, int *removed, s2d_err *err);
