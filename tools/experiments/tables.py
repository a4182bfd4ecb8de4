#!/usr/bin/env python3
"""Tables (markdown) and PNGs of the experiments, from OUT/results.jsonl (one JSON line
per trained arm and seed: fnet's from scripts/experiments/lib.sh `fnet_train`, the
PyTorch controls' from tools/experiments/torch_*.py) and the fnet runs' metrics.jsonl.

    python3 tools/experiments/tables.py xres|lc|shared OUT
"""
import json, os, re, statistics, sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


def rows(out):
    return [json.loads(l) for l in open(f"{out}/results.jsonl") if l.strip()]


def ms(vals, pct=True):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—"
    k = 100 if pct else 1
    m = statistics.mean(vals) * k
    if len(vals) < 2:
        return f"{m:.2f}" if pct else f"{m:.1f}"
    s = statistics.stdev(vals) * k
    return f"{m:.2f} ± {s:.2f}" if pct else f"{m:.1f} ± {s:.1f}"


def sci(vals):
    """Mean ± sample standard deviation in scientific notation ("—" for none)."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—"
    m = statistics.mean(vals)
    return f"{m:.2e} ± {statistics.stdev(vals):.1e}" if len(vals) > 1 else f"{m:.2e}"


def legend(names):
    return "Colours: " + ", ".join(f"{c} = {n}" for c, n in zip(common.COLOUR_NAMES, names)) + "."


def metrics(run):
    return [json.loads(l) for l in open(f"{run}/metrics.jsonl")]


def loop_s(r):
    """Seconds in the training loop: PyTorch's timed loop; for fnet the sum of its
    steps' wall times from metrics.jsonl (batch / samples_per_s, the batch from the
    run's recipe.json), without compilation, evaluations and checkpoints."""
    if r["impl"] != "fnet":
        return r["wall_s"]
    batch = json.load(open(f"{r['run']}/recipe.json"))["batch"]
    return sum(batch / m["samples_per_s"] for m in metrics(r["run"]) if m["kind"] == "step")


def times(sel):
    """The table's two time cells: the training loop, and fnet's whole process."""
    loop = ms([loop_s(r) for r in sel], False)
    whole = ms([r["wall_s"] for r in sel], False) if sel[0]["impl"] == "fnet" else "—"
    return f"{loop} | {whole}"


TIME_COLUMNS = "loop s | process s"


def deploy_acc(run):
    t = open(f"{run}/deploy28.txt").read()
    m = re.search(r"accuracy ([0-9.]+)%", t)
    return float(m.group(1)) / 100 if m else None


