#!/usr/bin/env bash
# Training-loop throughput: `fnetc train` (data, forward, backward, optimiser step) on
# ResNet-20 and FlexTCN-6 against PyTorch's training loop on the same model and
# recipe (tools/torch_train_loop.py, eager and torch.compile, 2 threads), interleaved
# round by round; best of each side.
#
#   scripts/bench_train_vs_torch.sh [ROUNDS]          (default 2)
#
# Environment: BATCH (64), BACKEND (fnet's: opencl), DEVICE (fnet's OpenCL device:
# default), MODELS ("resnet20 flextcn6"), COMPILE (1: also torch.compile; 0: eager
# only), SAMPLES (synthetic data set size: 1024), FNETC (a prebuilt fnetc; else
# cargo builds the release one), and per model the step counts:
#   FNET_STEPS_resnet20 (12), FNET_SKIP_resnet20 (3): fnet runs --stop-after STEPS and
#     its samples/s is batch * (steps after the first SKIP) / (their summed step time),
#     from metrics.jsonl's per-step samples_per_s (the first steps build programs);
#   TORCH_STEPS_resnet20 (6), TORCH_WARMUP_resnet20 (2): PyTorch's timed and untimed steps;
#   and the same with _flextcn6 (defaults 3 / 1 and 2 / 1: a step is seconds on both sides).
#
# Data: neither CIFAR-10 nor a sequence set is needed. The script writes SAMPLES
# synthetic samples (uniform [0, 1] inputs, random labels) as .npy into a temp dir and
# a temp copy of each example whose `train {}` section reads them with
# `data: npy(...)`; everything else in the recipe (optimiser, augmentation,
# regularisers, batch overridden by --batch) is the example's.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
BATCH=${BATCH:-64}
BACKEND=${BACKEND:-opencl}
DEVICE=${DEVICE:-default}
MODELS=${MODELS:-resnet20 flextcn6}
COMPILE=${COMPILE:-1}
SAMPLES=${SAMPLES:-1024}
PY=python3
"$PY" -c 'import torch, numpy' || { echo "needs python3 with torch and numpy" >&2; exit 2; }
if [ -z "${FNETC:-}" ]; then
  cargo build --locked --release --quiet --bin fnetc
  FNETC=target/release/fnetc
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The example with its `data:` setting (which may span lines, up to the line holding
# `loss:`) replaced by the synthetic .npy files.
synth() { # model file shape...
  local m=$1 file=$2
  shift 2
  "$PY" - "$TMP/$m" "$SAMPLES" "$@" <<'EOF'
import sys, numpy as np
out, n, shape = sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3:]]
rng = np.random.default_rng(0)
np.save(out + "_x.npy", rng.random((n, *shape), dtype=np.float32))
np.save(out + "_y.npy", rng.integers(0, 10, n).astype(np.int64))
EOF
  awk -v x="$TMP/${m}_x.npy" -v y="$TMP/${m}_y.npy" '
    /^ *data:/ { skip = 1; printf "  data: npy(inputs: \"%s\", labels: \"%s\")\n", x, y }
    skip && /^ *loss:/ { skip = 0 }
    !skip { print }' "$file" >"$TMP/$m.fnet"
  grep -q 'data: npy' "$TMP/$m.fnet" || { echo "could not rewrite $file's data:" >&2; exit 1; }
}

# fnet's samples/s over the steps after the first SKIP: batch * n / sum(batch / sps).
fnet_rate() { # metrics.jsonl skip
  "$PY" - "$1" "$2" <<'EOF'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"kind": "step"' in l or '"kind":"step"' in l]
steps = [s for s in steps if s.get("kind") == "step"][int(sys.argv[2]):]
secs = sum(1.0 / s["samples_per_s"] for s in steps)  # seconds per sample, summed over steps
print(f"{len(steps) / secs:.2f}" if steps else "nan")
EOF
}

max() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == "failed" || (a != "-" && a + 0 >= b + 0)) print a; else print b }'; }

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores," \
  "AVX-512: $(grep -q avx512f /proc/cpuinfo && echo yes || echo no), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "torch $("$PY" -c 'import torch; print(torch.__version__)'), 2 threads; fnet on $BACKEND ($DEVICE); batch $BATCH"
declare -A best
for m in $MODELS; do
  case $m in
    resnet20) synth resnet20 examples/resnet20_cifar10.fnet 3 32 32 ;;
    flextcn6) synth flextcn6 examples/flextcn6_smnist.fnet 1 784 ;;
    *) echo "unknown model $m (resnet20, flextcn6)" >&2; exit 2 ;;
  esac
  best[$m.fnet]=- best[$m.eager]=- best[$m.compiled]=-
done
for r in $(seq "$ROUNDS"); do
  for m in $MODELS; do
    if [ "$m" = resnet20 ]; then d=(12 3 6 2); else d=(3 1 2 1); fi
    fs=$(eval echo "\${FNET_STEPS_$m:-${d[0]}}") fk=$(eval echo "\${FNET_SKIP_$m:-${d[1]}}")
    ts=$(eval echo "\${TORCH_STEPS_$m:-${d[2]}}") tw=$(eval echo "\${TORCH_WARMUP_$m:-${d[3]}}")
    line="round $r $m:"
    if "$FNETC" train "$TMP/$m.fnet" --backend "$BACKEND" --device "$DEVICE" --batch "$BATCH" \
        --stop-after "$fs" --out "$TMP/run_$m" --force >"$TMP/fnet.log" 2>&1; then
      f=$(fnet_rate "$TMP/run_$m/metrics.jsonl" "$fk")
    else
      f=failed
      sed 's/^/  fnet: /' "$TMP/fnet.log" | tail -5 >&2
    fi
    best[$m.fnet]=$(max "${best[$m.fnet]}" "$f")
    line+=" fnet $f samples/s"
    sides=eager
    [ "$COMPILE" = 1 ] && sides="eager compiled"
    for side in $sides; do
      flag=()
      [ "$side" = compiled ] && flag=(--compile)
      if t=$("$PY" tools/torch_train_loop.py --model "$m" "${flag[@]}" --batch "$BATCH" \
          --steps "$ts" --warmup "$tw" --samples "$SAMPLES" --threads 2 2>"$TMP/torch.log"); then
        s=$(sed -n 's/.* \([0-9.]*\) samples\/s$/\1/p' <<<"$t")
      else
        s=failed
        tail -3 "$TMP/torch.log" | sed 's/^/  torch: /' >&2
      fi
      best[$m.$side]=$(max "${best[$m.$side]}" "$s")
      line+=", torch $side $s samples/s"
    done
    echo "$line (load $(cut -d' ' -f1 /proc/loadavg))"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| model (batch $BATCH) | fnet $BACKEND | PyTorch eager | torch.compile | fnet / eager | fnet / compile |"
echo "|---|---|---|---|---|---|"
for m in $MODELS; do
  awk -v m="$m" -v f="${best[$m.fnet]}" -v e="${best[$m.eager]}" -v c="${best[$m.compiled]}" '
    function r(a, b) { return (a + 0 > 0 && b + 0 > 0) ? sprintf("%.2fx", a / b) : "-" }
    BEGIN { printf "| %s | %s | %s | %s | %s | %s |\n", m, f, e, c, r(f, e), r(f, c) }'
done
echo "(samples/s, best of $ROUNDS rounds; above 1x: fnet is faster)"
