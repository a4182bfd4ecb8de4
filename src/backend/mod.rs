//! The one seam between a compiled graph and the machine that runs it. Every backend
//! (the reference interpreter, OpenCL, and later a Cranelift JIT) implements
//! [`Backend`]: what it can do, which fitted cost table describes it, and how it turns
//! a compiled graph with its parameters into a [`Prepared`] model. A prepared model
//! takes inputs, runs, gives outputs, and reads and writes parameters (and buffers
//! such as BatchNorm running statistics) by their stable names, so that training and
//! search can run one graph many times and change its weights between runs without
//! preparing it again.
//!
//! [`BackendKind`] is the one enum that names backends (`--backend`). Cost tables are
//! named apart, by [`CostTableId`]: a backend has one table per device kind (OpenCL
//! on a CPU and on a GPU differ), so the table follows from the opened backend
//! ([`Backend::cost_table`]), and `fnetc compile --cost-model` names one directly
//! without opening anything.
//!
//! [`open`] is the one place where `--backend` and `--device` become a backend: it
//! refuses a device for the reference interpreter, probes for an OpenCL platform, and
//! chooses where built programs are cached (beside a compiled `.fnc` artifact, else the
//! user's cache directory).
//!
//! Tensors cross the seam in the precision the model runs in: `f32` everywhere, `f64`
//! where [`Capabilities::f64`] says so ([`Backend::prepare_f64`]).

pub mod jit;
pub mod jit_timing;
#[cfg(feature = "opencl")]
pub mod opencl;
pub mod reference;
mod replan;

pub use jit::{JitBackend, JitPrepared};
#[cfg(feature = "opencl")]
pub use opencl::{OpenClBackend, OpenClPrepared};
pub use reference::{ReferenceBackend, ReferencePrepared};

use crate::cost::CostTableId;
use crate::ir::Graph;
use crate::opencl::DeviceSel;
use crate::runtime::sync_stats::StatsCollective;
use crate::runtime::{Mode, ParamStore, RunError};
use crate::tensor::{Scalar, Tensor};
use std::path::Path;

/// The backends, as `--backend` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum BackendKind {
    /// The reference interpreter: naive, obviously correct loops.
    Reference,
    /// Generated OpenCL kernels (PoCL on the CPU, or a GPU driver).
    Opencl,
    /// The same kernels compiled for this CPU by Cranelift (the default: see
    /// [`default_kind`]).
    #[default]
    Jit,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Reference => "reference",
            BackendKind::Opencl => "opencl",
            BackendKind::Jit => "jit",
        }
    }
}

/// What a backend can do beyond an `f32` forward in evaluation mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// It computes in `f64` too ([`Backend::prepare_f64`]).
    pub f64: bool,
    /// Parameters live in device buffers: `write_param` is a copy to the device, and
    /// parameters folded into the program on the host cannot be written or read.
    pub device_params: bool,
    /// It runs training mode (batch statistics, running-statistic updates, dropout).
    pub training: bool,
}

/// A backend, opened on its device.
pub trait Backend {
    fn kind(&self) -> BackendKind;
    fn capabilities(&self) -> Capabilities;
    /// The device it runs on, in words, for messages and reports.
    fn device(&self) -> String;
    /// The fitted cost table that describes this backend on this device: compile
    /// with it so the passes choose conv algorithms for where the model runs.
    fn cost_table(&self) -> CostTableId;
    /// Makes `graph` (compiled, with every parameter in `params`) ready to run on
    /// inputs of `input_shapes`: lowering, program builds and uploads happen here.
    fn prepare(
        &self,
        graph: Graph,
        params: ParamStore<f32>,
        input_shapes: &[Vec<usize>],
    ) -> Result<Box<dyn Prepared<f32>>, RunError>;
    /// As [`Backend::prepare`], computing in `f64`; only where
    /// [`Capabilities::f64`] holds.
    fn prepare_f64(
        &self,
        graph: Graph,
        params: ParamStore<f64>,
        input_shapes: &[Vec<usize>],
    ) -> Result<Box<dyn Prepared<f64>>, RunError> {
        let _ = (graph, params, input_shapes);
        Err(f32_only(self.kind()))
    }
}

/// The error for an `f64` run asked of a backend that computes in `f32` only.
pub fn f32_only(kind: BackendKind) -> RunError {
    RunError::new(format!("the {} backend computes in f32 only", kind.name()))
        .hint("drop --f64, or use --backend reference")
}

