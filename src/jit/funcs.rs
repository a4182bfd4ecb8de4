//! The elementwise functions JIT code calls (`Expr::Call` of exp, erf, sin and log):
//! Rust `extern "C"` functions registered as JIT symbols, so that a kernel computes
//! each value exactly as the reference interpreter does (`f32::exp`, `f32::sin`,
//! `f32::ln`, and `reference::activation::erf` in f64 rounded once). `sqrt` and `fma`
//! are native instructions and need none.

use crate::kernel_ir::Func;

extern "C" fn fnet_exp(x: f32) -> f32 {
    x.exp()
}

extern "C" fn fnet_sin(x: f32) -> f32 {
    x.sin()
}

extern "C" fn fnet_log(x: f32) -> f32 {
    x.ln()
}

extern "C" fn fnet_erf(x: f32) -> f32 {
    crate::reference::activation::erf(f64::from(x)) as f32
}

/// Every function a kernel may call, by its `Func`: the JIT symbol name and address.
/// `Sqrt` is absent: it is an instruction.
pub fn symbols() -> [(Func, &'static str, *const u8); 4] {
    [
        (Func::Exp, "fnet_exp", fnet_exp as *const u8),
        (Func::Erf, "fnet_erf", fnet_erf as *const u8),
        (Func::Sin, "fnet_sin", fnet_sin as *const u8),
        (Func::Log, "fnet_log", fnet_log as *const u8),
    ]
}

/// What `Func` computes on one f32, for tests and the naive evaluator.
pub fn eval(f: Func, x: f32) -> f32 {
    match f {
        Func::Exp => fnet_exp(x),
        Func::Erf => fnet_erf(x),
        Func::Sin => fnet_sin(x),
        Func::Log => fnet_log(x),
        Func::Sqrt => x.sqrt(),
    }
}
