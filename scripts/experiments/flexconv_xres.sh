#!/usr/bin/env bash
# Experiment 1 (docs/experiments.md, SEEDS §1.12): FlexConv across resolutions.
# A tiny FlexNet trained on MNIST-10k resized to 14×14 (horizon 15) is tested at 14 px
# and, with no fine-tuning, at 28 px (horizon 29, sampling_rate_norm 0.25, the kernel
# re-sampled on the finer grid) — with the anti-aliasing regulariser (aa), without
# (noaa), and a plain 3×3 CNN (cnn3). Every arm over SEEDS, fnet and the PyTorch
# control (tools/experiments/torch_xres.py) side by side; the learned kernel size per
# layer over training from metrics.jsonl's "kernel_sizes".
#
#   scripts/experiments/flexconv_xres.sh              # full: 3 arms × 2 seeds, 5 epochs
#   SMOKE=1 BACKEND=jit scripts/experiments/flexconv_xres.sh   # CI size
# Writes out/experiments/flexconv_xres/{table.md,accuracy.png,kernel_sizes.png}.
NAME=flexconv_xres
source "$(dirname "$0")/lib.sh"

FLEX=examples/experiments/flexnet_xres.fnet
CNN=examples/experiments/cnn3_xres.fnet
M_AA=$(model "$FLEX" aa)
M_NOAA=$(model "$FLEX" noaa -e '/^  regularizers:/d')
M_CNN=$(model "$CNN" cnn3)
read -r P_FLEX _ < <(params "$M_AA")
read -r P_CNN _ < <(params "$M_CNN")

for seed in $SEEDS; do
  for arm in aa noaa cnn3; do
    case $arm in aa) m=$M_AA p=$P_FLEX ;; noaa) m=$M_NOAA p=$P_FLEX ;; cnn3) m=$M_CNN p=$P_CNN ;; esac
    EXTRA="\"params\": $p" fnet_train "$arm" "$seed" "$m"
    run="$OUT/runs/$arm-seed$seed"
    # Deployed at 28 px on the raw test images: the FlexNet with its kernel re-sampled,
    # the CNN as it is (its 3×3 kernels now cover half the field of view).
    sets=(--set R=28)
    [[ $arm != cnn3 ]] && sets+=(--set H=29 --set SRN=0.25)
    "$FNETC" run "$m" -w "$run/final.safetensors" "${sets[@]}" --backend "$BACKEND" \
      -i data/mnist10k/images.idx3-ubyte.gz --labels data/mnist10k/labels.idx1-ubyte.gz \
      --range "${TEST%,*}..${TEST#*,}" > "$run/deploy28.txt"
    if [[ "$CONTROL" == 1 ]]; then
      # shellcheck disable=SC2046
      python3 tools/experiments/torch_xres.py --arm "$arm" --seed "$seed" --epochs "$EPOCHS" \
        --train "$TRAIN" --test "$TEST" $(order "$seed") --out "$RESULTS" > /dev/null
    fi
  done
done
python3 tools/experiments/tables.py xres "$OUT"
echo "wrote $OUT/table.md"
