/* cmd_inspect.c: s2d inspect (being written by h5). */
#include "cli/commands.h"
#include "core/common.h"

int cmd_inspect(int argc, char **argv) {
    (void)argc;
    (void)argv;
    die("s2d inspect: not available yet");
}
