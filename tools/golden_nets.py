#!/usr/bin/env python3
"""Write whole-network golden fixtures: forward passes of three shipped examples
(resnet20, flexnet7, flextcn6), computed by PyTorch twins written independently of
fnet's elaborator and interpreter.

Usage:  python3 tools/golden_nets.py [OUT_DIR]   (default: tests/fixtures/golden/nets)

Needs `torch`, `numpy` and `safetensors`, and the `fnetc` binary: $FNETC if set,
else target/release/fnetc (built with `cargo build --release` when missing).

Weights are not stored in the repository. Both sides make them the same way:
  1. `fnetc init examples/MODEL.fnet --seed 7`, i.e. fnet's deterministic
     initialisation (`initialise::<f32>(&graph, 7)` in Rust);
  2. `perturb` below, so the BatchNorm affines and the zero-initialised biases
     are not identities. tests/golden_nets.rs applies the same formulas.
  3. BatchNorm running statistics calibrated on the fixture's input (`bn`): the
     twin's batch mean and variance at each BN, shifted and scaled per channel by
     a fixed formula. With fnet's initial buffers (0 and 1), or any fixed ones,
     activations grow by a roughly constant factor per layer in eval mode and the
     FlexNet/FlexTCN logits reach 1e6..1e11, where late biases and BN shifts fall
     below float32 resolution; calibrated statistics keep every layer O(1). They
     are stored (float32, a few KB) and the Rust test loads them over the buffers.
The twins load the tensors by fnet's parameter names, run in eval mode (dropout
off, BatchNorm on running statistics) in float64, and the script writes, per
model, `MODEL.x.npy` (the float32 input, batch 2, seeded randn), `MODEL.y.npy`
(the float64 logits) and `MODEL.buffers.safetensors` (the running statistics).
Every step is seeded and deterministic on the CPU.

Architectures (SEEDS.md §1.7 and the official code):
  * ResNet-20, He et al. / akamaster: conv3x3-BN-ReLU stem; 3 stages x 3 basic
    blocks (16/32/64, stride 2 at stages 2 and 3); option-A shortcut = stride-2
    subsample + zero channel padding split evenly (planes // 4 on each side);
    global average pool, linear `fc`.
  * FlexNet-7 (rjbruin/flexconv models/ckresnet.py): FlexConv->BN->ReLU stem;
    7 blocks FlexConv->BN->ReLU->Dropout->FlexConv->BN, + shortcut (1x1 conv with
    bias when the width changes, else identity), ReLU; global average pool, linear.
  * FlexTCN-6 (models/cktcn.py): 6 blocks y = Dropout(ReLU(BN(FlexConv(x)))),
    out = ReLU(Dropout(ReLU(BN(FlexConv(y)))) + shortcut(x)), causal convs; linear
    head on the last time step.
  * FlexConv (ckconv/nn/ckconv.py, steerable=False, no sampling-rate norm at
    training resolution): crop the grid where the Gaussian mask < 0.1, MAGNet on
    the cropped grid, times the mask, conv with `same` (2D) or causal (1D)
    padding, plus bias. The MAGNet, mask and crop come from tools/golden.py.
"""

import math
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import golden  # noqa: E402  (MAGNet, mask and crop, following the official code)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures", "golden", "nets")
SEED = 7
DT = torch.float64

MODELS = {
    # name: (example file, input shape without the batch, input seed)
    "resnet20": ("resnet20_cifar10.fnet", (3, 32, 32), 11),
    "flexnet7": ("flexnet7_cifar10.fnet", (3, 32, 32), 12),
    "flextcn6": ("flextcn6_smnist.fnet", (1, 784), 13),
}
BATCH = 2


def fnetc():
    exe = os.environ.get("FNETC") or os.path.join(ROOT, "target", "release", "fnetc")
    if not os.path.exists(exe):
        subprocess.run(["cargo", "build", "--release", "--bin", "fnetc"], cwd=ROOT, check=True)
    return exe


