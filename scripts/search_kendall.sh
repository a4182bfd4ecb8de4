#!/usr/bin/env bash
# Toy-scale validation of `fnetc search` (docs/search.md, "Validation"): does the
# ranking quality (Kendall tau-b between the search's ranking and the stand-alone
# accuracies) rise with the number of supernets M?
#
#   1. Ground truth: each of the 10 configurations of examples/slots_mnist.fnet (5
#      slots, 2 active) trained alone on MNIST-10k digits 0..8000, tested on
#      8000..10000 (mean over GT_SEEDS).
#   2. The search with M in MODELS over SEEDS, on the same 8000 digits (half train,
#      half validate); its ranking takes each configuration under its most likely
#      model (and, reported too, under its best model).
#   3. tau per (M, seed), the chosen configurations, and the overhead of a search step
#      over a plain training step of one configuration (same batch, same backend,
#      interleaved in one run).
#
# Full version (one command):   scripts/search_kendall.sh
# Reduced (shared CPU):         QUICK=1 scripts/search_kendall.sh
# Knobs: PX (28 or 16), GT_EPOCHS, GT_SEEDS, SEARCH_EPOCHS, SEEDS, MODELS, BACKEND,
# FNETC (the binary), WORK (scratch directory, default out/search_kendall), TRAIN and
# TEST (the splits, default 0,8000 and 8000,10000), OVERHEAD=0 (skip step 3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${QUICK:-0}" == 1 ]]; then
  : "${PX:=16}" "${GT_EPOCHS:=2}" "${GT_SEEDS:=0}" "${SEARCH_EPOCHS:=4}" "${SEEDS:=0}"
fi
PX=${PX:-28}
GT_EPOCHS=${GT_EPOCHS:-5}
GT_SEEDS=${GT_SEEDS:-"0 1"}
SEARCH_EPOCHS=${SEARCH_EPOCHS:-10}
SEEDS=${SEEDS:-"0 1 2"}
MODELS=${MODELS:-"1 2 4"}
BACKEND=${BACKEND:-jit}
FNETC=${FNETC:-target/release/fnetc}
WORK=${WORK:-out/search_kendall}
OVERHEAD_STEPS=${OVERHEAD_STEPS:-120}
OVERHEAD=${OVERHEAD:-1}
TRAIN=${TRAIN:-0,8000}
TEST=${TEST:-8000,10000}
[[ -x "$FNETC" ]] || cargo build --release --locked
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
ROOT=$(pwd)

# The model at PX pixels, with absolute data paths.
if [[ "$PX" == 28 ]]; then
  IMAGES="$ROOT/data/mnist10k/images.idx3-ubyte.gz"
  LABELS="$ROOT/data/mnist10k/labels.idx1-ubyte.gz"
elif [[ "$PX" == 16 ]]; then
  [[ -f "$WORK/data16/images.idx3-ubyte" ]] || python3 tools/mnist16.py data/mnist10k "$WORK/data16"
  IMAGES="$WORK/data16/images.idx3-ubyte"
  LABELS="$WORK/data16/labels.idx1-ubyte"
else
  echo "PX must be 28 or 16" >&2; exit 2
fi
sed -e "s|f32\[B, 1, 28, 28\]|f32[B, 1, $PX, $PX]|" \
    -e "s|\"../data/mnist10k/images.idx3-ubyte.gz\"|\"$IMAGES\"|" \
    -e "s|\"../data/mnist10k/labels.idx1-ubyte.gz\"|\"$LABELS\"|" \
    -e "s|train: \[0, 8000\], test: \[8000, 10000\]|train: [$TRAIN], test: [$TEST]|" \
    examples/slots_mnist.fnet > "$WORK/model.fnet"
MODEL="$WORK/model.fnet"
CONFIGS=$(python3 -c 'import itertools; print(" ".join(f"{a},{b}" for a, b in itertools.combinations(range(1, 6), 2)))')
echo "PX=$PX GT_EPOCHS=$GT_EPOCHS GT_SEEDS='$GT_SEEDS' SEARCH_EPOCHS=$SEARCH_EPOCHS SEEDS='$SEEDS' MODELS='$MODELS' BACKEND=$BACKEND" | tee "$WORK/settings.txt"

# 1. Ground truth.
for c in $CONFIGS; do
  for s in $GT_SEEDS; do
    out="$WORK/gt/$c-seed$s"
    [[ -f "$out/final.safetensors" ]] && continue
    "$FNETC" train "$MODEL" --config "$c" --seed "$s" --epochs "$GT_EPOCHS" \
      --backend "$BACKEND" --out "$out" --force | tail -1 | sed "s|^|[$c seed $s] |"
  done
done

