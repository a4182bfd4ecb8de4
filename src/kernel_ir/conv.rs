//! Direct convolution as an explicitly vectorised, register-blocked kernel: each
//! work-item computes `V` consecutive output pixels of one row for `T` output channels
//! (`T` accumulators of `V` lanes), reading one vector of inputs and `T` weights per
//! tap. The epilogue (bias, which carries a folded batch norm; a residual add; ReLU)
//! is applied before the only store, so fusing them costs no memory traffic.
//!
//! The input is read from a zero-padded copy whose rows are long enough for the last
//! tile's vector loads, so the inner loop has no bounds checks; a strided conv's copy
//! is split into phase planes ([`phase_kernel`]) so its loads are contiguous too. Weights are repacked
//! on the host to `[Co/T][Ci][Kh][Kw][T]` (zero rows pad `Co` to a multiple of `T`).

use super::build::*;
use super::{Kernel, Stmt, Ty};

/// One 2D convolution (1D convs are 2D with a height of 1), with its epilogue.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvSpec {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub k: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// (low, high) per axis.
    pub pad: [(usize, usize); 2],
    pub residual: bool,
    pub relu: bool,
}

/// The register tile: `vector` output pixels × `tile_co` output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTile {
    pub vector: u8,
    pub tile_co: usize,
    /// Each weight a scalar load splatted, rather than lanes of one vector load (see
    /// `plan::Target::broadcast_weights`).
    pub broadcast_weights: bool,
}

impl ConvSpec {
    pub fn out(&self) -> [usize; 2] {
        let o = |i: usize, n: usize| {
            (n + self.pad[i].0 + self.pad[i].1 - self.dilation[i] * (self.k[i] - 1) - 1)
                / self.stride[i]
                + 1
        };
        [o(0, self.h), o(1, self.w)]
    }

    pub fn flops(&self) -> u64 {
        let [oh, ow] = self.out();
        2 * (self.n * self.co * oh * ow * self.ci * self.k[0] * self.k[1]) as u64
    }

    /// The padded input the kernel reads: (height, width).
    pub fn padded(&self, tile: ConvTile) -> [usize; 2] {
        let [_, ow] = self.out();
        let v = tile.vector as usize;
        let tiles = ow.div_ceil(v);
        let hp = self.h + self.pad[0].0 + self.pad[0].1;
        let need_w = (tiles * v - 1) * self.stride[1] + self.dilation[1] * (self.k[1] - 1) + 1;
        [hp, (self.w + self.pad[1].0 + self.pad[1].1).max(need_w)]
    }

    /// Whether the input must be copied into a padded buffer first.
    pub fn needs_pad(&self, tile: ConvTile) -> bool {
        self.strided() || self.padded(tile) != [self.h, self.w]
    }

    /// A stride above 1: the input is read in its polyphase layout ([`phase_kernel`]).
    pub fn strided(&self) -> bool {
        self.stride != [1, 1]
    }

    /// The (height, width) of each phase plane of a strided conv's input: the padded
    /// input split into `stride[0] × stride[1]` planes, plane `(p, q)` holding rows
    /// `p, p + s₀, …` and columns `q, q + s₁, …`. Tap `(kh, kw)` of output pixel
    /// `(oh, ow)` is then element `(oh + kh·d₀/s₀, ow + kw·d₁/s₁)` of plane
    /// `(kh·d₀ mod s₀, kw·d₁ mod s₁)`: consecutive output columns read consecutive
    /// elements. With `tile`, rows are long enough for the last tile's vector loads.
    pub fn phase_plane(&self, tile: Option<ConvTile>) -> [usize; 2] {
        let [s0, s1] = self.stride;
        let hp = self.h + self.pad[0].0 + self.pad[0].1;
        let wp = self.w + self.pad[1].0 + self.pad[1].1;
        let mut wq = wp.div_ceil(s1);
        if let Some(t) = tile {
            let v = t.vector as usize;
            let last = self.out()[1].div_ceil(v) * v;
            wq = wq.max(last + self.dilation[1] * (self.k[1] - 1) / s1);
        }
        [hp.div_ceil(s0), wq]
    }
}

