#!/usr/bin/env python3
"""PyTorch fixture for the loss's regularisers (tests/regularizers.rs).

Computes, in float64 with autograd, the orthogonality penalty of the shared bases of
tests/fixtures/golden/regularizers/shared.fnet and the anti-aliasing penalty of the
FlexConv of flex.fnet, each exactly as the authors' code does (Net_RL2
`train_cifar10.py` `train_basis`; flexconv `antialiasing.py` `regularize_gabornet`,
method "together", fn "l2_relu"), on parameter values drawn here, and writes the
values, the penalties and their gradients to regularizers.json next to the models.

Run from the repository root: python3 tools/golden_regularizers.py
"""

import json
import math
from pathlib import Path

import torch

OUT = Path("tests/fixtures/golden/regularizers/regularizers.json")


def ortho(g):
    """Net_RL2's train_basis (double sharing): one stage, two blocks."""
    lam = 10.0
    shared = [
        (torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64) * 0.4).requires_grad_()
        for _ in range(2)
    ]
    unique_names = [
        f"shared_block{b}.bconv{c}.unique.weight" for b in (1, 2) for c in (1, 2)
    ]
    unique = [
        (torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64) * 0.4).requires_grad_()
        for _ in unique_names
    ]
    num_shared = sum(s.shape[0] for s in shared)
    num_unique = unique[0].shape[0]
    num_all = num_shared + num_unique * len(unique)
    B = torch.cat(shared + unique).view(num_all, -1)
    D = (torch.mm(B, B.t()) - torch.eye(num_all, dtype=torch.float64)) ** 2
    sim = torch.sum(D[0:num_shared, :])
    cnt = num_shared * num_all
    for i in range(len(unique)):
        base = num_shared + i * num_unique
        sim = sim + torch.sum(D[base : base + num_unique, base : base + num_unique])
        cnt += num_unique**2
    value = lam * sim / cnt
    value.backward()
    names = ["b1.shared.0.weight", "b1.shared.1.weight"] + unique_names
    tensors = shared + unique
    return value, names, tensors


def antialias(g):
    """flexconv's regularize_gabornet, target gabor+mask, method together."""
    lam, stddevs, horizon, filters = 0.1, 2.0, 5, 2
    ws, gammas = [], []
    for _ in range(filters):
        ws.append((torch.rand(3, 2, generator=g, dtype=torch.float64) * 6 - 3).requires_grad_())
        gammas.append((torch.rand(3, 2, generator=g, dtype=torch.float64) * 2.5 + 0.5).requires_grad_())
    # Equal sigmas, as FlexConv initialises them: `maximum` splits the tie.
    mask = torch.tensor([[0.1, 0.3], [-0.05, 0.3]], dtype=torch.float64, requires_grad=True)
    two_pi = 2.0 * torch.tensor(math.pi, dtype=torch.float64)
    freqs = []
    for w, gamma in zip(ws, gammas):
        sines = torch.absolute(w / two_pi)
        gausses = torch.absolute(gamma * stddevs / two_pi)
        freqs.append(torch.max(sines + gausses))
    magnet = torch.stack(freqs).unsqueeze(0)
    mask_gamma = torch.maximum(1.0 / torch.absolute(mask[0, 1]), 1.0 / torch.absolute(mask[1, 1]))
    mask_freq = (mask_gamma * stddevs / two_pi).reshape(1, 1).repeat([1, filters]) / filters
    freqs = magnet + mask_freq
    nyquist = torch.ones_like(freqs) * ((horizon - 1.0) / 2.0 * 0.5) / filters
    value = lam * torch.sum(torch.square(torch.clamp(freqs - nyquist, min=0.0)))
    value.backward()
    names, tensors = [], []
    for l in range(filters):
        names += [f"fc1.kernel_net.filters.{l}.linear.weight", f"fc1.kernel_net.filters.{l}.gamma"]
        tensors += [ws[l], gammas[l]]
    names.append("fc1.mask_params")
    tensors.append(mask)
    return value, names, tensors


def entry(value, names, tensors):
    return {
        "value": value.item(),
        "params": {n: {"shape": list(t.shape), "data": t.detach().flatten().tolist()} for n, t in zip(names, tensors)},
        "grads": {n: t.grad.flatten().tolist() for n, t in zip(names, tensors)},
    }


def main():
    g = torch.Generator().manual_seed(0)
    out = {"orthogonality": entry(*ortho(g)), "antialias": entry(*antialias(g))}
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}: orthogonality {out['orthogonality']['value']:.6g}, "
          f"antialias {out['antialias']['value']:.6g}")


if __name__ == "__main__":
    main()
