//! A small, backend-neutral kernel IR: one data-parallel kernel is a loop nest over
//! index expressions, run once per point of a 1–3 dimensional grid. Values are scalars
//! or short vectors (`width` lanes), so explicit vectorisation and register tiles are
//! part of the IR, not something a backend has to discover. Backends render it: the
//! OpenCL backend as OpenCL C, a CPU JIT the same kernels as machine code.
//!
//! The lowering builds kernels untyped; `typecheck` then gives every expression a type
//! and makes every scalar-to-vector broadcast an explicit [`Expr::Broadcast`], so a
//! renderer never needs implicit conversions. Every kernel of a plan is checked.
//!
//! Everything the lowering knows about shapes is baked in as constants: a kernel is
//! specialised to one set of sizes, and backends cache compiled code by its text.

use std::fmt;

pub mod backward_ops;
pub mod batch_norm;
pub mod build;
pub mod conv;
pub mod conv_backward;
pub mod fft;
pub mod fft_backward;
pub mod fft_conv;
pub mod gemm;
pub mod grouped;
pub mod magnet;
pub mod magnet_backward;
pub mod native;
pub mod ops;
pub mod plan;
pub mod regularizer_kernels;
pub mod strided_data;
pub mod typecheck;

/// Element type of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    /// Data: scalars and vectors of 2, 4, 8 or 16 lanes.
    F32,
    /// Indices, sizes and conditions (0 false, anything else true): scalars only, so
    /// index arithmetic stays scalar and renderers need no integer vectors.
    I32,
}

/// The type of a value: an element type and a lane count (1 for a scalar).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ty {
    pub elem: Elem,
    pub width: u8,
}

impl Ty {
    pub const F32: Ty = Ty {
        elem: Elem::F32,
        width: 1,
    };
    pub const I32: Ty = Ty {
        elem: Elem::I32,
        width: 1,
    };
    pub fn f32x(width: u8) -> Ty {
        Ty {
            elem: Elem::F32,
            width,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Min,
    Max,
    Lt,
    Le,
    Eq,
    And,
}

impl BinOp {
    /// The C operator for an infix op; `None` for `min`/`max`, which are calls. The
    /// printer and the OpenCL renderer both spell ops this way.
    pub fn infix(self) -> Option<&'static str> {
        Some(match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Eq => "==",
            BinOp::And => "&&",
            BinOp::Min | BinOp::Max => return None,
        })
    }
}

/// Elementwise functions of one float argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    Exp,
    Sqrt,
    Erf,
    Sin,
    /// The natural logarithm.
    Log,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Int(i64),
    Float(f32),
    Var(String),
    /// Position of this work-item along a grid axis.
    GlobalId(u8),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Call(Func, Box<Expr>),
    /// `width` consecutive elements of buffer `buf` from element `index`.
    Load {
        buf: String,
        index: Box<Expr>,
        width: u8,
    },
    /// `width` elements of `buf` from `index`, `stride` elements apart.
    Gather {
        buf: String,
        index: Box<Expr>,
        stride: i64,
        width: u8,
    },
    /// A scalar repeated over `width` lanes.
    Splat(Box<Expr>, u8),
    /// A scalar repeated over `width` lanes where the kernel as built used a scalar in
    /// a vector's place: inserted by `typecheck`, never by the lowering. The value is
    /// `Splat`'s; the separate node lets a renderer whose language widens scalars
    /// implicitly (OpenCL C) print the scalar alone, so checking changes no source.
    Broadcast(Box<Expr>, u8),
    /// One lane of a vector.
    Lane(Box<Expr>, u8),
    /// `a·b + c`, fused where the target has it.
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `cond ? a : b` (scalar condition).
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// A scalar integer to float.
    ToFloat(Box<Expr>),
    /// A scalar float to integer, rounding toward zero.
    ToInt(Box<Expr>),
    /// `runtime::dropout::hash2(a, b)` of two `i32` scalars, as 32-bit unsigned
    /// integers with wrapping arithmetic, its bits read back as an `i32`: the
    /// counter-based hash behind dropout masks, which every renderer must compute bit
    /// for bit as the interpreter does.
    Hash(Box<Expr>, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// Declares and initialises a variable.
    Let {
        name: String,
        ty: Ty,
        init: Expr,
    },
    Assign {
        name: String,
        value: Expr,
    },
    /// `for var in (start..end).step_by(step)`; `unroll` asks the backend to unroll.
    For {
        var: String,
        start: Expr,
        end: Expr,
        step: i64,
        unroll: bool,
        body: Vec<Stmt>,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
    },
    /// A nested scope.
    Block(Vec<Stmt>),
    /// Leaves the kernel for this work-item when `cond` is false (grid tails).
    Guard(Expr),
    /// Writes `width` lanes of `value` to `buf` from element `index`.
    Store {
        buf: String,
        index: Expr,
        value: Expr,
        width: u8,
    },
}

