//! Batch norm's per-channel reductions in training: the batch moments (mean, then the
//! biased variance about it, two sweeps as the interpreter's `batch_stats`), the
//! backward's sums `Σ dy`, `Σ dy·x̂`, and the plain channel sum (a bias's or β's
//! gradient), over `[outer, c, inner]` tensors.
//!
//! The generated kernels (`kernel_ir::batch_norm`) sum each channel into one vector
//! register, a chain of dependent adds: they streamed 12–30 GB/s where the machine
//! streams 77. These sum into [`ACC`] independent lanes (four zmm, eight ymm), which
//! the compiler vectorises for the ISA of the calling function, and spread channels
//! over rayon.

use rayon::prelude::*;

use super::isa::{Isa, IsaKind};

/// Independent partial sums per channel sweep.
const ACC: usize = 64;

/// Values per channel below which a tensor is reduced on one thread.
const SERIAL: usize = 1 << 15;

/// A `[outer, c, inner]` tensor's shape: channel `ch` of slab `o` is the contiguous
/// run `x[(o·c + ch)·inner ..][..inner]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelLayout {
    pub outer: usize,
    pub c: usize,
    pub inner: usize,
}

impl ChannelLayout {
    /// Elements of the tensor.
    fn len(&self) -> usize {
        self.outer * self.c * self.inner
    }

    /// Values per channel.
    fn count(&self) -> usize {
        self.outer * self.inner
    }

    /// Channel `ch`'s runs of `x`.
    fn runs<'a>(&self, x: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (c, inner) = (self.c, self.inner);
        (0..self.outer).map(move |o| &x[(o * c + ch) * inner..][..inner])
    }
}

/// `Σ f(x)` over one channel's runs, in [`ACC`] lanes.
#[inline(always)]
fn sum_runs<'a>(runs: impl Iterator<Item = &'a [f32]>, f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; ACC];
    for run in runs {
        let mut parts = run.chunks_exact(ACC);
        for part in &mut parts {
            for (a, &v) in acc.iter_mut().zip(part) {
                *a += f(v);
            }
        }
        for (a, &v) in acc.iter_mut().zip(parts.remainder()) {
            *a += f(v);
        }
    }
    acc.iter().sum()
}

/// `(Σ dy, Σ dy·(x − mean))` over one channel's runs of `x` and `dy`, in [`ACC`] lanes
/// each.
#[inline(always)]
fn sum_pairs<'a>(runs: impl Iterator<Item = (&'a [f32], &'a [f32])>, mean: f32) -> (f32, f32) {
    let (mut sdy, mut sdx) = ([0.0f32; ACC], [0.0f32; ACC]);
    for (x, dy) in runs {
        let (mut xs, mut dys) = (x.chunks_exact(ACC), dy.chunks_exact(ACC));
        for (xp, gp) in (&mut xs).zip(&mut dys) {
            for l in 0..ACC {
                sdy[l] += gp[l];
                sdx[l] += gp[l] * (xp[l] - mean);
            }
        }
        for (l, (&x, &g)) in xs.remainder().iter().zip(dys.remainder()).enumerate() {
            sdy[l] += g;
            sdx[l] += g * (x - mean);
        }
    }
    (sdy.iter().sum(), sdx.iter().sum())
}

/// One channel's moments: `(mean, biased variance)`.
#[inline(always)]
fn moments_body(l: &ChannelLayout, x: &[f32], ch: usize) -> (f32, f32) {
    let count = l.count() as f32;
    let mean = sum_runs(l.runs(x, ch), |v| v) / count;
    let var = sum_runs(l.runs(x, ch), |v| (v - mean) * (v - mean)) / count;
    (mean, var)
}

/// One channel's backward sums `[mean, 1/√(var + eps), Σ dy, Σ dy·x̂]` from its
/// moments.
#[inline(always)]
fn sums_body(
    l: &ChannelLayout,
    eps: f32,
    (x, dy): (&[f32], &[f32]),
    (mean, var): (f32, f32),
    ch: usize,
) -> [f32; 4] {
    let inv = 1.0 / (var + eps).sqrt();
    let (sdy, sdx) = sum_pairs(l.runs(x, ch).zip(l.runs(dy, ch)), mean);
    [mean, inv, sdy, sdx * inv]
}

