#!/usr/bin/env python3
"""PyTorch control of experiment 1 (docs/experiments.md): the tiny FlexNet of
examples/experiments/flexnet_xres.fnet (or its plain 3x3 twin cnn3_xres.fnet) trained
on MNIST-10k resized to 14x14, tested at 14 px and, without fine-tuning, at 28 px
(horizon 29, sampling_rate_norm 0.25: the kernel re-sampled on the finer grid).

    python3 tools/experiments/torch_xres.py --arm aa|noaa|cnn3 --seed 1 [--order O.npy]
        [--epochs 5] [--batch 32] [--train 0,8000] [--test 8000,10000] [--out R.jsonl]

Same recipe as the .fnet: Adam lr 0.01 (mask parameters 0.1x), cosine per iteration,
batch 32; the anti-aliasing term of the `aa` arm is fnet's antialias(weight: 0.1,
stddevs: 2, target: gabor) (tools/golden_regularizers.py's arithmetic, without the
mask term). MAGNet, mask and crop are tools/golden.py's (the official code's).
Prints one JSON line: arm, seed, acc14, acc28, wall_s, params, order.
"""
import argparse, math, os, sys
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import golden  # noqa: E402
import common  # noqa: E402

HIDDEN, LAYERS = 16, 2


class FlexConv2d(nn.Module):
    def __init__(self, g, cin, cout, horizon):
        super().__init__()
        self.cin, self.cout, self.horizon, self.srn = cin, cout, horizon, 1.0
        p = golden.magnet_init(g, 2, HIDDEN, cout * cin, LAYERS, torch.float32)
        self.names = list(p)
        for k, v in p.items():
            self.register_parameter(k.replace(".", "_"), nn.Parameter(v))
        self.mask_params = nn.Parameter(torch.tensor([[0.0, 0.075], [0.0, 0.075]]))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        p = {k: getattr(self, k.replace(".", "_")) for k in self.names}
        grid = golden.cropped_grid(self.horizon, self.mask_params)
        k = golden.magnet_forward(p, grid.unsqueeze(0), LAYERS).view(self.cout, self.cin, *grid.shape[1:])
        k = k * golden.mask_on(grid, self.mask_params) * self.srn
        return F.conv2d(x, k, self.bias, padding=(k.shape[2] // 2, k.shape[3] // 2))

    def antialias(self, stddevs=2.0):
        """fnet's antialias(target: gabor): sum over the L+1 filters of
        relu(f_l - f_Nyq(k)/(L+1))^2, f_l the filter's max over units and axes of
        (|W| + s|gamma|)/2pi, k the training horizon."""
        two_pi = 2 * math.pi
        nyq = (self.horizon - 1) / 4 / (LAYERS + 1)
        total = 0.0
        for l in range(LAYERS + 1):
            w = getattr(self, f"filter_{l}_weight")
            gam = getattr(self, f"filter_{l}_gamma")
            f = torch.max(w.abs() / two_pi + gam.abs() * stddevs / two_pi)
            total = total + torch.clamp(f - nyq, min=0) ** 2
        return total


class Net(nn.Module):
    def __init__(self, g, arm, width=16, horizon=15):
        super().__init__()
        if arm == "cnn3":
            conv = lambda ci, co: nn.Conv2d(ci, co, 3, padding=1)  # noqa: E731
        else:
            conv = lambda ci, co: FlexConv2d(g, ci, co, horizon)  # noqa: E731
        self.stem = conv(1, width)
        self.bn0 = nn.BatchNorm2d(width)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(nn.ModuleList([conv(width, width), nn.BatchNorm2d(width),
                                              conv(width, width), nn.BatchNorm2d(width)]))
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        h = F.relu(self.bn0(self.stem(x)))
        for c1, b1, c2, b2 in self.blocks:
            h = F.relu(b2(c2(F.relu(b1(c1(h))))) + h)
        return self.fc(h.mean(dim=(2, 3)))

    def flex(self):
        return [m for m in self.modules() if isinstance(m, FlexConv2d)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arm", choices=["aa", "noaa", "cnn3"], required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--train", default="0,8000")
    ap.add_argument("--test", default="8000,10000")
    ap.add_argument("--order")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    tr = tuple(map(int, a.train.split(",")))
    te = tuple(map(int, a.test.split(",")))
    d14 = common.mnist(tr, te, resize=14)
    _, _, xe28, ye28 = common.mnist(tr, te)
    g = torch.Generator().manual_seed(a.seed)
    net = Net(g, a.arm)
    masks = [p for n, p in net.named_parameters() if n.endswith("mask_params")]
    rest = [p for n, p in net.named_parameters() if not n.endswith("mask_params")]
    groups = [{"params": rest, "lr": 0.01}] + ([{"params": masks, "lr": 0.001}] if masks else [])
    opt = torch.optim.Adam(groups)
    order, how = common.orders(a.order, a.seed, a.epochs, tr[1] - tr[0])
    extra = (lambda: 0.1 * sum(m.antialias() for m in net.flex())) if a.arm == "aa" else None
    acc14, wall = common.train(net, opt, d14, a.epochs, a.batch, order, extra_loss=extra)
    # Deploy at 28 px: horizon 29, the kernel scaled by (14/28)^2, same parameters.
    for m in net.flex():
        m.horizon, m.srn = 29, 0.25
    acc28 = common.evaluate(net, xe28, ye28)
    row = {"impl": "pytorch", "arm": a.arm, "seed": a.seed, "acc14": acc14, "acc28": acc28,
           "wall_s": wall, "params": sum(p.numel() for p in net.parameters()), "order": how}
    print(row)
    if a.out:
        common.report(a.out, [row])


if __name__ == "__main__":
    main()
