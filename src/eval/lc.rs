//! `lc`: a frozen random k×k basis expanding to E·Cout channels, followed directly by a
//! learned 1×1 combination ("random convolutions", docs/papers.md §2). Nothing sits between
//! the two convs, so the pair folds exactly into one conv.

use super::args::{opt, req, ParamSpec, Ty};
use super::builtins::BuiltinCall;
use super::elab::Elab;
use super::layers::{algo, ConvSpec};
use super::value::Value;
use crate::diag::Diagnostic;
use crate::ir::op::{FanMode, Init, Padding, ParamRole};
use petgraph::stable_graph::NodeIndex;

pub fn params() -> Vec<ParamSpec> {
    vec![
        req("out_channels", Ty::Int),
        req("kernel", Ty::Ints),
        opt("expansion", Ty::Int, Value::Int(1)),
        opt("stride", Ty::Ints, Value::Int(1)),
        opt(
            "padding",
            Ty::IntsOrWord(&["same", "valid"]),
            Value::Word("same".into()),
        ),
        opt("dilation", Ty::Ints, Value::Int(1)),
        opt(
            "init",
            Ty::Word(&["kaiming_uniform", "kaiming_normal", "uniform", "normal"]),
            Value::Word("kaiming_uniform".into()),
        ),
        opt("seed", Ty::IntOrWord(&["auto"]), Value::Word("auto".into())),
        opt("learnable", Ty::Bool, Value::Bool(false)),
        opt(
            "algo",
            Ty::Word(&["auto", "direct", "im2col", "fft", "winograd2", "winograd4"]),
            Value::Word("auto".into()),
        ),
    ]
}

pub fn apply(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    let x = c.inputs[0];
    let dims = e.spatial_dims(x, "lc", &[3, 4], c.span)?;
    let a = &c.args;
    let cin = e.known_dim(x, 1, "the number of input channels", c.span)?;
    let out = a.positive("out_channels")?;
    let expansion = a.positive("expansion")?;
    let wide = out.checked_mul(expansion).ok_or_else(|| {
        Diagnostic::at(
            "E0302",
            a.span("expansion"),
            "expansion too large",
            "overflows",
        )
    })?;
    let kernel = a.ints("kernel", dims, 1)?;
    let padding = match a.word("padding") {
        Some("same") => Padding::Same,
        Some(_) => Padding::Explicit(vec![(0, 0); dims]),
        None => Padding::Explicit(
            a.ints("padding", dims, 0)?
                .into_iter()
                .map(|p| (p, p))
                .collect(),
        ),
    };
    let seed = match a.word("seed") {
        Some(_) => None,
        None => Some(u64::try_from(a.int("seed")).map_err(|_| {
            Diagnostic::at(
                "E0204",
                a.span("seed"),
                "seed must be non-negative",
                "negative",
            )
        })?),
    };
    // Saturating: absurd sizes are rejected when the weight is created.
    let fan_in = kernel.iter().fold(cin, |a, k| a.saturating_mul(*k));
    let init = match a.word("init") {
        Some("kaiming_normal") => Init::KaimingNormal {
            fan: fan_in,
            mode: FanMode::In,
            gain: 2f64.sqrt(),
        },
        Some("uniform") => Init::Uniform {
            low: -1.0,
            high: 1.0,
        },
        Some("normal") => Init::Normal {
            mean: 0.0,
            std: 1.0,
        },
        _ => Init::KaimingUniform { fan_in },
    };
    let role = if a.bool("learnable") {
        ParamRole::Trainable
    } else {
        ParamRole::Frozen
    };
    let p = &c.path;
    let mut shape = vec![wide, cin];
    shape.extend(&kernel);
    let basis_w = e.seeded_param(
        format!("{p}.basis.weight"),
        &shape,
        role,
        init,
        seed,
        c.span,
    )?;
    let mut basis = ConvSpec::simple(wide, kernel, padding, false);
    basis.stride = a.ints("stride", dims, 1)?;
    basis.dilation = a.ints("dilation", dims, 1)?;
    basis.algo = algo(a);
    let z = basis.node(e, &[x, basis_w], &format!("{p}.basis"), c.span)?;
    let coeff = ConvSpec::simple(
        out,
        vec![1; dims],
        Padding::Explicit(vec![(0, 0); dims]),
        false,
    );
    coeff.build_with(e, z, &format!("{p}.coeff"), c.span, ParamRole::Trainable)
}
