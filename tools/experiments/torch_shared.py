#!/usr/bin/env python3
"""PyTorch control of experiment 3 (docs/experiments.md): the shared-basis ResNet of
examples/experiments/resnet14_shared_mnist.fnet (stem + three stages, widths 8/16/32,
of one Basic block and two blocks whose convs are [unique 3x3 (u = 1) ++ the stage's
shared 3x3 basis (s = c, single sharing)] -> BN -> 1x1 coefficients) with the
orthogonality regulariser at --lam (10 or 0), or the plain resnet14_mnist.fnet
(--arm plain), on MNIST-10k.

    python3 tools/experiments/torch_shared.py --arm shared|plain --lam 10 --seed 1
        [--order O.npy] [--epochs 5] [--batch 64] [--train 0,8000] [--out R.jsonl]

Recipe as the .fnet: SGD lr 0.05, momentum 0.9, weight decay 5e-4, cosine per
iteration. The regulariser is SEEDS §3.2's (tools/golden_regularizers.py `ortho`):
shared rows x all rows and each conv's unique block of (B B^T - I)^2, one mean
over all stages' counted entries (as fnet's `orthogonality`, docs/autodiff.md). Prints one JSON line (acc, wall_s, params, and the
final residual and basis gradient norms).
"""
import argparse, os, sys
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from torch_lc import shortcut_a  # noqa: E402


def conv3(ci, co, s=1):
    c = nn.Conv2d(ci, co, 3, stride=s, padding=1, bias=False)
    nn.init.kaiming_normal_(c.weight, mode="fan_out", nonlinearity="relu")
    return c


class Basis(nn.Module):
    def __init__(self, c, s):
        super().__init__()
        w = torch.empty(s, c * 9)
        nn.init.orthogonal_(w)
        self.weight = nn.Parameter(w.view(s, c, 3, 3))
        self.uniques = []


class BConv(nn.Module):
    def __init__(self, basis, c, u=1):
        super().__init__()
        self.basis = [basis]  # not a submodule: counted once, on the stage
        self.unique = nn.Parameter(torch.empty(u, c, 3, 3))
        nn.init.kaiming_normal_(self.unique, mode="fan_out", nonlinearity="relu")
        basis.uniques.append(self.unique)
        s = basis.weight.shape[0]
        self.bn = nn.BatchNorm2d(u + s)
        self.coeff = nn.Conv2d(u + s, c, 1, bias=False)
        nn.init.kaiming_normal_(self.coeff.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        w = torch.cat([self.unique, self.basis[0].weight])
        return self.coeff(self.bn(F.conv2d(x, w, padding=1)))


class Block(nn.Module):
    def __init__(self, cin, c, stride=1, basis=None):
        super().__init__()
        self.c, self.stride = c, stride
        self.c1 = BConv(basis, c) if basis else conv3(cin, c, stride)
        self.c2 = BConv(basis, c) if basis else conv3(c, c)
        self.b1, self.b2 = nn.BatchNorm2d(c), nn.BatchNorm2d(c)

    def forward(self, h):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(h)))))
        return F.relu(y + shortcut_a(h, self.c, self.stride))


class Net(nn.Module):
    def __init__(self, shared):
        super().__init__()
        self.stem, self.bn = conv3(1, 8), nn.BatchNorm2d(8)
        self.bases = nn.ModuleList([Basis(c, c) for c in (8, 16, 32)]) if shared else []
        blocks, cin = [], 8
        for i, (c, s) in enumerate([(8, 1), (16, 2), (32, 2)]):
            blocks.append(Block(cin, c, s))
            for _ in range(2):
                blocks.append(Block(c, c, 1, self.bases[i] if shared else None))
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.blocks(F.relu(self.bn(self.stem(x)))).mean(dim=(2, 3)))

    def residual(self):
        """One mean over all stages' counted entries, as fnet's `orthogonality`."""
        tsim, tcnt = 0.0, 0
        for b in self.bases:
            ns, nu = b.weight.shape[0], b.uniques[0].shape[0]
            n = ns + nu * len(b.uniques)
            B = torch.cat([b.weight] + b.uniques).view(n, -1)
            D = (B @ B.t() - torch.eye(n)) ** 2
            sim, cnt = D[:ns].sum(), ns * n
            for i in range(len(b.uniques)):
                o = ns + i * nu
                sim = sim + D[o:o + nu, o:o + nu].sum()
                cnt += nu * nu
            tsim, tcnt = tsim + sim, tcnt + cnt
        return tsim / tcnt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arm", choices=["shared", "plain"], required=True)
    ap.add_argument("--lam", type=float, default=10.0)
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
    net = Net(a.arm == "shared")
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    order, how = common.orders(a.order, a.seed, a.epochs, tr[1] - tr[0])
    trace = []

    def on_step(step):
        if a.arm == "shared":
            with torch.no_grad():
                r = float(net.residual())
            trace.append({"step": step, "residual": r,
                          "basis_grad_norms": [float(b.weight.grad.norm()) for b in net.bases]})
    extra = (lambda: a.lam * net.residual()) if a.arm == "shared" and a.lam > 0 else None
    acc, wall = common.train(net, opt, data, a.epochs, a.batch, order, extra_loss=extra, on_step=on_step)
    row = {"impl": "pytorch", "arm": a.arm, "lam": a.lam, "seed": a.seed, "acc": acc, "wall_s": wall,
           "params": sum(p.numel() for p in net.parameters()), "order": how,
           "residual": trace[-1]["residual"] if trace else None,
           "basis_grad_norms": trace[-1]["basis_grad_norms"] if trace else None}
    print(row)
    if a.out:
        common.report(a.out, [row])


if __name__ == "__main__":
    main()
