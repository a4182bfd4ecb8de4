//! Compiling kernels to machine code, and the in-memory cache of compiled kernels.
//!
//! A [`Compiler`] owns one `JITModule` for its life: the code of every kernel it
//! compiled stays mapped until the compiler is dropped, and [`KernelFn`]s hold an
//! `Arc` on it. Kernels are cached by their full text (the `Debug` form: name,
//! parameters, body, grid), so a re-plan (a FlexConv crop that changed, a mode switch)
//! compiles only the kernels that are new. Compilation is serial under one lock; it
//! takes well under a millisecond per kernel (docs/jit.md).

use super::funcs;
use super::render::{err, render};
use crate::kernel_ir::{Func, Kernel};
use crate::runtime::RunError;
use cranelift_codegen::ir::{types, AbiParam, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The machine code of one kernel: `f(bufs, lo, hi)` runs grid points `lo..hi`
/// (`render`).
pub type RawKernel = unsafe extern "C" fn(*const *mut f32, i64, i64);

/// A compiled kernel, keeping its module's code alive.
#[derive(Clone)]
pub struct KernelFn {
    pub f: RawKernel,
    _code: Arc<Code>,
}

/// The module whose memory holds the code. Dropped last: every `KernelFn` holds it.
struct Code(Mutex<Option<JITModule>>);

impl Drop for Code {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.lock() {
            if let Some(m) = m.take() {
                // SAFETY: no `KernelFn` of this module is left (each holds an Arc on
                // this `Code`), so none of its code can run again.
                unsafe { m.free_memory() };
            }
        }
    }
}

// SAFETY: the module is only touched under the mutex; the code it maps is immutable
// once finalised and may be called from any thread.
unsafe impl Send for Code {}
unsafe impl Sync for Code {}

struct State {
    cache: HashMap<String, KernelFn>,
    funcs: HashMap<Func, FuncId>,
    fctx: FunctionBuilderContext,
    ctx: Context,
    next: usize,
    compiled: usize,
}

/// One JIT module and its kernel cache; see the module doc.
pub struct Compiler {
    code: Arc<Code>,
    state: Mutex<State>,
}

/// What one [`Compiler::compile`] did: kernels compiled (not found in the cache) and
/// the time spent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CompileStats {
    pub compiled: usize,
    pub cached: usize,
    pub time: Duration,
}

fn jit_err(what: impl std::fmt::Display) -> RunError {
    RunError::new(format!("JIT: {what}")).hint("use --backend opencl or reference")
}

impl Compiler {
    /// A compiler for this machine (`cranelift_native`: the host's ISA and features),
    /// optimising for speed.
    pub fn new() -> Result<Compiler, RunError> {
        let mut flags = settings::builder();
        for (k, v) in [
            ("opt_level", "speed"),
            ("use_colocated_libcalls", "false"),
            ("is_pic", "false"),
        ] {
            flags.set(k, v).map_err(|e| jit_err(format!("{k}: {e}")))?;
        }
        let isa = cranelift_native::builder()
            .map_err(|e| jit_err(format!("this machine is not supported: {e}")))?
            .finish(settings::Flags::new(flags))
            .map_err(jit_err)?;
        let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
        for (_, name, ptr) in funcs::symbols() {
            jb.symbol(name, ptr);
        }
        let mut module = JITModule::new(jb);
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(types::F32));
        sig.returns.push(AbiParam::new(types::F32));
        let mut ids = HashMap::new();
        for (f, name, _) in funcs::symbols() {
            let id = module
                .declare_function(name, Linkage::Import, &sig)
                .map_err(jit_err)?;
            ids.insert(f, id);
        }
        let ctx = module.make_context();
        Ok(Compiler {
            code: Arc::new(Code(Mutex::new(Some(module)))),
            state: Mutex::new(State {
                cache: HashMap::new(),
                funcs: ids,
                fctx: FunctionBuilderContext::new(),
                ctx,
                next: 0,
                compiled: 0,
            }),
        })
    }

    /// Kernels compiled by this compiler so far (cache misses).
    pub fn compiled(&self) -> usize {
        self.state.lock().map(|s| s.compiled).unwrap_or(0)
    }

    /// Machine code for every kernel of `kernels`, in order: from the cache, or
    /// compiled now (all new ones in one module finalisation).
    pub fn compile(&self, kernels: &[Kernel]) -> Result<(Vec<KernelFn>, CompileStats), RunError> {
        let start = Instant::now();
        let mut st = self
            .state
            .lock()
            .map_err(|_| jit_err("a compile panicked"))?;
        let mut guard = self
            .code
            .0
            .lock()
            .map_err(|_| jit_err("a compile panicked"))?;
        let module = guard
            .as_mut()
            .ok_or_else(|| jit_err("the module was freed"))?;
        let keys: Vec<String> = kernels.iter().map(|k| format!("{k:?}")).collect();
        let mut new: Vec<(String, FuncId)> = Vec::new();
        let mut stats = CompileStats::default();
        for (k, key) in kernels.iter().zip(&keys) {
            if st.cache.contains_key(key) || new.iter().any(|(n, _)| n == key) {
                stats.cached += 1;
                continue;
            }
            let id = define(module, &mut st, k)?;
            new.push((key.clone(), id));
        }
        if !new.is_empty() {
            module
                .finalize_definitions()
                .map_err(|e| jit_err(format!("linking: {e}")))?;
            for (key, id) in new {
                let ptr = module.get_finalized_function(id);
                // SAFETY: `define` gave the function this signature.
                let f: RawKernel = unsafe { std::mem::transmute(ptr) };
                st.cache.insert(
                    key,
                    KernelFn {
                        f,
                        _code: self.code.clone(),
                    },
                );
                stats.compiled += 1;
            }
        }
        st.compiled += stats.compiled;
        let fns = keys.iter().map(|k| st.cache[k].clone()).collect();
        stats.time = start.elapsed();
        Ok((fns, stats))
    }
}

/// Declares and defines one kernel's function in `module`.
fn define(module: &mut JITModule, st: &mut State, k: &Kernel) -> Result<FuncId, RunError> {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    for _ in 0..3 {
        sig.params.push(AbiParam::new(ptr));
    }
    let name = format!("fnet_kernel_{}", st.next);
    st.next += 1;
    let id = module
        .declare_function(&name, Linkage::Local, &sig)
        .map_err(|e| err(&k.name, e))?;
    let State {
        ctx, fctx, funcs, ..
    } = st;
    ctx.clear();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let refs = funcs
        .iter()
        .map(|(&f, &fid)| (f, module.declare_func_in_func(fid, &mut ctx.func)))
        .collect();
    let rendered = render(&mut ctx.func, fctx, k, &refs, module.target_config());
    if let Err(e) = rendered {
        ctx.clear();
        return Err(e);
    }
    // `FNET_JIT_DUMP=name` prints the machine code of kernels whose name contains
    // `name`, to read what Cranelift made of them.
    let dump = std::env::var("FNET_JIT_DUMP")
        .ok()
        .filter(|d| k.name.contains(d.as_str()));
    ctx.set_disasm(dump.is_some());
    let defined = module.define_function(id, ctx);
    if let (Some(code), Some(_)) = (ctx.compiled_code(), &dump) {
        eprintln!(
            "kernel `{}`:\n{}",
            k.name,
            code.vcode.as_deref().unwrap_or("")
        );
    }
    let out = defined.map_err(|e| err(&k.name, format!("compiling: {e:?}")));
    ctx.clear();
    out.map(|()| id)
}
