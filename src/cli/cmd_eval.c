/* Placeholder until this subcommand lands; replaced by its owner. */
#include "cli/commands.h"
#include "core/common.h"
int cmd_eval(int argc, char **argv) { (void)argc; die("%s: not built yet", argv[0]); }
