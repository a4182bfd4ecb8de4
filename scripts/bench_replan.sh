#!/usr/bin/env bash
# What FlexConv crop changes cost a real `fnetc train --backend opencl` run, with two
# fnetc binaries run one after the other in each round (interleaved, order alternating):
# typically one built before the kernel-level program cache and one after it.
#
#   scripts/bench_replan.sh BEFORE_FNETC AFTER_FNETC [ROUNDS]      (default 2)
#
# The model: one masked FlexConv (horizon 15) on 28×28 MNIST digits, 512 training
# samples, batch 32, 2 epochs (32 steps); its crop moves from 11×11 to 9×11 and back
# within the run, so a few steps re-plan. Each run gets an empty program cache
# (FNET_CACHE_DIR) and PoCL's own cache is off (POCL_KERNEL_CACHE=0), so every build
# is real. Prints per run the wall time, the summed step time, and each step's time
# (batch / samples_per_s from metrics.jsonl): the slow ones are the first step and
# the re-plans.
set -euo pipefail
before=$(realpath "$1")
after=$(realpath "$2")
rounds=${3:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/flexm.fnet" <<FNET
model flexm {
  input x: f32[B, 1, 28, 28]
  seed 4
  h = x |> flexconv(6, horizon: 15, kernel: magnet(hidden: 16, layers: 2),
                    mask: gauss(sigma: 0.3, threshold: 0.1)) |> relu |> maxpool(2)
  return h |> global_avg_pool |> linear(10)
}
train {
  data: idx(images: "$root/data/mnist10k/images.idx3-ubyte.gz",
            labels: "$root/data/mnist10k/labels.idx1-ubyte.gz", train: [0, 512], test: [512, 640])
  optimizer: adam(lr: 0.01)
  epochs: 2
  batch: 32
}
FNET
cd "$work"
for round in $(seq "$rounds"); do
  order="before after"
  if [ $((round % 2)) -eq 0 ]; then order="after before"; fi
  for which in $order; do
    bin=$before
    if [ "$which" = after ]; then bin=$after; fi
    rm -rf run cache && mkdir cache
    start=$(date +%s.%N)
    POCL_KERNEL_CACHE=0 FNET_CACHE_DIR="$work/cache" "$bin" train flexm.fnet \
      --backend opencl --out run > log.txt 2>&1 || { cat log.txt; exit 1; }
    end=$(date +%s.%N)
    python3 - run "$which" "$round" "$start" "$end" <<'PY'
import json, sys
run, which, rnd, start, end = sys.argv[1:]
recs = [json.loads(l) for l in open(run + "/metrics.jsonl")]
steps = [32 / r["samples_per_s"] for r in recs if r["kind"] == "step"]
sizes = [r.get("kernel_sizes") for r in recs if r["kind"] == "epoch"]
print(f"round {rnd} {which}: wall {float(end) - float(start):.1f} s, steps {sum(steps):.1f} s;"
      f" slow steps (> 1 s): {[(i + 1, round(t, 1)) for i, t in enumerate(steps) if t > 1]};"
      f" kernel sizes per epoch {sizes}")
PY
  done
done
