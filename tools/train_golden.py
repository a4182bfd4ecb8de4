#!/usr/bin/env python3
"""PyTorch golden run for `fnetc train` (tests/train_golden.rs): three optimiser steps
of SGD with momentum (and weight decay) and of Adam on LeNet (examples/lenet_mnist.fnet)
and on a small FlexConv classifier (tests/fixtures/train_golden/flex.fnet), from the
same initial weights on the same four samples (one full batch per step), in float64
with PyTorch's own optimisers. tests/train_golden.rs trains the same with fnet in
float32 and compares the weights after the three steps and each step's loss.

Usage:  FNETC=target/debug/fnetc python3 tools/train_golden.py

Writes into tests/fixtures/train_golden/:
  * `<model>.x.npy` (float32 inputs [4, ...]) and `<model>.y.npy` (int64 labels [4]);
  * `golden.safetensors` (float32): `<model>.<opt>.loss` ([3], the loss of each step)
    and `<model>.<opt>.<parameter>`: the parameter after three steps, flattened and
    sampled with stride `sample_stride(numel)` (tests/train_golden.rs computes the
    same), which keeps LeNet's 61k weights to a few KB.

The twins are tools/golden_grads.py's LeNet and tools/golden_nets.py's FlexConv layer
(its crop is recomputed from the mask parameters at every forward, as fnet's is).
"""

import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import golden_grads  # noqa: E402  (the LeNet twin)
import golden_nets as nets  # noqa: E402  (fnetc, the FlexConv twin)

torch.set_num_threads(1)
OUT = os.path.join(ROOT, "tests", "fixtures", "train_golden")
DT = torch.float64
SAMPLE = 256
STEPS = 3

# The fnet recipe strings are in tests/train_golden.rs; keep the two in step.
OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.001),
    "adam": lambda p: torch.optim.Adam(p, lr=0.002),
}


def lenet(w, x):
    return golden_grads.lenet(w, x)[0]


def flex(w, x):
    y, _ = nets.flexconv(w, "flexconv1", x, 7, False)
    h = F.relu(y).mean(dim=(2, 3))
    return F.linear(h, w("linear1.weight"), w("linear1.bias"))


MODELS = {
    # name: (model file, twin, input shape without the batch, labels)
    "lenet": ("examples/lenet_mnist.fnet", lenet, (1, 28, 28), [3, 8, 1, 5]),
    "flex": ("tests/fixtures/train_golden/flex.fnet", flex, (1, 8, 8), [0, 2, 1, 2]),
}


def sample_stride(n):
    s = -(-n // SAMPLE)
    while math.gcd(s, 210) != 1:
        s += 1
    return s


def init(source, tmp):
    path = os.path.join(tmp, "w.safetensors")
    subprocess.run([nets.fnetc(), "init", os.path.join(ROOT, source), "-o", path], check=True, stdout=subprocess.DEVNULL)
    return load_file(path)


def main():
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (source, twin, shape, labels) in MODELS.items():
            g = torch.Generator().manual_seed(len(name))
            x = torch.rand((4, *shape), generator=g, dtype=torch.float32)
            if name == "flex":
                x = 2 * x - 1
            y = torch.tensor(labels, dtype=torch.int64)
            np.save(os.path.join(OUT, f"{name}.x.npy"), x.numpy())
            np.save(os.path.join(OUT, f"{name}.y.npy"), y.numpy())
            w0 = init(source, tmp)
            for opt_name, make in OPTIMIZERS.items():
                params = {k: v.to(DT).clone().requires_grad_(True) for k, v in w0.items()}
                opt = make(list(params.values()))
                losses = []
                for _ in range(STEPS):
                    opt.zero_grad()
                    loss = F.cross_entropy(twin(lambda n: params[n], x.to(DT)), y)
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
                out[f"{name}.{opt_name}.loss"] = torch.tensor(losses, dtype=torch.float32)
                for k, v in params.items():
                    flat = v.detach().flatten()
                    out[f"{name}.{opt_name}.{k}"] = flat[:: sample_stride(flat.numel())].to(torch.float32).contiguous()
                print(name, opt_name, "losses", losses)
    save_file(out, os.path.join(OUT, "golden.safetensors"))


if __name__ == "__main__":
    main()
