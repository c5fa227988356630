#!/usr/bin/env bash
# make run: the embedded default. Until the pipeline lands this exercises the engine end to end.
set -eu
build=${1:-build}
echo "s2d demo: engine smoke run (no downloads)"
"$build"/s2d --help
