/* Placeholder until this subcommand lands; replaced by its owner. */
#include "cli/commands.h"
#include "core/common.h"
int cmd_train(int argc, char **argv) { (void)argc; die("%s: not built yet", argv[0]); }
