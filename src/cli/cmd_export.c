/* cmd_export.c: s2d export (being written by h5). */
#include "cli/commands.h"
#include "core/common.h"

int cmd_export(int argc, char **argv) {
    (void)argc;
    (void)argv;
    die("s2d export: not available yet");
}
