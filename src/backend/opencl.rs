//! The OpenCL backend behind the [`Backend`] seam. Preparing lowers the graph to a
//! kernel-IR plan and builds it into an `opencl::Executable`, which owns its queue
//! handle, buffers and kernels: a run is input writes, launches and output reads,
//! nothing else.
//!
//! **Evaluation** (the default for a model graph): parameters the plan keeps as device
//! buffers (FlexConv kernel-net weights, those a kernel reads as they are) can be
//! written and read back; those folded into other constants on the host (conv biases,
//! BatchNorm statistics, crops) are refused with an error that says so.
//!
//! **Training** (`capabilities().training`): a training graph (`autodiff::differentiate`:
//! it holds the loss and backward ops) is always planned as a training plan
//! (`kernel_ir::plan::build_plan_in` with `Mode::Train`), and `set_mode(Eval)` is
//! refused for it; a model graph is re-planned on a mode change, with the current
//! parameter values read back from the device. In a training plan every trainable,
//! shared and buffer parameter is a device buffer the trainer writes each step; the
//! outputs (loss, `grad.*`, `update.*`) are read back, and after each run the updated
//! running statistics are also copied into their buffers, as the reference backend
//! stores them. The labels are checked on the host as the interpreter checks them.
//! `set_seed` sets the dropout masks' seed (`runtime::dropout`), the same masks the
//! interpreter draws. A FlexConv crop is a constant of the step: when a parameter that
//! decides a crop is written, the next run computes the crops on the host
//! (`runtime::flex_kernel::mask_crop_size`, cheap) and, only if they changed, switches
//! to the plan built for the new crops: plans are cached by crop sizes (the last
//! [`CACHED_PLANS`]), so a crop that comes back costs no planning or program build,
//! and a new one is lowered once and compiles only the kernels the context has not
//! built before (`ClContext::kernels`: those of the layers whose crop changed). A run
//! never silently uses a plan of other crops.
//! f32 only.

