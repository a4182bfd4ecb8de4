//! `flexconv`: a continuous kernel (MAGNet evaluated on a coordinate grid) times a
//! learnable Gaussian mask, cropped where the mask falls below a threshold, so the
//! kernel size is learned (FlexConv, docs/papers.md §1). Elaboration emits the unfused
//! pieces — grid, crop, kernel net, mask, product, conv — for the passes to fuse.

use super::args::{opt, req, Bound, ParamSpec, Ty};
use super::builtins::{default_spec, BuiltinCall};
use super::elab::Elab;
use super::layers::algo;
use super::value::Value;
use crate::diag::Diagnostic;
use crate::ir::graph::FlexInfo;
use crate::ir::op::{ConvAttrs, Init, Op, Padding, ParamRole};
use petgraph::stable_graph::NodeIndex;

pub fn params() -> Vec<ParamSpec> {
    vec![
        req("out_channels", Ty::Int),
        opt(
            "horizon",
            Ty::IntOrWord(&["same"]),
            Value::Word("same".into()),
        ),
        opt("kernel", Ty::Spec("magnet"), Value::Word("default".into())),
        opt(
            "mask",
            Ty::SpecOrNone("gauss"),
            Value::Word("default".into()),
        ),
        opt("causal", Ty::Bool, Value::Bool(false)),
        opt("bias", Ty::Bool, Value::Bool(true)),
        opt("antialias", Ty::Float, Value::Float(0.0)),
        opt("sampling_rate_norm", Ty::Float, Value::Float(1.0)),
        opt(
            "algo",
            Ty::Word(&["auto", "direct", "im2col", "fft", "winograd2", "winograd4"]),
            Value::Word("auto".into()),
        ),
    ]
}

/// `magnet(hidden, layers, input_scale)`: the multiplicative anisotropic Gabor network.
pub fn magnet_params() -> Vec<ParamSpec> {
    vec![
        opt("hidden", Ty::Int, Value::Int(32)),
        opt("layers", Ty::Int, Value::Int(3)),
        opt("input_scale", Ty::Float, Value::Float(25.6)),
        opt("alpha", Ty::Float, Value::Float(6.0)),
        opt("beta", Ty::Float, Value::Float(1.0)),
    ]
}

/// `gauss(sigma, threshold, learnable, mean)`: the separable Gaussian mask.
pub fn gauss_params() -> Vec<ParamSpec> {
    vec![
        opt("sigma", Ty::Float, Value::Float(0.075)),
        opt("threshold", Ty::Float, Value::Float(0.1)),
        opt("learnable", Ty::Bool, Value::Bool(true)),
        opt("mean", Ty::Any, Value::Word("auto".into())),
    ]
}

fn spec_args(b: &Bound, name: &str, kind: &'static str, span: crate::diag::Span) -> Option<Bound> {
    match b.value(name) {
        Value::Spec(s) => Some(s.args.clone()),
        Value::Word(w) if w == "none" => None,
        _ => Some(default_spec(kind, span)),
    }
}

fn positive_f(b: &Bound, name: &str) -> Result<f64, Diagnostic> {
    let v = b.float(name);
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(Diagnostic::at(
            "E0204",
            b.span(name),
            format!("`{name}` must be positive, got {v}"),
            "out of range",
        ))
    }
}

/// Warns (once per place in the source) when a horizon is more than twice the input
/// along axis `d`: taps that far from the centre never touch the input, yet the kernel
/// net is evaluated on every one of them, at a memory cost that grows with the square
/// of the horizon in 2D.
fn far_horizon(
    e: &mut Elab,
    span: crate::diag::Span,
    k: u64,
    x: NodeIndex,
    d: usize,
    causal: bool,
) {
    let Some(n) = e.graph.node(x).ty.shape.get(2 + d).and_then(|s| s.known()) else {
        return;
    };
    if k <= n.saturating_mul(2) || e.warnings.iter().any(|w| w.primary_span() == Some(span)) {
        return;
    }
    let same = if causal || n % 2 == 1 { n } else { n + 1 };
    e.warnings.push(
        Diagnostic::at(
            "W0401",
            span,
            format!("flexconv horizon {k} is far beyond the input size {n}"),
            format!("horizon {k} for an input of {n}"),
        )
        .note(format!(
            "taps more than {} steps {} never touch the input, but the kernel net is evaluated on all {k} per axis",
            n.saturating_sub(1),
            if causal { "back" } else { "from the centre" }
        ))
        .hint(format!("use `horizon: same` ({same} here), as the paper does"))
        .warning(),
    );
}

