/* bench_tokenizer: load time and single-thread encode throughput of s2d's tokenizer.
 * usage: bench_tokenizer TOKENIZER_DIR TEXT_FILE [seconds]
 * Prints one line: "load_s=... encode_MBps=... decode_MBps=... ids=... bytes=..." (best of several passes over the
 * text; the first pass, which fills the pre-token cache, is reported separately as cold_MBps). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/timer.h"
#include "text/tokenizer.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER_DIR TEXT_FILE [seconds]\n", argv[0]);
        return 2;
    }
    double budget = argc > 3 ? atof(argv[3]) : 2.0;
    s2d_err err;
    char *text;
    size_t len;
    CHECK_OK(read_file(argv[2], &text, &len, &err), &err);

    double t0 = time_now();
    tokenizer *tok;
    CHECK_OK(tok_load(argv[1], &tok, &err), &err);
    double load_s = time_now() - t0;

    tok_ids ids = {0};
    t0 = time_now();
    CHECK(tok_encode(tok, text, len, &ids, &err) >= 0, "%s", err.msg);
    double cold_s = time_now() - t0;
    double best = 1e30, start = time_now();
    int passes = 0;
    while (passes < 3 || time_now() - start < budget) {
        ids.n = 0;
        t0 = time_now();
        CHECK(tok_encode(tok, text, len, &ids, &err) >= 0, "%s", err.msg);
        double dt = time_now() - t0;
        if (dt < best) best = dt;
        passes++;
    }
    tok_bytes out = {0};
    double best_dec = 1e30;
    for (int i = 0; i < 5; i++) {
        t0 = time_now();
        CHECK_OK(tok_decode(tok, ids.ids, ids.n, &out, &err), &err);
        double dt = time_now() - t0;
        if (dt < best_dec) best_dec = dt;
    }
    printf("load_s=%.3f cold_MBps=%.1f encode_MBps=%.1f decode_MBps=%.1f ids=%zu bytes=%zu roundtrip=%s\n", load_s,
           len / cold_s / 1e6, len / best / 1e6, len / best_dec / 1e6, ids.n, len,
           out.n == len && memcmp(out.bytes, text, len) == 0 ? "exact" : "differs");
    tok_ids_free(&ids);
    tok_bytes_free(&out);
    tok_free(tok);
    free(text);
    return 0;
}
