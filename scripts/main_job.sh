#!/usr/bin/env bash
# The main job on shipped files: type-check every example (layer tables and exact
# parameter counts) and compile the MNIST LeNet to IR. Training and running arrive
# with the interpreter and backends (see README, "Status").
set -euo pipefail
cd "$(dirname "$0")/.."
fnetc=target/release/fnetc
[ -x "$fnetc" ] || cargo build --locked --release --bin fnetc

for f in examples/*.fnet; do
    echo "== fnetc check $f"
    "$fnetc" check "$f" | sed -n '/^parameters:/,$p'
done
echo "== fnetc check examples/lenet_mnist.fnet"
"$fnetc" check examples/lenet_mnist.fnet
echo "== fnetc compile examples/lenet_mnist.fnet --emit ir"
"$fnetc" compile examples/lenet_mnist.fnet --emit ir
echo "== data shipped for training: data/mnist10k ($(du -h data/mnist10k/images.idx3-ubyte.gz | cut -f1) of images)"
