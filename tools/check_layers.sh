#!/usr/bin/env bash
# The include direction (docs/design.md, "Layers"): core → ops, text, io → model → algo → runtime → cli, with
# src/main.c and mpi/ on top. A file in src/X/ includes "Y/..." only for Y = X or a layer below X; ops, text and io
# are one layer and do not include each other. Fails naming FILE:LINE and the include that points up or sideways.
# Usage: tools/check_layers.sh [ROOT]   (exit 1 on any violation)
set -u
root=${1:-.}
level() {
  case $1 in
    core) echo 0 ;; ops | text | io) echo 1 ;; model) echo 2 ;; algo) echo 3 ;; runtime) echo 4 ;; cli) echo 5 ;;
    *) echo -1 ;;
  esac
}
bad=0
for f in "$root"/src/*/*.[ch]; do
  [ -f "$f" ] || continue
  rel=${f#"$root"/}
  dir=${rel#src/}; dir=${dir%%/*}
  mine=$(level "$dir")
  if [ "$mine" -lt 0 ]; then echo "$rel: folder src/$dir has no layer (add it to tools/check_layers.sh)"; bad=1; continue; fi
  while IFS=: read -r line text; do
    dep=$(sed -E 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"([a-z_]+)\/.*/\1/' <<<"$text")
    [ "$dep" = "$dir" ] && continue
    theirs=$(level "$dep")
    if [ "$theirs" -lt 0 ]; then
      echo "$rel:$line: includes \"$dep/...\", which is no layer of src/"; bad=1
    elif [ "$theirs" -ge "$mine" ]; then
      what=up; [ "$theirs" -eq "$mine" ] && what=sideways
      echo "$rel:$line: $dir includes $dep ($what): $text"; bad=1
    fi
  done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[a-z_]+/' "$f")
done
exit $bad