def fnet_weights(example, tmp):
    path = os.path.join(tmp, example + ".safetensors")
    subprocess.run(
        [fnetc(), "init", os.path.join(ROOT, "examples", example), "-o", path, "--seed", str(SEED)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return load_file(path)


def perturb(w):
    """The fixed, index-based overwrite both sides apply (values computed in double
    with libm's sin/cos, then rounded to float32):
      bnN.weight                g[c] = 1 + 0.2 sin(2c+1)
      bnN.bias                  b[c] = 0.1 cos(2c+1)
      other all-zero *.bias     b[c] = 0.05 sin(3c+1)
    """
    out = {}
    for name, t in w.items():
        parts = name.split(".")
        last, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
        f = None
        if parent.startswith("bn") and last == "weight":
            f = lambda c: 1.0 + 0.2 * math.sin(2 * c + 1)
        elif parent.startswith("bn") and last == "bias":
            f = lambda c: 0.1 * math.cos(2 * c + 1)
        elif last == "bias" and t.dim() == 1 and bool((t == 0).all()):
            f = lambda c: 0.05 * math.sin(3 * c + 1)
        if f is not None:
            assert t.dim() == 1, name
            t = torch.tensor([f(c) for c in range(t.shape[0])], dtype=torch.float64).to(torch.float32)
        out[name] = t
    return out


class Weights:
    """fnet's tensors by name, in the twins' dtype; records which were used."""

    def __init__(self, tensors, dtype, calibrate=False, training=False):
        self.t = {k: v.to(dtype) for k, v in tensors.items()}
        self.used = set()
        self.calibrate = calibrate
        self.training = training  # BatchNorm on batch statistics (tools/golden_grads.py)
        self.calibrated = {}

    def __call__(self, name):
        self.used.add(name)
        return self.t[name]

    def has(self, name):
        return name in self.t

    def check_all_used(self):
        unused = sorted(set(self.t) - self.used)
        assert not unused, f"tensors the twin did not use: {unused[:10]}"


# --------------------------------------------------------------------------
# Layers


def bn(w, name, x):
    if w.training:
        # Batch statistics; F.batch_norm updates the running buffers in w in place
        # (momentum 0.1, unbiased variance), as fnet's `update.*` outputs do.
        return F.batch_norm(
            x, w(name + ".running_mean"), w(name + ".running_var"), w(name + ".weight"), w(name + ".bias"),
            training=True, momentum=0.1, eps=1e-5,
        )
    if w.calibrate and (name + ".running_mean") not in w.calibrated:
        # Running statistics from this batch, offset and scaled per channel so
        # eval mode is not just batch normalisation (see `calibrate`).
        dims = [0] + list(range(2, x.dim()))
        mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        c = torch.arange(x.shape[1], dtype=torch.float64)
        mean = mean + 0.1 * torch.sin(c + 1).to(x.dtype) * var.sqrt()
        var = var * (1 + 0.5 * torch.cos(c + 1) ** 2).to(x.dtype)
        for key, t in [(".running_mean", mean), (".running_var", var)]:
            assert w.t[name + key].shape == t.shape, name
            w.calibrated[name + key] = t.to(torch.float32)
            w.t[name + key] = t.to(torch.float32).to(x.dtype)
    return F.batch_norm(
        x, w(name + ".running_mean"), w(name + ".running_var"), w(name + ".weight"), w(name + ".bias"),
        training=False, eps=1e-5,
    )


def flexconv(w, name, x, horizon, causal):
    """One FlexConv layer; returns the output and the cropped kernel size."""
    mp = w(name + ".mask_params")  # [D, 2]: (mean, sigma) per axis
    layers = 3
    p = {}
    for l in range(layers + 1):
        f = f"{name}.kernel_net.filters.{l}"
        p[f"filter.{l}.weight"] = w(f + ".linear.weight")
        p[f"filter.{l}.bias"] = w(f + ".linear.bias")
        p[f"filter.{l}.gamma"] = w(f + ".gamma")
        p[f"filter.{l}.mu"] = w(f + ".mu")
    for l in range(layers):
        p[f"hidden.{l}.weight"] = w(f"{name}.kernel_net.linears.{l}.weight")
        p[f"hidden.{l}.bias"] = w(f"{name}.kernel_net.linears.{l}.bias")
    p["output.weight"] = w(name + ".kernel_net.output_linear.weight")
    p["output.bias"] = w(name + ".kernel_net.output_linear.bias")
    b = w(name + ".bias")

    grid = golden.cropped_grid(horizon, mp)  # [D, k...]
    cin = x.shape[1]
    k = golden.magnet_forward(p, grid.unsqueeze(0), layers).view(-1, cin, *grid.shape[1:])
    k = k * golden.mask_on(grid, mp)
    if causal:
        y = golden.causal_direct(x, k, b)
    else:
        assert all(s % 2 == 1 for s in k.shape[2:])
        y = F.conv2d(x, k, b, padding=(k.shape[-2] // 2, k.shape[-1] // 2))
    return y, tuple(k.shape[2:])


def option_a(x, planes):
    pad = planes // 4
    return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0)


# --------------------------------------------------------------------------
# Networks


def resnet20(w, x):
    h = F.relu(bn(w, "bn1", F.conv2d(x, w("conv1.weight"), padding=1)))
    for s, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        for b in range(1, 4):
            pre = f"layer{s}.basic{b}"
            st = stride if b == 1 else 1
            y = F.relu(bn(w, pre + ".bn1", F.conv2d(h, w(pre + ".conv1.weight"), stride=st, padding=1)))
            y = bn(w, pre + ".bn2", F.conv2d(y, w(pre + ".conv2.weight"), padding=1))
            sc = option_a(h, planes) if (st != 1 or h.shape[1] != planes) else h
            h = F.relu(y + sc)
    h = h.mean(dim=(2, 3))
    return F.linear(h, w("fc.weight"), w("fc.bias")), {}


def flexnet7(w, x):
    sizes = {}
    y, sizes["flex1"] = flexconv(w, "flex1", x, 33, False)
    h = F.relu(bn(w, "bn1", y))
    for i, c in enumerate([24, 24, 36, 36, 36, 48, 48], start=1):
        pre = f"res{i}"
        y, sizes[pre + ".flex1"] = flexconv(w, pre + ".flex1", h, 33, False)
        y = F.relu(bn(w, pre + ".bn1", y))  # dropout: identity in eval mode
        y, sizes[pre + ".flex2"] = flexconv(w, pre + ".flex2", y, 33, False)
        y = bn(w, pre + ".bn2", y)
        if h.shape[1] != c:
            sc = F.conv2d(h, w(pre + ".shortcut1.weight"), w(pre + ".shortcut1.bias"))
        else:
            assert not w.has(pre + ".shortcut1.weight")
            sc = h
        h = F.relu(y + sc)
    h = h.mean(dim=(2, 3))
    return F.linear(h, w("linear1.weight"), w("linear1.bias")), sizes


def flextcn6(w, x):
    sizes = {}
    h = x
    horizon = x.shape[-1]  # horizon: same
    for i in range(1, 7):
        pre = f"tcn{i}"
        y, sizes[pre + ".flex1"] = flexconv(w, pre + ".flex1", h, horizon, True)
        y = F.relu(bn(w, pre + ".bn1", y))
        y, sizes[pre + ".flex2"] = flexconv(w, pre + ".flex2", y, horizon, True)
        y = F.relu(bn(w, pre + ".bn2", y))
        if h.shape[1] != 30:
            sc = F.conv1d(h, w(pre + ".shortcut1.weight"), w(pre + ".shortcut1.bias"))
        else:
            assert not w.has(pre + ".shortcut1.weight")
            sc = h
        h = F.relu(y + sc)
    return F.linear(h[:, :, -1], w("linear1.weight"), w("linear1.bias")), sizes


NETS = {"resnet20": resnet20, "flexnet7": flexnet7, "flextcn6": flextcn6}


def main():
    import tempfile

    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (example, shape, xseed) in MODELS.items():
            raw = perturb(fnet_weights(example, tmp))
            x = torch.randn(BATCH, *shape, generator=torch.Generator().manual_seed(xseed))
            with torch.no_grad():
                cal = Weights(raw, DT, calibrate=True)
                y_cal, _ = NETS[name](cal, x.to(DT))
                buffers = cal.calibrated
                assert set(buffers) == {k for k in raw if k.endswith((".running_mean", ".running_var"))}
                raw.update(buffers)
                w64 = Weights(raw, DT)
                y, sizes = NETS[name](w64, x.to(DT))
                assert torch.equal(y, y_cal)
                y32, _ = NETS[name](Weights(raw, torch.float32), x)
            w64.check_all_used()
            save_file(buffers, os.path.join(OUT, f"{name}.buffers.safetensors"))
            diff = (y32.double() - y).abs().max().item()
            print(f"{name}: logits max|y| {y.abs().max().item():.4g}, float32 twin vs float64 {diff:.3g}, "
                  f"kernel sizes {sorted(set(sizes.values()))}")
            np.save(os.path.join(OUT, f"{name}.x.npy"), x.numpy().astype("<f4"))
            np.save(os.path.join(OUT, f"{name}.y.npy"), y.numpy().astype("<f8"))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
