#!/usr/bin/env bash
# Rebuilds tests/fixtures/models/{tiny-teacher,tiny-student} with s2d itself (SFT on the arithmetic task; see
# tiny_models.yaml): the starting points of configs/tests/tiny-pipeline.yaml. Deterministic for a given build.
# Usage: tools/tiny_models/make.sh [BUILD_DIR]
set -eu
build=${1:-build}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$build"/s2d train tools/tiny_models/tiny_models.yaml --out "$out"
for pair in tiny_teacher:tiny-teacher tiny_student:tiny-student; do
  dst=tests/fixtures/models/${pair#*:}
  rm -rf "$dst" && mkdir -p "$(dirname "$dst")"
  cp -r "$out/models/${pair%%:*}" "$dst"
done
echo "wrote tests/fixtures/models/tiny-teacher and tests/fixtures/models/tiny-student"
