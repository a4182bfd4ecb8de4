#!/usr/bin/env bash
# The main job on shipped data: train examples/lenet_mnist.fnet from its `train {}`
# section on the 8,000 training digits of data/mnist10k (fnetc train: Adam, cosine
# schedule, 5 epochs, evaluated on the 2,000 held-out digits 8000..10000 after each),
# which also compiles the trained weights into the inference artifact
# out/lenet_run/model.fnc; run that artifact on the held-out digits with the reference
# interpreter and with OpenCL, print the accuracy, and plot the run (fnetc plot:
# PNGs in out/lenet_run/plots). The run directory is out/lenet_run (metrics.jsonl, checkpoints/,
# final.safetensors, model.fnc, recipe.json; see docs/training.md).
#
# TRAIN_BACKEND picks the training backend (default: BACKEND_DEFAULT below, the faster
# one measured on 2 cores; see docs/training.md, "The main job").
set -euo pipefail
cd "$(dirname "$0")/.."
fnetc=target/release/fnetc
run=out/lenet_run
BACKEND_DEFAULT=opencl
backend=${TRAIN_BACKEND:-$BACKEND_DEFAULT}
cargo build --locked --release --features mpi --bin fnetc  # as scripts/setup.sh builds it
mkdir -p out

start=$(date +%s)
echo "== fnetc train examples/lenet_mnist.fnet --out $run --force --backend $backend"
"$fnetc" train examples/lenet_mnist.fnet --out "$run" --force --backend "$backend"
trained=$(date +%s)

accuracy() { grep -o 'accuracy [0-9.]*%' | tail -1 | cut -d' ' -f2; }
for b in reference opencl; do
    echo "== fnetc run $run/model.fnc --backend $b on MNIST digits 8000..10000"
    out=$("$fnetc" run "$run/model.fnc" --backend "$b" \
        -i data/mnist10k/images.idx3-ubyte.gz --range 8000..10000 \
        --labels data/mnist10k/labels.idx1-ubyte.gz)
    echo "$out" | grep -v '^top-1'
    eval "acc_$b=\$(echo \"\$out\" | accuracy)"
done

echo "== fnetc plot $run"
"$fnetc" plot "$run"

echo
echo "main job: LeNet trained on 8,000 MNIST digits in $((trained - start)) s ($backend backend);"
echo "held-out accuracy of $run/model.fnc: ${acc_reference} (reference), ${acc_opencl} (opencl)"
