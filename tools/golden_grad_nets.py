"""PyTorch twins of the shipped LC-20, ResNet32-S16U1* and pooling-supernet examples,
for tools/golden_grads.py. Written from SEEDS.md §2-§4 and the `.fnet` sources, not
from fnet's elaborator: each takes `w` (golden_nets.Weights: fnet's tensors by
parameter name, BatchNorm on batch statistics when `w.training`) and the input, and
returns the logits and a dict (unused here, kept for the NETS signature).

  * LC-ResNet-20 (Gavrikov & Keuper 2023, SEEDS.md §2): ResNet-20 (golden_nets.py's
    option-A twin) with every 3x3 conv, the stem's too, replaced by a frozen 3x3 basis
    conv c_in -> E*c (stride and padding 1 of the conv it replaces) and a learned 1x1
    E*c -> c, no bias and nothing between the two.
  * ResNet32-S16U1* (Kang & Kim 2021, SEEDS.md §3.1): per stage a normal first basic
    block (option-A shortcut when the width or stride changes), then 4 blocks whose
    convs are `concat(conv3x3(x, unique), conv3x3(x, shared[part]))` -> BN -> 1x1
    coefficients, double sharing: part 1 reads `stageN.shared.0`, part 2
    `stageN.shared.1`, in every block of the stage. The block adds the identity.
  * The pooling supernet (Javan Roshtkhari et al. 2023, SEEDS.md §4): ResNet-20
    without strides; BatchNorm without affine parameters or running statistics
    (always batch statistics); 9 slots, slot k just before layer k, a 2x2 max-pool
    where k is in the configuration; projection shortcut (1x1 conv, no bias, then
    that BatchNorm) where the width changes, identity elsewhere.
"""

import torch
import torch.nn.functional as F

import golden_nets as nets


def _lc(w, name, x, stride=1):
    z = F.conv2d(x, w(name + ".basis.weight"), stride=stride, padding=1)
    return F.conv2d(z, w(name + ".coeff.weight"))


def lc20(w, x):
    h = F.relu(nets.bn(w, "bn1", _lc(w, "conv1", x)))
    for s, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        for b in range(1, 4):
            pre = f"layer{s}.basic{b}"
            st = stride if b == 1 else 1
            y = F.relu(nets.bn(w, pre + ".bn1", _lc(w, pre + ".conv1", h, st)))
            y = nets.bn(w, pre + ".bn2", _lc(w, pre + ".conv2", y))
            sc = nets.option_a(h, planes) if (st != 1 or h.shape[1] != planes) else h
            h = F.relu(y + sc)
    h = h.mean(dim=(2, 3))
    return F.linear(h, w("fc.weight"), w("fc.bias")), {}


def _bconv(w, name, shared, x):
    z = torch.cat([F.conv2d(x, w(name + ".unique.weight"), padding=1), F.conv2d(x, shared, padding=1)], dim=1)
    return F.conv2d(nets.bn(w, name + ".bn", z), w(name + ".coeff.weight"))


def resnet32_s16u1d(w, x):
    h = F.relu(nets.bn(w, "bn1", F.conv2d(x, w("conv1.weight"), padding=1)))
    for s, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        pre = f"layer{s}.basic1"
        y = F.relu(nets.bn(w, pre + ".bn1", F.conv2d(h, w(pre + ".conv1.weight"), stride=stride, padding=1)))
        y = nets.bn(w, pre + ".bn2", F.conv2d(y, w(pre + ".conv2.weight"), padding=1))
        sc = nets.option_a(h, planes) if (stride != 1 or h.shape[1] != planes) else h
        h = F.relu(y + sc)
        # The same two tensors in all four blocks: autograd sums their gradients.
        shared = [w(f"stage{s}.shared.{p}.weight") for p in range(2)]
        for b in range(1, 5):
            pre = f"layer{s}.shared_block{b}"
            y = F.relu(nets.bn(w, pre + ".bn1", _bconv(w, pre + ".bconv1", shared[0], h)))
            y = nets.bn(w, pre + ".bn2", _bconv(w, pre + ".bconv2", shared[1], y))
            h = F.relu(y + h)
    h = h.mean(dim=(2, 3))
    return F.linear(h, w("fc.weight"), w("fc.bias")), {}


def _plain_bn(x):
    return F.batch_norm(x, None, None, training=True, eps=1e-5)


def slots(config):
    """The supernet specialised to `config` (1-based active slot numbers)."""

    def net(w, x):
        h = F.relu(_plain_bn(F.conv2d(x, w("conv1.weight"), padding=1)))
        widths = [16] * 3 + [32] * 3 + [64] * 3
        for k, c in enumerate(widths, start=1):
            if k in config:
                h = F.max_pool2d(h, 2)
            pre = f"layer{k}.basic1"
            y = F.relu(_plain_bn(F.conv2d(h, w(pre + ".conv1.weight"), padding=1)))
            y = _plain_bn(F.conv2d(y, w(pre + ".conv2.weight"), padding=1))
            if h.shape[1] != c:
                sc = _plain_bn(F.conv2d(h, w(pre + ".shortcut1.conv.weight")))
            else:
                assert not w.has(pre + ".shortcut1.conv.weight")
                sc = h
            h = F.relu(y + sc)
        h = h.mean(dim=(2, 3))
        return F.linear(h, w("fc.weight"), w("fc.bias")), {}

    return net
