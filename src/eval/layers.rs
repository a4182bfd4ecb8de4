//! The standard layers: convolutions (and `ConvSpec`, shared with the layers that
//! contain convolutions), linear, batchnorm, activations, dropout, pools, concat and
//! shortcuts.

use super::args::Bound;
use super::builtins::BuiltinCall;
use super::elab::Elab;
use super::scope::Naming;
use super::value::Value;
use crate::diag::{Diagnostic, Span};
use crate::ir::op::{
    ConvAlgo, ConvAttrs, FanMode, Init, Op, Padding, ParamRole, PoolKind, PoolSpec,
};
use petgraph::stable_graph::NodeIndex;

pub(crate) fn resolve_padding(args: &Bound, dims: usize) -> Result<Padding, Diagnostic> {
    Ok(match args.word("padding") {
        Some("same") => Padding::Same,
        Some("valid") => Padding::Explicit(vec![(0, 0); dims]),
        Some(_) => {
            if dims != 1 {
                return Err(Diagnostic::at(
                    "E0204",
                    args.span("padding"),
                    "`causal` padding exists only for 1D convolutions",
                    "here",
                )
                .hint("use `padding: same` for images"));
            }
            Padding::Causal
        }
        None => Padding::Explicit(
            args.ints("padding", dims, 0)?
                .into_iter()
                .map(|p| (p, p))
                .collect(),
        ),
    })
}

pub fn algo(args: &Bound) -> ConvAlgo {
    match args.word("algo") {
        Some("direct") => ConvAlgo::Direct,
        Some("im2col") => ConvAlgo::Im2col,
        Some("fft") => ConvAlgo::Fft,
        Some("winograd2") => ConvAlgo::Winograd2,
        Some("winograd4") => ConvAlgo::Winograd4,
        _ => ConvAlgo::Auto,
    }
}

pub(crate) fn conv1d(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    conv(e, c, 1)
}

pub(crate) fn conv2d(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    conv(e, c, 2)
}

pub(crate) fn conv(e: &mut Elab, c: &BuiltinCall, dims: usize) -> Result<NodeIndex, Diagnostic> {
    let x = c.inputs[0];
    let name = if dims == 1 { "conv1d" } else { "conv2d" };
    e.spatial_dims(x, name, &[dims + 2], c.span)?;
    let a = &c.args;
    let cin = e.known_dim(x, 1, "the number of input channels", c.span)?;
    let out = a.positive("out_channels")?;
    let kernel = a.ints("kernel", dims, 1)?;
    let groups = a.positive("groups")?;
    if cin % groups != 0 || out % groups != 0 {
        return Err(Diagnostic::at(
            "E0204",
            a.span("groups"),
            format!("groups = {groups} must divide both input channels ({cin}) and out_channels ({out})"),
            "does not divide",
        ));
    }
    let spec = ConvSpec {
        out,
        kernel,
        stride: a.ints("stride", dims, 1)?,
        padding: resolve_padding(a, dims)?,
        dilation: a.ints("dilation", dims, 1)?,
        groups,
        bias: a.bool("bias"),
        algo: algo(a),
        init: a.word("init").unwrap_or("default").to_string(),
    };
    spec.build(e, x, &c.path, c.span)
}

/// A plain convolution's parameters and attributes, shared by the layers that contain
/// convolutions (shortcut projections, LC, basis convs).
pub struct ConvSpec {
    pub out: u64,
    pub kernel: Vec<u64>,
    pub stride: Vec<u64>,
    pub padding: Padding,
    pub dilation: Vec<u64>,
    pub groups: u64,
    pub bias: bool,
    pub algo: ConvAlgo,
    /// `default` (PyTorch: Kaiming-uniform, bound 1/√fan_in), `kaiming_normal_in` or
    /// `kaiming_normal_out` (ReLU gain, zero bias).
    pub init: String,
}

impl ConvSpec {
    pub fn simple(out: u64, kernel: Vec<u64>, padding: Padding, bias: bool) -> ConvSpec {
        let dims = kernel.len();
        ConvSpec {
            out,
            kernel,
            stride: vec![1; dims],
            padding,
            dilation: vec![1; dims],
            groups: 1,
            bias,
            algo: ConvAlgo::Auto,
            init: "default".into(),
        }
    }

    pub fn weight_init(&self, cin: u64) -> (Init, Init) {
        // Saturating: absurd sizes are rejected when the weight is created.
        let area = self.kernel.iter().fold(1u64, |a, k| a.saturating_mul(*k));
        let fan_in = (cin / self.groups).saturating_mul(area);
        let fan_out = (self.out / self.groups).saturating_mul(area);
        match self.init.as_str() {
            "kaiming_normal_in" => (
                Init::KaimingNormal {
                    fan: fan_in,
                    mode: FanMode::In,
                    gain: 2f64.sqrt(),
                },
                Init::Zeros,
            ),
            "kaiming_normal_out" => (
                Init::KaimingNormal {
                    fan: fan_out,
                    mode: FanMode::Out,
                    gain: 2f64.sqrt(),
                },
                Init::Zeros,
            ),
            _ => (
                Init::KaimingUniform { fan_in },
                Init::KaimingUniform { fan_in },
            ),
        }
    }

