//! A small, backend-neutral kernel IR: one data-parallel kernel is a loop nest over
//! index expressions, run once per point of a 1–3 dimensional grid. Values are scalars
//! or short vectors (`width` lanes), so explicit vectorisation and register tiles are
//! part of the IR, not something a backend has to discover. The OpenCL backend renders
//! it as OpenCL C; a CPU JIT can render the same kernels.
//!
//! Everything the lowering knows about shapes is baked in as constants: a kernel is
//! specialised to one set of sizes, and backends cache compiled code by its text.

use std::fmt;

pub mod build;
pub mod conv;
pub mod fft;
pub mod fft_conv;
pub mod grouped;
pub mod magnet;
pub mod ops;
pub mod plan;

/// Element type of a value: `f32` or `i32` with 1, 2, 4, 8 or 16 lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    F32,
    I32,
}

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

/// Elementwise functions of one float argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    Exp,
    Sqrt,
    Erf,
    Sin,
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
    /// One lane of a vector.
    Lane(Box<Expr>, u8),
    /// `a·b + c`, fused where the target has it.
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `cond ? a : b` (scalar condition).
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// Integer to float.
    ToFloat(Box<Expr>),
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