/// A strided conv's input `[planes, h, w]`, zero-padded at (top, left), in the
/// polyphase layout of [`ConvSpec::phase_plane`]: `[planes, s₀, s₁, hq, wq]`. Read
/// with stride-`s` gathers, ResNet-20's stride-2 convs ran at a fifth of the
/// stride-1 convs' rate in the filter gradient and under half in the forward.
pub fn phase_kernel(
    name: &str,
    planes: usize,
    [h, w]: [usize; 2],
    [hq, wq]: [usize; 2],
    [s0, s1]: [usize; 2],
    [top, left]: [usize; 2],
) -> Kernel {
    let ih = var("r") * s0 + var("p") - top;
    let iw = var("q") * s1 + var("t") - left;
    let inside = and(
        and(le(int(0), ih.clone()), lt(ih.clone(), int(h))),
        and(le(int(0), iw.clone()), lt(iw.clone(), int(w))),
    );
    Kernel {
        name: name.to_string(),
        params: vec![param("x", true), param("y", false)],
        body: vec![
            let_("q", Ty::I32, gid(0)),
            let_("r", Ty::I32, gid(1)),
            let_("pl", Ty::I32, gid(2) / (s0 * s1)),
            let_("p", Ty::I32, gid(2) % (s0 * s1) / s1),
            let_("t", Ty::I32, gid(2) % s1),
            store(
                "y",
                (gid(2) * hq + var("r")) * wq + var("q"),
                select(
                    inside,
                    load("x", (var("pl") * h + ih) * w + iw, 1),
                    float(0.0),
                ),
                1,
            ),
        ],
        grid: vec![wq, hq, planes * s0 * s1],
        local: None,
        flops: 0,
    }
}

/// Zero-pads `[planes, h, w]` into `[planes, hp, wp]` at offset (top, left).
#[allow(clippy::too_many_arguments)]
pub fn pad_kernel(
    name: &str,
    planes: usize,
    h: usize,
    w: usize,
    hp: usize,
    wp: usize,
    top: usize,
    left: usize,
) -> Kernel {
    let ih = var("oh") - top;
    let iw = var("ow") - left;
    let inside = and(
        and(le(int(0), ih.clone()), lt(ih.clone(), int(h))),
        and(le(int(0), iw.clone()), lt(iw.clone(), int(w))),
    );
    Kernel {
        name: name.to_string(),
        params: vec![param("x", true), param("y", false)],
        body: vec![
            let_("ow", Ty::I32, gid(0)),
            let_("oh", Ty::I32, gid(1)),
            let_("pl", Ty::I32, gid(2)),
            store(
                "y",
                (var("pl") * hp + var("oh")) * wp + var("ow"),
                select(
                    inside,
                    load("x", (var("pl") * h + ih) * w + iw, 1),
                    float(0.0),
                ),
                1,
            ),
        ],
        grid: vec![wp, hp, planes],
        local: None,
        flops: 0,
    }
}

