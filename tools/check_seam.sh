#!/usr/bin/env bash
# The seam rule (docs/design.md): model and algorithm code touch tensor memory only through the backend
# (src/ops/ops.h). Fails on OpenMP pragmas, BLAS calls, memcpy/memset/memmove and malloc-family calls in
# src/model, src/algo and src/runtime, except struct resets (memset(&x, 0, sizeof x)) and the host-side buffers listed with
# their reason in tools/seam_allow.txt (PATH<TAB>text that the line contains<TAB>reason).
# Usage: tools/check_seam.sh [ROOT]   (prints each violation as FILE:LINE: text; exit 1 if any)
set -u
root=${1:-.}
allow="$root/tools/seam_allow.txt"
[ -f "$allow" ] || allow="$(dirname "$0")/seam_allow.txt"
pattern='#pragma omp|\bcblas_|\bmemcpy\(|\bmemset\(|\bmemmove\(|\bposix_memalign\(|\bmalloc\(|\bcalloc\(|\brealloc\('
bad=0
while IFS= read -r hit; do
  file=${hit%%:*}; rest=${hit#*:}; line=${rest%%:*}; text=${rest#*:}
  rel=${file#"$root"/}
  # struct resets: memset(p, 0, sizeof *p) / memset(&x, 0, sizeof x)
  if echo "$text" | grep -Eq 'memset\(&?[A-Za-z_][A-Za-z_0-9]*(->[A-Za-z_]+)?, 0, sizeof \*?&?[A-Za-z_][A-Za-z_0-9]*\)'; then continue; fi
  ok=0
  while IFS=$'\t' read -r apath atext _reason; do
    case "$apath" in ''|'#'*) continue ;; esac
    if [ "$apath" = "$rel" ] && [[ "$text" == *"$atext"* ]]; then ok=1; break; fi
  done < "$allow"
  if [ $ok = 0 ]; then echo "$rel:$line: tensor memory outside the backend? $text"; bad=1; fi
done < <(grep -nE "$pattern" "$root"/src/model/*.c "$root"/src/algo/*.c "$root"/src/runtime/*.c /dev/null 2>/dev/null | sed 's/^\([^:]*:[0-9]*:\)\s*/\1/')
exit $bad