/// A graph ready to run on one backend, for inputs of fixed shapes.
pub trait Prepared<T: Scalar> {
    /// The input shapes it was prepared for, in the graph's input order.
    fn input_shapes(&self) -> &[Vec<usize>];
    /// Copies `inputs` (one per graph input, shaped as prepared) in.
    fn write_inputs(&mut self, inputs: &[Tensor<T>]) -> Result<(), RunError>;
    /// Runs the graph on the inputs last written.
    fn run(&mut self) -> Result<(), RunError>;
    /// The outputs of the last run, in the graph's output order.
    fn read_outputs(&self) -> Result<Vec<Tensor<T>>, RunError>;
    /// Runs the graph on the inputs last written, handing each output (with its index
    /// in the graph's output order) to `on_ready` exactly once, as soon as the backend
    /// knows it is final: a backend that can (the JIT) does so while the later steps
    /// are still to run, so a data-parallel trainer can all-reduce the last layers'
    /// gradients while the backward of the first ones still computes
    /// (`train::overlap`). With `collective`, a synchronised plan's statistics steps
    /// combine over it as in [`Prepared::run_synced`]. The default runs, then hands
    /// the outputs out in order.
    fn run_streaming(
        &mut self,
        collective: Option<&dyn StatsCollective>,
        on_ready: &mut dyn FnMut(usize, Tensor<T>),
    ) -> Result<(), RunError> {
        match collective {
            Some(c) => self.run_synced(c)?,
            None => self.run()?,
        }
        for (i, t) in self.read_outputs()?.into_iter().enumerate() {
            on_ready(i, t);
        }
        Ok(())
    }
    /// Writes, runs and reads: one forward.
    fn forward(&mut self, inputs: &[Tensor<T>]) -> Result<Vec<Tensor<T>>, RunError> {
        self.write_inputs(inputs)?;
        self.run()?;
        self.read_outputs()
    }
    /// [`Prepared::run`] with the statistics steps of a synchronised training plan
    /// ([`Prepared::set_sync_stats`]) combining over `collective`: SyncBatchNorm under
    /// data-parallel training. A plan without those steps runs as `run` does.
    fn run_synced(&mut self, collective: &dyn StatsCollective) -> Result<(), RunError> {
        let _ = collective;
        self.run()
    }
    /// Lowers the training plan with (`true`) or without cross-rank batch statistics:
    /// with them every batch norm's moments and backward sums pass through a host
    /// step that [`Prepared::run_synced`]'s collective combines (and that a plain
    /// `run` leaves as they are). A backend that cannot refuses `true`.
    fn set_sync_stats(&mut self, on: bool) -> Result<(), RunError> {
        if on {
            return Err(RunError::new(
                "this backend cannot combine batch statistics over data-parallel ranks (sync_bn)",
            )
            .hint("train with --backend jit or --backend opencl, or drop `sync_bn: true`"));
        }
        Ok(())
    }
    /// Evaluation (the default) or training mode for the next runs.
    fn set_mode(&mut self, mode: Mode) -> Result<(), RunError>;
    /// The seed of the next runs' dropout masks (`runtime::dropout`: every backend
    /// draws the same mask for one seed); a trainer sets one per step
    /// (`runtime::dropout::step_seed`). A backend without training mode refuses it.
    fn set_seed(&mut self, seed: u64) -> Result<(), RunError> {
        let _ = seed;
        Err(RunError::new(
            "this backend does not run training mode, so it has no dropout seed",
        ))
    }
    /// Replaces parameter (or buffer) `name` for the next runs; `value` has its shape.
    fn write_param(&mut self, name: &str, value: &Tensor<T>) -> Result<(), RunError>;
    /// The current value of parameter or buffer `name`: what was prepared or written,
    /// or, after a training-mode run, the updated running statistics.
    fn read_param(&self, name: &str) -> Result<Tensor<T>, RunError>;
    /// The device memory the prepared model holds (every buffer it allocated), where
    /// it lives apart from the host's; `None` for a backend that computes in host
    /// memory, whose use `fnetc bench` measures as the process's peak RSS.
    fn device_bytes(&self) -> Option<u64> {
        None
    }
    /// The time spent compiling code when it was prepared, for a backend that
    /// compiles (the JIT); `fnetc bench` prints it.
    fn compile_time(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The backend when `--backend` is not given: the JIT, on this CPU; OpenCL when
/// `--device` names an OpenCL device; the reference interpreter for `--f64`, the one
/// backend that computes in `f64`.
pub fn default_kind(device: Option<DeviceSel>, f64: bool) -> BackendKind {
    match (device, f64) {
        (_, true) => BackendKind::Reference,
        (Some(_), false) => BackendKind::Opencl,
        (None, false) => BackendKind::Jit,
    }
}

/// Opens `kind` on `device` (`None`: the backend's default) for running `model`.
/// A device is refused for the reference interpreter rather than ignored. OpenCL
/// programs built for a compiled artifact `X.fnc` are cached beside it in
/// `X.fnc.clcache`, so the artifact's directory carries them; a source model's go to
/// the user's cache directory.
pub fn open(
    kind: BackendKind,
    device: Option<DeviceSel>,
    model: &Path,
) -> Result<Box<dyn Backend>, RunError> {
    match kind {
        BackendKind::Reference => match device {
            None => Ok(Box::new(ReferenceBackend)),
            Some(sel) => Err(RunError::new(format!(
                "--device {} selects an OpenCL device, but the backend is the reference interpreter",
                device_arg(sel)
            ))
            .hint("add --backend opencl, or drop --device (the reference interpreter runs on this CPU)")),
        },
        BackendKind::Jit => match device {
            None => Ok(Box::new(JitBackend::new()?)),
            Some(sel) => Err(RunError::new(format!(
                "--device {} selects an OpenCL device, but the backend is the JIT",
                device_arg(sel)
            ))
            .hint("add --backend opencl, or drop --device (the JIT runs on this CPU)")),
        },
        #[cfg(feature = "opencl")]
        BackendKind::Opencl => Ok(Box::new(OpenClBackend::open(
            device.unwrap_or_default(),
            program_cache(model),
        )?)),
        #[cfg(not(feature = "opencl"))]
        BackendKind::Opencl => {
            let _ = model;
            Err(crate::opencl::not_built())
        }
    }
}

/// Where OpenCL programs built for `model` are kept (see [`open`]).
#[cfg(feature = "opencl")]
pub fn program_cache(model: &Path) -> Option<std::path::PathBuf> {
    if model.extension().is_some_and(|e| e == "fnc") {
        Some(model.with_extension("fnc.clcache"))
    } else {
        crate::opencl::default_cache_dir()
    }
}

/// `sel` as `--device` takes it.
fn device_arg(sel: DeviceSel) -> String {
    match sel {
        DeviceSel::Default => "default".into(),
        DeviceSel::Index(i) => i.to_string(),
        DeviceSel::Cpu => "cpu".into(),
        DeviceSel::Gpu => "gpu".into(),
    }
}

/// Checks `inputs` against the prepared shapes, as every backend must.
pub fn check_inputs<T: Scalar>(
    prepared: &[Vec<usize>],
    inputs: &[Tensor<T>],
) -> Result<(), RunError> {
    if inputs.len() != prepared.len() {
        return Err(RunError::new(format!(
            "the model was prepared for {} input(s), got {}",
            prepared.len(),
            inputs.len()
        )));
    }
    for (i, (t, shape)) in inputs.iter().zip(prepared).enumerate() {
        if &t.shape != shape {
            return Err(RunError::new(format!(
                "input {i} has shape {:?}, but the model was prepared for {shape:?}",
                t.shape
            ))
            .hint("prepare the model again for the new shape"));
        }
    }
    Ok(())
}

/// The error for a read of `name` where the model has no such parameter or buffer.
pub fn no_param_or_buffer(name: &str) -> RunError {
    RunError::new(format!("the model has no parameter or buffer `{name}`"))
        .hint("parameters are named as in the weights file, e.g. `conv1.weight`")
}

/// Checks a parameter write: `name` is known and `value` has its shape.
pub fn check_param<T: Scalar>(
    name: &str,
    shape: Option<&Vec<usize>>,
    value: &Tensor<T>,
) -> Result<(), RunError> {
    match shape {
        None => Err(
            RunError::new(format!("the model has no parameter `{name}`"))
                .hint("parameters are named as in the weights file, e.g. `conv1.weight`"),
        ),
        Some(s) if *s != value.shape => Err(RunError::new(format!(
            "parameter `{name}` has shape {s:?}, got {:?}",
            value.shape
        ))),
        Some(_) => Ok(()),
    }
}