/// The conv kernel reading the (padded) input `x` of `[n, ci, hp, wp]`, packed weights
/// `w`, bias `b` (`Co` rounded up to the tile) and, with a residual, `r` shaped like
/// the output `y`.
pub fn conv_kernel(name: &str, s: &ConvSpec, tile: ConvTile) -> Kernel {
    let v = tile.vector;
    let vw = v as usize;
    let t = tile.tile_co;
    let [oh_n, ow_n] = s.out();
    let [hp, wp] = if s.strided() {
        s.phase_plane(Some(tile))
    } else if s.needs_pad(tile) {
        s.padded(tile)
    } else {
        [s.h, s.w]
    };
    // Strided: each input channel is `s₀·s₁` phase planes of `hp × wp`.
    let [s0, s1] = s.stride;
    let [d0, d1] = s.dilation;
    let strided = s.strided();
    let channel = if strided { s0 * s1 * hp * wp } else { hp * wp };
    let tiles = ow_n.div_ceil(vw);
    let cob_n = s.co.div_ceil(t);
    let acc = |j: usize| format!("acc{j}");
    let mut body = vec![
        let_("ow0", Ty::I32, gid(0) * vw),
        let_("oh", Ty::I32, gid(1)),
        let_("n", Ty::I32, gid(2) / cob_n),
        let_("cob", Ty::I32, gid(2) % cob_n),
        let_(
            "xb",
            Ty::I32,
            if strided {
                var("n") * (s.ci * channel) + var("oh") * wp + var("ow0")
            } else {
                var("n") * (s.ci * channel) + var("oh") * (s0 * wp) + var("ow0") * s1
            },
        ),
        let_("wb", Ty::I32, var("cob") * (s.ci * s.k[0] * s.k[1] * t)),
    ];
    for j in 0..t {
        body.push(let_(&acc(j), Ty::f32x(v), splat(float(0.0), v)));
    }
    // The tap loop: one vector of inputs, `t` weights, `t` vector FMAs. On CPUs each
    // weight is a scalar load splatted (a broadcast from memory on x86, a load port):
    // loading the `t` weights as one vector and splatting its lanes made every FMA
    // wait on a lane shuffle, and ran ResNet-20 at batch 64 on PoCL 1.5× slower.
    let xv = if strided {
        let kw = var("kw") * d1;
        let at = var("xr") + (kw.clone() % s1) * (hp * wp) + kw / s1;
        load("x", at, v)
    } else {
        gather("x", var("xr") + var("kw") * d1, s1 as i64, v)
    };
    let mut tap = vec![let_("xv", Ty::f32x(v), xv)];
    let by_lane = !tile.broadcast_weights && t > 1;
    if by_lane {
        let wty = Ty::f32x(t as u8);
        tap.push(let_(
            "wv",
            wty,
            load("w", var("wr") + var("kw") * t, t as u8),
        ));
    }
    for j in 0..t {
        let wj = if by_lane {
            lane(var("wv"), j as u8)
        } else {
            load("w", var("wr") + var("kw") * t + j, 1)
        };
        tap.push(assign(&acc(j), fma(var("xv"), splat(wj, v), var(&acc(j)))));
    }
    let small = s.k[0] * s.k[1] <= 49;
    let kh_body = vec![
        let_(
            "xr",
            Ty::I32,
            if strided {
                let kh = var("kh") * d0;
                var("xc") + (kh.clone() % s0) * (s1 * hp * wp) + kh / s0 * wp
            } else {
                var("xc") + var("kh") * (d0 * wp)
            },
        ),
        let_("wr", Ty::I32, var("wc") + var("kh") * (s.k[1] * t)),
        for_("kw", int(0), int(s.k[1]), small, tap),
    ];
    body.push(for_(
        "ci",
        int(0),
        int(s.ci),
        false,
        vec![
            let_("xc", Ty::I32, var("xb") + var("ci") * channel),
            let_("wc", Ty::I32, var("wb") + var("ci") * (s.k[0] * s.k[1] * t)),
            for_("kh", int(0), int(s.k[0]), small, kh_body),
        ],
    ));
    // Epilogue.
    let plane = oh_n * ow_n;
    body.push(let_(
        "yb",
        Ty::I32,
        ((var("n") * s.co + var("cob") * t) * oh_n + var("oh")) * ow_n + var("ow0"),
    ));
    for j in 0..t {
        let co = var("cob") * t + j;
        let yj = var("yb") + j * plane;
        let bias = load("b", co.clone(), 1);
        let mut full = vec![let_(
            "v",
            Ty::f32x(v),
            var(&acc(j)) + splat(bias.clone(), v),
        )];
        let mut lanes = Vec::new();
        for l in 0..v {
            let mut st = vec![let_("u", Ty::F32, lane(var(&acc(j)), l) + bias.clone())];
            if s.residual {
                st.push(assign(
                    "u",
                    var("u") + load("r", yj.clone() + l as usize, 1),
                ));
            }
            if s.relu {
                st.push(assign("u", max(var("u"), float(0.0))));
            }
            st.push(store("y", yj.clone() + l as usize, var("u"), 1));
            lanes.push(if_(lt(var("ow0") + l as usize, int(ow_n)), st, vec![]));
        }
        if s.residual {
            full.push(assign("v", var("v") + load("r", yj.clone(), v)));
        }
        if s.relu {
            full.push(assign("v", max(var("v"), float(0.0))));
        }
        full.push(store("y", yj, var("v"), v));
        let mut write: Vec<Stmt> = if ow_n.is_multiple_of(vw) {
            full
        } else {
            vec![if_(le(var("ow0") + vw, int(ow_n)), full, lanes)]
        };
        if !s.co.is_multiple_of(t) {
            write = vec![if_(lt(co, int(s.co)), write, vec![])];
        }
        body.push(Stmt::Block(write));
    }
    let mut params = vec![param("x", true), param("w", true), param("b", true)];
    if s.residual {
        params.push(param("r", true));
    }
    params.push(param("y", false));
    Kernel {
        name: name.to_string(),
        params,
        body,
        grid: vec![tiles, oh_n, s.n * cob_n],
        local: None,
        flops: s.flops(),
    }
}

/// Weights `[co, ci, kh, kw]` scaled per output channel, packed to
/// `[ceil(co/t)][ci][kh][kw][t]`; the bias padded to `ceil(co/t)·t`.
pub fn pack_weights(
    w: &[f32],
    bias: &[f32],
    scale: &[f32],
    s: &ConvSpec,
    tile: ConvTile,
) -> (Vec<f32>, Vec<f32>) {
    let t = tile.tile_co;
    let cob_n = s.co.div_ceil(t);
    let taps = s.k[0] * s.k[1];
    let mut packed = vec![0.0; cob_n * t * s.ci * taps];
    for co in 0..s.co {
        let (cb, j) = (co / t, co % t);
        for ci in 0..s.ci {
            for k in 0..taps {
                packed[((cb * s.ci + ci) * taps + k) * t + j] =
                    w[(co * s.ci + ci) * taps + k] * scale[co];
            }
        }
    }
    let mut b = vec![0.0; cob_n * t];
    b[..s.co].copy_from_slice(&bias[..s.co]);
    (packed, b)
}
