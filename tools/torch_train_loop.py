#!/usr/bin/env python3
"""PyTorch's training loop on tools/torch_twin.py's twins, timed as `fnetc train` runs its own.

One step is what one step of `fnetc train` does with the example's `train {}` recipe:

- data: the next batch of a seeded shuffle of a synthetic data set (SAMPLES samples,
  uniform in [0, 1], as fnet's synthetic .npy inputs; random labels), and for
  ResNet-20 the recipe's augmentation (random crop 32 with padding 4, horizontal
  flip, per sample);
- model.train(), forward, F.cross_entropy, plus for FlexTCN-6 the recipe's
  `kernel_l2(weight: 1e-4)` on every FlexConv's masked kernel and bias;
- backward and the recipe's optimiser step: ResNet-20 SGD (lr 0.1, momentum 0.9,
  weight decay 5e-4); FlexTCN-6 Adam (lr 1e-3, `*.mask_params` at 0.1x the rate).

The learning-rate schedules (multistep at epochs 100/150, plateau) do not change the
rate within the few steps timed, so they are left out.

fnet's `samples_per_s` in metrics.jsonl times its step alone (the batch comes from a
prefetch thread); here the batch is assembled inline and *is* inside the timed step,
which can only make PyTorch look slower by that (about a millisecond: one index
gather, 64 slices and flips).

Prints one line per run:
  torch-loop resnet20 batch 64 threads 2 eager: 5 steps 1.234 s best 240.1 ms 259.4 samples/s
where samples/s is batch * steps / (total time of the timed steps).
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402
import torch_twin  # noqa: E402  (the model twins: ResNet20, FlexTCN6)


def flex_forward_keeping_kernel(self, x):
    """torch_twin.FlexConv1d.forward, keeping the masked kernel for kernel_l2."""
    p = {k: getattr(self, k.replace(".", "_")) for k in self.names}
    grid = golden.cropped_grid(self.horizon, self.mask_params)
    k = golden.magnet_forward(p, grid.unsqueeze(0), 3).view(-1, self.cin, *grid.shape[1:])
    k = k * golden.mask_on(grid, self.mask_params)
    self.last_kernel = k
    return golden.causal_direct(x, k, self.bias)


def build(model_name):
    if model_name == "resnet20":
        model = torch_twin.ResNet20()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        return model, opt, (3, 32, 32), []
    torch_twin.FlexConv1d.forward = flex_forward_keeping_kernel
    model = torch_twin.FlexTCN6()
    mask = [p for n, p in model.named_parameters() if n.endswith("mask_params")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("mask_params")]
    opt = torch.optim.Adam([{"params": rest}, {"params": mask, "lr": 1e-4}], lr=1e-3)
    flex = [m for m in model.modules() if isinstance(m, torch_twin.FlexConv1d)]
    return model, opt, (1, 784), flex


def augment(x, g):
    """Random crop 32 with padding 4 and a horizontal flip, per sample (the recipe's)."""
    padded = F.pad(x, (4, 4, 4, 4))
    out = torch.empty_like(x)
    offs = torch.randint(0, 9, (x.shape[0], 2), generator=g).tolist()
    flips = torch.rand(x.shape[0], generator=g).lt(0.5).tolist()
    for i, ((dy, dx), flip) in enumerate(zip(offs, flips)):
        crop = padded[i, :, dy : dy + 32, dx : dx + 32]
        out[i] = crop.flip(-1) if flip else crop
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20", choices=["resnet20", "flextcn6"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--samples", type=int, default=512, help="synthetic data set size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(False)  # golden.py turns it on for fixtures
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model, opt, shape, flex = build(args.model)
    model.train()
    run = torch.compile(model) if args.compile else model
    inputs = torch.rand(args.samples, *shape, generator=g)
    labels = torch.randint(0, 10, (args.samples,), generator=g)
    per_epoch = args.samples // args.batch  # a partial last batch is skipped
    order, at = torch.randperm(args.samples, generator=g), 0

    def step():
        nonlocal order, at
        if at == per_epoch:
            order, at = torch.randperm(args.samples, generator=g), 0
        idx = order[at * args.batch : (at + 1) * args.batch]
        at += 1
        x, y = inputs[idx], labels[idx]
        if args.model == "resnet20":
            x = augment(x, g)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(run(x), y)
        for m in flex:
            loss = loss + 1e-4 * (m.last_kernel.square().sum() + m.bias.square().sum())
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    total = sum(times)
    how = "compiled" if args.compile else "eager"
    print(
        f"torch-loop {args.model} batch {args.batch} threads {args.threads} {how}: "
        f"{args.steps} steps {total:.3f} s best {min(times) * 1e3:.1f} ms "
        f"{args.batch * args.steps / total:.1f} samples/s",
        flush=True,
    )


if __name__ == "__main__":
    main()
