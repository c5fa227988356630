#!/usr/bin/env bash
# bench_model.sh: s2d vs PyTorch/HF on CPU, same shapes and thread count, random weights.
#   (a) training fwd+bwd tokens/s (s2d packed batch vs HF model + loss.backward(), fp32)
#   (b) generation tokens/s with a KV cache (s2d generate vs HF generate, greedy, same batch and lengths;
#       timed from the first prefill to the last token, model loading excluded)
#   (c) sgemm peak GFLOP/s of this machine and the fraction the model's fwd+bwd matmul FLOPs reach.
# usage: tools/bench/bench_model.sh BUILD_DIR      (run by `make bench`; a few minutes on 2 cores)
# BENCH_PRESETS="qwen3-small qwen3-0.6b" selects presets. Numbers from a machine shared with other jobs are
# noisy (OpenMP threads that lose their core stall every barrier), so every number is the best of several
# steps or runs; still, compare runs taken on a quiet machine.
set -u
build=${1:-${S2D_BUILD:-build}}
S2D=$build/s2d
threads=${OMP_NUM_THREADS:-$(nproc)}
export OMP_NUM_THREADS=$threads
presets=${BENCH_PRESETS:-"qwen3-small qwen3-0.6b"}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/s2d-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for b in "$S2D" "$build/tools/bench_train" "$build/tools/bench_sgemm"; do
  [ -x "$b" ] || { echo "bench_model: $b missing (run make bench)"; exit 1; }
done
have_torch=1
python3 -c 'import torch, transformers' 2>/dev/null || { have_torch=0; echo "torch/transformers not importable: reporting s2d numbers only"; }

val() { awk -v k="$1" '$1 == k {print $2}' "$2" | tail -1; }
ratio() { if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; else echo "n/a"; fi; }

echo "threads: $threads   cpu: $(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}')"
"$build/tools/bench_sgemm" >"$tmp/sgemm.txt"
peak=$(val sgemm_peak_gflops "$tmp/sgemm.txt")
sed 's/^/  /' "$tmp/sgemm.txt"

declare -a rows
for preset in $presets; do
  case $preset in
    # 0.6B generation at two lengths: at 16 new tokens one-time costs (prefill, the bf16 weight copy) weigh
    # heavily, at 64 the KV-cache decode dominates.
    qwen3-0.6b) seqs=2 len=64 steps=2 gbatch=4 plen=8 news="16 64" ;;
    *)          seqs=4 len=256 steps=3 gbatch=16 plen=16 news=128 ;;
  esac
  dir=$tmp/$preset
  # bf16 on disk halves the 0.6B write; both sides load it as fp32.
  "$S2D" init-model --preset "$preset" --out "$dir" --dtype bf16 2>/dev/null || { echo "init-model $preset failed"; exit 1; }
  vocab=$(python3 -c "import json,sys; print(json.load(open('$dir/config.json'))['vocab_size'])" 2>/dev/null ||
          grep -o '"vocab_size": *[0-9]*' "$dir/config.json" | grep -o '[0-9]*$')
  # (a) training
  "$build/tools/bench_train" "$preset" $seqs $len $steps 2>/dev/null >"$tmp/train.txt"
  s2d_train=$(val s2d_train_tokens_per_s "$tmp/train.txt")
  s2d_gflops=$(val s2d_train_gflops "$tmp/train.txt")
  torch_train=""
  if [ $have_torch = 1 ]; then
    python3 tools/bench/bench_torch.py train "$dir" $seqs $len $steps >"$tmp/ttrain.txt" 2>/dev/null
    torch_train=$(val torch_train_tokens_per_s "$tmp/ttrain.txt")
  fi
  # (b) generation: the same prompts as bench_torch.py (ids ((i + 1000 b + 1) * 2654435761) mod vocab)
  awk -v B=$gbatch -v P=$plen -v V="$vocab" 'BEGIN { for (b = 0; b < B; b++) { s = "["; for (i = 0; i < P; i++) {
      x = (i + 1000 * b + 1) * 2654435761; s = s (i ? "," : "") (x - V * int(x / V)) } print s "]" } }' >"$tmp/prompts.jsonl"
  frac=$(awk -v a="$s2d_gflops" -v p="$peak" 'BEGIN {printf "%.0f%%", 100 * a / p}')
  rows+=("$(printf '%-12s %-22s %12s %12s %8s' "$preset" "train fwd+bwd ${seqs}x${len}" "$s2d_train" "${torch_train:-n/a}" "$(ratio "$s2d_train" "$torch_train")")")
  for new in $news; do
    for rep in 1 2; do # best of two: short runs are noisy
      S2D_LOG=info "$S2D" generate --model "$dir" --max-new-tokens $new --temperature 0 --stop none --batch $gbatch \
        <"$tmp/prompts.jsonl" 2>>"$tmp/gen.log" >"$tmp/gen.out"
    done
    s2d_gen=$(grep -o 'new tokens in [0-9.]* s ([0-9.]* tok/s' "$tmp/gen.log" | grep -o '([0-9.]*' | tr -d '(' | sort -g | tail -1)
    rm -f "$tmp/gen.log"
    torch_gen=""
    if [ $have_torch = 1 ]; then
      python3 tools/bench/bench_torch.py generate "$dir" $gbatch $plen $new >"$tmp/tgen.txt" 2>/dev/null
      torch_gen=$(val torch_generate_tokens_per_s "$tmp/tgen.txt")
    fi
    rows+=("$(printf '%-12s %-22s %12s %12s %8s' "$preset" "generate ${gbatch}x(${plen}+${new})" "$s2d_gen" "${torch_gen:-n/a}" "$(ratio "$s2d_gen" "$torch_gen")")")
  done
  rows+=("$(printf '%-12s %-22s %12s %12s %8s' "$preset" "fwd+bwd GEMM GFLOP/s" "$s2d_gflops" "peak $peak" "$frac")")
  rm -rf "$dir"
done
echo
printf '%-12s %-22s %12s %12s %8s\n' model "benchmark (tokens/s)" s2d pytorch ratio
for r in "${rows[@]}"; do echo "$r"; done
echo "targets: train >= 1.0x PyTorch, generate >= 2x HF generate"
