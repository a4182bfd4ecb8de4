//! Shared filter bases (Deeply Shared Filter Bases, docs/papers.md §3): a basis declared once
//! per stage, read by the 3×3 convs of several blocks. Each use concatenates its own
//! unique filters with the shared ones, normalises, and mixes them with a 1×1 conv.

use super::args::{opt, req, Bound, ParamSpec, Ty};
use super::builtins::BuiltinCall;
use super::elab::Elab;
use super::layers::ConvSpec;
use super::value::{Spanned, Value};
use crate::diag::{Diagnostic, Span};
use crate::ir::graph::BasisInfo;
use crate::ir::op::{Init, Op, Padding, ParamRole};
use petgraph::stable_graph::NodeIndex;

#[derive(Debug, Default)]
pub struct SharedState {
    pub bases: Vec<BasisState>,
}

#[derive(Debug)]
pub struct BasisState {
    pub name: String,
    pub channels: u64,
    pub shared: u64,
    pub unique: u64,
    pub kernel: u64,
    pub out: u64,
    pub nodes: Vec<NodeIndex>,
    pub info: usize,
}

pub fn basis_params() -> Vec<ParamSpec> {
    vec![
        req("channels", Ty::Int),
        req("shared", Ty::Int),
        req("unique", Ty::Int),
        opt("kernel", Ty::Int, Value::Int(3)),
        opt(
            "out_channels",
            Ty::IntOrWord(&["channels"]),
            Value::Word("channels".into()),
        ),
        opt(
            "sharing",
            Ty::Word(&["single", "double"]),
            Value::Word("single".into()),
        ),
        opt("ortho", Ty::Float, Value::Float(10.0)),
    ]
}

pub fn conv_params() -> Vec<ParamSpec> {
    vec![req("basis", Ty::Basis), opt("part", Ty::Int, Value::Int(1))]
}

fn non_negative(b: &Bound, name: &str) -> Result<u64, Diagnostic> {
    u64::try_from(b.int(name)).map_err(|_| {
        Diagnostic::at(
            "E0204",
            b.span(name),
            format!("`{name}` must be non-negative"),
            "negative",
        )
    })
}

impl Elab<'_> {
    /// `basis NAME = shared_basis(...)`: creates the shared tensors.
    pub(crate) fn declare_basis(
        &mut self,
        name: &str,
        spec: &Spanned,
        span: Span,
    ) -> Result<(), Diagnostic> {
        let Value::Spec(s) = &spec.value else {
            return Err(Diagnostic::at(
                "E0202",
                spec.span,
                format!(
                    "`basis {name}` needs `shared_basis(...)`, got {}",
                    spec.value.type_name()
                ),
                "not a basis",
            )
            .hint("declare it as `basis NAME = shared_basis(channels: C, shared: S, unique: U)`"));
        };
        if s.kind != "shared_basis" {
            return Err(Diagnostic::at(
                "E0202",
                spec.span,
                format!(
                    "`basis {name}` needs `shared_basis(...)`, got `{}(...)`",
                    s.kind
                ),
                "not a basis",
            )
            .hint("declare it as `basis NAME = shared_basis(channels: C, shared: S, unique: U)`"));
        }
        let a = &s.args;
        let channels = a.positive("channels")?;
        let shared = a.positive("shared")?;
        let unique = non_negative(a, "unique")?;
        let kernel = a.positive("kernel")?;
        if kernel % 2 == 0 {
            return Err(Diagnostic::at(
                "E0204",
                a.span("kernel"),
                "basis kernels must be odd (same padding)",
                "even",
            ));
        }
        let out = match a.word("out_channels") {
            Some(_) => channels,
            None => a.positive("out_channels")?,
        };
        let parts = if a.word("sharing") == Some("double") {
            2
        } else {
            1
        };
        let ortho = a.float("ortho");
        if ortho < 0.0 || !ortho.is_finite() {
            return Err(Diagnostic::at(
                "E0204",
                a.span("ortho"),
                "`ortho` must be a non-negative weight",
                "out of range",
            ));
        }
        let before = self.param_total;
        let mut nodes = Vec::new();
        let mut names = Vec::new();
        for part in 0..parts {
            let pname = format!("{name}.shared.{part}.weight");
            nodes.push(self.param(
                pname.clone(),
                &[shared, channels, kernel, kernel],
                ParamRole::Shared,
                Init::Orthogonal { part, parts },
                span,
            )?);
            names.push(pname);
        }
        let info = self.graph.bases.len();
        self.graph.bases.push(BasisInfo {
            name: name.to_string(),
            shared: names,
            unique: Vec::new(),
            ortho_weight: ortho,
        });
        let owned = self.param_total - before;
        self.layers.push(super::elab::LayerRecord {
            path: name.to_string(),
            kind: "shared_basis".into(),
            shape: self.ty(nodes[0]).to_string() + if parts == 2 { " x2" } else { "" },
            params: owned,
            span,
        });
        self.attributed += owned;
        self.shared.bases.push(BasisState {
            name: name.to_string(),
            channels,
            shared,
            unique,
            kernel,
            out,
            nodes,
            info,
        });
        Ok(())
    }
}