/// One channel's sum.
#[inline(always)]
fn channel_sum_body(l: &ChannelLayout, x: &[f32], ch: usize) -> f32 {
    sum_runs(l.runs(x, ch), |v| v)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The channel sweeps compiled for AVX-512 and for AVX2 + FMA.
    use super::{channel_sum_body, moments_body, sums_body, ChannelLayout};

    macro_rules! isa_sweeps {
        ($sum:ident, $moments:ident, $sums:ident, $features:literal) => {
            /// # Safety
            /// The CPU must support the enabled features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $sum(l: &ChannelLayout, x: &[f32], ch: usize) -> f32 {
                channel_sum_body(l, x, ch)
            }

            /// # Safety
            /// The CPU must support the enabled features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $moments(l: &ChannelLayout, x: &[f32], ch: usize) -> (f32, f32) {
                moments_body(l, x, ch)
            }

            /// # Safety
            /// The CPU must support the enabled features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $sums(
                l: &ChannelLayout,
                eps: f32,
                xdy: (&[f32], &[f32]),
                m: (f32, f32),
                ch: usize,
            ) -> [f32; 4] {
                sums_body(l, eps, xdy, m, ch)
            }
        };
    }
    isa_sweeps!(sum_avx512, moments_avx512, sums_avx512, "avx512f");
    isa_sweeps!(sum_avx2, moments_avx2, sums_avx2, "avx2,fma");
}

/// Runs `f` for every channel, writing its `per` outputs into `out[ch·per ..]`: over
/// rayon unless the tensor is small.
fn per_channel<const N: usize>(
    l: &ChannelLayout,
    out: &mut [f32],
    f: impl Fn(usize) -> [f32; N] + Sync,
) {
    let out = &mut out[..l.c * N];
    let body = |(ch, o): (usize, &mut [f32])| o.copy_from_slice(&f(ch));
    if l.count() * l.c < SERIAL || rayon::current_num_threads() == 1 {
        out.chunks_exact_mut(N).enumerate().for_each(body);
    } else {
        out.par_chunks_exact_mut(N).enumerate().for_each(body);
    }
}

/// `y[ch] = Σ x[·, ch, ·]` (the layout of `kernel_ir::backward_ops::channel_sum`).
///
/// # Panics
/// If `x` is shorter than the layout or `y` than `c`.
pub fn channel_sum(isa: Isa, l: &ChannelLayout, x: &[f32], y: &mut [f32]) {
    assert!(
        x.len() >= l.len() && y.len() >= l.c,
        "channel_sum: short buffers"
    );
    per_channel::<1>(l, y, |ch| {
        [match isa.kind() {
            // SAFETY: the Isa proves the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => unsafe { x86::sum_avx512(l, x, ch) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => unsafe { x86::sum_avx2(l, x, ch) },
            _ => channel_sum_body(l, x, ch),
        }]
    });
}

/// The batch moments of `x`: `m[2·ch] = mean`, `m[2·ch + 1]` = the biased variance
/// (the layout of `kernel_ir::batch_norm::batch_moments`).
///
/// # Panics
/// If `x` is shorter than the layout or `m` than `2c`.
pub fn batch_moments(isa: Isa, l: &ChannelLayout, x: &[f32], m: &mut [f32]) {
    assert!(
        x.len() >= l.len() && m.len() >= 2 * l.c,
        "batch_moments: short buffers"
    );
    per_channel::<2>(l, m, |ch| {
        let (mean, var) = match isa.kind() {
            // SAFETY: the Isa proves the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => unsafe { x86::moments_avx512(l, x, ch) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => unsafe { x86::moments_avx2(l, x, ch) },
            _ => moments_body(l, x, ch),
        };
        [mean, var]
    });
}