def xres(out):
    rs = rows(out)
    arms = ["aa", "noaa", "cnn3"]
    names = {"aa": "FlexNet + anti-aliasing (λ 0.1)", "noaa": "FlexNet, no regulariser", "cnn3": "3×3 CNN"}
    lines = [f"| arm | params | impl | 14 px acc % | 28 px acc % (no fine-tuning) | change | {TIME_COLUMNS} | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    bars = []
    for a in arms:
        for impl in ("fnet", "pytorch"):
            sel = [r for r in rs if r["arm"] == a and r["impl"] == impl]
            if not sel:
                continue
            a14 = [r["acc"] if impl == "fnet" else r["acc14"] for r in sel]
            a28 = [deploy_acc(r["run"]) if impl == "fnet" else r["acc28"] for r in sel]
            ch = [y - x for x, y in zip(a14, a28) if y is not None]
            lines.append(f"| {names[a]} | {sel[0]['params']:,} | {impl} | {ms(a14)} | {ms(a28)} | {ms(ch)} | "
                         f"{times(sel)} | {len(sel)} |")
            if impl == "fnet":
                bars.append([statistics.mean(a14), statistics.mean([v for v in a28 if v is not None] or [0])])
    common.bar_chart(f"{out}/accuracy.png", bars, lo=0.0)
    # Learned kernel size per layer over training (fnet, arm aa, first seed).
    sizes = {}
    aa = [r for r in rs if r["arm"] == "aa" and r["impl"] == "fnet"]
    if aa:
        for rec in metrics(aa[0]["run"]):
            if rec["kind"] == "epoch" and "kernel_sizes" in rec:
                for layer, k in rec["kernel_sizes"].items():
                    sizes.setdefault(layer, []).append((rec["epoch"], k[0]))
    layers = sorted(sizes, key=lambda l: (l != "flex1", l))
    common.line_chart(f"{out}/kernel_sizes.png", [sizes[l] for l in layers])
    ks = ["", "Learned kernel size (height) per layer at each epoch's end (fnet, arm aa, first seed):", "",
          "| layer | " + " | ".join(f"epoch {e}" for e, _ in (sizes[layers[0]] if layers else [])) + " |",
          "|---|" + "---|" * (len(sizes[layers[0]]) if layers else 0)]
    for l in layers:
        ks.append(f"| {l} | " + " | ".join(str(k) for _, k in sizes[l]) + " |")
    text = "\n".join(lines + ["", "accuracy.png: per fnet arm (" + ", ".join(names[a] for a in arms) +
                              "), bars " + legend(["14 px", "28 px"])] + ks +
                     ["", "kernel_sizes.png: " + legend(layers)]) + "\n"
    open(f"{out}/table.md", "w").write(text)


def lc(out):
    rs = rows(out)
    for r in rs:
        r["arm"] = r["arm"].split("-E")[0]
        if r["impl"] == "pytorch" and r["arm"] == "baseline":
            r["E"] = 0
    lines = [f"| arm | E | impl | trainable | frozen | test acc % | {TIME_COLUMNS} | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = []
    for r in rs:
        k = (r["arm"], r.get("E", 0))
        if k not in keys:
            keys.append(k)
    bars = {}
    for arm, e in keys:
        for impl in ("fnet", "pytorch"):
            sel = [r for r in rs if r["arm"] == arm and r.get("E", 0) == e and r["impl"] == impl]
            if not sel:
                continue
            lines.append(f"| {arm} | {e if arm != 'baseline' else '—'} | {impl} | {sel[0]['trainable']:,} | "
                         f"{sel[0]['frozen']:,} | {ms([r['acc'] for r in sel])} | "
                         f"{times(sel)} | {len(sel)} |")
            if impl == "fnet":
                bars.setdefault(e, {})[arm] = statistics.mean(r["acc"] for r in sel)
    base = [statistics.mean(r["acc"] for r in rs if r["arm"] == "baseline" and r["impl"] == "fnet")] \
        if any(r["arm"] == "baseline" and r["impl"] == "fnet" for r in rs) else [float("nan")]
    es = sorted(e for e in bars if e)
    groups = [[bars[e].get("frozen", float("nan")), bars[e].get("learnable", float("nan")), base[0]] for e in es]
    common.bar_chart(f"{out}/accuracy.png", groups)
    notes = ["", f"accuracy.png: one group per E ({', '.join(map(str, es))}), fnet means; " +
             legend(["frozen random LC", "learnable LC", "plain baseline"])]
    unfolded = [r for r in rs if r["arm"] == "unfolded"]
    if unfolded:
        u = unfolded[0]
        folded = [r for r in rs if r["arm"] == "frozen" and r.get("E") == u["E"] and r["impl"] == "fnet"
                  and r["seed"] == u["seed"]]
        if folded:
            f, uf = loop_s(folded[0]), loop_s(u)
            notes += ["", f"The fold's speed (frozen, E = {u['E']}, seed {u['seed']}, training loop): {f:.1f} s "
                      f"folded against {uf:.1f} s with `--skip-pass fold-bases` "
                      f"({uf / f:.2f}×); accuracy {100 * folded[0]['acc']:.2f} % "
                      f"and {100 * u['acc']:.2f} %."]
    open(f"{out}/table.md", "w").write("\n".join(lines + notes) + "\n")


def shared(out):
    rs = rows(out)
    lines = [f"| arm | impl | params | test acc % | final ortho residual | {TIME_COLUMNS} | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    series, names = [], []
    for arm in ("plain", "shared_l10", "shared_l0"):
        for impl in ("fnet", "pytorch"):
            sel = [r for r in rs if r["arm"] == arm and r["impl"] == impl]
            if not sel:
                continue
            res = [r.get("residual") for r in sel]
            lines.append(f"| {arm} | {impl} | {sel[0]['params']:,} | {ms([r['acc'] for r in sel])} | "
                         f"{sci(res)} | "
                         f"{times(sel)} | {len(sel)} |")
            if impl == "fnet" and arm != "plain" and sel[0].get("trace"):
                series.append([(t["step"], t["residual"]) for t in sel[0]["trace"]])
                names.append(f"{arm} residual")
                series.append([tuple(g) for g in sel[0].get("grad_trace", [])])
                names.append(f"{arm} basis gradient norm")
    common.line_chart(f"{out}/residual.png", series, logy=True)
    open(f"{out}/table.md", "w").write("\n".join(lines + [
        "", "residual.png (log y, over training steps, fnet, first seed): " + legend(names),
        "", "The basis gradient norm is the L2 norm over every shared basis's gradient at each step "
        "(`fnetc train --log-grad-norm 'stage*.shared.*'`; PyTorch's rows carry theirs in results.jsonl)."]) + "\n")


if __name__ == "__main__":
    {"xres": xres, "lc": lc, "shared": shared}[sys.argv[1]](sys.argv[2])
