"""Shared pieces of the experiments' PyTorch controls and reports (docs/experiments.md).

- MNIST-10k from data/mnist10k (IDX, pixels / 255 as fnet reads them), train 0..8000
  and test 8000..10000, optionally resized with F.interpolate(bilinear,
  align_corners=False) as the recipe's `resize:` does.
- The data order: --order FILE is the `.npy` that `cargo run --example epoch_order`
  writes from fnet's own `epoch_order` (one row per epoch), so the control sees the
  same batches as `fnetc train`; without it torch.randperm (seeded) is used and the
  result says so.
- A training loop with fnet's recipe pieces: cross-entropy with label smoothing,
  SGD (momentum, Nesterov, L2 decay) or Adam, the closed-form cosine per iteration,
  a last smaller batch (drop_last=False).
- A dependency-free PNG writer (zlib only) for the experiments' small plots, since
  neither matplotlib nor PIL is installed here: line and bar charts without text; the
  table next to each PNG carries the numbers and says which colour is which.
"""
import gzip, json, math, struct, time, zlib
import numpy as np

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127)]
COLOUR_NAMES = ["blue", "orange", "green", "red", "purple", "brown", "pink", "grey"]


def idx(path):
    op = gzip.open if str(path).endswith(".gz") else open
    b = op(path, "rb").read()
    nd = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


def mnist(train=(0, 8000), test=(8000, 10000), resize=None, root="data/mnist10k"):
    import torch
    import torch.nn.functional as F
    x = torch.tensor(idx(f"{root}/images.idx3-ubyte.gz"), dtype=torch.float32)[:, None] / 255
    y = torch.tensor(idx(f"{root}/labels.idx1-ubyte.gz"), dtype=torch.long)
    if resize:
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False)
    return x[train[0]:train[1]], y[train[0]:train[1]], x[test[0]:test[1]], y[test[0]:test[1]]


def orders(path, seed, epochs, n):
    import torch
    if path:
        o = np.load(path)
        assert o.shape == (epochs, n), f"{path}: order of shape {o.shape}, expected {(epochs, n)}"
        return [torch.tensor(r.astype(np.int64)) for r in o], "fnet's epoch_order"
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g) for _ in range(epochs)], "torch.randperm (not fnet's order)"


def cosine(base, t, total, min_lr=0.0):
    x = min(t / max(total, 1), 1.0)
    return min_lr + (base - min_lr) * (1 + math.cos(math.pi * x)) / 2


def train(net, opt, data, epochs, batch, order, extra_loss=None, smoothing=0.0, on_step=None,
          group_lr=None):
    """Trains `net`; returns (test accuracy, wall seconds). `group_lr[i]` scales the
    cosine rate of param group i (e.g. the mask's 0.1)."""
    import torch
    import torch.nn.functional as F
    xt, yt, xe, ye = data
    n = len(yt)
    steps = math.ceil(n / batch)
    total, step = steps * epochs, 0
    bases = [g["lr"] for g in opt.param_groups]
    t0 = time.time()
    for e in range(epochs):
        net.train()
        perm = order[e]
        for k in range(steps):
            for g, b in zip(opt.param_groups, bases):
                g["lr"] = cosine(b, step, total)
            i = perm[k * batch:(k + 1) * batch]
            loss = F.cross_entropy(net(xt[i]), yt[i], label_smoothing=smoothing)
            if extra_loss is not None:
                loss = loss + extra_loss()
            opt.zero_grad()
            loss.backward()
            if on_step:
                on_step(step)
            opt.step()
            step += 1
    wall = time.time() - t0
    return evaluate(net, xe, ye), wall


def evaluate(net, xe, ye, batch=500):
    import torch
    net.eval()
    correct = 0
    with torch.no_grad():
        for k in range(0, len(ye), batch):
            correct += (net(xe[k:k + batch]).argmax(1) == ye[k:k + batch]).sum().item()
    return correct / len(ye)


def report(path, rows):
    """One JSON object per line: what the shell scripts read into their tables."""
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


# --- PNG ---------------------------------------------------------------------------

