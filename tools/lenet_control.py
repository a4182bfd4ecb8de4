"""PyTorch control for the main job: the LeNet of examples/lenet_mnist.fnet trained on
the shipped MNIST-10k (train 0..8000, test 8000..10000) with a given recipe, to see
what accuracy a recipe can reach. Usage:

    python3 tools/lenet_control.py --epochs 3 --batch 64 --lr 0.001 [--cosine] [--seed 1]
"""
import argparse, gzip, math, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def idx(path):
    b = gzip.open(path).read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--cosine", action="store_true")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(2)
    x = torch.tensor(idx("data/mnist10k/images.idx3-ubyte.gz"), dtype=torch.float32)[:, None] / 255
    y = torch.tensor(idx("data/mnist10k/labels.idx1-ubyte.gz"), dtype=torch.long)
    xt, yt, xe, ye = x[:8000], y[:8000], x[8000:], y[8000:]
    net = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    steps = math.ceil(8000 / a.batch)
    total = steps * a.epochs
    step = 0
    for e in range(a.epochs):
        t = time.time()
        perm = torch.randperm(8000)
        for k in range(steps):
            if a.cosine:
                if step < a.warmup:
                    lr = a.lr * (step + 1) / a.warmup
                else:
                    lr = a.lr * (1 + math.cos(math.pi * (step - a.warmup) / (total - a.warmup))) / 2
                for g in opt.param_groups:
                    g["lr"] = lr
            i = perm[k * a.batch:(k + 1) * a.batch]
            loss = F.cross_entropy(net(xt[i]), yt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        with torch.no_grad():
            acc = (net(xe).argmax(1) == ye).float().mean().item()
        print(f"epoch {e + 1}: test accuracy {100 * acc:.2f}% ({time.time() - t:.1f} s)")


if __name__ == "__main__":
    main()
