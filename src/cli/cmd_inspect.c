/* cmd_inspect.c: s2d inspect FILE.h5 [--tensors]: what an s2d HDF5 file holds (io/h5io.h: h5_summary).
 * The summary is built in memory and printed only when the whole file was read, so a damaged file gives an
 * error and no partial output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/common.h"
#include "io/h5io.h"

static void usage(FILE *out) {
    fprintf(out, "usage: s2d inspect FILE.h5 [--tensors]\n"
                 "  summarises an s2d checkpoint (models, parameters, stage/step, state, config), rollout log\n"
                 "  (steps, sequences, tokens, mean reward) or metrics table (rows, fields, last row)\n"
                 "  --tensors   also list every tensor of every model with its shape\n");
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    bool tensors = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--tensors") == 0) tensors = true;
        else if (argv[i][0] == '-') die_hint("s2d inspect --help", "unknown option '%s'", argv[i]);
        else if (path) die_hint("s2d inspect --help", "one file at a time ('%s', '%s')", path, argv[i]);
        else path = argv[i];
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
    fwrite(text, 1, len, stdout);
    free(text);
    return 0;
}
