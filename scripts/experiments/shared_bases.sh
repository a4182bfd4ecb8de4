#!/usr/bin/env bash
# Experiment 3 (docs/experiments.md, SEEDS §3.7): deeply shared filter bases.
# A small ResNet (3 stages × 3 blocks, widths 8/16/32) on MNIST-10k against its
# shared-basis version (single sharing, s = c, u = 1) with λ_R = 10 and λ_R = 0; every
# arm over SEEDS, fnet and the PyTorch control (tools/experiments/torch_shared.py).
# The orthogonality residual over training is computed from fnet's checkpoints (every
# CKPT_EVERY steps, all kept); the shared bases' gradient norm per step comes from
# `fnetc train --log-grad-norm 'stage*.shared.*'` (metrics.jsonl's grad_norms).
#
#   scripts/experiments/shared_bases.sh               # full: 3 arms × 2 seeds, 5 epochs
#   SMOKE=1 BACKEND=jit scripts/experiments/shared_bases.sh
# Writes out/experiments/shared_bases/{table.md,residual.png}.
NAME=shared_bases
source "$(dirname "$0")/lib.sh"
CKPT_EVERY=${CKPT_EVERY:-25}
[[ "${SMOKE:-0}" == 1 ]] && CKPT_EVERY=1

PLAIN=$(model examples/experiments/resnet14_mnist.fnet plain)
L10=$(model examples/experiments/resnet14_shared_mnist.fnet shared_l10)
L0=$(model examples/experiments/resnet14_shared_mnist.fnet shared_l0 -e 's|orthogonality(weight: 10)|orthogonality(weight: 0)|')
for seed in $SEEDS; do
  for arm in plain shared_l10 shared_l0; do
    case $arm in plain) m=$PLAIN lam=0 ;; shared_l10) m=$L10 lam=10 ;; shared_l0) m=$L0 lam=0 ;; esac
    read -r t _ < <(params "$m")
    norms=(); [[ $arm != plain ]] && norms=(--log-grad-norm 'stage*.shared.*')
    EXTRA="\"params\": $t" fnet_train "$arm" "$seed" "$m" --checkpoint-every "$CKPT_EVERY" --keep 100000 \
      "${norms[@]}"
    if [[ "$CONTROL" == 1 ]]; then
      carm=shared; [[ $arm == plain ]] && carm=plain
      # shellcheck disable=SC2046
      python3 tools/experiments/torch_shared.py --arm "$carm" --lam "$lam" --seed "$seed" --epochs "$EPOCHS" \
        --train "$TRAIN" --test "$TEST" $(order "$seed") --out "$OUT/torch.jsonl" > /dev/null
      python3 - "$OUT/torch.jsonl" "$arm" >> "$RESULTS" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
r["arm"] = sys.argv[2]
print(json.dumps(r))
PY
    fi
  done
done
# The residual trace of each fnet shared run, from its checkpoints, into results.jsonl.
python3 - "$RESULTS" <<'PY'
import glob, json, os, sys
sys.path.insert(0, "tools/experiments")
import common, numpy as np
path = sys.argv[1]
rows = [json.loads(l) for l in open(path)]
for r in rows:
    if r["impl"] != "fnet" or not r["arm"].startswith("shared"):
        continue
    trace, prev = [], None
    for f in sorted(glob.glob(f"{r['run']}/checkpoints/step-*.safetensors")):
        w = common.safetensors(f)
        step = int(os.path.basename(f)[5:].split(".")[0])
        t = {"step": step, "residual": common.ortho_residual(w)}
        basis = np.concatenate([v.ravel() for k, v in sorted(w.items()) if k.startswith("stage") and ".shared." in k])
        if prev is not None:
            t["update_norm"] = float(np.linalg.norm(basis - prev))
        prev = basis
        trace.append(t)
    r["trace"] = trace
    r["residual"] = trace[-1]["residual"] if trace else None
    # The shared bases' gradient norm per step: the norm over every shared basis.
    grads = []
    for line in open(f"{r['run']}/metrics.jsonl"):
        m = json.loads(line)
        if m["kind"] == "step" and "grad_norms" in m:
            grads.append([m["step"], float(np.sqrt(sum(v * v for v in m["grad_norms"].values())))])
    r["grad_trace"] = grads
with open(path + ".tmp", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
os.replace(path + ".tmp", path)
PY
python3 tools/experiments/tables.py shared "$OUT"
echo "wrote $OUT/table.md"
