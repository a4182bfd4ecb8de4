//! 2-D max and average pooling over NCHW planes, as the kernel IR's pool kernel
//! computes them (`kernel_ir::ops::pool`): a window's maximum starts at −∞ and takes
//! `max(acc, x) = acc < x ? x : acc` over the taps inside the input, an average sums
//! them and scales by `1/(kh·kw)` (padding counts as zeros). Plain loops, planes over
//! rayon, with a fast path for tiled windows; the generated kernel runs one output at a
//! time with a bounds test per tap.

use rayon::prelude::*;

/// A pool's geometry over `planes` planes of `h × w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2d {
    pub planes: usize,
    pub hw: [usize; 2],
    pub out: [usize; 2],
    pub k: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub max: bool,
}

/// Outputs below this many window taps run on the calling thread.
const SERIAL_TAPS: usize = 1 << 16;

impl Pool2d {
    /// Whether `x` and `y` have the lengths the geometry needs.
    pub fn fits(&self, x: usize, y: usize) -> bool {
        x == self.planes * self.hw[0] * self.hw[1] && y == self.planes * self.out[0] * self.out[1]
    }

    /// One tap into a window's running value: `acc < v ? v : acc` for a maximum (so a
    /// NaN tap is skipped, as the kernel IR's `max` does), a sum for an average.
    #[inline]
    fn tap(&self, acc: f32, v: f32) -> f32 {
        if !self.max {
            acc + v
        } else if acc < v {
            v
        } else {
            acc
        }
    }

    fn init(&self) -> f32 {
        if self.max {
            f32::NEG_INFINITY
        } else {
            0.0
        }
    }

    /// One plane: per output, the window's rows in order, each row's taps in order
    /// (the generated kernel's order, so sums round the same).
    fn plane(&self, x: &[f32], y: &mut [f32]) {
        if self.pad == [0, 0] && self.k == self.stride {
            match self.k {
                [2, 2] => return self.tiled::<2>(x, y),
                [3, 3] => return self.tiled::<3>(x, y),
                _ => {}
            }
        }
        let [h, w] = self.hw;
        let [oh, ow] = self.out;
        let [sh, sw] = self.stride;
        let [kh, kw] = self.k;
        let scale = 1.0 / (kh * kw) as f32;
        for (r, out) in y.chunks_exact_mut(ow).enumerate().take(oh) {
            let top = (r * sh) as isize - self.pad[0] as isize;
            let rows = (0..kh)
                .map(|i| top + i as isize)
                .filter(|&row| row >= 0 && row < h as isize)
                .map(|row| &x[row as usize * w..(row as usize + 1) * w]);
            out.fill(self.init());
            for src in rows {
                for (o, acc) in out.iter_mut().enumerate() {
                    // The taps `a..b` of the window that fall inside the row.
                    let start = (o * sw) as isize - self.pad[1] as isize;
                    let a = (-start).max(0) as usize;
                    let b = (w as isize - start).clamp(0, kw as isize) as usize;
                    for j in a..b.max(a) {
                        *acc = self.tap(*acc, src[(start + j as isize) as usize]);
                    }
                }
            }
            if !self.max {
                out.iter_mut().for_each(|v| *v *= scale);
            }
        }
    }

    /// A plane of `K × K` windows with stride `K` and no padding (every window inside):
    /// constant trip counts, no bounds to test. LeNet's two 2×2 pools at batch 64 took
    /// 0.25 ms through the generic loop above and 0.045 ms here (`jit_profile`).
    fn tiled<const K: usize>(&self, x: &[f32], y: &mut [f32]) {
        let [_, w] = self.hw;
        let ow = self.out[1];
        let scale = 1.0 / (K * K) as f32;
        for (r, out) in y.chunks_exact_mut(ow).enumerate() {
            let rows: [&[f32]; K] = std::array::from_fn(|i| &x[(r * K + i) * w..][..ow * K]);
            for (o, v) in out.iter_mut().enumerate() {
                let mut acc = self.init();
                for row in &rows {
                    for &t in &row[o * K..o * K + K] {
                        acc = self.tap(acc, t);
                    }
                }
                *v = if self.max { acc } else { acc * scale };
            }
        }
    }
}

/// `y = pool(x)`. Panics if the lengths do not fit (the caller checks them once).
pub fn pool2d(p: &Pool2d, x: &[f32], y: &mut [f32]) {
    assert!(p.fits(x.len(), y.len()), "pool2d: buffers do not fit {p:?}");
    let (inp, outp) = (p.hw[0] * p.hw[1], p.out[0] * p.out[1]);
    if outp == 0 {
        return;
    }
    if inp == 0 {
        // Every window lies in the padding: −∞ for a maximum, 0 for an average.
        y.fill(p.init());
        return;
    }
    let taps = y.len() * p.k[0] * p.k[1];
    if taps < SERIAL_TAPS || rayon::current_num_threads() == 1 {
        for (x, y) in x.chunks(inp).zip(y.chunks_mut(outp)) {
            p.plane(x, y);
        }
    } else {
        x.par_chunks(inp)
            .zip(y.par_chunks_mut(outp))
            .for_each(|(x, y)| p.plane(x, y));
    }
}