pub fn apply(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    let x = c.inputs[0];
    let dims = e.spatial_dims(x, "flexconv", &[3, 4], c.span)?;
    let a = &c.args;
    let causal = a.bool("causal");
    if causal && dims != 1 {
        return Err(Diagnostic::at(
            "E0204",
            a.span("causal"),
            "causal flexconv exists only for 1D sequences",
            "here",
        )
        .hint("2D flexconvs are centred; drop `causal: true`"));
    }
    let cin = e.known_dim(x, 1, "the number of input channels", c.span)?;
    let out = a.positive("out_channels")?;
    let mut horizon = Vec::with_capacity(dims);
    for d in 0..dims {
        let k = match a.word("horizon") {
            // `same` is the input size; a centred kernel needs an odd size, so an even
            // input rounds up, as the paper does (horizon 33 at 32 px).
            Some(_) => {
                let n = e.known_dim(x, 2 + d, "the input length (for `horizon: same`)", c.span)?;
                if causal || n % 2 == 1 {
                    n
                } else {
                    n + 1
                }
            }
            None => a.positive("horizon")?,
        };
        if !causal && k % 2 == 0 {
            return Err(Diagnostic::at(
                "E0204",
                a.span("horizon"),
                format!("a centred flexconv needs an odd horizon, got {k}"),
                "even horizon",
            )
            .hint(format!(
                "use `horizon: {}` (input size + 1, as the paper does)",
                k + 1
            )));
        }
        far_horizon(e, a.span("horizon"), k, x, d, causal);
        horizon.push(k);
    }
    let kernel = spec_args(a, "kernel", "magnet", c.span).expect("kernel is never none");
    let hidden = kernel.positive("hidden")?;
    let layers = kernel.positive("layers")?;
    let input_scale = positive_f(&kernel, "input_scale")?;
    let (alpha, beta) = (positive_f(&kernel, "alpha")?, positive_f(&kernel, "beta")?);
    let mask = spec_args(a, "mask", "gauss", c.span);
    let srn = positive_f(a, "sampling_rate_norm")?;
    let p = c.path.clone();
    let d = dims as u64;
    let span = c.span;

    // Gabor centres start inside the initial mask (1.667 σ), or span the grid without one.
    let mu_range = match &mask {
        Some(m) => 1.667 * positive_f(m, "sigma")?,
        None => 1.0,
    };
    let grid = e.op(
        Op::CoordGrid {
            horizon: horizon.clone(),
        },
        &[],
        &format!("{p}.grid"),
        span,
    )?;
    let mut magnet_operands = vec![grid];
    let kn = format!("{p}.kernel_net");
    for l in 0..=layers {
        let f = format!("{kn}.filters.{l}");
        let gamma_name = format!("{f}.gamma");
        let sine = Init::MagnetSine {
            fan_in: d,
            scale: input_scale / ((layers + 1) as f64).sqrt(),
            gamma: gamma_name.clone(),
        };
        let pi = std::f64::consts::PI;
        magnet_operands.push(e.param(
            format!("{f}.linear.weight"),
            &[hidden, d],
            ParamRole::Trainable,
            sine,
            span,
        )?);
        magnet_operands.push(e.param(
            format!("{f}.linear.bias"),
            &[hidden],
            ParamRole::Trainable,
            Init::Uniform { low: -pi, high: pi },
            span,
        )?);
        let gamma = Init::Gamma {
            alpha: alpha / (l + 1) as f64,
            beta,
        };
        magnet_operands.push(e.param(
            gamma_name,
            &[hidden, d],
            ParamRole::Trainable,
            gamma,
            span,
        )?);
        let mu = Init::Uniform {
            low: -mu_range,
            high: mu_range,
        };
        magnet_operands.push(e.param(
            format!("{f}.mu"),
            &[hidden, d],
            ParamRole::Trainable,
            mu,
            span,
        )?);
    }
    let bound = (1.0 / hidden as f64).sqrt();
    for l in 0..layers {
        let h = format!("{kn}.linears.{l}");
        magnet_operands.push(e.param(
            format!("{h}.weight"),
            &[hidden, hidden],
            ParamRole::Trainable,
            Init::Uniform {
                low: -bound,
                high: bound,
            },
            span,
        )?);
        magnet_operands.push(e.param(
            format!("{h}.bias"),
            &[hidden],
            ParamRole::Trainable,
            Init::KaimingUniform { fan_in: hidden },
            span,
        )?);
    }
    let outs = out
        .checked_mul(cin)
        .ok_or_else(|| Diagnostic::at("E0302", span, "kernel too large", "here"))?;
    let o = format!("{kn}.output_linear");
    magnet_operands.push(e.param(
        format!("{o}.weight"),
        &[outs, hidden],
        ParamRole::Trainable,
        Init::KaimingUniform { fan_in: hidden },
        span,
    )?);
    magnet_operands.push(e.param(
        format!("{o}.bias"),
        &[outs],
        ParamRole::Trainable,
        Init::KaimingUniform { fan_in: hidden },
        span,
    )?);

    let mut kernel_node = match &mask {
        Some(m) => {
            let sigma = positive_f(m, "sigma")?;
            let threshold = m.float("threshold");
            if !(threshold > 0.0 && threshold < 1.0) {
                return Err(Diagnostic::at(
                    "E0204",
                    m.span("threshold"),
                    format!("mask threshold must be in (0, 1), got {threshold}"),
                    "out of range",
                ));
            }
            let mean = match m.value("mean") {
                Value::Int(v) => *v as f64,
                Value::Float(v) => *v,
                Value::Word(w) if w == "auto" => {
                    if causal {
                        1.0
                    } else {
                        0.0
                    }
                }
                other => {
                    return Err(Diagnostic::at(
                        "E0202",
                        m.span("mean"),
                        format!("expected a number, got {}", other.type_name()),
                        "not a number",
                    ))
                }
            };
            let role = if m.bool("learnable") {
                ParamRole::Trainable
            } else {
                ParamRole::Frozen
            };
            let mask_params = e.param(
                format!("{p}.mask_params"),
                &[d, 2],
                role,
                Init::GaussMask { mean, sigma },
                span,
            )?;
            let cropped = e.op(
                Op::MaskCrop { threshold, causal },
                &[grid, mask_params],
                &format!("{p}.crop"),
                span,
            )?;
            magnet_operands[0] = cropped;
            let k = e.op(
                Op::Magnet {
                    layers,
                    hidden,
                    out_channels: out,
                    in_channels: cin,
                },
                &magnet_operands,
                &format!("{p}.kernel"),
                span,
            )?;
            let mvals = e.op(
                Op::GaussMask,
                &[cropped, mask_params],
                &format!("{p}.mask"),
                span,
            )?;
            e.op(Op::MaskMul, &[k, mvals], &format!("{p}.masked"), span)?
        }
        None => e.op(
            Op::Magnet {
                layers,
                hidden,
                out_channels: out,
                in_channels: cin,
            },
            &magnet_operands,
            &format!("{p}.kernel"),
            span,
        )?,
    };
    if srn != 1.0 {
        kernel_node = e.op(
            Op::Scale { factor: srn },
            &[kernel_node],
            &format!("{p}.srn"),
            span,
        )?;
    }
    let mut operands = vec![x, kernel_node];
    let bias = a.bool("bias");
    if bias {
        operands.push(e.param(
            format!("{p}.bias"),
            &[out],
            ParamRole::Trainable,
            Init::Zeros,
            span,
        )?);
    }
    e.graph.flexconvs.push(FlexInfo {
        name: p.clone(),
        horizon,
        antialias_weight: a.float("antialias"),
    });
    e.op(
        Op::Conv(ConvAttrs {
            stride: vec![1; dims],
            padding: if causal {
                Padding::Causal
            } else {
                Padding::Same
            },
            dilation: vec![1; dims],
            groups: 1,
            bias,
            algo: algo(a),
        }),
        &operands,
        &p,
        span,
    )
}
