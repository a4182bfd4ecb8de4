#!/usr/bin/env bash
# Experiment 2 (docs/experiments.md, SEEDS §2.9): LC with frozen random bases.
# ResNet-LC-8-8 on MNIST-10k at E ∈ EXPANSIONS (default 1 4 16), frozen random bases
# against learnable LC, plus the plain baseline; every arm over SEEDS, fnet and the
# PyTorch control (tools/experiments/torch_lc.py) side by side, with trainable and
# frozen parameter counts from `fnetc check`. Training speed with the fold against
# without it: the frozen arm at the largest E is trained once more (first seed) with
# `--skip-pass fold-bases`, the row `unfolded`.
#
#   scripts/experiments/lc_frozen.sh                  # full: 7 arms × 2 seeds, 5 epochs
#   SMOKE=1 BACKEND=jit scripts/experiments/lc_frozen.sh
# Writes out/experiments/lc_frozen/{table.md,accuracy.png}.
NAME=lc_frozen
source "$(dirname "$0")/lib.sh"
EXPANSIONS=${EXPANSIONS:-"1 4 16"}
[[ "${SMOKE:-0}" == 1 ]] && EXPANSIONS=${SMOKE_EXPANSIONS:-1}

LC=$(model examples/experiments/resnet8_lc_mnist.fnet lc)
BASE=$(model examples/experiments/resnet8_mnist.fnet baseline)
for seed in $SEEDS; do
  read -r t f < <(params "$BASE")
  EXTRA="\"E\": 0, \"trainable\": $t, \"frozen\": $f" fnet_train baseline "$seed" "$BASE"
  if [[ "$CONTROL" == 1 ]]; then
    # shellcheck disable=SC2046
    python3 tools/experiments/torch_lc.py --arm baseline --E 0 --seed "$seed" --epochs "$EPOCHS" \
      --train "$TRAIN" --test "$TEST" $(order "$seed") --out "$RESULTS" > /dev/null
  fi
  for e in $EXPANSIONS; do
    for arm in frozen learnable; do
      learn=false; [[ $arm == learnable ]] && learn=true
      read -r t f < <(params "$LC" --set "E=$e" --set "LEARN=$learn")
      EXTRA="\"E\": $e, \"trainable\": $t, \"frozen\": $f" \
        fnet_train "$arm-E$e" "$seed" "$LC" --set "E=$e" --set "LEARN=$learn"
      if [[ "$CONTROL" == 1 ]]; then
        # shellcheck disable=SC2046
        python3 tools/experiments/torch_lc.py --arm "$arm" --E "$e" --seed "$seed" --epochs "$EPOCHS" \
          --train "$TRAIN" --test "$TEST" $(order "$seed") --out "$RESULTS" > /dev/null
      fi
    done
  done
done
# The fold's speed: the same training as frozen-E<max>-seed<first>, the LC layers
# left unfolded (basis conv, then the 1×1 combination).
read -r first _ <<< "$SEEDS"
emax=$(tr ' ' '\n' <<< "$EXPANSIONS" | sort -n | tail -1)
read -r t f < <(params "$LC" --set "E=$emax" --set "LEARN=false")
EXTRA="\"E\": $emax, \"trainable\": $t, \"frozen\": $f" \
  fnet_train "unfolded-E$emax" "$first" "$LC" --set "E=$emax" --set "LEARN=false" --skip-pass fold-bases
python3 tools/experiments/tables.py lc "$OUT"
echo "wrote $OUT/table.md"