def _png(path, img):
    h, w = len(img), len(img[0])
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in img)
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    tmp = str(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    import os
    os.replace(tmp, path)


def _canvas(w, h):
    img = [[(255, 255, 255)] * w for _ in range(h)]
    for x in range(40, w - 10):
        img[h - 30][x] = (0, 0, 0)
    for y in range(10, h - 29):
        img[y][40] = (0, 0, 0)
    return img


def _dot(img, x, y, c, r=1):
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if 0 <= y + dy < len(img) and 0 <= x + dx < len(img[0]):
                img[y + dy][x + dx] = c


def line_chart(path, series, w=480, h=300, logy=False):
    """`series`: lists of (x, y); one colour each, in COLOURS order."""
    pts = [(x, math.log10(y) if logy else y) for s in series for x, y in s
           if y == y and (not logy or y > 0)]
    if not pts:
        pts = [(0, 0), (1, 1)]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    img = _canvas(w, h)
    for si, s in enumerate(series):
        prev = None
        for x, y in s:
            if y != y or (logy and y <= 0):
                continue
            y = math.log10(y) if logy else y
            px = 41 + int((x - x0) / (x1 - x0) * (w - 55))
            py = h - 31 - int((y - y0) / (y1 - y0) * (h - 45))
            if prev:
                n = max(abs(px - prev[0]), abs(py - prev[1]), 1)
                for t in range(n + 1):
                    _dot(img, prev[0] + (px - prev[0]) * t // n, prev[1] + (py - prev[1]) * t // n,
                         COLOURS[si % 8], 0)
            _dot(img, px, py, COLOURS[si % 8])
            prev = (px, py)
    _png(path, img)


def bar_chart(path, groups, w=480, h=300, lo=None):
    """`groups`: lists of values; bars of one group side by side, colours by position."""
    vals = [v for g in groups for v in g if v == v]
    top = max(vals) if vals else 1.0
    lo = min(vals) * 0.98 if lo is None and vals else (lo or 0.0)
    top = top if top > lo else lo + 1
    img = _canvas(w, h)
    gw = (w - 60) / max(len(groups), 1)
    for gi, g in enumerate(groups):
        bw = max(int(gw * 0.8 / max(len(g), 1)), 1)
        for bi, v in enumerate(g):
            if v != v:
                continue
            x = 45 + int(gi * gw) + bi * bw
            y = h - 31 - int((v - lo) / (top - lo) * (h - 45))
            for yy in range(max(y, 10), h - 30):
                for xx in range(x, min(x + bw - 1, w - 10)):
                    img[yy][xx] = COLOURS[bi % 8]
    _png(path, img)


def safetensors(path):
    """{name: numpy array} of a safetensors file (F32/F64 only)."""
    b = open(path, "rb").read()
    n = int.from_bytes(b[:8], "little")
    head = json.loads(b[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        dt = {"F32": np.float32, "F64": np.float64}.get(v["dtype"])
        if dt is None:
            continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dt).reshape(v["shape"])
    return out


def ortho_residual(w):
    """The orthogonality residual as fnet's `orthogonality` computes it (docs/autodiff.md):
    one mean over all stages' counted entries of (B B^T - I)^2, from fnet weight names:
    basis `stageN.shared.P.weight`, and the `.unique.weight` of every conv under `layerN.`."""
    total_sim, total_cnt = 0.0, 0
    for name in sorted(k for k in w if ".shared." in k and k.startswith("stage")):
        stage = name.split(".")[0]
        layer = "layer" + stage[len("stage"):] + "."
        shared = [w[k] for k in sorted(w) if k.startswith(stage + ".shared.")]
        if name != sorted(k for k in w if k.startswith(stage + ".shared."))[0]:
            continue
        uniques = [w[k] for k in sorted(w) if k.startswith(layer) and k.endswith(".unique.weight")]
        ns = sum(s.shape[0] for s in shared)
        nu = uniques[0].shape[0] if uniques else 0
        B = np.concatenate([s.reshape(s.shape[0], -1) for s in shared + uniques]).astype(np.float64)
        n = B.shape[0]
        D = (B @ B.T - np.eye(n)) ** 2
        sim, cnt = D[:ns].sum(), ns * n
        for i in range(len(uniques)):
            o = ns + i * nu
            sim += D[o:o + nu, o:o + nu].sum()
            cnt += nu * nu
        total_sim += sim
        total_cnt += cnt
    return total_sim / max(total_cnt, 1)