/// A batch norm backward's sums of `x` and `dy` with the moments `m` of `x`:
/// `st[4·ch ..] = [mean, 1/√(var + eps), Σ dy, Σ dy·x̂]` (the layout of
/// `kernel_ir::batch_norm::bn_sums`).
///
/// # Panics
/// If a buffer is shorter than the layout asks.
pub fn bn_sums(
    isa: Isa,
    l: &ChannelLayout,
    eps: f32,
    (x, dy, m): (&[f32], &[f32], &[f32]),
    st: &mut [f32],
) {
    assert!(
        x.len() >= l.len() && dy.len() >= l.len() && m.len() >= 2 * l.c && st.len() >= 4 * l.c,
        "bn_sums: short buffers"
    );
    per_channel::<4>(l, st, |ch| {
        let mv = (m[2 * ch], m[2 * ch + 1]);
        match isa.kind() {
            // SAFETY: the Isa proves the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => unsafe { x86::sums_avx512(l, eps, (x, dy), mv, ch) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => unsafe { x86::sums_avx2(l, eps, (x, dy), mv, ch) },
            _ => sums_body(l, eps, (x, dy), mv, ch),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // Off-centre, so the mean matters.
                (s % 20_001) as f32 / 10_000.0 - 0.7
            })
            .collect()
    }

    /// The moments and sums by the definition, in f64.
    fn naive(l: &ChannelLayout, eps: f64, x: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (mut m, mut st) = (vec![], vec![]);
        for ch in 0..l.c {
            let vals: Vec<(f64, f64)> = (0..l.outer)
                .flat_map(|o| (0..l.inner).map(move |i| (o * l.c + ch) * l.inner + i))
                .map(|at| (x[at] as f64, dy[at] as f64))
                .collect();
            let n = vals.len() as f64;
            let mean = vals.iter().map(|v| v.0).sum::<f64>() / n;
            let var = vals.iter().map(|v| (v.0 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + eps).sqrt();
            let sdy = vals.iter().map(|v| v.1).sum::<f64>();
            let sdx = vals.iter().map(|v| v.1 * (v.0 - mean) * inv).sum::<f64>();
            m.extend([mean, var]);
            st.extend([mean, inv, sdy, sdx]);
        }
        (m, st)
    }

    /// Every ISA this CPU has agrees with the definition on awkward layouts: runs
    /// shorter than, not a multiple of, and much longer than the lanes; one channel;
    /// enough values to go over rayon.
    #[test]
    fn equal_the_definition() {
        let layouts = [
            (2, 3, 5),
            (1, 1, 1),
            (3, 7, 67),
            (4, 16, 1024),
            (64, 16, 64),
            (9, 5, 130),
        ];
        let eps = 1e-5;
        for (outer, c, inner) in layouts {
            let l = ChannelLayout { outer, c, inner };
            let (x, dy) = (noise(l.len(), 1), noise(l.len(), 2));
            let (want_m, want_st) = naive(&l, eps, &x, &dy);
            for isa in Isa::available() {
                let mut sums = vec![f32::NAN; c];
                channel_sum(isa, &l, &dy, &mut sums);
                let mut m = vec![f32::NAN; 2 * c];
                batch_moments(isa, &l, &x, &mut m);
                let mut st = vec![f32::NAN; 4 * c];
                bn_sums(isa, &l, eps as f32, (&x, &dy, &m), &mut st);
                let count = (outer * inner) as f64;
                for (i, (g, w)) in m.iter().zip(&want_m).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() < 1e-5,
                        "{l:?} {isa} m[{i}]: {g} vs {w}"
                    );
                }
                let count_tol = 1e-5 * count.sqrt();
                for (ch, g) in sums.iter().enumerate() {
                    let w = want_st[4 * ch + 2];
                    let tol = count_tol * (1.0 + w.abs());
                    assert!(
                        (*g as f64 - w).abs() < tol,
                        "{l:?} {isa} sum[{ch}]: {g} vs {w}"
                    );
                }
                for (i, (g, w)) in st.iter().zip(&want_st).enumerate() {
                    // The sums grow with the count; their rounding with √count.
                    let tol = 1e-5 * (1.0 + w.abs()) * count.sqrt();
                    assert!(
                        (*g as f64 - w).abs() < tol,
                        "{l:?} {isa} st[{i}]: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// A larger buffer (the synchronised plan's moments) is written only in its first
    /// `2c` floats.
    #[test]
    fn writes_only_the_channels() {
        let l = ChannelLayout {
            outer: 2,
            c: 3,
            inner: 4,
        };
        let x = noise(l.len(), 3);
        let mut m = vec![7.0; 10];
        batch_moments(Isa::best(), &l, &x, &mut m);
        assert_eq!(&m[6..], &[7.0; 4]);
        assert!(m[..6].iter().all(|v| *v != 7.0));
    }
}
