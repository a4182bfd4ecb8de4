//! Grouped (and depthwise) convolution: one work-item per output element, reading the
//! input with bounds checks instead of a padded copy. Grouped convs in the examples are
//! small (depthwise ones have one input channel per output), so this favours generality
//! over register blocking. Weights `[Co, Ci/groups, kh, kw]` arrive scaled per output
//! channel (a folded batch norm); the epilogue is the direct conv's.

use super::build::*;
use super::conv::ConvSpec;
use super::{Kernel, Ty};

/// The kernel reading `x [n, ci, h, w]`, `w [co, ci/groups, kh, kw]`, bias `b [co]`
/// (and the residual `r`), writing `y [n, co, oh, ow]`.
pub fn grouped_conv_kernel(name: &str, s: &ConvSpec, groups: usize) -> Kernel {
    let [oh_n, ow_n] = s.out();
    let (cig, cog) = (s.ci / groups, s.co / groups);
    let [kh_n, kw_n] = s.k;
    let ih = var("oh") * s.stride[0] + var("kh") * s.dilation[0] - s.pad[0].0;
    let iw = var("ow") * s.stride[1] + var("kw") * s.dilation[1] - s.pad[1].0;
    let tap = vec![
        let_("iw", Ty::I32, iw),
        if_(
            and(le(int(0), var("iw")), lt(var("iw"), int(s.w))),
            vec![assign(
                "acc",
                fma(
                    load("x", var("xr") + var("iw"), 1),
                    load("w", var("wr") + var("kw"), 1),
                    var("acc"),
                ),
            )],
            vec![],
        ),
    ];
    let row = vec![
        let_("ih", Ty::I32, ih),
        if_(
            and(le(int(0), var("ih")), lt(var("ih"), int(s.h))),
            vec![
                let_("xr", Ty::I32, var("xc") + var("ih") * s.w),
                let_("wr", Ty::I32, var("wc") + var("kh") * kw_n),
                for_("kw", int(0), int(kw_n), false, tap),
            ],
            vec![],
        ),
    ];
    let mut body = vec![
        let_("ow", Ty::I32, gid(0)),
        let_("oh", Ty::I32, gid(1)),
        let_("n", Ty::I32, gid(2) / s.co),
        let_("co", Ty::I32, gid(2) % s.co),
        let_("g", Ty::I32, var("co") / cog),
        let_("acc", Ty::F32, float(0.0)),
        for_(
            "ci",
            int(0),
            int(cig),
            false,
            vec![
                let_(
                    "xc",
                    Ty::I32,
                    (var("n") * s.ci + var("g") * cig + var("ci")) * (s.h * s.w),
                ),
                let_("wc", Ty::I32, (var("co") * cig + var("ci")) * (kh_n * kw_n)),
                for_("kh", int(0), int(kh_n), false, row),
            ],
        ),
        let_(
            "dst",
            Ty::I32,
            (gid(2) * oh_n + var("oh")) * ow_n + var("ow"),
        ),
        let_("u", Ty::F32, var("acc") + load("b", var("co"), 1)),
    ];
    let mut params = vec![param("x", true), param("w", true), param("b", true)];
    if s.residual {
        body.push(assign("u", var("u") + load("r", var("dst"), 1)));
        params.push(param("r", true));
    }
    if s.relu {
        body.push(assign("u", max(var("u"), float(0.0))));
    }
    body.push(store("y", var("dst"), var("u"), 1));
    params.push(param("y", false));
    Kernel {
        name: name.to_string(),
        params,
        body,
        grid: vec![ow_n, oh_n, s.n * s.co],
        local: None,
        flops: 2 * (s.n * s.co * oh_n * ow_n * cig * kh_n * kw_n) as u64,
    }
}
