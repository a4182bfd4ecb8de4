#!/usr/bin/env bash
# The main job on shipped data: check the MNIST LeNet, train it from its `train {}`
# section on the 8,000 training digits of data/mnist10k (fnetc train: Adam, cosine
# schedule, 5 epochs, evaluated on the 2,000 held-out digits after each), compile the
# trained weights into an artifact, and run that on the held-out digits (images
# 8000..10000) on the reference interpreter and on OpenCL, then summarise every
# example's parameter counts. The run directory is out/lenet_run (metrics.jsonl,
# checkpoints/, final.safetensors, recipe.json; see docs/training.md).
set -euo pipefail
cd "$(dirname "$0")/.."
fnetc=target/release/fnetc
cargo build --locked --release --bin fnetc
mkdir -p out

echo "== fnetc check examples/lenet_mnist.fnet"
"$fnetc" check examples/lenet_mnist.fnet
echo "== fnetc train examples/lenet_mnist.fnet --out out/lenet_run --force"
"$fnetc" train examples/lenet_mnist.fnet --out out/lenet_run --force
echo "== fnetc compile examples/lenet_mnist.fnet -w out/lenet_run/final.safetensors -o out/lenet.fnc --explain"
"$fnetc" compile examples/lenet_mnist.fnet -w out/lenet_run/final.safetensors -o out/lenet.fnc --explain
echo "== fnetc run out/lenet.fnc on MNIST test digits 8000..10000 (reference)"
"$fnetc" run out/lenet.fnc \
    -i data/mnist10k/images.idx3-ubyte.gz --range 8000..10000 \
    --labels data/mnist10k/labels.idx1-ubyte.gz -o out/lenet_logits.npy
echo "== the same on OpenCL"
"$fnetc" run out/lenet.fnc --backend opencl \
    -i data/mnist10k/images.idx3-ubyte.gz --range 8000..10000 \
    --labels data/mnist10k/labels.idx1-ubyte.gz
echo "== fnetc plot out/lenet_run (PNGs in out/lenet_run/plots)"
"$fnetc" plot out/lenet_run

for f in examples/*.fnet; do
    echo "== fnetc check $f"
    "$fnetc" check "$f" | sed -n '/^parameters:/,/^  total/p'
done