    /// Creates `{path}.weight` (and `.bias`) with `role`, then the conv node.
    pub fn build_with(
        &self,
        e: &mut Elab,
        x: NodeIndex,
        path: &str,
        span: Span,
        role: ParamRole,
    ) -> Result<NodeIndex, Diagnostic> {
        let cin = e.known_dim(x, 1, "the number of input channels", span)?;
        let mut shape = vec![self.out, cin / self.groups];
        shape.extend(&self.kernel);
        let (w_init, b_init) = self.weight_init(cin);
        let w = e.param(format!("{path}.weight"), &shape, role, w_init, span)?;
        let mut operands = vec![x, w];
        if self.bias {
            operands.push(e.param(format!("{path}.bias"), &[self.out], role, b_init, span)?);
        }
        self.node(e, &operands, path, span)
    }

    pub fn build(
        &self,
        e: &mut Elab,
        x: NodeIndex,
        path: &str,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        self.build_with(e, x, path, span, ParamRole::Trainable)
    }

    /// The conv node over given operands (x, weight[, bias]).
    pub fn node(
        &self,
        e: &mut Elab,
        operands: &[NodeIndex],
        path: &str,
        span: Span,
    ) -> Result<NodeIndex, Diagnostic> {
        e.op(
            Op::Conv(ConvAttrs {
                stride: self.stride.clone(),
                padding: self.padding.clone(),
                dilation: self.dilation.clone(),
                groups: self.groups,
                bias: self.bias,
                algo: self.algo,
            }),
            operands,
            path,
            span,
        )
    }
}

pub(crate) fn linear(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    let x = c.inputs[0];
    e.spatial_dims(x, "linear", &[2], c.span)?;
    let a = &c.args;
    let fin = e.known_dim(x, 1, "the number of input features", c.span)?;
    let out = a.positive("out_features")?;
    let (wi, bi) = match a.word("init") {
        Some("kaiming_normal") => (
            Init::KaimingNormal {
                fan: fin,
                mode: FanMode::In,
                gain: 2f64.sqrt(),
            },
            Init::Zeros,
        ),
        Some("normal") => (
            Init::Normal {
                mean: 0.0,
                std: a.float("std"),
            },
            Init::Zeros,
        ),
        _ => (
            Init::KaimingUniform { fan_in: fin },
            Init::KaimingUniform { fan_in: fin },
        ),
    };
    let wt = e.param(
        format!("{}.weight", c.path),
        &[out, fin],
        ParamRole::Trainable,
        wi,
        c.span,
    )?;
    let mut ops = vec![x, wt];
    let bias = a.bool("bias");
    if bias {
        ops.push(e.param(
            format!("{}.bias", c.path),
            &[out],
            ParamRole::Trainable,
            bi,
            c.span,
        )?);
    }
    e.op(Op::Linear { bias }, &ops, &c.path, c.span)
}

pub(crate) fn batchnorm(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    let x = c.inputs[0];
    e.spatial_dims(x, "batchnorm", &[2, 3, 4], c.span)?;
    let a = &c.args;
    let eps = a.float("eps");
    if eps <= 0.0 {
        return Err(Diagnostic::at(
            "E0204",
            a.span("eps"),
            "`eps` must be positive",
            "here",
        ));
    }
    let momentum = a.float("momentum");
    if !(0.0..=1.0).contains(&momentum) {
        return Err(Diagnostic::at(
            "E0204",
            a.span("momentum"),
            format!("`momentum` must be in [0, 1], got {momentum}"),
            "out of range",
        )
        .hint("PyTorch's default is 0.1: running = (1 - momentum) * running + momentum * batch"));
    }
    let ch = e.known_dim(x, 1, "the number of channels", c.span)?;
    let (affine, running) = (a.bool("affine"), a.bool("running_stats"));
    let mut ops = vec![x];
    let p = &c.path;
    if affine {
        ops.push(e.param(
            format!("{p}.weight"),
            &[ch],
            ParamRole::Trainable,
            Init::Ones,
            c.span,
        )?);
        ops.push(e.param(
            format!("{p}.bias"),
            &[ch],
            ParamRole::Trainable,
            Init::Zeros,
            c.span,
        )?);
    }
    if running {
        ops.push(e.param(
            format!("{p}.running_mean"),
            &[ch],
            ParamRole::Buffer,
            Init::Zeros,
            c.span,
        )?);
        ops.push(e.param(
            format!("{p}.running_var"),
            &[ch],
            ParamRole::Buffer,
            Init::Ones,
            c.span,
        )?);
    }
    e.op(
        Op::BatchNorm {
            eps,
            momentum: a.float("momentum"),
            affine,
            running_stats: running,
        },
        &ops,
        p,
        c.span,
    )
}

