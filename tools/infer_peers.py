#!/usr/bin/env python3
"""Inference peers of fnet's forward benchmark: one model's forward in PyTorch eager,
under torch.compile (Inductor), or in ONNX Runtime, on the CPU, timed as
`fnetc bench` times its own (median and best of --iters runs after --warmup).

Usage:
  python3 tools/infer_peers.py --model resnet20|lenet|flextcn6|flexnet7 \
      --runtime eager|compile|ort --batch 64 [--iters 10] [--warmup 3] [--threads 2]

Prints one line:
  peer ort resnet20 batch 64: median 24.1 ms best 23.8 ms (10 runs) 2689.1 samples/s peak 12345 bytes

`peak` is the growth of the process's max RSS from just before the model is built
(weights loaded, session created or module compiled) to after the timed runs: the
memory the runtime needed to hold and run the model, as `fnetc bench` reports the
peak RSS growth of its own process (reset with /proc/self/clear_refs first).

The networks are tools/golden_nets.py's twins (ResNet-20, FlexNet-7, FlexTCN-6:
written independently of fnet, and checked against it by tests/golden_nets.rs) plus
LeNet (examples/lenet_mnist.fnet), on fnet's seeded initial weights
(`fnetc init --seed 7`). Each FlexConv's kernel is synthesised from its kernel network
once, before timing, and kept as a constant in every runtime, as fnet does when the
weights are bound (and as a deployment would): the peers run convolutions only, the
strongest form of them.

ONNX Runtime runs the model exported by torch.onnx (opset 17) with all graph
optimisations, --threads intra-op threads and one inter-op thread. PyTorch uses
torch.set_num_threads(--threads).
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.argv, _argv = sys.argv[:1], sys.argv  # golden_nets reads argv at import
import golden_nets  # noqa: E402

sys.argv = _argv

MODELS = {
    # name: (example file, input shape without the batch)
    "resnet20": ("resnet20_cifar10.fnet", (3, 32, 32)),
    "lenet": ("lenet_mnist.fnet", (1, 28, 28)),
    "flextcn6": ("flextcn6_smnist.fnet", (1, 784)),
    "flexnet7": ("flexnet7_cifar10.fnet", (3, 32, 32)),
}


def lenet(w, x):
    h = F.max_pool2d(F.relu(F.conv2d(x, w("conv1.weight"), w("conv1.bias"), padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, w("conv2.weight"), w("conv2.bias"))), 2)
    h = h.flatten(1)
    h = F.relu(F.linear(h, w("linear1.weight"), w("linear1.bias")))
    h = F.relu(F.linear(h, w("linear2.weight"), w("linear2.bias")))
    return F.linear(h, w("linear3.weight"), w("linear3.bias")), {}


NETS = dict(golden_nets.NETS, lenet=lenet)

_synthesised = {}
_flexconv = golden_nets.flexconv
_conv2d = F.conv2d
_causal = golden_nets.golden.causal_direct


def flexconv_once(w, name, x, horizon, causal):
    """golden_nets.flexconv with the kernel synthesised on the first call and then
    reused (a constant for ONNX export and torch.compile)."""
    if name not in _synthesised:
        captured = {}

        def conv(xx, k, b=None, **kw):
            captured["k"], captured["b"], captured["kw"] = k.detach(), b.detach(), kw
            return _conv2d(xx, k, b, **kw)

        def causal_conv(xx, k, b=None):
            captured["k"], captured["b"] = k.detach(), b.detach()
            return _causal(xx, k, b)

        saved = (golden_nets.F.conv2d, golden_nets.golden.causal_direct)
        golden_nets.F.conv2d, golden_nets.golden.causal_direct = conv, causal_conv
        try:
            with torch.no_grad():
                _, size = _flexconv(w, name, x, horizon, causal)
        finally:
            golden_nets.F.conv2d, golden_nets.golden.causal_direct = saved
        _synthesised[name] = (captured, size)
    captured, size = _synthesised[name]
    if causal:
        return _causal(x, captured["k"], captured["b"]), size
    return F.conv2d(x, captured["k"], captured["b"], **captured["kw"]), size


golden_nets.flexconv = flexconv_once


class Twin(torch.nn.Module):
    """The functional twin with fnet's tensors as constants."""

    def __init__(self, name, tensors):
        super().__init__()
        self.net = NETS[name]
        self.w = golden_nets.Weights(tensors, torch.float32)

    def forward(self, x):
        return self.net(self.w, x)[0]


def max_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def runner(args, tensors, x):
    """A callable that runs one forward, built for the runtime."""
    model = Twin(args.model, tensors).eval()
    with torch.no_grad():
        model(x)  # synthesises the FlexConv kernels (flexconv_once)
    if args.runtime == "eager":
        def run():
            with torch.no_grad():
                return model(x)
        return run
    if args.runtime == "compile":
        compiled = torch.compile(model)

        def run():
            with torch.no_grad():
                return compiled(x)
        return run
    session = ort_session(model, x, args.threads, tempfile.mkdtemp(), args.model)
    feed = {"x": x.numpy()}

    def run():
        return session.run(None, feed)
    return run


def ort_session(model, x, threads, directory, name, profile_prefix=None):
    """An ONNX Runtime CPU session of `model`, exported at `x`'s shape (opset 17) to
    `directory/name.onnx`: `threads` intra-op threads, one inter-op, every graph
    optimisation; profiling into files starting `profile_prefix` when it is given."""
    import onnxruntime as ort

    path = os.path.join(directory, name + ".onnx")
    with torch.no_grad():
        torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--runtime", required=True, choices=["eager", "compile", "ort"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    example, shape = MODELS[args.model]
    with tempfile.TemporaryDirectory() as tmp:
        tensors = golden_nets.fnet_weights(example, tmp)
    x = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(1))
    reset_peak()
    before = current_rss_bytes()
    run = runner(args, tensors, x)
    for _ in range(args.warmup):
        run()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    peak = max_rss_bytes() - before
    med, best = statistics.median(times), min(times)
    print(f"peer {args.runtime} {args.model} batch {args.batch}: median {med * 1e3:.3f} ms "
          f"best {best * 1e3:.3f} ms ({args.iters} runs) {args.batch / best:.1f} samples/s "
          f"peak {peak} bytes", flush=True)


if __name__ == "__main__":
    main()
