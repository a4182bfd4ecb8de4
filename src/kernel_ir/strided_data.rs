//! The backward to data of a strided conv, by phases. Input row `ih` of a stride-`s`
//! conv receives gradient only from the taps `kh` with `ih + pad − kh` a multiple of
//! `s`, so the rows of one phase `a = ih mod s` form a stride-1 correlation of `dy`
//! with the sub-kernel of those taps (every `s`-th, flipped). Per axis pair of phases
//! `(a, b)` this module gives that correlation as a forward [`ConvSpec`] over `dy`
//! (so the forward's register-tiled kernel runs it), the kernel packing its weights
//! ([`phase_repack`]) and the kernel scattering its output into `dx`
//! ([`unphase_kernel`]). Against spreading `dy` with zeros and running the full
//! kernel over it, this does `1/s²` of the products: ResNet-20's two stride-2 convs
//! spent 3–4× their forward's time in the backward to data before.

use super::build::*;
use super::conv::ConvSpec;
use super::{Kernel, Ty};

/// The taps of one phase along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisPhase {
    /// The phase `a`: input positions `a, a + s, …`.
    pub phase: usize,
    /// How many input positions the phase holds.
    pub len: usize,
    /// The first tap `k₀ = (a + pad) mod s` and the number of taps `k₀, k₀ + s, …`
    /// below the kernel size (0: the phase receives no gradient).
    pub first: usize,
    pub taps: usize,
    /// The zero padding of `dy` the phase's correlation reads (low, high).
    pub pad: (usize, usize),
}

/// One phase pair: the stride-1 conv over `dy` that computes it (`None`: no tap
/// reaches it, its gradient is zero) and its axes.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub axes: [AxisPhase; 2],
    pub conv: Option<ConvSpec>,
}

fn axis(s: &ConvSpec, i: usize, phase: usize) -> Option<AxisPhase> {
    let (st, k, low) = (s.stride[i], s.k[i], s.pad[i].0);
    let (input, out) = ([s.h, s.w][i], s.out()[i]);
    let len = input.saturating_sub(phase).div_ceil(st);
    let first = (phase + low) % st;
    if first >= k || len == 0 {
        return Some(AxisPhase {
            phase,
            len,
            first,
            taps: 0,
            pad: (0, 0),
        });
    }
    let taps = (k - first).div_ceil(st);
    // Tap j reads dy at `i + c₀ − j`; the correlation's window starts at `c₀ − taps + 1`.
    let c0 = (phase + low - first) / st;
    let pad_low = (taps - 1).checked_sub(c0)?;
    let end = len + taps - 1; // one past the last dy position read, in padded terms
    let pad_high = end.saturating_sub(pad_low + out);
    Some(AxisPhase {
        phase,
        len,
        first,
        taps,
        pad: (pad_low, pad_high),
    })
}

/// The phases of `s`'s backward to data, or `None` where this form does not apply
/// (dilation, or padding so wide that a phase's window starts inside `dy`).
pub fn phases(s: &ConvSpec) -> Option<Vec<Phase>> {
    if s.dilation != [1, 1] || s.stride == [1, 1] {
        return None;
    }
    let mut all = Vec::new();
    for a in 0..s.stride[0] {
        for b in 0..s.stride[1] {
            let axes = [axis(s, 0, a)?, axis(s, 1, b)?];
            let conv = (axes[0].taps > 0 && axes[1].taps > 0).then(|| ConvSpec {
                n: s.n,
                ci: s.co,
                h: s.out()[0],
                w: s.out()[1],
                co: s.ci,
                k: [axes[0].taps, axes[1].taps],
                stride: [1, 1],
                dilation: [1, 1],
                pad: [axes[0].pad, axes[1].pad],
                residual: false,
                relu: false,
            });
            all.push(Phase { axes, conv });
        }
    }
    Some(all)
}

