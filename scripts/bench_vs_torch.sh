#!/usr/bin/env bash
# ResNet-20 at batch 64: fnet's OpenCL backend against PyTorch's eager mode
# (tools/torch_twin.py: CPU with 2 threads, or CUDA), interleaved in one run, best
# of each side.
#
#   scripts/bench_vs_torch.sh [ROUNDS] [ITERS]                (defaults 3 and 10)
#   scripts/bench_vs_torch.sh --training [ROUNDS] [ITERS]     (defaults 3 and 3)
#
# --training times one training step (forward, cross-entropy, backward) of ResNet-20
# and FlexTCN-6: `fnetc bench --training` against the twin's forward +
# F.cross_entropy + loss.backward(), in eager mode and under torch.compile (when it
# compiles), interleaved round by round, and reports each side's best time and peak
# memory (fnet: the plan's and the measured one; PyTorch: growth of max RSS over a
# step). fnet runs on BACKEND (opencl by default; `reference` until the OpenCL
# training plans are merged).
#
# Environment: BATCH (64), DEVICE (fnet's OpenCL device: default, cpu, gpu or a
# number), BACKEND (fnet's backend with --training: opencl or reference), MODELS
# (with --training: "resnet20 flextcn6"), COMPILE (1: also time torch.compile; 0:
# eager only), TORCH_DEVICE (cpu or cuda), FNETC (a prebuilt fnetc; else cargo builds
# one).
#
# Uses `python3` when it imports torch, numpy and safetensors (tools/torch_twin.py
# reads its weights through tools/golden.py); otherwise installs them from PyPI into a
# venv under target/torch-venv (once). Needs an OpenCL device (PoCL on the CPU) unless
# BACKEND=jit.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAINING=0
if [ "${1:-}" = "--training" ]; then
  TRAINING=1
  shift
fi
ROUNDS=${1:-3}
ITERS=${2:-$([ "$TRAINING" = 1 ] && echo 3 || echo 10)}
BATCH=${BATCH:-64}
DEVICE=${DEVICE:-default}
TORCH_DEVICE=${TORCH_DEVICE:-cpu}

PY=python3
NEEDS='import torch, numpy, safetensors'
if ! "$PY" -c "$NEEDS" 2>/dev/null; then
  VENV=target/torch-venv
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "$NEEDS" 2>/dev/null; then
    echo "installing torch, numpy and safetensors into $VENV (once)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet torch numpy safetensors
  fi
  PY="$VENV/bin/python"
fi

if [ -z "${FNETC:-}" ]; then
  cargo build --release --quiet --bin fnetc
  FNETC=target/release/fnetc
fi
MODEL=examples/resnet20_cifar10.fnet

min() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "inf" || b + 0 < a + 0) print b; else print a }'; }

if [ "$TRAINING" = 1 ]; then
  BACKEND=${BACKEND:-opencl}
  MODELS=${MODELS:-resnet20 flextcn6}
  COMPILE=${COMPILE:-1}
  echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "torch $("$PY" -c 'import torch; print(torch.__version__)'); training step, batch $BATCH, fnet on $BACKEND"
  dev=()
  [ "$BACKEND" = opencl ] && dev=(--device "$DEVICE")
  for m in $MODELS; do
    case $m in
      resnet20) file=examples/resnet20_cifar10.fnet ;;
      flextcn6) file=examples/flextcn6_smnist.fnet ;;
      *) echo "unknown model $m (resnet20, flextcn6)" >&2; exit 2 ;;
    esac
    sides="eager"
    [ "$COMPILE" = 1 ] && sides="eager compiled"
    declare -A best=([fnet]=inf [eager]=inf [compiled]=inf)
    declare -A mem=()
    for r in $(seq "$ROUNDS"); do
      out=$("$FNETC" bench "$file" --training --backend "$BACKEND" "${dev[@]}" --batch "$BATCH" \
        --iters "$ITERS" --warmup 1)
      f=$(awk '$1 == "best" { print $2 }' <<<"$out")
      mem[planned]=$(sed -n 's/^memory *planned peak .*; \([0-9]*\) bytes)$/\1/p' <<<"$out")
      mem[measured]=$(sed -n 's/^memory *measured peak .*; \([0-9]*\) bytes)$/\1/p' <<<"$out")
      line="round $r $m: fnet $f ms"
      best[fnet]=$(min "${best[fnet]}" "$f")
      for side in $sides; do
        flag=()
        [ "$side" = compiled ] && flag=(--compile)
        if t=$("$PY" tools/torch_twin.py --model "$m" --training "${flag[@]}" --batch "$BATCH" \
            --iters "$ITERS" --warmup 1 --threads 2 --device "$TORCH_DEVICE" 2>/dev/null); then
          ms=$(sed -n 's/.* best \([0-9.]*\) ms.*/\1/p' <<<"$t")
          mem[$side]=$(sed -n 's/.* peak \([0-9]*\) bytes.*/\1/p' <<<"$t")
          best[$side]=$(min "${best[$side]}" "$ms")
          line+=", torch $side $ms ms"
        else
          line+=", torch $side failed"
        fi
      done
      echo "$line"
    done
    awk -v m="$m" -v b="$BATCH" -v f="${best[fnet]}" -v e="${best[eager]}" -v c="${best[compiled]}" \
        -v pl="${mem[planned]:-0}" -v me="${mem[measured]:-0}" -v te="${mem[eager]:-0}" -v tc="${mem[compiled]:-0}" 'BEGIN {
      printf "%s best: fnet %.1f ms (%.1f samples/s), torch eager %.1f ms (%.1f samples/s)", m, f, b * 1000 / f, e, b * 1000 / e
      if (c != "inf") printf ", torch.compile %.1f ms", c
      printf "\n%s speed-up over torch eager: %.2fx (above 1: fnet is faster)\n", m, e / f
      printf "%s peak memory: fnet planned %.1f MiB, measured %.1f MiB; torch eager %.1f MiB", m, pl / 1048576, me / 1048576, te / 1048576
      if (tc > 0) printf ", torch.compile %.1f MiB", tc / 1048576
      printf "\n"
    }'
    unset best mem
  done
  exit 0
fi

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "torch $("$PY" -c 'import torch; print(torch.__version__)')"
fnet_best=inf
torch_best=inf
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
