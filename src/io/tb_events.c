/* tb_events.c: TensorBoard event files: CRC-32C, TFRecord framing, Event/Summary packing (protobuf-c). */
#include "io/tb_events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tb_event.pb-c.h" /* generated from src/io/tb_event.proto into $(BUILD)/gen */

/* ---- CRC-32C: byte-wise table of the reflected Castagnoli polynomial (event files are small: no SSE4.2) ---- */
static uint32_t crc_table[256];

static void crc_table_init(void) {
    static bool done;
    if (done) return;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
        crc_table[i] = c;
    }
    done = true;
}

uint32_t crc32c_extend(uint32_t crc, const void *data, size_t n) {
    crc_table_init();
    const unsigned char *p = data;
    uint32_t c = ~crc;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xffu] ^ (c >> 8);
    return ~c;
}

uint32_t crc32c(const void *data, size_t n) { return crc32c_extend(0, data, n); }

uint32_t tb_masked_crc(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

static void put_le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

size_t tfrecord_frame(const void *payload, size_t n, unsigned char *out) {
    put_le(out, (uint64_t)n, 8);
    put_le(out + 8, tb_masked_crc(crc32c(out, 8)), 4);
    if (n) memmove(out + 12, payload, n);
    put_le(out + 12 + n, tb_masked_crc(crc32c(out + 12, n)), 4);
    return n + 16;
}

/* ---- the writer ---- */
/* An event of TB_MAX_SCALARS values, each at most a tag of TB_MAX_TAG bytes + a float + field headers. */
#define TB_EVENT_CAP ((size_t)TB_MAX_SCALARS * (TB_MAX_TAG + 16) + 64)

struct tb_writer {
    FILE *fp;
    char path[4096];
    const char *name; /* into path */
    Tensorflow__Summary__Value values[TB_MAX_SCALARS];
    Tensorflow__Summary__Value *value_ptrs[TB_MAX_SCALARS];
    unsigned char payload[TB_EVENT_CAP];
    unsigned char record[TB_EVENT_CAP + 16];
};

double tb_wall_time(void) {
    struct timespec ts;
    CHECK_SYS(clock_gettime(CLOCK_REALTIME, &ts));
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool mkdir_parents(const char *dir, s2d_err *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return err_set(err, "%s: path too long", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return err_set(err, "%s: cannot create: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return err_set(err, "%s: cannot create: %s", buf, strerror(errno));
    return true;
}

static bool write_event(tb_writer *w, const Tensorflow__Event *ev, s2d_err *err) {
    size_t n = tensorflow__event__get_packed_size(ev);
    CHECK(n <= TB_EVENT_CAP, "tb_events: an event of %zu bytes exceeds the buffer of %zu", n, TB_EVENT_CAP);
    size_t packed = tensorflow__event__pack(ev, w->payload);
    CHECK(packed == n, "tb_events: protobuf-c packed %zu bytes, sized %zu", packed, n);
    size_t len = tfrecord_frame(w->payload, n, w->record);
    if (fwrite(w->record, 1, len, w->fp) != len) return err_set(err, "%s: write failed: %s", w->path, strerror(errno));
    return true;
}

tb_writer *tb_open(const char *dir, s2d_err *err) {
    if (!mkdir_parents(dir, err)) return NULL;
    tb_writer *w = xcalloc(1, sizeof *w);
    char host[256] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "localhost");
    for (char *p = host; *p; p++) /* a file name, whatever the host is called */
        if (*p == '/' || *p == ' ') *p = '_';
    int at = snprintf(w->path, sizeof w->path, "%s/", dir);
    if (at < 0 || (size_t)at >= sizeof w->path ||
        snprintf(w->path + at, sizeof w->path - (size_t)at, "events.out.tfevents.%lld.%s.%ld", (long long)time(NULL),
                 host, (long)getpid()) >= (int)(sizeof w->path - (size_t)at)) {
        free(w);
        err_set(err, "%s: path too long for an event file", dir);
        return NULL;
    }
    w->name = w->path + at;
    if (!(w->fp = fopen(w->path, "wb"))) {
        err_set(err, "%s: cannot create: %s", w->path, strerror(errno));
        free(w);
        return NULL;
    }
    for (int i = 0; i < TB_MAX_SCALARS; i++) {
        tensorflow__summary__value__init(&w->values[i]);
        w->values[i].value_case = TENSORFLOW__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
        w->value_ptrs[i] = &w->values[i];
    }
    Tensorflow__Event ev = TENSORFLOW__EVENT__INIT;
    ev.wall_time = tb_wall_time();
    ev.what_case = TENSORFLOW__EVENT__WHAT_FILE_VERSION;
    ev.file_version = (char *)"brain.Event:2";
    if (!write_event(w, &ev, err) || !tb_flush(w, err)) {
        fclose(w->fp);
        unlink(w->path);
        free(w);
        return NULL;
    }
    return w;
}

const char *tb_path(const tb_writer *w) { return w->path; }
const char *tb_file_name(const tb_writer *w) { return w->name; }

bool tb_scalars(tb_writer *w, int64_t step, double wall_time, int n, const char *const *tags, const float *values,
                s2d_err *err) {
    if (n <= 0) return true;
    if (n > TB_MAX_SCALARS) return err_set(err, "%s: %d scalars in one event, at most %d", w->path, n, TB_MAX_SCALARS);
    for (int i = 0; i < n; i++) {
        if (strlen(tags[i]) > TB_MAX_TAG)
            return err_set(err, "%s: tag '%.40s...' is longer than %d bytes", w->path, tags[i], TB_MAX_TAG);
        w->values[i].tag = (char *)tags[i]; /* only read by the packer */
        w->values[i].simple_value = values[i];
    }
    Tensorflow__Summary sum = TENSORFLOW__SUMMARY__INIT;
    sum.n_value = (size_t)n;
    sum.value = w->value_ptrs;
    Tensorflow__Event ev = TENSORFLOW__EVENT__INIT;
    ev.wall_time = wall_time;
    ev.step = step;
    ev.what_case = TENSORFLOW__EVENT__WHAT_SUMMARY;
    ev.summary = &sum;
    return write_event(w, &ev, err);
}

bool tb_flush(tb_writer *w, s2d_err *err) {
    if (fflush(w->fp) != 0) return err_set(err, "%s: write failed: %s", w->path, strerror(errno));
    return true;
}

bool tb_close(tb_writer *w, s2d_err *err) {
    if (!w) return true;
    bool ok = tb_flush(w, err);
    if (ok && fsync(fileno(w->fp)) != 0) ok = err_set(err, "%s: fsync failed: %s", w->path, strerror(errno));
    if (fclose(w->fp) != 0 && ok) ok = err_set(err, "%s: close failed: %s", w->path, strerror(errno));
    free(w);
    return ok;
}
