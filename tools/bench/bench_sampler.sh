#!/usr/bin/env bash
# Sampler benchmark: ms per sampled token at the Qwen vocabulary (151,936), one thread, for greedy, temperature,
# top-k and top-p (target: top-p <= 2 ms a token), on flat and peaked logits; with PyTorch as the peer when it
# is importable (the sort-based top-p of Hugging Face's TopPLogitsWarper + torch.multinomial, one thread).
# usage: tools/bench/bench_sampler.sh BUILD_DIR
set -u
build=${1:-build}
bin=$build/tools/bench_sampler
[ -x "$bin" ] || { echo "bench_sampler: $bin not built (run make bench)"; exit 1; }
V=151936 R=${BENCH_SAMPLER_ROWS:-20}
export OMP_NUM_THREADS=1
out=$(taskset -c 0 "$bin" $V $R 2>/dev/null || "$bin" $V $R) || { echo "bench_sampler failed"; exit 1; }
torch_out=""
if python3 -c 'import torch' 2>/dev/null; then
  torch_out=$(python3 - $V $R <<'PY'
import sys, time, torch
torch.set_num_threads(1)
V, R = int(sys.argv[1]), int(sys.argv[2])
g = torch.Generator().manual_seed(7)
for shape, std in (("flat", 1.0), ("peaked", 4.0)):
    x = torch.randn(R, V, generator=g) * std
    best = 1e30
    for _ in range(3):
        t0 = time.perf_counter()
        for r in range(R):
            logits = x[r:r + 1]
            sorted_logits, idx = torch.sort(logits, descending=False)          # TopPLogitsWarper
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove = cum <= (1 - 0.95)
            remove[..., -1:] = 0
            logits = logits.masked_fill(remove.scatter(1, idx, remove), -float("inf"))
            torch.multinomial(logits.softmax(dim=-1), 1)
        best = min(best, (time.perf_counter() - t0) / R)
    print(f"torch_ms {shape} top_p_0.95 {best * 1e3:.4f}")
PY
)
fi
printf '%-8s %-28s %10s %10s %s\n' logits setting s2d_ms torch_ms ratio
while read -r _ shape setting ms; do
  t=$(awk -v s="$shape" -v k="$setting" '$2 == s && $3 == k {print $4}' <<<"$torch_out")
  ratio=""
  [ -n "$t" ] && ratio=$(awk -v a="$t" -v b="$ms" 'BEGIN {printf "%.1fx faster", a / b}')
  printf '%-8s %-28s %10s %10s %s\n' "$shape" "$setting" "$ms" "${t:--}" "$ratio"
done <<<"$out"
