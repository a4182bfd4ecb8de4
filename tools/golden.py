#!/usr/bin/env python3
"""Write golden fixtures for fnet's reference kernels, computed with PyTorch (CPU).

Usage:  python3 tools/golden.py [OUT_DIR]     (default: tests/fixtures/golden)

Needs `torch` and `safetensors` (pip install torch safetensors). Every case is
seeded and runs single-threaded with deterministic algorithms, so re-running
rewrites byte-identical files. Each case is one safetensors file holding its
inputs and expected outputs; files ending in `_f64` hold float64 tensors, the
rest float32. tests/reference_golden.rs reads them.

The FlexConv pieces (MAGNet, mask, crop, FFT conv) are re-implemented here from
the semantics of the official code (rjbruin/flexconv: ckconv/nn/ck/magnet.py,
mfn.py, ckconv/nn/ckconv.py, ckconv/nn/functional/*.py), with steerable=False.
The shared-basis block and option-A shortcut follow ssregibility/Net_RL2
models/cifar10/resnet.py.
"""

import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join("tests", "fixtures", "golden")


def save(name, tensors):
    os.makedirs(OUT, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    dtypes = {v.dtype for v in tensors.values()}
    want = torch.float64 if name.endswith("_f64") else torch.float32
    assert dtypes == {want}, (name, dtypes)
    save_file(tensors, os.path.join(OUT, name + ".safetensors"))


def gen(seed):
    g = torch.Generator().manual_seed(seed)
    return g


def randn(g, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g, dtype=dtype)


def uniform(g, lo, hi, *shape, dtype=torch.float32):
    return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------
# Plain convolutions


def conv_cases():
    g = gen(1)
    x = randn(g, 2, 3, 8, 8)
    w = randn(g, 4, 3, 3, 3) * 0.3
    b = randn(g, 4)
    save("conv2d_3x3", {"x": x, "w": w, "b": b, "y": F.conv2d(x, w, b, padding=1)})

    x = randn(g, 1, 2, 12, 12)
    w = randn(g, 2, 2, 33, 33) * 0.05
    b = randn(g, 2)
    save("conv2d_33x33", {"x": x, "w": w, "b": b, "y": F.conv2d(x, w, b, padding=16)})

    x = randn(g, 2, 3, 9, 9)
    w = randn(g, 4, 3, 3, 3) * 0.3
    save("conv2d_stride2", {"x": x, "w": w, "y": F.conv2d(x, w, stride=2, padding=1)})

    x = randn(g, 1, 4, 10, 10)
    w = randn(g, 4, 2, 3, 3) * 0.3
    b = randn(g, 4)
    y = F.conv2d(x, w, b, padding=2, dilation=2, groups=2)
    save("conv2d_dilated_groups", {"x": x, "w": w, "b": b, "y": y})

    # Asymmetric padding: top 0, bottom 1, left 1, right 2 (F.pad order is W then H).
    x = randn(g, 1, 2, 7, 6)
    w = randn(g, 3, 2, 3, 2) * 0.3
    y = F.conv2d(F.pad(x, (1, 2, 0, 1)), w, stride=(1, 2))
    save("conv2d_asym_pad", {"x": x, "w": w, "y": y})

    x = randn(g, 2, 4, 20)
    w = randn(g, 6, 2, 5) * 0.3
    b = randn(g, 6)
    y = F.conv1d(x, w, b, stride=2, padding=3, dilation=2, groups=2)
    save("conv1d_general", {"x": x, "w": w, "b": b, "y": y})


# --------------------------------------------------------------------------
# FlexConv convolutions: causal (direct and FFT) and 2D FFT


def causal_pad(x, k):
    if k.shape[-1] % 2 == 0:
        k = F.pad(k, [1, 0])
    return F.pad(x, [k.shape[-1] - 1, 0]), k


def causal_direct(x, k, b=None):
    xp, kp = causal_pad(x, k)
    return F.conv1d(xp, kp, b)


def causal_fft(x, k, b=None):
    n = x.shape[-1]
    xp, kp = causal_pad(x, k)
    kp = F.pad(kp, [0, xp.shape[-1] - kp.shape[-1]])
    spec = torch.einsum("bi...,oi...->bo...", torch.fft.rfft(xp), torch.conj(torch.fft.rfft(kp)))
    y = torch.fft.irfft(spec, n=xp.shape[-1])[..., :n]
    return y if b is None else y + b.view(1, -1, 1)


def fft_same_2d(x, k, b=None):
    h, w = x.shape[-2:]
    p = (k.shape[-1] - 1) // 2
    xp = F.pad(x, [p, p, p, p])
    if xp.shape[-1] % 2:
        xp = F.pad(xp, [0, 1])
    kp = F.pad(k, [0, xp.shape[-1] - k.shape[-1], 0, xp.shape[-2] - k.shape[-2]])
    dims = (2, 3)
    spec = torch.einsum(
        "bi...,oi...->bo...", torch.fft.rfftn(xp, dim=dims), torch.conj(torch.fft.rfftn(kp, dim=dims))
    )
    y = torch.fft.irfftn(spec, s=xp.shape[-2:], dim=dims)[..., :h, :w]
    return y if b is None else y + b.view(1, -1, 1, 1)


def fft_cases():
    g = gen(2)
    x = randn(g, 1, 2, 784)
    w = randn(g, 2, 2, 784) / math.sqrt(2 * 784)
    b = randn(g, 2)
    yd = causal_direct(x, w, b)
    yf = causal_fft(x, w, b)
    assert (yd - yf).abs().max() < 1e-4
    save("causal_conv1d_784", {"x": x, "w": w, "b": b, "y": yd, "y_fft": yf})

    x = randn(g, 2, 2, 50)
    w = randn(g, 3, 2, 64) * 0.2
    save("causal_conv1d_even", {"x": x, "w": w, "y": causal_direct(x, w)})

    x = randn(g, 1, 2, 16, 16, dtype=torch.float64)
    w = randn(g, 3, 2, 51, 51, dtype=torch.float64) * 0.02
    b = randn(g, 3, dtype=torch.float64)
    yd = F.conv2d(x, w, b, padding=25)
    yf = fft_same_2d(x, w, b)
    assert (yd - yf).abs().max() < 1e-10
    save("fft_conv2d_51_f64", {"x": x, "w": w, "b": b, "y": yd, "y_fft": yf})


# --------------------------------------------------------------------------
# MAGNet, mask, crop


def torch_default_linear(g, out_c, in_c, dtype):
    """PyTorch's default Conv/Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    bound = 1.0 / math.sqrt(in_c)
    return uniform(g, -bound, bound, out_c, in_c, dtype=dtype), uniform(g, -bound, bound, out_c, dtype=dtype)


def magnet_init(g, dim, hidden, out, layers, dtype, input_scale=25.6, alpha=6.0, beta=1.0, spatial=1.0):
    """Parameters with the official MAGNet init (bias_init None, weight_scale 1)."""
    p = {}
    for l in range(layers):
        w, b = torch_default_linear(g, hidden, hidden, dtype)
        s = math.sqrt(1.0 / hidden)
        p[f"hidden.{l}.weight"] = uniform(g, -s, s, hidden, hidden, dtype=dtype)
        p[f"hidden.{l}.bias"] = b
    p["output.weight"], p["output.bias"] = torch_default_linear(g, out, hidden, dtype)
    scale = input_scale / math.sqrt(layers + 1)
    for l in range(layers + 1):
        w, _ = torch_default_linear(g, hidden, dim, dtype)
        mu = spatial * (2 * torch.rand(hidden, dim, generator=g, dtype=dtype) - 1)
        gamma = torch.distributions.Gamma(
            torch.tensor(alpha / (l + 1), dtype=dtype), torch.tensor(beta, dtype=dtype)
        )
        # Gamma sampling uses the global generator; seed it from g for determinism.
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
        gam = gamma.sample((hidden, dim))
        p[f"filter.{l}.weight"] = w * scale * gam
        p[f"filter.{l}.bias"] = uniform(g, -math.pi, math.pi, hidden, dtype=dtype)
        p[f"filter.{l}.gamma"] = gam
        p[f"filter.{l}.mu"] = mu
    return p


def conv1x1(x, w, b):
    """The official Linear1d/Linear2d: a 1x1 conv over the coordinate grid."""
    conv = F.conv1d if x.dim() == 3 else F.conv2d
    return conv(x, w.view(*w.shape, *([1] * (x.dim() - 2))), b)


def gabor(p, l, x):
    """One MAGNet filter on rel_pos x [1, D, k...]; gamma scales (x - mu) per axis."""
    gamma, mu = p[f"filter.{l}.gamma"], p[f"filter.{l}.mu"]
    h = gamma.shape[0]
    # As the official layer, gamma/mu are viewed with two trailing unit dims in
    # both 1D and 2D; broadcasting then gives [1, H, D, k...] (with an extra
    # unit dim in 1D that the final view removes).
    diff = x.unsqueeze(1) - mu.view(1, *mu.shape, 1, 1)
    env = torch.exp(-0.5 * ((gamma.view(1, *gamma.shape, 1, 1) * diff) ** 2).sum(2))
    return env.view(1, h, *x.shape[2:]) * torch.sin(conv1x1(x, p[f"filter.{l}.weight"], p[f"filter.{l}.bias"]))


def magnet_forward(p, x, layers):
    out = gabor(p, 0, x)
    for l in range(1, layers + 1):
        out = gabor(p, l, x) * conv1x1(out, p[f"hidden.{l-1}.weight"], p[f"hidden.{l-1}.bias"])
    return conv1x1(out, p["output.weight"], p["output.bias"])


def rel_grid(sizes, dtype=torch.float32):
    axes = [torch.linspace(-1, 1, steps=s, dtype=dtype) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


def gauss_1d(x, mean, sigma):
    return torch.exp(-0.5 * ((1 / sigma) * (x - mean)) ** 2)


def roots(thresh, mean, sigma):
    aux = sigma * torch.sqrt(-2 * torch.log(thresh))
    return mean - aux, mean + aux


def crop_sym(axis, root):
    if root >= 1.0:
        return axis
    n = axis.shape[-1]
    i = int(torch.nonzero(-root < axis[: n // 2 + 1])[0])
    return axis[i : n - i]


def crop_causal(axis, root):
    if abs(root) >= 1.0:
        return axis
    i = int(torch.nonzero(root < axis)[0])
    return axis[i:]


def cropped_grid(horizon, params, thresh=0.1):
    """FlexConv's dynamic crop; returns the rel_pos grid [D, k...] actually used."""
    dtype = params.dtype
    thresh = torch.tensor(thresh, dtype=dtype)
    d = params.shape[0]
    full = torch.linspace(-1, 1, steps=horizon, dtype=dtype)
    if d == 1:
        r1, r2 = roots(thresh, params[0, 0], params[0, 1])
        return crop_causal(full, torch.minimum(r1, r2)).unsqueeze(0)
    axes = []
    for a in range(2):
        r1, r2 = roots(thresh, params[a, 0], params[a, 1])
        axes.append(crop_sym(full, torch.maximum(r1.abs(), r2.abs())))
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


def mask_on(grid, params):
    m = gauss_1d(grid[0], params[0, 0], params[0, 1])
    for a in range(1, params.shape[0]):
        m = m * gauss_1d(grid[a], params[a, 0], params[a, 1])
    return m


def mask_cases():
    out = {}
    for name, horizon, params in [
        ("h33", 33, [[0.0, 0.075], [0.0, 0.075]]),
        ("h17", 17, [[0.0, 0.075], [0.0, 0.075]]),
        ("aniso", 33, [[0.1, 0.2], [-0.05, 0.04]]),
        ("wide", 9, [[0.0, 0.5], [0.2, 0.1]]),
        ("c784", 784, [[1.0, 0.075]]),
        ("c40", 40, [[0.9, 0.3]]),
    ]:
        params = torch.tensor(params, dtype=torch.float32)
        grid = cropped_grid(horizon, params)
        out[f"{name}.params"] = params
        out[f"{name}.grid"] = grid
        out[f"{name}.mask"] = mask_on(grid, params)
        out[f"{name}.size"] = torch.tensor(grid.shape[1:], dtype=torch.float32)
    out["full33.grid"] = rel_grid([33, 33])
    out["full784.grid"] = rel_grid([784])
    save("mask_crop", out)


def magnet_cases():
    dt = torch.float64
    g = gen(3)
    for name, dim, cout, cin, horizon in [("magnet2d_f64", 2, 2, 3, 9), ("magnet1d_f64", 1, 2, 2, 15)]:
        layers, hidden = 3, 8
        p = magnet_init(g, dim, hidden, cout * cin, layers, dt, spatial=0.5)
        grid = rel_grid([horizon] * dim, dt)
        k = magnet_forward(p, grid.unsqueeze(0), layers).view(-1, cin, *grid.shape[1:])
        save(name, {**p, "grid": grid, "kernel": k, "kernel_srn": k * 0.25})

    # A whole FlexConv forward: crop, MAGNet on the cropped grid, mask, conv.
    p = magnet_init(g, 2, 8, 2 * 3, 3, dt, spatial=1.667 * 0.15)
    mp = torch.tensor([[0.0, 0.15], [0.05, 0.3]], dtype=dt)
    grid = cropped_grid(11, mp)
    k = magnet_forward(p, grid.unsqueeze(0), 3).view(-1, 3, *grid.shape[1:]) * mask_on(grid, mp)
    x = randn(g, 2, 3, 10, 10, dtype=dt)
    b = randn(g, 2, dtype=dt)
    pad = ((k.shape[-2] - 1) // 2, (k.shape[-1] - 1) // 2)
    y = F.conv2d(x, k, b, padding=pad)
    save("flexconv2d_f64", {**p, "mask_params": mp, "grid": grid, "kernel": k, "x": x, "b": b, "y": y})

    p = magnet_init(g, 1, 8, 2 * 2, 3, dt, spatial=1.0)
    mp = torch.tensor([[1.0, 0.1]], dtype=dt)
    grid = cropped_grid(40, mp)
    k = magnet_forward(p, grid.unsqueeze(0), 3).view(-1, 2, *grid.shape[1:]) * mask_on(grid, mp)
    x = randn(g, 2, 2, 40, dtype=dt)
    y = causal_direct(x, k)
    save("flexconv1d_f64", {**p, "mask_params": mp, "grid": grid, "kernel": k, "x": x, "y": y})


# --------------------------------------------------------------------------
# LC block, shared basis, BN, pooling, shortcut, activations


def lc_case():
    g = gen(4)
    ci, co, e, k = 3, 2, 4, 3
    x = randn(g, 2, ci, 8, 8)
    bound = 1 / math.sqrt(ci * k * k)
    ws = uniform(g, -bound, bound, e * co, ci, k, k)
    c = randn(g, co, e * co, 1, 1) * 0.3
    y = F.conv2d(F.conv2d(x, ws, padding=1), c)
    wc = torch.einsum("oe,eikl->oikl", c[:, :, 0, 0], ws)
    ys = F.conv2d(F.conv2d(x, ws, stride=2, padding=1), c)
    save("lc_block", {"x": x, "ws": ws, "c": c, "y": y, "wc": wc, "y_stride2": ys})


def basis_case():
    g = gen(5)
    x = randn(g, 2, 4, 6, 6)
    unique = randn(g, 1, 4, 3, 3) * 0.3
    shared = randn(g, 3, 4, 3, 3) * 0.3
    coeff = randn(g, 4, 4, 1, 1) * 0.5
    bn = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(uniform(g, 0.5, 1.5, 4))
        bn.bias.copy_(randn(g, 4) * 0.1)
    z = torch.cat((F.conv2d(x, unique, padding=1), F.conv2d(x, shared, padding=1)), dim=1)
    bn.train()
    y = F.conv2d(bn(z), coeff)
    bn.eval()
    y_eval = F.conv2d(bn(z), coeff)
    save(
        "basis_block",
        {
            "x": x, "unique": unique, "shared": shared, "coeff": coeff,
            "bn.weight": bn.weight, "bn.bias": bn.bias, "z": z, "y": y,
            "running_mean": bn.running_mean, "running_var": bn.running_var, "y_eval": y_eval,
        },
    )


def bn_case():
    g = gen(6)
    x = randn(g, 4, 3, 5, 5) * 2 + 1
    gamma, beta = uniform(g, 0.5, 1.5, 3), randn(g, 3)
    rm, rv = randn(g, 3) * 0.1, uniform(g, 0.5, 2.0, 3)
    y_train = F.batch_norm(x, rm_new := rm.clone(), rv_new := rv.clone(), gamma, beta, True, 0.1, 1e-5)
    y_eval = F.batch_norm(x, rm, rv, gamma, beta, False, 0.1, 1e-5)
    y_nostats = F.batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    save(
        "batchnorm",
        {
            "x": x, "gamma": gamma, "beta": beta, "running_mean": rm, "running_var": rv,
            "y_train": y_train, "new_running_mean": rm_new, "new_running_var": rv_new,
            "y_eval": y_eval, "y_nostats": y_nostats,
        },
    )


def pool_case():
    g = gen(7)
    x = randn(g, 2, 3, 9, 9)
    save(
        "pool",
        {
            "x": x,
            "max_k2s2": F.max_pool2d(x, 2),
            "max_k3s2p1": F.max_pool2d(x, 3, 2, 1),
            "avg_k3s2p1": F.avg_pool2d(x, 3, 2, 1),
            "avg_k3s2p1_nopad": F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
            "global_avg": F.adaptive_avg_pool2d(x, 1).flatten(1),
        },
    )


def misc_case():
    g = gen(8)
    x = randn(g, 2, 4, 6, 6)
    planes = 8
    shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
    a = torch.linspace(-6, 6, 121)
    xl, wl, bl = randn(g, 3, 5), randn(g, 4, 5), randn(g, 4)
    seq = randn(g, 2, 3, 7)
    save(
        "misc",
        {
            "x": x, "option_a": shortcut,
            "act_in": a, "relu": F.relu(a), "gelu": F.gelu(a),
            "lin_x": xl, "lin_w": wl, "lin_b": bl, "lin_y": F.linear(xl, wl, bl),
            "seq": seq, "seq_last": seq[:, :, -1],
        },
    )


def npy_cases():
    """Arrays written by numpy itself, to check the .npy reader against the real writer."""
    import numpy as np

    os.makedirs(OUT, exist_ok=True)
    a = np.arange(6, dtype="<f4").reshape(2, 3) / 4
    np.save(os.path.join(OUT, "numpy_f32.npy"), a)
    b = np.linspace(-1, 1, 5, dtype="<f8")
    with open(os.path.join(OUT, "numpy_f64_v2.npy"), "wb") as f:
        np.lib.format.write_array(f, b, version=(2, 0))
    np.save(os.path.join(OUT, "numpy_scalar_f64.npy"), np.float64(2.5))


if __name__ == "__main__":
    conv_cases()
    fft_cases()
    mask_cases()
    magnet_cases()
    lc_case()
    basis_case()
    bn_case()
    pool_case()
    misc_case()
    npy_cases()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}")
