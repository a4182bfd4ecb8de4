//! ResNet's option-A shortcut and its backward: subsample by the stride and pad the
//! channels with zeros, `y[b, c, oh, ow] = x[b, c − pad, oh·sh, ow·sw]` for `c − pad`
//! inside the input's channels, else 0; the backward scatters `dy` back to the kept
//! positions and zeros the rest.
//!
//! The generated kernels run one scalar work item per element with two divisions
//! each (batch and channel from the flattened grid id); as plain loops over planes the
//! copy runs at memory speed (ResNet-20's two shortcuts at batch 64: 1.35 ms as
//! generated kernels).

use rayon::prelude::*;

/// Planes below this many output elements (over the whole call) run on the calling
/// thread.
const SERIAL_ELEMENTS: usize = 1 << 15;

/// An option-A shortcut: `n` images of `ci` planes of `hw` to `co ≥ ci` planes of
/// `out = ⌈hw / stride⌉`, the input channels at `pad..pad + ci`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortcut {
    pub n: usize,
    pub ci: usize,
    pub hw: [usize; 2],
    pub co: usize,
    pub out: [usize; 2],
    pub stride: [usize; 2],
    pub pad: usize,
}

impl Shortcut {
    /// Floats of the input (`[n, ci, hw]`) and of the output (`[n, co, out]`).
    pub fn lens(&self) -> (usize, usize) {
        (
            self.n * self.ci * self.hw[0] * self.hw[1],
            self.n * self.co * self.out[0] * self.out[1],
        )
    }

    /// Whether the geometry is consistent: the output is the strided input, and the
    /// channels fit.
    pub fn valid(&self) -> bool {
        let [s0, s1] = self.stride;
        s0 > 0
            && s1 > 0
            && self.out == [self.hw[0].div_ceil(s0), self.hw[1].div_ceil(s1)]
            && self.pad + self.ci <= self.co
    }

    /// The input channel of output channel `c`, if it is one.
    fn source(&self, c: usize) -> Option<usize> {
        c.checked_sub(self.pad).filter(|&i| i < self.ci)
    }
}

/// Runs `f(plane index, plane)` over the `len`-float planes of `buf`, spread over
/// rayon when the call is large.
fn planes(buf: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if len == 0 {
        return;
    }
    if buf.len() < SERIAL_ELEMENTS {
        buf.chunks_exact_mut(len)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    } else {
        buf.par_chunks_exact_mut(len)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    }
}

/// `y = shortcut(x)`. Panics if the geometry is invalid or a buffer's length is not
/// [`Shortcut::lens`] (the caller checks both once).
pub fn shortcut_a(g: &Shortcut, x: &[f32], y: &mut [f32]) {
    assert!(g.valid(), "shortcut: inconsistent geometry {g:?}");
    assert_eq!((x.len(), y.len()), g.lens(), "shortcut: buffer lengths");
    let (in_plane, [oh, ow]) = (g.hw[0] * g.hw[1], g.out);
    planes(y, oh * ow, |i, plane| {
        let (b, c) = (i / g.co, i % g.co);
        let Some(src) = g.source(c) else {
            plane.fill(0.0);
            return;
        };
        let src = &x[(b * g.ci + src) * in_plane..][..in_plane];
        for (r, row) in plane.chunks_exact_mut(ow).enumerate() {
            let line = &src[r * g.stride[0] * g.hw[1]..][..g.hw[1]];
            for (v, &s) in row.iter_mut().zip(line.iter().step_by(g.stride[1])) {
                *v = s;
            }
        }
    });
}

/// `dx = shortcut_backward(dy)`: each kept input position takes its output's gradient,
/// every other position 0. Panics as [`shortcut_a`] does.
pub fn shortcut_a_backward(g: &Shortcut, dy: &[f32], dx: &mut [f32]) {
    assert!(g.valid(), "shortcut: inconsistent geometry {g:?}");
    assert_eq!((dx.len(), dy.len()), g.lens(), "shortcut: buffer lengths");
    let (out_plane, [_, ow]) = (g.out[0] * g.out[1], g.out);
    planes(dx, g.hw[0] * g.hw[1], |i, plane| {
        let (b, c) = (i / g.ci, i % g.ci);
        plane.fill(0.0);
        let src = &dy[(b * g.co + c + g.pad) * out_plane..][..out_plane];
        for (r, row) in src.chunks_exact(ow).enumerate() {
            let line = &mut plane[r * g.stride[0] * g.hw[1]..][..g.hw[1]];
            for (d, &s) in line.iter_mut().step_by(g.stride[1]).zip(row) {
                *d = s;
            }
        }
    });
}
