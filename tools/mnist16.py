#!/usr/bin/env python3
"""Writes MNIST-10k at 16x16 as IDX files (for the toy search of docs/search.md).

Each 28x28 digit is zero-padded to 32x32 and averaged over 2x2 blocks, so a 16x16
image keeps the whole digit. Usage: tools/mnist16.py [SRC_DIR] [OUT_DIR]
(defaults data/mnist10k and data/mnist10k-16px).
"""
import gzip
import os
import struct
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "data/mnist10k"
out = sys.argv[2] if len(sys.argv) > 2 else "data/mnist10k-16px"
os.makedirs(out, exist_ok=True)
raw = gzip.open(os.path.join(src, "images.idx3-ubyte.gz")).read()
magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
assert magic == 0x803 and rows == 28 and cols == 28, (magic, rows, cols)
px = raw[16:]
res = bytearray(struct.pack(">IIII", 0x803, n, 16, 16))
for i in range(n):
    img = px[i * 784:(i + 1) * 784]

    def at(r, c):
        r, c = r - 2, c - 2
        return img[r * 28 + c] if 0 <= r < 28 and 0 <= c < 28 else 0

    for r in range(16):
        for c in range(16):
            s = at(2 * r, 2 * c) + at(2 * r, 2 * c + 1) + at(2 * r + 1, 2 * c) + at(2 * r + 1, 2 * c + 1)
            res.append((s + 2) // 4)
with open(os.path.join(out, "images.idx3-ubyte"), "wb") as f:
    f.write(res)
labels = gzip.open(os.path.join(src, "labels.idx1-ubyte.gz")).read()
with open(os.path.join(out, "labels.idx1-ubyte"), "wb") as f:
    f.write(labels)
print(f"wrote {n} 16x16 digits to {out}")
