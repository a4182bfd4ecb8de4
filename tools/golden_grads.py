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

import os
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import golden_nets as nets  # noqa: E402  (fnetc init, perturb, Weights, the ResNet-20 twin)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures", "golden", "grads")
DT = torch.float64
BATCH = 2

MODELS = {
    # name: (example file, input shape without the batch, input seed, label smoothing, labels)
    "lenet": ("lenet_mnist.fnet", (1, 28, 28), 21, 0.0, [3, 8]),
    "resnet20": ("resnet20_cifar10.fnet", (3, 32, 32), 23, 0.1, [4, 9]),
}
# Smallest distance, in float64, of any ReLU input from 0 and of any max-pool window's
# runner-up from its maximum. Closer than this, float32 rounding can put the input on
# the other side of the kink, and the gradient then legitimately differs: with input
# seed 22, one ReLU input of 5.4e-7 in layer3.basic3 came out negative in fnet's
# float32 run, and zeroing that one element's gradient in float64 reproduced fnet's
# float32 gradients (up to 1e-1 relative) to three digits. The seeds meet the margin.
MARGIN = 1e-5


class Kinks:
    """Records the distance to the nearest kink of every ReLU and 2x2 max-pool the
    twins call (they call them through `F`, patched for the duration)."""

    def __init__(self):
        self.margin = float("inf")

    def relu(self, t):
        self.margin = min(self.margin, t.detach().abs().min().item())
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


NETS = {"lenet": lenet, "resnet20": nets.resnet20}


def is_buffer(name):
    return name.endswith((".running_mean", ".running_var"))


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (example, shape, xseed, eps, labels) in MODELS.items():
            raw = nets.perturb(nets.fnet_weights(example, tmp))
            x = torch.randn(BATCH, *shape, generator=torch.Generator().manual_seed(xseed))
            y = torch.tensor(labels)
            w = nets.Weights(raw, DT, training=True)
            params = {k: t.requires_grad_() for k, t in w.t.items() if not is_buffer(k)}
            with Kinks() as kinks:
                logits, _ = NETS[name](w, x.to(DT))
            assert kinks.margin >= MARGIN, f"{name}: an input {kinks.margin:.2g} from a kink; change its seed"
            loss = F.cross_entropy(logits, y, label_smoothing=eps)
            loss.backward()
            w.check_all_used()
            out = {
                "x": x.contiguous(),
                "labels": y.to(torch.float32),
                "loss": loss.detach().reshape(1).to(torch.float32),
            }
            for k, p in params.items():
                assert p.grad is not None, f"{name}: {k} gets no gradient"
                out["grad." + k] = p.grad.to(torch.float32).contiguous()
            for k, t in w.t.items():
                if is_buffer(k):
                    out["update." + k] = t.to(torch.float32).contiguous()
            path = os.path.join(OUT, f"{name}.grads.safetensors")
            save_file(out, path)
            gmax = max(p.grad.abs().max().item() for p in params.values())
            print(f"{name}: loss {loss.item():.6f}, {len(params)} gradients (max |g| {gmax:.3g}), "
                  f"kink margin {kinks.margin:.2g}, "
                  f"{sum(is_buffer(k) for k in w.t)} buffers, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
