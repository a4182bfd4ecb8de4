//! Generated OpenCL behind the [`Backend`] seam. The backend holds the device's
//! `ClContext` behind an `Arc`, so tests and tools can share one context (and its
//! in-memory program cache) among several backends, such as one per code-generation
//! target. Preparing lowers the graph to a kernel-IR plan and builds it into an
//! `opencl::Executable`, which owns its queue handle, buffers and kernels: a run is
//! input writes, launches and output reads, nothing else.
//!
//! Parameters the plan keeps as device buffers (FlexConv kernel-net weights, those a
//! kernel reads as they are) can be written and read back; those folded into other
//! constants on the host (conv biases, BatchNorm statistics, crops) are refused with
//! an error that says so. Evaluation mode, f32 only.

use super::{check_param, no_param_or_buffer, Backend, BackendKind, Capabilities, Prepared};
use crate::cost::CostTableId;
use crate::ir::Graph;
use crate::kernel_ir::plan::{build_plan, Target};
use crate::opencl::{target_for, ClContext, DeviceSel, Executable};
use crate::runtime::{Mode, ParamStore, RunError};
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// An OpenCL device and the code-generation target for it.
#[derive(Clone)]
pub struct OpenClBackend {
    ctx: Arc<ClContext>,
    target: Target,
}

impl OpenClBackend {
    /// Opens the device `sel` names (after probing for a platform), keeping built
    /// programs in `cache_dir` (none: in memory only).
    pub fn open(sel: DeviceSel, cache_dir: Option<PathBuf>) -> Result<OpenClBackend, RunError> {
        Ok(OpenClBackend::new(Arc::new(ClContext::new(
            sel, cache_dir,
        )?)))
    }

    /// A backend on an opened context, with the device's own target.
    pub fn new(ctx: Arc<ClContext>) -> OpenClBackend {
        let target = target_for(&ctx.info);
        OpenClBackend { ctx, target }
    }

    /// The same device with another code-generation target (tile sizes), for tests
    /// and tuning.
    pub fn with_target(&self, target: Target) -> OpenClBackend {
        OpenClBackend {
            ctx: self.ctx.clone(),
            target,
        }
    }

    pub fn context(&self) -> &ClContext {
        &self.ctx
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// [`Backend::prepare`] with the concrete type, whose plan and source can be
    /// inspected.
    pub fn prepare_plan(
        &self,
        graph: &Graph,
        params: &ParamStore<f32>,
        input_shapes: &[Vec<usize>],
    ) -> Result<OpenClPrepared, RunError> {
        let plan = build_plan(graph, params, input_shapes, self.target)?;
        let param_shapes = plan
            .params
            .keys()
            .filter_map(|name| Some((name.clone(), params.get(name)?.shape.clone())))
            .collect();
        let baked = params
            .keys()
            .filter(|name| !plan.params.contains_key(*name))
            .cloned()
            .collect();
        Ok(OpenClPrepared {
            exe: Executable::new(&self.ctx, plan)?,
            input_shapes: input_shapes.to_vec(),
            param_shapes,
            baked,
        })
    }
}

impl Backend for OpenClBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Opencl
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            f64: false,
            device_params: true,
            training: false,
        }
    }

    fn device(&self) -> String {
        format!("opencl {}", self.ctx.info)
    }

    fn cost_table(&self) -> CostTableId {
        CostTableId::opencl(self.ctx.info.is_gpu)
    }

    fn prepare(
        &self,
        graph: Graph,
        params: ParamStore<f32>,
        input_shapes: &[Vec<usize>],
    ) -> Result<Box<dyn Prepared<f32>>, RunError> {
        Ok(Box::new(self.prepare_plan(
            &graph,
            &params,
            input_shapes,
        )?))
    }
}

/// A plan built on the device.
pub struct OpenClPrepared {
    exe: Executable,
    input_shapes: Vec<Vec<usize>>,
    /// Shapes of the parameters that are device buffers.
    param_shapes: BTreeMap<String, Vec<usize>>,
    /// Parameters the plan folded in on the host.
    baked: std::collections::BTreeSet<String>,
}

impl OpenClPrepared {
    pub fn executable(&self) -> &Executable {
        &self.exe
    }

    fn baked_in(&self, name: &str) -> Option<RunError> {
        self.baked.contains(name).then(|| {
            RunError::new(format!(
                "parameter `{name}` was baked into the OpenCL plan on the host (folded into \
                 other constants), so it is not a device buffer to read or write"
            ))
            .hint("prepare the model again with the new weights")
        })
    }
}

impl Prepared<f32> for OpenClPrepared {
    fn input_shapes(&self) -> &[Vec<usize>] {
        &self.input_shapes
    }

    fn write_inputs(&mut self, inputs: &[Tensor<f32>]) -> Result<(), RunError> {
        self.exe.write_inputs(inputs)
    }

    fn run(&mut self) -> Result<(), RunError> {
        self.exe.launch()
    }

    fn read_outputs(&self) -> Result<Vec<Tensor<f32>>, RunError> {
        self.exe.read_outputs()
    }

    fn set_mode(&mut self, mode: Mode) -> Result<(), RunError> {
        match mode {
            Mode::Eval => Ok(()),
            Mode::Train => Err(RunError::new(
                "the OpenCL backend runs evaluation mode only (running statistics, no dropout)",
            )
            .hint("use --backend reference for training mode")),
        }
    }

    fn write_param(&mut self, name: &str, value: &Tensor<f32>) -> Result<(), RunError> {
        if let Some(e) = self.baked_in(name) {
            return Err(e);
        }
        check_param(name, self.param_shapes.get(name), value)?;
        self.exe.write_param(name, value)
    }

    fn device_bytes(&self) -> Option<u64> {
        Some(self.exe.device_bytes())
    }

    fn read_param(&self, name: &str) -> Result<Tensor<f32>, RunError> {
        if let Some(e) = self.baked_in(name) {
            return Err(e);
        }
        let (Some(shape), Some(data)) = (self.param_shapes.get(name), self.exe.read_param(name))
        else {
            return Err(no_param_or_buffer(name));
        };
        Ok(Tensor::from_vec(shape.clone(), data?)?)
    }
}