/// A kernel argument: a buffer of f32 elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    /// Read only (`const`); output buffers are written.
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    pub body: Vec<Stmt>,
    /// Grid size per axis (1 to 3 axes).
    pub grid: Vec<usize>,
    /// A work-group size per axis, or `None` to let the driver choose.
    pub local: Option<Vec<usize>>,
    /// Floating-point operations one run performs, for throughput reports.
    pub flops: u64,
}

impl fmt::Display for Elem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Elem::F32 => "f32",
            Elem::I32 => "i32",
        })
    }
}

/// `f32`, `i32`, `f32x8`: how type errors name types.
impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.width == 1 {
            write!(f, "{}", self.elem)
        } else {
            write!(f, "{}x{}", self.elem, self.width)
        }
    }
}

/// A backend-neutral notation for messages: C-like operators, loads as
/// `load8(buf, index)`, explicit broadcasts as `splat8(x)` and `broadcast8(x)`.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Int(v) if *v < 0 => write!(f, "({v})"),
            Expr::Int(v) => write!(f, "{v}"),
            Expr::Float(v) => write!(f, "{v:?}"),
            Expr::Var(n) => f.write_str(n),
            Expr::GlobalId(a) => write!(f, "gid({a})"),
            Expr::Bin(BinOp::Min, a, b) => write!(f, "min({a}, {b})"),
            Expr::Bin(BinOp::Max, a, b) => write!(f, "max({a}, {b})"),
            Expr::Bin(op, a, b) => {
                let sym = op.infix().expect("min and max are written as calls above");
                write!(f, "({a} {sym} {b})")
            }
            Expr::Call(func, a) => {
                let name = match func {
                    Func::Exp => "exp",
                    Func::Sqrt => "sqrt",
                    Func::Erf => "erf",
                    Func::Sin => "sin",
                    Func::Log => "log",
                };
                write!(f, "{name}({a})")
            }
            Expr::Load { buf, index, width } if *width == 1 => write!(f, "{buf}[{index}]"),
            Expr::Load { buf, index, width } => write!(f, "load{width}({buf}, {index})"),
            Expr::Gather {
                buf,
                index,
                stride,
                width,
            } => write!(f, "gather{width}({buf}, {index}, stride {stride})"),
            Expr::Splat(a, w) => write!(f, "splat{w}({a})"),
            Expr::Broadcast(a, w) => write!(f, "broadcast{w}({a})"),
            Expr::Lane(a, l) => write!(f, "lane({a}, {l})"),
            Expr::Fma(a, b, c) => write!(f, "fma({a}, {b}, {c})"),
            Expr::Select(c, a, b) => write!(f, "({c} ? {a} : {b})"),
            Expr::ToFloat(a) => write!(f, "float({a})"),
            Expr::ToInt(a) => write!(f, "int({a})"),
            Expr::Hash(a, b) => write!(f, "hash({a}, {b})"),
        }
    }
}
