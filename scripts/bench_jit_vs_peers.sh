#!/usr/bin/env bash
# fnet's forward on the CPU against its peers, interleaved in one run: fnet (the JIT by
# default; BACKENDS="jit opencl" adds OpenCL on PoCL) against ONNX Runtime, PyTorch
# eager and PyTorch + Inductor (torch.compile), all with 2 threads, best of ROUNDS
# rounds; within a round every side runs each case in turn.
#
#   scripts/bench_jit_vs_peers.sh [ROUNDS]          (default 3)
#
# Environment: CASES ("model:batch ...", default below), BACKENDS ("jit"), PEERS
# ("ort eager compile"), THREADS (2), FNETC (a prebuilt fnetc; else cargo builds the
# release one). Peers are tools/infer_peers.py (it documents how they are timed and how
# their peak memory is measured); fnet is `fnetc bench` (best of its runs; its
# `memory measured peak` line).
#
# The peers need python3 with torch, numpy and safetensors, and onnx and onnxruntime
# for `ort` (`pip install torch numpy safetensors onnx onnxruntime`); the script stops
# with that hint where one is missing.
#
# Prints every measurement as it is taken, then one table: each side's best time, the
# ratio of the strongest peer's best time to fnet's (above 1: fnet is faster), and the
# peak memory of each side (max RSS growth while preparing and running).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
CASES=${CASES:-"resnet20:1 resnet20:64 lenet:1 lenet:64 flextcn6:16 flexnet7:8"}
BACKENDS=${BACKENDS:-jit}
PEERS=${PEERS:-"ort eager compile"}
THREADS=${THREADS:-2}
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS

needs="torch numpy safetensors"
case " $PEERS " in *" ort "*) needs="$needs onnx onnxruntime" ;; esac
for module in $needs; do
  if ! python3 -c "import $module" 2>/dev/null; then
    echo "bench_jit_vs_peers: python3 cannot import $module, which the peers need" >&2
    echo "hint: pip install $needs" >&2
    exit 2
  fi
done

if [ -z "${FNETC:-}" ]; then
  cargo build --locked --release --quiet --bin fnetc
  FNETC=target/release/fnetc
fi
export FNETC

example() {
  case $1 in
    resnet20) echo examples/resnet20_cifar10.fnet ;;
    lenet) echo examples/lenet_mnist.fnet ;;
    flextcn6) echo examples/flextcn6_smnist.fnet ;;
    flexnet7) echo examples/flexnet7_cifar10.fnet ;;
    *) echo "unknown model $1" >&2; exit 2 ;;
  esac
}
iters() { if [ "$1" -le 8 ]; then echo 50; else echo 10; fi; }
# Untimed runs first, the same for every side: 20 where a run takes about a
# millisecond (with 3, fnet's ResNet-20 at batch 1 sometimes measured 1.0 ms instead of
# 0.72 right after a torch.compile process: the peers' own start-up keeps the CPU busy
# for seconds before they time anything, fnet's takes milliseconds).
warm() { if [ "$1" -le 8 ]; then echo 20; else echo 3; fi; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  for case in $CASES; do
    model=${case%%:*}
    batch=${case##*:}
    n=$(iters "$batch")
    w=$(warm "$batch")
    for b in $BACKENDS; do
      out=$("$FNETC" bench "$(example "$model")" --backend "$b" --batch "$batch" \
        --iters "$n" --warmup "$w" 2>/dev/null)
      best=$(echo "$out" | awk '$1 == "best" { print $2 }')
      peak=$(echo "$out" | grep -o 'measured peak [^;]*; [0-9]* bytes' | awk '{ print $(NF-1) }' || true)
      echo "round $round fnet-$b $model $batch best $best ms peak ${peak:-?}" | tee -a "$log"
    done
    for p in $PEERS; do
      line=$(python3 -W ignore tools/infer_peers.py --model "$model" --runtime "$p" \
        --batch "$batch" --iters "$n" --warmup "$w" --threads "$THREADS" 2>/dev/null | grep '^peer' || true)
      best=$(echo "$line" | sed -n 's/.* best \([0-9.]*\) ms.*/\1/p')
      peak=$(echo "$line" | sed -n 's/.* peak \([0-9]*\) bytes.*/\1/p')
      echo "round $round $p $model $batch best ${best:-failed} ms peak ${peak:-?}" | tee -a "$log"
    done
  done
done

echo
echo "best of $ROUNDS rounds, ms (peak memory in MiB); ratio = strongest peer's time / fnet's"
python3 - "$log" "$BACKENDS" "$PEERS" <<'EOF'
import sys, collections
log, backends, peers = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
best = collections.defaultdict(lambda: float("inf"))
peak = {}
order = []
for line in open(log):
    f = line.split()
    side, model, batch, t, p = f[2], f[3], f[4], f[6], f[9]
    case = (model, batch)
    if case not in order:
        order.append(case)
    try:
        best[(side, case)] = min(best[(side, case)], float(t))
    except ValueError:
        pass
    if p.isdigit():
        peak[(side, case)] = max(peak.get((side, case), 0), int(p))
sides = ["fnet-" + b for b in backends] + peers
print("| model | batch | " + " | ".join(sides) + " | fnet vs best peer |")
print("|---" * (len(sides) + 3) + "|")
for case in order:
    cells = []
    for s in sides:
        t = best[(s, case)]
        m = peak.get((s, case))
        cells.append(("%.3f" % t if t < float("inf") else "—") + (" (%.0f)" % (m / 2**20) if m else ""))
    peer_best = min((best[(p, case)] for p in peers), default=float("inf"))
    fnet_best = min(best[("fnet-" + b, case)] for b in backends)
    ratio = peer_best / fnet_best if fnet_best < float("inf") else float("nan")
    print(f"| {case[0]} | {case[1]} | " + " | ".join(cells) + f" | {ratio:.2f}× |")
EOF
