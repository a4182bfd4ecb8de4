#!/usr/bin/env bash
# The JIT against OpenCL (PoCL) on this machine, interleaved: for each round, every
# (model, batch) runs on both backends back to back, so load changes hit both alike.
# Prints each run's best time; docs/jit.md quotes the best over the rounds.
#
#   scripts/bench_jit_vs_opencl.sh [ROUNDS]     (default 3; needs target/release/fnetc)
set -euo pipefail
cd "$(dirname "$0")/.."
FNETC=target/release/fnetc
ROUNDS=${1:-3}
best() { grep '^best' | awk '{print $2}'; }
echo "# JIT compile time per example (prepare line, batch 1)"
for f in examples/*.fnet; do
  line=$($FNETC bench "$f" --backend jit --batch 1 --iters 1 --warmup 0 2>&1 | grep '^prepare' || true)
  echo "$(basename "$f"): $line"
done
# Warm the OpenCL program cache so no round pays a program build.
for m in lenet_mnist resnet20_cifar10; do
  for b in 1 64; do $FNETC bench examples/$m.fnet --backend opencl --batch $b --iters 1 >/dev/null 2>&1; done
done
$FNETC bench examples/resnet20_cifar10.fnet --backend opencl --training --batch 64 --iters 1 >/dev/null 2>&1
for r in $(seq "$ROUNDS"); do
  echo "# round $r"
  for mb in "lenet_mnist 1 50" "lenet_mnist 64 20" "resnet20_cifar10 1 30" "resnet20_cifar10 64 5"; do
    set -- $mb
    for be in jit opencl; do
      t=$($FNETC bench examples/$1.fnet --backend $be --batch $2 --iters $3 2>&1 | best)
      echo "$1 batch $2 $be: best $t ms"
    done
  done
  for be in jit opencl; do
    t=$($FNETC bench examples/resnet20_cifar10.fnet --backend $be --training --batch 64 --iters 3 2>&1 | best)
    echo "resnet20_cifar10 training step batch 64 $be: best $t ms"
  done
done