use super::replan::{crop_key, crop_nodes, crop_params, is_training_graph, labels_check};
use super::{check_param, no_param_or_buffer, Backend, BackendKind, Capabilities, Prepared};
use crate::cost::CostTableId;
use crate::ir::Graph;
use crate::kernel_ir::plan::{build_plan_in, Target};
use crate::opencl::{target_for, ClContext, DeviceSel, Executable};
use crate::runtime::sync_stats::StatsCollective;
use crate::runtime::{Mode, ParamStore, RunError};
use crate::tensor::Tensor;
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, BTreeSet};
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
        let training_graph = is_training_graph(graph);
        let mode = if training_graph {
            Mode::Train
        } else {
            Mode::Eval
        };
        let crops = crop_nodes(graph);
        let mut prepared = OpenClPrepared {
            crop_key: crops
                .as_ref()
                .map(|c| crop_key(graph, c, params))
                .transpose()?,
            crops,
            plans: Vec::new(),
            plans_built: 1,
            inputs: None,
            exe: self.build(graph, params, input_shapes, mode)?,
            input_shapes: input_shapes.to_vec(),
            param_shapes: BTreeMap::new(),
            baked: Default::default(),
            backend: self.clone(),
            graph: graph.clone(),
            params: params.clone(),
            mode,
            training_graph,
            labels: labels_check(graph),
            crop_params: crop_params(graph),
            stale: false,
            seed: 0,
        };
        prepared.record_params();
        Ok(prepared)
    }

    fn build(
        &self,
        graph: &Graph,
        params: &ParamStore<f32>,
        input_shapes: &[Vec<usize>],
        mode: Mode,
    ) -> Result<Executable, RunError> {
        let plan = build_plan_in(graph, params, input_shapes, self.target, mode)?;
        Executable::new(&self.ctx, plan)
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
            training: true,
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

/// How many plans of other crops a prepared training graph keeps.
pub const CACHED_PLANS: usize = 8;

/// A plan built on the device.
pub struct OpenClPrepared {
    /// The crops that key plans (see [`crop_nodes`]), and those of `exe`.
    crops: Option<Vec<NodeIndex>>,
    crop_key: Option<Vec<Vec<usize>>>,
    /// Executables of other crops, oldest first, at most [`CACHED_PLANS`].
    plans: Vec<(Vec<Vec<usize>>, Executable)>,
    /// Plans built so far: the first and one per crop missing from the cache.
    plans_built: usize,
    /// The inputs last written, kept while crops may change so that an executable
    /// switched to before the run gets them too.
    inputs: Option<Vec<Tensor<f32>>>,
    exe: Executable,
    input_shapes: Vec<Vec<usize>>,
    /// Shapes of the parameters that are device buffers.
    param_shapes: BTreeMap<String, Vec<usize>>,
    /// Parameters the plan folded in on the host.
    baked: std::collections::BTreeSet<String>,
    /// What a re-plan needs: the backend, the graph, and the parameters as last
    /// written (device buffers are read back before a re-plan).
    backend: OpenClBackend,
    graph: Graph,
    params: ParamStore<f32>,
    mode: Mode,
    training_graph: bool,
    /// (input index, classes) of a training graph's labels.
    labels: Option<(usize, usize)>,
    crop_params: BTreeSet<String>,
    /// A parameter deciding a crop was written since the plan was built.
    stale: bool,
    seed: u64,
}

impl OpenClPrepared {
    pub fn executable(&self) -> &Executable {
        &self.exe
    }

    /// How many plans were built for this graph: the first, then one for each crop
    /// not in the cache (a crop seen before reuses its plan).
    pub fn plans_built(&self) -> usize {
        self.plans_built
    }

    fn record_params(&mut self) {
        let plan = &self.exe.plan;
        self.param_shapes = plan
            .params
            .keys()
            .filter_map(|name| Some((name.clone(), self.params.get(name)?.shape.clone())))
            .collect();
        self.baked = self
            .params
            .keys()
            .filter(|name| !plan.params.contains_key(*name))
            .cloned()
            .collect();
    }

    /// Copies the device parameters' current values into `params`.
    fn read_back(&mut self) -> Result<(), RunError> {
        for name in self.exe.plan.params.keys() {
            if let (Some(data), Some(shape)) =
                (self.exe.read_param(name), self.param_shapes.get(name))
            {
                self.params
                    .insert(name.clone(), Tensor::from_vec(shape.clone(), data?)?);
            }
        }
        Ok(())
    }

    /// Before a run: the crop is a constant of the step, decided anew from the mask
    /// parameters written since the plan was built ([`Self::recrop`]).
    fn recrop_if_stale(&mut self) -> Result<(), RunError> {
        if self.stale {
            self.stale = false;
            self.recrop()?;
        }
        Ok(())
    }

    /// Before a run after a crop parameter was written: the executable of the crops
    /// the parameters now decide, from the cache or built, with the current parameter
    /// values and inputs.
    fn recrop(&mut self) -> Result<(), RunError> {
        let Some(crops) = &self.crops else {
            self.replan(self.mode, true)?;
            return self.rewrite_inputs();
        };
        let key = crop_key(&self.graph, crops, &self.params)?;
        if self.crop_key.as_ref() == Some(&key) {
            return Ok(());
        }
        self.read_back()?;
        let exe = match self.plans.iter().position(|(k, _)| *k == key) {
            Some(at) => self.plans.remove(at).1,
            None => {
                self.plans_built += 1;
                self.backend
                    .build(&self.graph, &self.params, &self.input_shapes, self.mode)?
            }
        };
        let old = std::mem::replace(&mut self.exe, exe);
        if let Some(old_key) = self.crop_key.replace(key) {
            self.plans.push((old_key, old));
            if self.plans.len() > CACHED_PLANS {
                self.plans.remove(0);
            }
        }
        // A cached executable holds the values of its last use.
        for (name, value) in &self.params {
            if self.exe.plan.params.contains_key(name) {
                self.exe.write_param(name, value)?;
            }
        }
        self.exe.set_seed(self.seed)?;
        self.record_params();
        self.rewrite_inputs()
    }

    fn rewrite_inputs(&self) -> Result<(), RunError> {
        match &self.inputs {
            Some(inputs) => self.exe.write_inputs(inputs),
            None => Ok(()),
        }
    }

    /// Builds the plan again in `mode` from the current parameter values; the new
    /// executable replaces the old one only if its plan differs (`only_if_changed`).
    fn replan(&mut self, mode: Mode, only_if_changed: bool) -> Result<(), RunError> {
        self.read_back()?;
        let target = self.backend.target;
        let plan = build_plan_in(&self.graph, &self.params, &self.input_shapes, target, mode)?;
        let same = |a: &crate::kernel_ir::plan::Plan, b: &crate::kernel_ir::plan::Plan| {
            a.kernels == b.kernels && a.steps == b.steps
        };
        if !(only_if_changed && same(&plan, &self.exe.plan)) {
            self.exe = Executable::new(&self.backend.ctx, plan)?;
            self.exe.set_seed(self.seed)?;
            self.mode = mode;
            self.record_params();
            // Cached plans are of the old mode or crops.
            self.plans.clear();
            self.crop_key = match &self.crops {
                Some(c) => Some(crop_key(&self.graph, c, &self.params)?),
                None => None,
            };
        }
        Ok(())
    }

    /// The interpreter's label check: whole numbers in `0..classes`.
    fn check_labels(&self, inputs: &[Tensor<f32>]) -> Result<(), RunError> {
        let Some((at, classes)) = self.labels else {
            return Ok(());
        };
        let Some(labels) = inputs.get(at) else {
            return Ok(());
        };
        for (i, &v) in labels.data.iter().enumerate() {
            if !(v >= 0.0 && v.fract() == 0.0 && (v as usize) < classes) {
                return Err(RunError::new(format!(
                    "label {i} is {v}, expected a class index below {classes} (a whole number from 0)"
                ))
                .hint("labels are the class numbers 0..K-1 of a K-way classifier"));
            }
        }
        Ok(())
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
        self.check_labels(inputs)?;
        if self.mode == Mode::Train && !self.crop_params.is_empty() {
            self.inputs = Some(inputs.to_vec());
        }
        self.exe.write_inputs(inputs)
    }

    fn run(&mut self) -> Result<(), RunError> {
        self.recrop_if_stale()?;
        self.exe.launch()
    }

    fn run_synced(&mut self, collective: &dyn StatsCollective) -> Result<(), RunError> {
        self.recrop_if_stale()?;
        self.exe.launch_synced(Some(collective))
    }

    fn set_sync_stats(&mut self, on: bool) -> Result<(), RunError> {
        if self.backend.target.sync_batch_stats == on {
            return Ok(());
        }
        // This prepared model's own copy of the backend: the plans it builds from now
        // on (for other crops too) keep the steps; `replan` drops the cached ones.
        self.backend.target.sync_batch_stats = on;
        self.replan(self.mode, true)
    }

    fn run_streaming(
        &mut self,
        collective: Option<&dyn StatsCollective>,
        on_ready: &mut dyn FnMut(usize, Tensor<f32>),
    ) -> Result<(), RunError> {
        self.recrop_if_stale()?;
        self.exe.launch_streaming(collective, on_ready)
    }

    fn read_outputs(&self) -> Result<Vec<Tensor<f32>>, RunError> {
        self.exe.read_outputs()
    }

    fn set_mode(&mut self, mode: Mode) -> Result<(), RunError> {
        if mode == self.mode {
            return Ok(());
        }
        if self.training_graph {
            return Err(RunError::new(
                "a training graph runs in training mode only: its backward differentiates \
                 batch norm with batch statistics",
            )
            .hint("prepare the model graph (not its training graph) to evaluate"));
        }
        // Inputs written before are kept by the caller, not by a new plan.
        self.replan(mode, false)
    }

    fn set_seed(&mut self, seed: u64) -> Result<(), RunError> {
        self.seed = seed;
        self.exe.set_seed(seed)
    }

    fn write_param(&mut self, name: &str, value: &Tensor<f32>) -> Result<(), RunError> {
        if let Some(e) = self.baked_in(name) {
            return Err(e);
        }
        check_param(name, self.param_shapes.get(name), value)?;
        if self.mode == Mode::Train && self.crop_params.contains(name) {
            // The host copy decides the next run's crops.
            self.params.insert(name.to_string(), value.clone());
            self.stale = true;
        }
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
