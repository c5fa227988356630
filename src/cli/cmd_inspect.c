/* cmd_inspect.c: s2d inspect FILE.h5 [--tensors]: what an s2d HDF5 file holds (io/h5io.h: h5_summary).
 * The summary is built in memory and printed only when the whole file was read, so a damaged file gives an
 * error and no partial output. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "io/h5io.h"

/* /state/summary.<stage> holds a stage's summary as 11 uint64 words (runtime/ckpt.c, summary_pack): six
 * doubles stored as their bits, then four label counts and has_eval. Printed as numbers, not bit patterns. */
static const char *const SUMMARY_FIELDS[11] = {"acc_before",      "acc_after",        "seconds",
                                               "gen_s",           "score_s",          "learn_s",
                                               "labelled_total",  "labelled_unique",  "unlabelled_total",
                                               "unlabelled_unique", "has_eval"};

static void print_line(const char *line, size_t n, FILE *out) {
    static const char prefix[] = "state summary.";
    const char *colon = memchr(line, ':', n);
    if (n > sizeof prefix - 1 && memcmp(line, prefix, sizeof prefix - 1) == 0 && colon) {
        uint64_t w[11];
        int k = 0;
        const char *p = colon + 1, *end = line + n;
        while (p < end && k < 12) {
            char *q;
            while (p < end && *p == ' ') p++;
            if (p >= end) break;
            unsigned long long v = strtoull(p, &q, 10);
            if (q == p || (q < end && *q != ' ')) { k = -1; break; }
            if (k < 11) w[k] = (uint64_t)v;
            k++, p = q;
        }
        if (k == 11) {
            fprintf(out, "%.*s:", (int)(colon - line), line);
            for (int i = 0; i < 11; i++) {
                if (i < 6) {
                    double d;
                    memcpy(&d, &w[i], sizeof d);
                    fprintf(out, " %s %.6g", SUMMARY_FIELDS[i], d);
                } else {
                    fprintf(out, " %s %llu", SUMMARY_FIELDS[i], (unsigned long long)w[i]);
                }
            }
            fputc('\n', out);
            return;
        }
    }
    fwrite(line, 1, n, out);
    fputc('\n', out);
}

static void usage(FILE *out) {
    fprintf(out, "usage: s2d inspect FILE.h5 [--tensors]\n"
                 "  summarises an s2d checkpoint (models, parameters, stage/step, state, config), rollout log\n"
                 "  (steps, sequences, tokens, mean reward) or metrics table (rows, fields, last row)\n"
                 "  --tensors   also list every tensor of every model with its shape\n");
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool tensors = false;
    enum { O_TENSORS = 256 };
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {"tensors", no_argument, 0, O_TENSORS},
                                         {0, 0, 0, 0}};
    cli_options_reset();
    const char *val, *opt;
    for (int o; (o = cli_option("inspect", argc, argv, opts, NULL, &val, &opt)) != -1;) {
        if (o == 'h') {
            usage(stdout);
            return 0;
        }
        if (o == O_TENSORS) tensors = true;
    }
    for (int i = optind; i < argc; i++) {
        if (path) die_hint("s2d inspect --help", "one file at a time ('%s', '%s')", path, argv[i]);
        path = argv[i];
    }
    if (!path) die_hint("s2d inspect --help", "inspect needs FILE.h5");
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    CHECK(mem, "open_memstream failed");
    s2d_err err = {0};
    bool ok = h5_summary(path, tensors, mem, &err);
    fclose(mem);
    if (!ok) {
        free(text);
        die("%s", err.msg);
    }
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t n = nl ? (size_t)(nl - (text + at)) : len - at;
        print_line(text + at, n, stdout);
        at += n + 1;
    }
    free(text);
    return 0;
}
