/* tb_events.h: TensorBoard event files (scalars), written without TensorFlow.
 *
 * An event file is a sequence of TFRecords, each holding one serialised tensorflow.Event (src/io/tb_event.proto,
 * the field numbers of TF's event.proto / summary.proto, packed by protobuf-c):
 *
 *   uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)
 *
 * with masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8, c = CRC-32C (Castagnoli) of x. The first event
 * of a file carries file_version "brain.Event:2"; every later one a Summary of simple_value scalars at a step.
 * TensorBoard reads files named "events.out.tfevents.*" in a directory while they grow, so the writer appends
 * and flushes (an exception to "outputs appear whole": a live run is meant to be watched). Depends on core only. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

/* CRC-32C (Castagnoli, reflected polynomial 0x82f63b78, initial and final xor 0xffffffff): crc32c("123456789")
 * = 0xe3069283. crc32c_extend continues a CRC over more bytes (crc32c(a ++ b) = crc32c_extend(crc32c(a), b)). */
uint32_t crc32c(const void *data, size_t n);
uint32_t crc32c_extend(uint32_t crc, const void *data, size_t n);
/* The TFRecord mask of a CRC: rotate right by 15, add 0xa282ead8. */
uint32_t tb_masked_crc(uint32_t crc);
/* Frames payload [n] as one TFRecord into out [n + 16]; returns the bytes written (n + 16). */
size_t tfrecord_frame(const void *payload, size_t n, unsigned char *out);

/* Most scalars one event may carry (tb_scalars), and the longest tag (bytes, without the NUL). */
#define TB_MAX_SCALARS 256
#define TB_MAX_TAG 255

typedef struct tb_writer tb_writer;
/* Creates dir (and its parents) if needed and a new file dir/events.out.tfevents.<seconds>.<host>.<pid> (a
 * file of that name already there is replaced), writes the file_version event. Buffers are sized here: writing
 * allocates nothing. NULL + err naming the path on failure. */
tb_writer *tb_open(const char *dir, s2d_err *err);
/* The file's path and its name within dir. */
const char *tb_path(const tb_writer *w);
const char *tb_file_name(const tb_writer *w);
/* One event at step (wall_time: seconds since the epoch) holding n scalars tags[i] = values[i] (n <=
 * TB_MAX_SCALARS, each tag at most TB_MAX_TAG bytes; n = 0 writes nothing). Buffered: tb_flush makes it
 * visible. False + err on a write error or an over-long tag. */
bool tb_scalars(tb_writer *w, int64_t step, double wall_time, int n, const char *const *tags, const float *values,
                s2d_err *err);
bool tb_flush(tb_writer *w, s2d_err *err);
/* Flushes, fsyncs and closes (w is freed even on failure). */
bool tb_close(tb_writer *w, s2d_err *err);
/* Seconds since the epoch (CLOCK_REALTIME), the wall_time of events. */
double tb_wall_time(void);
