#!/usr/bin/env bash
# make demo: the embedded demo. No downloads: tiny models from init presets, the synthetic arithmetic task and
# the byte-level demo tokenizer (configs/demo/). Prints the per-stage table (test accuracy before/after, labels
# consumed) and the time split between generation, scoring and learning. Output: runs/demo/.
set -eu
build=${1:-build}
out=${S2D_DEMO_OUT:-runs/demo}
echo "s2d demo: teacher SFT -> student SFT -> teacher_rl -> bridge_fkl -> bridge_opd -> student_rl (no downloads)"
echo "progress on stderr; models, metrics.jsonl and the resolved config in $out/"
t0=$(date +%s)
shift || true
"$build"/s2d train configs/demo/demo.yaml --out "$out" --overwrite "$@"  # a rerun replaces the last demo
echo "demo wall time: $(( $(date +%s) - t0 )) s"
echo "curves: tensorboard --logdir $out/tensorboard, or $build/s2d plot $out (PNGs in $out/plots/)"
