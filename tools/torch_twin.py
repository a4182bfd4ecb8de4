#!/usr/bin/env python3
"""PyTorch twins of examples/resnet20_cifar10.fnet and flextcn6_smnist.fnet, timed in eager mode (CPU or CUDA).

ResNet-20 for CIFAR-10 (He et al. 2016): a 3x3 conv to 16 channels, three stages of
three basic blocks (16, 32, 64 channels; the first block of stages 2 and 3 has stride
2), option-A shortcuts (x[:, :, ::s, ::s] then zero channels padded evenly on both
sides), global average pooling and a linear layer to 10 classes; convs without bias,
each followed by a batch norm. 269,722 parameters, as the .fnet model.

FlexTCN-6 for sequential MNIST (--model flextcn6, training only): 6 blocks of two
causal FlexConvs (MAGNet kernel nets, hidden 32, 3 layers; Gaussian mask centred on
the newest step, sigma 0.075, cropped where it falls below 0.1, so about 64 taps at
initialisation) each followed by batch norm, ReLU and dropout 0.1, a 1x1 projection
shortcut where the width changes, and a linear head on the last step. The MAGNet,
mask and crop are tools/golden.py's (the official code's arithmetic); the causal
conv is F.conv1d on the left-padded input, as the official code runs it.

Prints one line per measurement:
  torch resnet20 batch 64 threads 2: median 41.2 ms best 39.9 ms (10 runs) 1604.0 samples/s

--training times a training step instead: model.train(), forward, F.cross_entropy
against random labels, loss.backward() (gradients set to None before each step, as
an optimiser's zero_grad does; no optimiser update, as `fnetc bench --training`).
The line then ends with the step's peak memory,
  ... peak 123456789 bytes (growth of max RSS over one step)
measured as fnet's bench measures its own: the peak RSS reset (/proc/self/clear_refs)
before the first step, ru_maxrss after it minus the RSS before it. --compile runs
the model through torch.compile first (both modes).

With --device cuda a timed forward is host-to-device copy of the batch, the forward and
the copy of the logits back (as `fnetc bench` times upload, launches and read-back),
with cuDNN's autotuner on (torch.backends.cudnn.benchmark).
"""

import argparse
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402  (MAGNet, mask and crop, following the official code)


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


class FlexConv1d(nn.Module):
    """A causal FlexConv (tools/golden_nets.py's `flexconv`, with trainable tensors)."""

    def __init__(self, g, cin: int, cout: int, horizon: int):
        super().__init__()
        self.cin, self.horizon = cin, horizon
        p = golden.magnet_init(g, 1, 32, cout * cin, 3, torch.float32)
        self.names = list(p)  # golden's names ("filter.0.weight"), registered with _
        for k, v in p.items():
            self.register_parameter(k.replace(".", "_"), nn.Parameter(v))
        self.mask_params = nn.Parameter(torch.tensor([[1.0, 0.075]]))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        p = {k: getattr(self, k.replace(".", "_")) for k in self.names}
        grid = golden.cropped_grid(self.horizon, self.mask_params)
        k = golden.magnet_forward(p, grid.unsqueeze(0), 3).view(-1, self.cin, *grid.shape[1:])
        k = k * golden.mask_on(grid, self.mask_params)
        return golden.causal_direct(x, k, self.bias)


class Tcn(nn.Module):
    def __init__(self, g, cin: int, c: int, horizon: int, p: float = 0.1):
        super().__init__()
        self.flex1, self.bn1 = FlexConv1d(g, cin, c, horizon), nn.BatchNorm1d(c)
        self.flex2, self.bn2 = FlexConv1d(g, c, c, horizon), nn.BatchNorm1d(c)
        self.shortcut = nn.Conv1d(cin, c, 1) if cin != c else None
        self.p = p

    def forward(self, h):
        y = F.dropout(F.relu(self.bn1(self.flex1(h))), self.p, self.training)
        y = F.dropout(F.relu(self.bn2(self.flex2(y))), self.p, self.training)
        return F.relu(y + (self.shortcut(h) if self.shortcut is not None else h))


class FlexTCN6(nn.Module):
    def __init__(self, classes: int = 10, length: int = 784):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.blocks = nn.Sequential(*[Tcn(g, 1 if i == 0 else 30, 30, length) for i in range(6)])
        self.fc = nn.Linear(30, classes)

    def forward(self, x):
        return self.fc(self.blocks(x)[:, :, -1])


def status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return None


def peak_growth(step):
    """Bytes the max RSS rose over `step()` above the RSS before it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak RSS to the current RSS
        before = status_bytes("VmRSS:")
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="measurements to print")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", default="resnet20", choices=["resnet20", "flextcn6"])
    ap.add_argument("--training", action="store_true", help="time forward + cross-entropy + backward")
    ap.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(False)  # golden.py turns it on for fixtures
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    torch.backends.cudnn.benchmark = cuda
    if args.model == "resnet20":
        model = ResNet20()
        params = sum(p.numel() for p in model.parameters())
        assert params == 269_722, params
        x = torch.rand(args.batch, 3, 32, 32) * 2 - 1
    else:
        if not args.training:
            sys.exit("--model flextcn6 is timed with --training only")
        model = FlexTCN6()
        x = torch.rand(args.batch, 1, 784) * 2 - 1
    model = (model.train() if args.training else model.eval()).to(args.device)
    labels = torch.randint(0, 10, (args.batch,)).to(args.device)
    run = torch.compile(model) if args.compile else model

    def forward():
        out = run(x.to(args.device))
        return out.cpu() if cuda else out

    def train_step():
        for p in model.parameters():
            p.grad = None
        loss = F.cross_entropy(run(x.to(args.device)), labels)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()

    step = train_step if args.training else forward
    mode = "training " if args.training else ""
    how = " compiled" if args.compile else ""
    with torch.set_grad_enabled(args.training):
        peak = peak_growth(step) if args.training else None
        for _ in range(args.rounds):
            for _ in range(args.warmup):
                step()
            times = []
            for _ in range(args.iters):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
            med, best = statistics.median(times), min(times)
            where = "cuda" if cuda else f"threads {args.threads}"
            mem = f" peak {peak} bytes (growth of max RSS over one step)" if peak is not None else ""
            print(
                f"torch {args.model} {mode}batch {args.batch} {where}{how}: "
                f"median {med * 1e3:.3f} ms best {best * 1e3:.3f} ms ({args.iters} runs) "
                f"{args.batch / best:.1f} samples/s{mem}",
                flush=True,
            )

if __name__ == "__main__":
    main()
