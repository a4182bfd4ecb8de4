#!/usr/bin/env bash
# ResNet-20 at batch 64: fnet's OpenCL backend against PyTorch's eager mode
# (tools/torch_twin.py: CPU with 2 threads, or CUDA), interleaved in one run, best
# of each side.
#
#   scripts/bench_vs_torch.sh [ROUNDS] [ITERS]      (defaults 3 and 10)
#
# Environment: BATCH (64), DEVICE (fnet's OpenCL device: default, cpu, gpu or a
# number), TORCH_DEVICE (cpu or cuda), FNETC (a prebuilt fnetc; else cargo builds one).
#
# Uses `python3` when it imports torch; otherwise installs torch from PyPI into a
# venv under target/torch-venv (once). Needs an OpenCL device (PoCL on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
ITERS=${2:-10}
BATCH=${BATCH:-64}
DEVICE=${DEVICE:-default}
TORCH_DEVICE=${TORCH_DEVICE:-cpu}

PY=python3
if ! "$PY" -c 'import torch' 2>/dev/null; then
  VENV=target/torch-venv
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    echo "installing torch into $VENV (once)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet torch
  fi
  PY="$VENV/bin/python"
fi

if [ -z "${FNETC:-}" ]; then
  cargo build --release --quiet --bin fnetc
  FNETC=target/release/fnetc
fi
MODEL=examples/resnet20_cifar10.fnet

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "torch $("$PY" -c 'import torch; print(torch.__version__)')"
fnet_best=inf
torch_best=inf
min() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "inf" || b + 0 < a + 0) print b; else print a }'; }
for r in $(seq "$ROUNDS"); do
  f=$("$FNETC" bench "$MODEL" --backend opencl --device "$DEVICE" --batch "$BATCH" --iters "$ITERS" \
    | awk '$1 == "best" { print $2 }')
  t=$("$PY" tools/torch_twin.py --batch "$BATCH" --iters "$ITERS" --threads 2 --device "$TORCH_DEVICE" \
    | sed -n 's/.* best \([0-9.]*\) ms.*/\1/p')
  echo "round $r: fnet opencl best $f ms, torch eager ($TORCH_DEVICE) best $t ms"
  fnet_best=$(min "$fnet_best" "$f")
  torch_best=$(min "$torch_best" "$t")
done
awk -v f="$fnet_best" -v t="$torch_best" -v b="$BATCH" 'BEGIN {
  printf "best of %s: fnet %.2f ms (%.0f samples/s), torch %.2f ms (%.0f samples/s)\n", '"$ROUNDS"', f, b * 1000 / f, t, b * 1000 / t
  printf "fnet / torch throughput ratio: %.2f (above 1: fnet is faster)\n", t / f
}'