# 2. Searches.
for m in $MODELS; do
  for s in $SEEDS; do
    out="$WORK/search/M$m-seed$s"
    [[ -f "$out/ranking.json" ]] && continue
    "$FNETC" search "$MODEL" --models "$m" --seed "$s" --epochs "$SEARCH_EPOCHS" \
      --backend "$BACKEND" --out "$out" --force | tail -1 | sed "s|^|[M=$m seed $s] |"
  done
done

# 3. Overhead: the search's steps on configuration [2,4] (M = 4) against plain
#    training steps of [2,4], interleaved, twice.
for round in $( [[ "$OVERHEAD" == 1 ]] && echo 1 2); do
  "$FNETC" train "$MODEL" --config 2,4 --backend "$BACKEND" --stop-after "$OVERHEAD_STEPS" \
    --out "$WORK/overhead/train$round" --force > /dev/null
  "$FNETC" search "$MODEL" --models 4 --backend "$BACKEND" --stop-after "$OVERHEAD_STEPS" \
    --out "$WORK/overhead/search$round" --force > /dev/null
done

python3 - "$WORK" "$MODELS" "$SEEDS" "$GT_SEEDS" "$OVERHEAD" <<'PY'
import json, sys, os, itertools, statistics
work, models, seeds, gt_seeds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
overhead = sys.argv[5] == "1"
configs = [f"{a},{b}" for a, b in itertools.combinations(range(1, 6), 2)]

def test_acc(run):
    recs = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    return [r for r in recs if r["kind"] == "epoch"][-1]["test_accuracy"]

def tau_b(x, y):
    c = d = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            tx += dx == 0
            ty += dy == 0
            if dx and dy:
                c += (dx > 0) == (dy > 0)
                d += (dx > 0) != (dy > 0)
    n0 = len(x) * (len(x) - 1) // 2
    den = ((n0 - tx) * (n0 - ty)) ** 0.5
    return (c - d) / den if den else float("nan")

gt = {c: statistics.mean(test_acc(f"{work}/gt/{c}-seed{s}") for s in gt_seeds) for c in configs}
print("\nGround truth (test accuracy, mean over GT seeds):")
print("| config | " + " | ".join(f"[{c}]" for c in configs) + " |")
print("|---|" + "---|" * len(configs))
print("| acc % | " + " | ".join(f"{100 * gt[c]:.2f}" for c in configs) + " |")
best = max(configs, key=gt.get)
print(f"best stand-alone: [{best}] {100 * gt[best]:.2f}%")
print("\n| M | tau (most likely model) per seed | mean | tau (best model) mean | chosen configs (their stand-alone acc %) |")
print("|---|---|---|---|---|")
for m in models:
    taus, taus_best, chosen = [], [], []
    for s in seeds:
        r = json.load(open(f"{work}/search/M{m}-seed{s}/ranking.json"))
        est = {",".join(map(str, l["config"])): l["accuracy"] for l in r["ranking"]}
        best_est = {",".join(map(str, l["config"])): l["best_accuracy"] for l in r["ranking"]}
        cs = [c for c in configs if c in est]
        taus.append(tau_b([gt[c] for c in cs], [est[c] for c in cs]))
        taus_best.append(tau_b([gt[c] for c in cs], [best_est[c] for c in cs]))
        ch = ",".join(map(str, r["chosen"]))
        chosen.append(f"[{ch}] ({100 * gt[ch]:.2f})")
    print(f"| {m} | {', '.join(f'{t:.3f}' for t in taus)} | {statistics.mean(taus):.3f} | {statistics.mean(taus_best):.3f} | {', '.join(chosen)} |")

def steps(run):
    recs = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    return [r for r in recs if r["kind"] == "step"]
if not overhead:
    sys.exit(0)
print("\nOverhead, configuration [2,4], median ms per step (plain: the first 5 steps left out; search: its steps")
print("that drew [2,4], the first left out, as it prepares the plan): plain training step; the search's training part,")
print("validation batch and whole step")
for rnd in (1, 2):
    t = statistics.median(64 / r["samples_per_s"] for r in steps(f"{work}/overhead/train{rnd}")[5:])
    ss = [r for r in steps(f"{work}/overhead/search{rnd}") if r["config"] == [2, 4]][1:]
    tr = statistics.median(r["train_s"] for r in ss)
    va = statistics.median(r["validate_s"] for r in ss)
    whole = statistics.median(64 / r["samples_per_s"] for r in ss)
    print(f"round {rnd}: plain {1000 * t:.1f}; search ({len(ss)} steps) training {1000 * tr:.1f} ({100 * (tr / t - 1):+.1f}%), "
          f"validation {1000 * va:.1f}, whole {1000 * whole:.1f} ({100 * (whole / t - 1):+.1f}%)")
PY
