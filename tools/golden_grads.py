#!/usr/bin/env python3
"""Write whole-network golden gradients: one training step's loss, the gradient of
every parameter, and the BatchNorm running statistics after the training-mode
forward, for the shipped LeNet and ResNet-20 examples, computed by PyTorch twins
written independently of fnet's autodiff pass and interpreter.

Usage:  python3 tools/golden_grads.py [OUT_DIR]   (default: tests/fixtures/golden/grads)

Needs `torch`, `numpy` and `safetensors` (the CPU wheel from PyPI will do; CI does
not run this: the fixtures are committed and tests/golden_grads.rs only reads them),
and the `fnetc` binary: $FNETC if set, else target/release/fnetc.

Weights, as in tools/golden_nets.py (whose ResNet-20 twin and `perturb` this reuses):
`fnetc init examples/MODEL.fnet --seed 7`, then `perturb` (BatchNorm affines and the
zero-initialised biases set by fixed formulas). The running statistics keep fnet's
initial values (0 and 1); they only feed the update check, since training-mode
BatchNorm normalises with the batch's statistics.

Per model, in float64 on the float32 weights: the twin's logits on a seeded randn
input (batch 2), loss = `F.cross_entropy(logits, labels, label_smoothing=eps)`
(batch mean), `.backward()`. BatchNorm runs with `training=True, momentum=0.1`, so
PyTorch updates the running statistics in place with the unbiased batch variance.

`MODEL.grads.safetensors` holds, all as float32 (one dtype, so fnet's weight reader
loads the file whole; the float64 results rounded once):
  * `x` (the input) and `labels` (class indices as floats, fnet's form);
  * `loss` ([1]);
  * `grad.<parameter>` for every parameter except running statistics;
  * `update.<buffer>` for every running mean and variance.
Full gradients, not projections: LeNet's are 250 KB, ResNet-20's 1.1 MB.

The input seeds are chosen so that no ReLU input and no max-pool runner-up lies within
MARGIN (1e-5) of its kink in float64, which the script asserts: nearer, float32 rounding
can move it across, and the float32 gradient is then not an approximation of this one.

Models: `lenet` (conv5x5 pad 2 - ReLU - maxpool 2, conv5x5 - ReLU - maxpool 2,
flatten, linear 120 - ReLU - 84 - ReLU - 10) without label smoothing, and `resnet20`
(golden_nets.py's twin, training-mode BatchNorm) with label smoothing 0.1.
"""

import math
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import golden_grad_nets as twins  # noqa: E402  (LC-20, ResNet32-S16U1*, the slots supernet)
import golden_nets as nets  # noqa: E402  (fnetc, perturb, Weights, ResNet-20/FlexNet/FlexTCN twins)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures", "golden", "grads")
DT = torch.float64
BATCH = 2

EXAMPLES = os.path.join("examples", "")
FIXTURES = os.path.join("tests", "fixtures", "golden", "grads", "")
LC_BASIS = ".basis.weight"  # frozen: no gradient

MODELS = {
    # name: (source, `fnetc init` options, input shape without the batch, input seed,
    #        label smoothing, labels, frozen-parameter suffix or None)
    "lenet": (EXAMPLES + "lenet_mnist.fnet", [], (1, 28, 28), 21, 0.0, [3, 8], None),
    "resnet20": (EXAMPLES + "resnet20_cifar10.fnet", [], (3, 32, 32), 23, 0.1, [4, 9], None),
    "flexnet7": (EXAMPLES + "flexnet7_cifar10.fnet", [], (3, 32, 32), 1035, 0.0, [2, 7], None),
    "flextcn_short": (FIXTURES + "flextcn_short.fnet", [], (1, 64), 100, 0.1, [5, 0], None),
    "lc20_e1": (EXAMPLES + "resnet20_lc_cifar10.fnet", ["--set", "E=1"], (3, 32, 32), 106, 0.1, [1, 6], LC_BASIS),
    "lc20_e8": (EXAMPLES + "resnet20_lc_cifar10.fnet", ["--set", "E=8"], (3, 32, 32), 103, 0.1, [8, 3], LC_BASIS),
    "resnet32_s16u1d": (EXAMPLES + "resnet32_s16u1d_cifar10.fnet", [], (3, 32, 32), 134, 0.0, [0, 9], None),
    "slots_4_7": (EXAMPLES + "resnet20_slots_cifar10.fnet", ["--config", "4,7"], (3, 32, 32), 116, 0.0, [7, 2], None),
    "slots_1_3": (EXAMPLES + "resnet20_slots_cifar10.fnet", ["--config", "1,3"], (3, 32, 32), 101, 0.1, [3, 4], None),
}
# Gradients of more than SAMPLE_OVER elements (MAGNet output layers, 3x3 convs of 32+
# channels) are stored as a strided sample of about SAMPLE elements plus their L2 norm,
# which keeps the nine new fixtures small (see `sample_stride`).
SAMPLE_OVER = 4096
SAMPLE = 2048
WHOLE = {"lenet", "resnet20"}  # every gradient stored whole (1.4 MB together)
# Smallest distance, in float64, of any ReLU input from 0 and of any max-pool window's
# runner-up from its maximum. Closer than this, float32 rounding can put the input on
# the other side of the kink, and the gradient then legitimately differs: with input
# seed 22, one ReLU input of 5.4e-7 in layer3.basic3 came out negative in fnet's
# float32 run, and zeroing that one element's gradient in float64 reproduced fnet's
# float32 gradients (up to 1e-1 relative) to three digits. The seeds meet the margin.
MARGIN = 1e-5
# FlexNet-7 runs 2 million ReLU inputs (15 layers of [2, 24..48, 32, 32]); among 300
# input seeds the best margin was 6.3e-6 (seed 1035), and its float32 run matches.
MARGINS = {"flexnet7": 5e-6}


