#!/usr/bin/env bash
# Data-parallel training throughput on the CPU: ResNet-20 (examples/resnet20_cifar10.fnet,
# its recipe: SGD momentum, random crop and flip) on synthetic CIFAR-shaped data,
#   A:   one process, RAYON_NUM_THREADS=2         (fnetc train --backend B)
#   B/K: mpirun -np 2, RAYON_NUM_THREADS=1 each   (the same global batch, split in two),
#        with `bucket_kb: K` for each K in BUCKETS: 0 is one all-reduce after the
#        backward, K > 0 the overlapped all-reduce in buckets of K KiB
#   C:   as B with `sync_bn: true` (SyncBatchNorm: two small all-reduces per batch norm
#        inside each step) and the default bucket size, when SYNC_BN=1
# (with BACKEND=opencl, PoCL's thread count is set the same way:
# POCL_CPU_MAX_CU_COUNT / POCL_MAX_PTHREAD_COUNT)
# interleaved round by round; each side's samples/s over the steps after the first SKIP
# (batch / step time, from metrics.jsonl), and for B/K the mean per-step seconds the
# step waited in collectives (comm_s: with overlap, only the part the backward did not
# hide) and, with overlap, the seconds the all-reduce thread spent in its all-reduces
# (allreduce_s), and comm_s as a share of the step.
#
#   scripts/bench_mpi.sh [ROUNDS]     (default 2)
#
# Environment: FNETC (a prebuilt fnetc with the mpi feature; else cargo builds the
# release one), BACKEND (jit), BATCH (64), STEPS (10), SKIP (2), SAMPLES (1024),
# BUCKETS ("0 256 1024"), YIELD (unset; 1 sets OMPI_MCA_mpi_yield_when_idle=1: Open MPI's
# waits then yield the core instead of spinning on it, which matters when the ranks'
# compute and all-reduce threads outnumber the cores, as here), SYNC_BN (0; 1 adds C).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
BACKEND=${BACKEND:-jit}
BATCH=${BATCH:-64}
STEPS=${STEPS:-10}
SKIP=${SKIP:-2}
SAMPLES=${SAMPLES:-1024}
BUCKETS=${BUCKETS:-0 256 1024}
SYNC_BN=${SYNC_BN:-0}
if [ -z "${FNETC:-}" ]; then
  cargo build --locked --release --quiet --features mpi --bin fnetc
  FNETC=target/release/fnetc
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
  OMPI_MCA_btl_vader_single_copy_mechanism=none
if [ -n "${YIELD:-}" ]; then
  export OMPI_MCA_mpi_yield_when_idle=1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

python3 - "$TMP" "$SAMPLES" <<'EOF'
import sys, numpy as np
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
np.save(out + "/x.npy", rng.random((n, 3, 32, 32), dtype=np.float32))
np.save(out + "/y.npy", rng.integers(0, 10, n).astype(np.int64))
EOF
sed "s|^ *data:.*|  data: npy(inputs: \"$TMP/x.npy\", labels: \"$TMP/y.npy\")|" \
  examples/resnet20_cifar10.fnet >"$TMP/resnet20.fnet"
grep -q 'data: npy' "$TMP/resnet20.fnet"
for k in $BUCKETS; do
  sed "s|^\( *data:.*\)|\1\n  bucket_kb: $k|" "$TMP/resnet20.fnet" >"$TMP/resnet20_b$k.fnet"
  grep -q "bucket_kb: $k" "$TMP/resnet20_b$k.fnet"
done
sed 's|^ *batch:.*|&\n  sync_bn: true|' "$TMP/resnet20.fnet" >"$TMP/resnet20_sync.fnet"
grep -q 'sync_bn: true' "$TMP/resnet20_sync.fnet"

rate() { # metrics.jsonl → "samples/s" or "samples/s (waited …)"
  python3 - "$1" "$SKIP" "$BATCH" <<'EOF'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1])]
steps = [s for s in steps if s.get("kind") == "step"][int(sys.argv[2]):]
b = int(sys.argv[3])
# A step's wall time is batch / samples_per_s (the global batch on every side).
wall = sum(b / s["samples_per_s"] for s in steps)
out = f"{len(steps) * b / wall:.1f} samples/s"
if "comm_s" in steps[0]:
    comm = sum(s["comm_s"] for s in steps)
    out += f" (waited {1000 * comm / len(steps):.1f} ms/step = {100 * comm / wall:.1f}%"
    if "allreduce_s" in steps[0]:
        ar = sum(s["allreduce_s"] for s in steps)
        out += f", all-reduce thread {1000 * ar / len(steps):.1f} ms/step"
    out += ")"
print(out)
EOF
}

two_ranks() { # MODEL → its rate on 2 ranks × 1 thread
  rm -rf "$TMP/b"
  RAYON_NUM_THREADS=1 POCL_CPU_MAX_CU_COUNT=1 POCL_MAX_PTHREAD_COUNT=1 \
    mpirun -np 2 --oversubscribe --bind-to none \
    -x RAYON_NUM_THREADS -x POCL_CPU_MAX_CU_COUNT -x POCL_MAX_PTHREAD_COUNT \
    "$FNETC" train "$1" --backend "$BACKEND" \
    --batch "$BATCH" --stop-after "$STEPS" --out "$TMP/b" >/dev/null
  rate "$TMP/b/metrics.jsonl"
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ResNet-20, backend $BACKEND, global batch $BATCH, $STEPS steps (first $SKIP skipped), yield_when_idle ${OMPI_MCA_mpi_yield_when_idle:-0}"
for r in $(seq 1 "$ROUNDS"); do
  rm -rf "$TMP/a" "$TMP/b"
  RAYON_NUM_THREADS=2 POCL_CPU_MAX_CU_COUNT=2 POCL_MAX_PTHREAD_COUNT=2 "$FNETC" train "$TMP/resnet20.fnet" --backend "$BACKEND" \
    --batch "$BATCH" --stop-after "$STEPS" --out "$TMP/a" >/dev/null
  a=$(rate "$TMP/a/metrics.jsonl")
  echo "round $r: 1 rank x 2 threads $a; load $(cut -d' ' -f1 /proc/loadavg)"
  for k in $BUCKETS; do
    echo "round $r: 2 ranks x 1 thread, bucket_kb $k: $(two_ranks "$TMP/resnet20_b$k.fnet"); load $(cut -d' ' -f1 /proc/loadavg)"
  done
  if [ "$SYNC_BN" = 1 ]; then
    echo "round $r: 2 ranks x 1 thread, sync_bn: $(two_ranks "$TMP/resnet20_sync.fnet"); load $(cut -d' ' -f1 /proc/loadavg)"
  fi
done
