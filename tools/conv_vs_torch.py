#!/usr/bin/env python3
"""One KxK conv (K = 3 or 5, pad K//2, stride 1, Co = Ci) timed by fnet's JIT kernels (im2col + sgemm,
Winograd F(2x2,KxK), Winograd F(4x4,KxK), the sliding-window direct conv), PyTorch eager `torch.nn.functional.conv2d`
and ONNX Runtime, all on 2 threads, interleaved: each round runs every contestant in
turn; the figure is the best of the rounds (each itself the best of `--reps` calls).

    python3 tools/conv_vs_torch.py [--n 64 --c 32 --hw 32 --k 3 --rounds 5 --reps 10]

(FlexNet-7's widest 5x5 conv: `--n 8 --c 48 --k 5`.)

fnet runs as `cargo bench --bench jit_kernels -- conv N C H W reps K` (built once at the
start); its Winograd times exclude the filter transform, which is folded when weights
are bound. Prints effective GFLOP/s = 2*N*Co*Ci*K*K*H*W / time.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def fnet_binary(root):
    out = subprocess.run(
        ["cargo", "bench", "--locked", "--bench", "jit_kernels", "--no-run", "--message-format=json"],
        cwd=root, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "jit_kernels" \
                and msg.get("executable"):
            return msg["executable"]
    sys.exit("conv_vs_torch: cargo built no jit_kernels bench executable")


def best_of(reps, f):
    f()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--c", type=int, default=32)
    ap.add_argument("--hw", type=int, default=32)
    ap.add_argument("--k", type=int, default=3, choices=[3, 5])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    import torch
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.n, a.c, a.hw, a.hw), dtype=np.float32)
    ks, pad = a.k, a.k // 2
    w = rng.standard_normal((a.c, a.c, ks, ks), dtype=np.float32)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[ks, ks], pads=[pad] * 4)],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    ref = torch.nn.functional.conv2d(xt, wt, padding=pad).numpy()
    got = sess.run(None, {"x": x})[0]
    assert np.allclose(ref, got, rtol=1e-3, atol=1e-3), "ONNX Runtime disagrees with PyTorch"

    exe = fnet_binary(root)
    best = {}
    with torch.inference_mode():
        for _ in range(a.rounds):
            out = subprocess.run([exe, "conv", str(a.n), str(a.c), str(a.hw), str(a.hw), str(a.reps), str(ks)],
                                 check=True, capture_output=True, text=True).stdout
            fnet = json.loads(out.strip().splitlines()[-1])
            isa = fnet.pop("isa")
            times = {f"fnet {k} ({isa})": v for k, v in fnet.items()}
            times["pytorch eager conv2d"] = best_of(a.reps, lambda: torch.nn.functional.conv2d(xt, wt, padding=pad))
            times["onnxruntime Conv"] = best_of(a.reps, lambda: sess.run(None, {"x": x}))
            for k, v in times.items():
                best[k] = min(best.get(k, float("inf")), v)

    flops = 2.0 * a.n * a.c * a.c * ks * ks * a.hw * a.hw
    print(f"{ks}x{ks} conv N{a.n} C{a.c} {a.hw}x{a.hw} pad {pad}, 2 threads, best of {a.rounds} interleaved rounds "
          f"x {a.reps} calls; torch {torch.__version__}, onnxruntime {ort.__version__}")
    for k, v in best.items():
        print(f"{k:<34} {v * 1e3:8.2f} ms {flops / v / 1e9:8.1f} GFLOP/s")


if __name__ == "__main__":
    main()