class Kinks:
    """Records the distance to the nearest kink of every ReLU and 2x2 max-pool the
    twins call (they call them through `F`, patched for the duration)."""

    def __init__(self):
        self.margin = float("inf")

    def relu(self, t):
        # Exact zeros are not near a kink but on it in every precision: FlexTCN's
        # `relu(y + h)` adds two ReLU outputs, and where both are 0 (each from an input
        # beyond the margin) the sum is 0 in float32 too; no gradient reaches it either way.
        a = t.detach().abs()
        a = a[a > 0]
        if a.numel():
            self.margin = min(self.margin, a.min().item())
        return self.relu_(t)

    def max_pool2d(self, t, k):
        assert k == 2
        b, c = t.shape[:2]
        win = F.unfold(t.detach(), 2, stride=2).view(b, c, 4, -1)
        top = win.topk(2, dim=2).values
        live = top[:, :, 0] > 0  # all-zero windows sit behind a ReLU whose gradient is 0
        if live.any():
            self.margin = min(self.margin, (top[:, :, 0] - top[:, :, 1])[live].min().item())
        return self.max_pool2d_(t, k)

    def __enter__(self):
        self.relu_, self.max_pool2d_ = F.relu, F.max_pool2d
        F.relu, F.max_pool2d = self.relu, self.max_pool2d
        return self

    def __exit__(self, *_):
        F.relu, F.max_pool2d = self.relu_, self.max_pool2d_


def lenet(w, x):
    h = F.max_pool2d(F.relu(F.conv2d(x, w("conv1.weight"), w("conv1.bias"), padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, w("conv2.weight"), w("conv2.bias"))), 2)
    h = h.flatten(1)
    h = F.relu(F.linear(h, w("linear1.weight"), w("linear1.bias")))
    h = F.relu(F.linear(h, w("linear2.weight"), w("linear2.bias")))
    return F.linear(h, w("linear3.weight"), w("linear3.bias")), {}


NETS = {
    "lenet": lenet,
    "resnet20": nets.resnet20,
    "flexnet7": nets.flexnet7,  # dropout: identity, the Rust test sets p = 0
    "flextcn_short": nets.flextcn6,
    "lc20_e1": twins.lc20,
    "lc20_e8": twins.lc20,
    "resnet32_s16u1d": twins.resnet32_s16u1d,
    "slots_4_7": twins.slots({4, 7}),
    "slots_1_3": twins.slots({1, 3}),
}


def sample_stride(n):
    """The stride of a sampled gradient: at least n / SAMPLE, coprime to 2, 3, 5 and 7 so
    the sample walks through every position of the small trailing axes (3x3 taps,
    channel counts) instead of one. tests/golden_grads.rs computes the same."""
    s = -(-n // SAMPLE)
    while math.gcd(s, 210) != 1:
        s += 1
    return s


def fnet_weights(source, options, tmp):
    path = os.path.join(tmp, "weights.safetensors")
    cmd = [nets.fnetc(), "init", os.path.join(ROOT, source), "-o", path, "--seed", str(nets.SEED), *options]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return load_file(path)


def is_buffer(name):
    return name.endswith((".running_mean", ".running_var"))


def main():
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[2:])  # optional model names after OUT_DIR
    with tempfile.TemporaryDirectory() as tmp:
        for name, (source, options, shape, xseed, eps, labels, frozen) in MODELS.items():
            if only and name not in only:
                continue
            raw = nets.perturb(fnet_weights(source, options, tmp))
            x = torch.randn(BATCH, *shape, generator=torch.Generator().manual_seed(xseed))
            y = torch.tensor(labels)
            w = nets.Weights(raw, DT, training=True)
            trainable = lambda k: not is_buffer(k) and not (frozen and k.endswith(frozen))  # noqa: E731
            params = {k: t.requires_grad_() for k, t in w.t.items() if trainable(k)}
            with Kinks() as kinks:
                logits, _ = NETS[name](w, x.to(DT))
            margin = MARGINS.get(name, MARGIN)
            assert kinks.margin >= margin, f"{name}: an input {kinks.margin:.2g} from a kink; change its seed"
            loss = F.cross_entropy(logits, y, label_smoothing=eps)
            loss.backward()
            w.check_all_used()
            out = {
                "x": x.contiguous(),
                "labels": y.to(torch.float32),
                "loss": loss.detach().reshape(1).to(torch.float32),
            }
            sampled = 0
            for k, p in params.items():
                assert p.grad is not None, f"{name}: {k} gets no gradient"
                g = p.grad.detach()
                if g.numel() > SAMPLE_OVER and name not in WHOLE:
                    out["sample." + k] = g.flatten()[:: sample_stride(g.numel())].to(torch.float32).contiguous()
                    out["norm." + k] = g.norm().reshape(1).to(torch.float32)
                    sampled += 1
                else:
                    out["grad." + k] = g.to(torch.float32).contiguous()
            for k, t in w.t.items():
                if is_buffer(k):
                    out["update." + k] = t.to(torch.float32).contiguous()
            path = os.path.join(OUT, f"{name}.grads.safetensors")
            save_file(out, path)
            gmax = max(p.grad.abs().max().item() for p in params.values())
            print(f"{name}: loss {loss.item():.6f}, {len(params)} gradients ({sampled} sampled, max |g| {gmax:.3g}), "
                  f"kink margin {kinks.margin:.2g}, "
                  f"{sum(is_buffer(k) for k in w.t)} buffers, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
