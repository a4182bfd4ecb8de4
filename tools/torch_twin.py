#!/usr/bin/env python3
"""PyTorch twin of examples/resnet20_cifar10.fnet, timed in eager mode (CPU or CUDA).

ResNet-20 for CIFAR-10 (He et al. 2016): a 3x3 conv to 16 channels, three stages of
three basic blocks (16, 32, 64 channels; the first block of stages 2 and 3 has stride
2), option-A shortcuts (x[:, :, ::s, ::s] then zero channels padded evenly on both
sides), global average pooling and a linear layer to 10 classes; convs without bias,
each followed by a batch norm. 269,722 parameters, as the .fnet model.

Prints one line per measurement:
  torch resnet20 batch 64 threads 2: median 41.2 ms best 39.9 ms (10 runs) 1604.0 samples/s

With --device cuda a timed forward is host-to-device copy of the batch, the forward and
the copy of the logits back (as `fnetc bench` times upload, launches and read-back),
with cuDNN's autotuner on (torch.backends.cudnn.benchmark).
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ShortcutA(nn.Module):
    def __init__(self, stride: int, out_channels: int):
        super().__init__()
        self.stride = stride
        self.out_channels = out_channels

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - x.shape[1]
        if extra:
            x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        return x


class Basic(nn.Module):
    def __init__(self, cin: int, c: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.shortcut = ShortcutA(stride, c)

    def forward(self, h):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h)))))
        return F.relu(y + self.shortcut(h))


class ResNet20(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks = []
        cin = 16
        for c, stride in [(16, 1), (32, 2), (64, 2)]:
            for i in range(3):
                blocks.append(Basic(cin, c, stride if i == 0 else 1))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        h = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(h.mean(dim=(2, 3)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="measurements to print")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    torch.backends.cudnn.benchmark = cuda
    model = ResNet20().eval().to(args.device)
    params = sum(p.numel() for p in model.parameters())
    assert params == 269_722, params
    x = torch.rand(args.batch, 3, 32, 32) * 2 - 1

    def forward():
        out = model(x.to(args.device))
        return out.cpu() if cuda else out

    with torch.no_grad():
        for _ in range(args.rounds):
            for _ in range(args.warmup):
                forward()
            times = []
            for _ in range(args.iters):
                t = time.perf_counter()
                forward()
                times.append(time.perf_counter() - t)
            med, best = statistics.median(times), min(times)
            where = "cuda" if cuda else f"threads {args.threads}"
            print(
                f"torch resnet20 batch {args.batch} {where}: "
                f"median {med * 1e3:.3f} ms best {best * 1e3:.3f} ms ({args.iters} runs) "
                f"{args.batch / best:.1f} samples/s",
                flush=True,
            )


if __name__ == "__main__":
    main()
