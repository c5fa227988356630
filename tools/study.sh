#!/usr/bin/env bash
# make run: the embedded study (configs/study/study.yaml on the toy world configs/study/base.yaml). No downloads:
# tiny models from init presets, the synthetic arithmetic task and the byte-level demo tokenizer. Prints the
# study (per-arm accuracies, paired differences against s2d, each claim's verdict); writes runs/study/study.md,
# study.json and study.png. Extra arguments go to s2d study (e.g. --seeds 5, --jobs 4, --seed-base 11).
# Finished runs in runs/study are reused when their config is unchanged: remove the directory for a fresh study.
set -eu
build=${1:-build}
shift || true
echo "s2d study: configs/study/study.yaml (9 arms, default 3 seeds; progress on stderr, outputs in runs/study/)"
t0=$(date +%s)
"$build"/s2d study configs/study/study.yaml "$@"
echo "study wall time: $(( $(date +%s) - t0 )) s"
