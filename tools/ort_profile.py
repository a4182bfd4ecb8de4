#!/usr/bin/env python3
"""Per-node times of ONNX Runtime on one of fnet's models: the peer of
`examples/jit_profile.rs`. Builds the model as tools/infer_peers.py does (fnet's
seeded weights, exported by torch.onnx, all graph optimisations), runs it with ONNX
Runtime's profiler on, and prints each node's mean time over the faster half of its
runs, slowest first.

Usage:
  python3 tools/ort_profile.py [--model resnet20] [--batch 1] [--threads 1] [--runs 300]
"""

import argparse
import collections
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.argv, _argv = sys.argv[:1], sys.argv  # golden_nets (via infer_peers) reads argv
import infer_peers  # noqa: E402

sys.argv = _argv


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20", choices=sorted(infer_peers.MODELS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    torch.set_num_threads(args.threads)
    example, shape = infer_peers.MODELS[args.model]
    with tempfile.TemporaryDirectory() as tmp:
        tensors = infer_peers.golden_nets.fnet_weights(example, tmp)
        x = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(1))
        model = infer_peers.Twin(args.model, tensors).eval()
        with torch.no_grad():
            model(x)  # synthesises the FlexConv kernels (flexconv_once)
        prefix = os.path.join(tmp, "profile")
        session = infer_peers.ort_session(model, x, args.threads, tmp, args.model, prefix)
        feed = {"x": x.numpy()}
        for _ in range(args.runs):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    times = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[(e["name"][: -len("_kernel_time")], e["args"].get("op_name"))].append(e["dur"])
    rows = []
    for (name, op), durs in times.items():
        fast = sorted(durs)[: max(1, len(durs) // 2)]
        rows.append((sum(fast) / len(fast), name, op))
    rows.sort(reverse=True)
    print(f"ONNX Runtime {ort.__version__}, {args.model} batch {args.batch}, "
          f"{args.threads} threads, {args.runs} runs: mean of the faster half, µs")
    for us, name, op in rows[: args.top]:
        print(f"{us:9.1f}  {op:<16} {name}")
    print(f"{sum(r[0] for r in rows):9.1f}  total")


if __name__ == "__main__":
    main()