/// `w [co, ci, kh, kw]`'s taps of phase `p`, flipped and transposed, packed for the
/// forward conv kernel as `conv::pack_weights` packs `ci` output channels:
/// `[ceil(ci/t)][co][taps_h·taps_w][t]`, zeros past `ci`.
pub fn phase_repack(name: &str, s: &ConvSpec, p: &Phase, t: usize) -> Kernel {
    let [ah, aw] = p.axes;
    let taps = ah.taps * aw.taps;
    let total = s.ci.div_ceil(t) * t * s.co * taps;
    let i = var("i");
    let kh = int(ah.first + (ah.taps - 1) * s.stride[0]) - (var("tap") / aw.taps) * s.stride[0];
    let kw = int(aw.first + (aw.taps - 1) * s.stride[1]) - (var("tap") % aw.taps) * s.stride[1];
    let body = vec![
        let_("i", Ty::I32, gid(0)),
        let_(
            "c",
            Ty::I32,
            i.clone() / (t * taps * s.co) * t + i.clone() % t,
        ),
        let_("o", Ty::I32, i.clone() / (t * taps) % s.co),
        let_("tap", Ty::I32, i.clone() / t % taps),
        let_(
            "src",
            Ty::I32,
            select(
                lt(var("c"), int(s.ci)),
                ((var("o") * s.ci + var("c")) * s.k[0] + kh) * s.k[1] + kw,
                int(0),
            ),
        ),
        store(
            "y",
            i,
            select(
                lt(var("c"), int(s.ci)),
                load("w", var("src"), 1),
                float(0.0),
            ),
            1,
        ),
    ];
    kernel(
        name,
        vec![param("w", true), param("y", false)],
        body,
        vec![total],
        0,
    )
}

/// Scatters phase `p`'s gradient `y [n·ci, out_h, out_w]` (`out` the phase conv's
/// output size, at least the phase's length) into its rows and columns of
/// `dx [n, ci, h, w]`; a phase no tap reaches writes zeros (and has no `y`).
pub fn unphase_kernel(name: &str, s: &ConvSpec, p: &Phase, out: [usize; 2]) -> Kernel {
    let [ah, aw] = p.axes;
    let at = (var("pl") * s.h + var("r") * s.stride[0] + ah.phase) * s.w
        + var("q") * s.stride[1]
        + aw.phase;
    let value = if p.conv.is_some() {
        load("y", (var("pl") * out[0] + var("r")) * out[1] + var("q"), 1)
    } else {
        float(0.0)
    };
    let body = vec![
        let_("q", Ty::I32, gid(0)),
        let_("r", Ty::I32, gid(1)),
        let_("pl", Ty::I32, gid(2)),
        store("dx", at, value, 1),
    ];
    let mut params = vec![param("dx", false)];
    if p.conv.is_some() {
        params.insert(0, param("y", true));
    }
    kernel(name, params, body, vec![aw.len, ah.len, s.n * s.ci], 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(h: usize, k: usize, stride: usize, pad: usize) -> ConvSpec {
        ConvSpec {
            n: 1,
            ci: 1,
            h,
            w: h,
            co: 1,
            k: [k, k],
            stride: [stride, stride],
            dilation: [1, 1],
            pad: [(pad, pad); 2],
            residual: false,
            relu: false,
        }
    }

    /// Every (input position, tap) pair the forward uses appears in exactly one
    /// phase, at the dy position the forward pairs them with.
    #[test]
    fn phases_cover_every_tap_once() {
        for (h, k, st, pad) in [
            (32, 3, 2, 1),
            (7, 3, 2, 0),
            (9, 5, 3, 2),
            (6, 1, 2, 0),
            (5, 2, 3, 1),
        ] {
            let s = spec(h, k, st, pad);
            let out = s.out()[0];
            let mut seen = vec![0; h * k];
            let Some(phases) = phases(&s) else {
                // A window that starts inside dy: the caller spreads dy instead.
                assert_eq!((h, k, st, pad), (5, 2, 3, 1));
                continue;
            };
            assert_eq!(phases.len(), st * st);
            for a in 0..st {
                let ax = axis(&s, 0, a).expect("applies");
                if ax.taps > 0 {
                    assert!(out + ax.pad.0 + ax.pad.1 + 1 >= ax.len + ax.taps, "rows");
                }
                for r in 0..ax.len {
                    for j in 0..ax.taps {
                        // Correlation tap j reads padded dy at r + j, the flipped kernel tap.
                        let kh = ax.first + (ax.taps - 1 - j) * st;
                        let oh = (r + j) as isize - ax.pad.0 as isize;
                        let ih = r * st + a;
                        let want = (ih + pad) as isize - kh as isize;
                        if oh >= 0 && (oh as usize) < out {
                            assert_eq!(want, oh * st as isize, "h{h} k{k} s{st} p{pad}");
                            seen[ih * k + kh] += 1;
                        } else {
                            let valid = want >= 0
                                && want % st as isize == 0
                                && want / (st as isize) < out as isize;
                            assert!(!valid, "a read of padding hides a tap");
                        }
                    }
                }
            }
            for ih in 0..h {
                for kh in 0..k {
                    let t = (ih + pad) as isize - kh as isize;
                    let used = t >= 0 && t % st as isize == 0 && (t as usize / st) < out;
                    assert_eq!(seen[ih * k + kh], usize::from(used), "ih {ih} kh {kh}");
                }
            }
        }
    }
}
