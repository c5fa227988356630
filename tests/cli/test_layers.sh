#!/usr/bin/env bash
# The include direction: tools/check_layers.sh passes on the tree and flags an include that points up or sideways.
. "$(dirname "$0")/lib.sh"
cd "$WORK" || exit 1
check "every include in src/ points down the layers" bash "$S2D_ROOT/tools/check_layers.sh" "$S2D_ROOT"
mkdir -p tree && cp -r "$S2D_ROOT/src" tree/
check "the copy passes" bash "$S2D_ROOT/tools/check_layers.sh" tree
inject() { # file, include line, what the message must say
  cp "$S2D_ROOT/$1" "tree/$1"
  printf '%s\n' "$2" >> "tree/$1"
  out=$(bash "$S2D_ROOT/tools/check_layers.sh" tree 2>&1); rc=$?
  cp "$S2D_ROOT/$1" "tree/$1"
  if [ $rc -ne 0 ] && grep -q "$1:[0-9]*: $3" <<<"$out"; then ok; else fail "checker missed $2 in $1: $out"; fi
}
inject src/io/h5io.c '#include "model/model.h"' "io includes model (up)"
inject src/text/chat.c '#include "io/dataset.h"' "text includes io (sideways)"
inject src/core/log.c '#include "ops/ops.h"' "core includes ops (up)"
inject src/model/model.c '#include "algo/losses.h"' "model includes algo (up)"
inject src/algo/losses.c '#include "cli/commands.h"' "algo includes cli (up)"
inject src/ops/ops.c '#include "mpi/runtime.h"' 'includes "mpi/...", which is no layer'
mkdir -p tree/src/extra && echo '#include "core/common.h"' > tree/src/extra/x.c
out=$(bash "$S2D_ROOT/tools/check_layers.sh" tree 2>&1)
if grep -q "src/extra has no layer" <<<"$out"; then ok; else fail "a folder without a layer passed: $out"; fi
summary
