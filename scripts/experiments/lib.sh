# Shared by scripts/experiments/*.sh (sourced, not run). Knobs (environment):
#   SEEDS     seeds of every arm (default "1 2"; SMOKE: "1")
#   SMOKE=1   CI size: one seed, TRAIN=0,256 TEST=8000,8128, one epoch
#   TRAIN, TEST, EPOCHS   the split and epochs (defaults: the models' own, 0,8000 / 8000,10000 / 5)
#   BACKEND   fnetc's backend (default jit, fnetc's own default and the faster here)
#   FNETC     the binary (default target/release/fnetc, built if missing)
#   CONTROL=0 skip the PyTorch controls (default: run them when torch imports)
#   THREADS   threads of fnetc (RAYON_NUM_THREADS) and of PyTorch (set_num_threads), default 2
#   OUT       where the table, PNG and runs go (default out/experiments/NAME)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)
if [[ "${SMOKE:-0}" == 1 ]]; then
  : "${SEEDS:=1}" "${TRAIN:=0,256}" "${TEST:=8000,8128}" "${EPOCHS:=1}"
fi
SEEDS=${SEEDS:-"1 2"}
TRAIN=${TRAIN:-0,8000}
TEST=${TEST:-8000,10000}
EPOCHS=${EPOCHS:-5}
BACKEND=${BACKEND:-jit}
FNETC=${FNETC:-target/release/fnetc}
# Both sides get the same thread count (PyTorch's controls read THREADS).
export THREADS=${THREADS:-2}
export RAYON_NUM_THREADS=$THREADS
if [[ ! -x "$FNETC" ]]; then cargo build --release --locked; fi
if [[ -z "${CONTROL:-}" ]]; then
  if python3 -c 'import torch' 2>/dev/null; then CONTROL=1; else CONTROL=0; fi
fi
OUT=${OUT:-out/experiments/$NAME}
mkdir -p "$OUT/models" "$OUT/runs"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
echo "SEEDS='$SEEDS' TRAIN=$TRAIN TEST=$TEST EPOCHS=$EPOCHS BACKEND=$BACKEND CONTROL=$CONTROL THREADS=$THREADS FNETC=$FNETC" | tee "$OUT/settings.txt"

# The data order fnetc train uses, for the PyTorch controls: ORDER_BIN writes it from
# fnet's own epoch_order. Built here for full runs; a smoke run uses it if present.
ORDER_BIN=${ORDER_BIN:-target/release/examples/epoch_order}
if [[ "$CONTROL" == 1 && ! -x "$ORDER_BIN" && "${SMOKE:-0}" != 1 ]]; then
  cargo build --release --locked --example epoch_order
fi

# order SEED: prints `--order FILE` for the controls (nothing when there is no binary).
order() {
  local n=$(( ${TRAIN#*,} - ${TRAIN%,*} ))
  local f="$OUT/order-seed$1.npy"
  if [[ -x "$ORDER_BIN" ]]; then
    [[ -f "$f" ]] || "$ORDER_BIN" "$1" "$EPOCHS" "$n" "$f"
    echo "--order $f"
  fi
}

# model SRC NAME [SED...]: a copy of SRC with the split and epochs of this run, and
# the extra sed expressions applied; prints its path.
model() {
  local src=$1 name=$2; shift 2
  local dst="$OUT/models/$name.fnet"
  sed -e "s|train: \[0, 8000\], test: \[8000, 10000\]|train: [$TRAIN], test: [$TEST]|" \
      -e "s|^  epochs: [0-9]*|  epochs: $EPOCHS|" "$@" "$src" > "$dst"
  echo "$dst"
}

# fnet_train ARM SEED MODEL [fnetc flags...]: trains MODEL with its `seed` set to SEED,
# appends a JSON line (arm, seed,
# acc, wall_s, run) to $RESULTS; extra fields come from $EXTRA (JSON members, no braces).
fnet_train() {
  local arm=$1 seed=$2 m=$3; shift 3
  local run="$OUT/runs/$arm-seed$seed"
  local t0 t1
  # The seed sets the model's initialisation (`seed N`, frozen LC bases included) as
  # well as the data order (--seed), so seeds differ as PyTorch's do.
  local ms="${m%.fnet}-seed$seed.fnet"
  sed -e "s|^  seed [0-9]*\$|  seed $seed|" "$m" > "$ms"
  m=$ms
  t0=$(date +%s.%N)
  "$FNETC" train "$m" --seed "$seed" --backend "$BACKEND" --out "$run" --force "$@" > "$run.log" 2>&1 \
    || { echo "fnetc train $m failed; see $run.log" >&2; tail -5 "$run.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 - "$run" "$arm" "$seed" "$t0" "$t1" "${EXTRA:-}" >> "$RESULTS" <<'PY'
import json, sys
run, arm, seed, t0, t1, extra = sys.argv[1:]
recs = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
ep = [r for r in recs if r["kind"] == "epoch"][-1]
row = {"impl": "fnet", "arm": arm, "seed": int(seed), "acc": ep["test_accuracy"],
       "wall_s": float(t1) - float(t0), "run": run}
if extra:
    row.update(json.loads("{" + extra + "}"))
print(json.dumps(row))
PY
}

# params MODEL [--set ...]: "trainable frozen" from fnetc check.
params() {
  "$FNETC" check "$@" | awk '/^  trainable/ {gsub(",", "", $2); t=$2} /^  frozen/ {gsub(",", "", $2); f=$2} END {print t+0, f+0}'
}
