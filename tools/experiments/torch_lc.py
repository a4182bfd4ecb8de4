#!/usr/bin/env python3
"""PyTorch control of experiment 2 (docs/experiments.md): ResNet-LC-8-8 of
examples/experiments/resnet8_lc_mnist.fnet (stem + three stages of one Basic block,
widths 8/16/32, every 3x3 conv an LC block: a frozen (or, --learnable, trained) random
3x3 conv to E*c channels, no bias, PyTorch's default init, then a learned 1x1 conv
back to c, no bias), or the plain baseline resnet8_mnist.fnet (--arm baseline), on
MNIST-10k. Option-A shortcuts (subsample, zero channels), as fnet's `shortcut`.

    python3 tools/experiments/torch_lc.py --arm frozen|learnable|baseline --E 4 --seed 1
        [--order O.npy] [--epochs 5] [--batch 64] [--train 0,8000] [--out R.jsonl]

Recipe as the .fnet: SGD lr 0.05, momentum 0.9, Nesterov, weight decay 5e-4, label
smoothing 0.1, cosine per iteration. Prints one JSON line: arm, E, seed, acc, wall_s,
trainable and frozen parameter counts.
"""
import argparse, os, sys
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402


class LC(nn.Module):
    def __init__(self, cin, cout, E, stride, learnable):
        super().__init__()
        self.basis = nn.Conv2d(cin, E * cout, 3, stride=stride, padding=1, bias=False)
        self.basis.weight.requires_grad_(learnable)
        self.coeff = nn.Conv2d(E * cout, cout, 1, bias=False)

    def forward(self, x):
        return self.coeff(self.basis(x))


def shortcut_a(x, c, stride):
    if stride == 1 and x.shape[1] == c:
        return x
    x = x[:, :, ::stride, ::stride]
    pad = c - x.shape[1]
    return F.pad(x, (0, 0, 0, 0, pad // 2, pad - pad // 2))


class Basic(nn.Module):
    def __init__(self, conv, cin, c, stride):
        super().__init__()
        self.c, self.stride = c, stride
        self.c1, self.b1 = conv(cin, c, stride), nn.BatchNorm2d(c)
        self.c2, self.b2 = conv(c, c, 1), nn.BatchNorm2d(c)

    def forward(self, h):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(h)))))
        return F.relu(y + shortcut_a(h, self.c, self.stride))


class ResNet8(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.stem, self.bn = conv(1, 8, 1), nn.BatchNorm2d(8)
        self.layers = nn.Sequential(Basic(conv, 8, 8, 1), Basic(conv, 8, 16, 2), Basic(conv, 16, 32, 2))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        h = self.layers(F.relu(self.bn(self.stem(x))))
        return self.fc(h.mean(dim=(2, 3)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arm", choices=["frozen", "learnable", "baseline"], required=True)
    ap.add_argument("--E", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--train", default="0,8000")
    ap.add_argument("--test", default="8000,10000")
    ap.add_argument("--order")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    tr = tuple(map(int, a.train.split(",")))
    te = tuple(map(int, a.test.split(",")))
    data = common.mnist(tr, te)
    if a.arm == "baseline":
        net = ResNet8(lambda ci, co, s: nn.Conv2d(ci, co, 3, stride=s, padding=1, bias=False))
    else:
        net = ResNet8(lambda ci, co, s: LC(ci, co, a.E, s, a.arm == "learnable"))
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    order, how = common.orders(a.order, a.seed, a.epochs, tr[1] - tr[0])
    acc, wall = common.train(net, opt, data, a.epochs, a.batch, order, smoothing=0.1)
    row = {"impl": "pytorch", "arm": a.arm, "E": a.E, "seed": a.seed, "acc": acc, "wall_s": wall,
           "trainable": sum(p.numel() for p in trainable),
           "frozen": sum(p.numel() for p in net.parameters() if not p.requires_grad), "order": how}
    print(row)
    if a.out:
        common.report(a.out, [row])


if __name__ == "__main__":
    main()