pub fn apply_conv(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    let x = c.inputs[0];
    e.spatial_dims(x, "basis_conv", &[4], c.span)?;
    let a = &c.args;
    let Value::Basis(ix) = a.value("basis") else {
        unreachable!("typed as basis")
    };
    let cin = e.known_dim(x, 1, "the number of input channels", c.span)?;
    let b = &e.shared.bases[*ix];
    let (name, channels, shared, unique, kernel, out, info) = (
        b.name.clone(),
        b.channels,
        b.shared,
        b.unique,
        b.kernel,
        b.out,
        b.info,
    );
    if cin != channels {
        return Err(Diagnostic::at(
            "E0401",
            c.span,
            format!("basis `{name}` is for {channels} input channels, but the input has {cin}"),
            format!("input is {}", e.ty(x)),
        )
        .hint("use the basis declared for this stage's width"));
    }
    let part = a.int("part");
    if !(1..=2).contains(&part) {
        return Err(Diagnostic::at(
            "E0204",
            a.span("part"),
            format!("`part` is 1 or 2, got {part}"),
            "out of range",
        )
        .hint("part 1 is a block's first conv, part 2 its second"));
    }
    // With single sharing both convs of a block read the one shared basis.
    let shared_node =
        e.shared.bases[*ix].nodes[(part as usize - 1).min(e.shared.bases[*ix].nodes.len() - 1)];
    let p = c.path.clone();
    let same = Padding::Same;
    let basis_conv = ConvSpec::simple(0, vec![kernel, kernel], same, false);
    let s_out = basis_conv.node(e, &[x, shared_node], &format!("{p}.shared"), c.span)?;
    let z = if unique > 0 {
        let mut u = ConvSpec::simple(unique, vec![kernel, kernel], Padding::Same, false);
        u.init = "kaiming_normal_out".into();
        let u_out = u.build(e, x, &format!("{p}.unique"), c.span)?;
        e.graph.bases[info]
            .unique
            .push(format!("{p}.unique.weight"));
        e.op(
            Op::Concat { axis: 1 },
            &[u_out, s_out],
            &format!("{p}.concat"),
            c.span,
        )?
    } else {
        s_out
    };
    let width = shared.saturating_add(unique);
    let bn = format!("{p}.bn");
    let ops = vec![
        z,
        e.param(
            format!("{bn}.weight"),
            &[width],
            ParamRole::Trainable,
            Init::Ones,
            c.span,
        )?,
        e.param(
            format!("{bn}.bias"),
            &[width],
            ParamRole::Trainable,
            Init::Zeros,
            c.span,
        )?,
        e.param(
            format!("{bn}.running_mean"),
            &[width],
            ParamRole::Buffer,
            Init::Zeros,
            c.span,
        )?,
        e.param(
            format!("{bn}.running_var"),
            &[width],
            ParamRole::Buffer,
            Init::Ones,
            c.span,
        )?,
    ];
    let normed = e.op(
        Op::BatchNorm {
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
            running_stats: true,
        },
        &ops,
        &bn,
        c.span,
    )?;
    let mut coeff = ConvSpec::simple(out, vec![1, 1], Padding::Explicit(vec![(0, 0); 2]), false);
    coeff.init = "kaiming_normal_out".into();
    coeff.build(e, normed, &format!("{p}.coeff"), c.span)
}