pub(crate) fn unary(e: &mut Elab, c: &BuiltinCall, op: Op) -> Result<NodeIndex, Diagnostic> {
    e.op(op, &c.inputs, &c.path, c.span)
}

pub(crate) fn binary(e: &mut Elab, c: &BuiltinCall, op: Op) -> Result<NodeIndex, Diagnostic> {
    e.op(op, &c.inputs, &c.path, c.span)
}

pub(crate) fn dropout(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    let p = c.args.float("p");
    if !(0.0..1.0).contains(&p) {
        return Err(Diagnostic::at(
            "E0204",
            c.args.span("p"),
            format!("dropout probability must be in [0, 1), got {p}"),
            "out of range",
        )
        .hint("`p` is the chance of zeroing each element, e.g. `dropout(0.1)`"));
    }
    e.op(Op::Dropout { p }, &c.inputs, &c.path, c.span)
}

/// A pool spec from `maxpool`/`avgpool` arguments, for `dims` spatial dimensions.
pub fn pool_spec(args: &Bound, kind: PoolKind, dims: usize) -> Result<PoolSpec, Diagnostic> {
    let kernel = args.ints("kernel", dims, 1)?;
    let stride = match args.word("stride") {
        Some(_) => kernel.clone(),
        None => args.ints("stride", dims, 1)?,
    };
    let padding = args.ints("padding", dims, 0)?;
    if padding.iter().zip(&kernel).any(|(p, k)| 2 * p > *k) {
        return Err(Diagnostic::at(
            "E0204",
            args.span("padding"),
            "pool padding must be at most half the kernel",
            "too much padding",
        ));
    }
    Ok(PoolSpec {
        kind,
        kernel,
        stride,
        padding,
    })
}

pub(crate) fn pool(e: &mut Elab, c: &BuiltinCall, kind: PoolKind) -> Result<NodeIndex, Diagnostic> {
    let dims = e.spatial_dims(
        c.inputs[0],
        if kind == PoolKind::Max {
            "maxpool"
        } else {
            "avgpool"
        },
        &[3, 4],
        c.span,
    )?;
    let spec = pool_spec(&c.args, kind, dims)?;
    e.op(Op::Pool(spec), &c.inputs, &c.path, c.span)
}

pub(crate) fn concat(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    let rank = e.ty(c.inputs[0]).rank() as i64;
    let dim = c.args.int("dim");
    let axis = if dim < 0 { rank + dim } else { dim };
    if !(0..rank).contains(&axis) {
        return Err(Diagnostic::at(
            "E0204",
            c.args.span("dim"),
            format!("concat dim {dim} is out of range for rank {rank}"),
            "out of range",
        ));
    }
    e.op(
        Op::Concat {
            axis: axis as usize,
        },
        &c.inputs,
        &c.path,
        c.span,
    )
}

pub(crate) fn shortcut(e: &mut Elab, c: &BuiltinCall) -> Result<NodeIndex, Diagnostic> {
    let x = c.inputs[0];
    let dims = e.spatial_dims(x, "shortcut", &[3, 4], c.span)?;
    let a = &c.args;
    let cin = e.known_dim(x, 1, "the number of input channels", c.span)?;
    let out = a.positive("out_channels")?;
    let stride = a.positive("stride")?;
    if cin == out && stride == 1 {
        return Ok(x);
    }
    if a.word("kind") == Some("a") {
        if a.bool("bias") || matches!(a.value("norm"), Value::Layer(_)) {
            return Err(Diagnostic::at(
                "E0204",
                c.span,
                "option-A shortcuts have no parameters, so `bias` and `norm` do not apply",
                "here",
            )
            .hint("use `kind: projection` for a 1x1 conv shortcut"));
        }
        if out < cin || (out - cin) % 2 != 0 {
            return Err(Diagnostic::at(
                "E0204",
                a.span("out_channels"),
                format!(
                    "an option-A shortcut pads channels evenly: {cin} -> {out} is not possible"
                ),
                "needs out_channels >= input channels, with an even difference",
            )
            .hint("use `kind: projection` for other widths"));
        }
        return e.op(
            Op::ShortcutA {
                stride,
                out_channels: out,
            },
            &[x],
            &c.path,
            c.span,
        );
    }
    let mut spec = ConvSpec::simple(
        out,
        vec![1; dims],
        Padding::Explicit(vec![(0, 0); dims]),
        a.bool("bias"),
    );
    spec.stride = vec![stride; dims];
    match a.value("norm") {
        Value::Layer(norm) => {
            let y = spec.build(e, x, &format!("{}.conv", c.path), c.span)?;
            e.scopes.push(c.path.clone());
            let out = e.apply(norm, y, Naming::Given("bn".into()));
            e.scopes.pop();
            out
        }
        _ => spec.build(e, x, &c.path, c.span),
    }
}
