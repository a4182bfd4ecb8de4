//! The Cranelift JIT backend behind the [`Backend`] seam: the same kernel-IR plans as
//! the OpenCL backend, compiled to machine code for this CPU (`crate::jit`) and run on
//! host memory with rayon.
//!
//! It follows the OpenCL backend's contract (`backend::opencl`'s module doc) in every
//! respect a caller sees: parameters the plan keeps as buffers can be written and read,
//! those baked in on the host are refused; a training graph is planned as a training
//! plan and refuses evaluation mode; a model graph is re-planned on a mode change; the
//! dropout seed, the labels check and the running-statistic updates are the same.
//! FlexConv crops are constants of a step: after a crop parameter is written, the next
//! run re-plans if the crops changed, and the compiler's cache (one per backend,
//! `jit::Compiler`) compiles only the kernels that changed with them, so no executable
//! cache is needed beside it.
//!
//! The code-generation target is 16-lane vectors × 4 output channels: Cranelift's
//! x86-64 backend has 128-bit vectors only, so a 16-lane value is four `f32x4` parts,
//! and of the tiles measured (4×8, 8×4, 8×8, 16×4) this one ran ResNet-20's convs
//! fastest at batch 8 and 64 and tied at batch 1 (docs/jit.md). Convs may also run as
//! native steps on `jit::kernels` (im2col + sgemm, Winograd), as the `jit` cost table
//! chooses (`FNET_JIT_CONV` forces one).

use super::replan::{crop_key, crop_nodes, crop_params, is_training_graph, labels_check};
use super::{check_param, no_param_or_buffer, Backend, BackendKind, Capabilities, Prepared};
use crate::cost::CostTableId;
use crate::ir::Graph;
use crate::jit::{CompileStats, Compiler, JitExecutable};
use crate::kernel_ir::native::NativeConvs;
use crate::kernel_ir::plan::{build_plan_in, Target};
use crate::runtime::sync_stats::StatsCollective;
use crate::runtime::{Mode, ParamStore, RunError};
use crate::tensor::Tensor;
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The JIT on this CPU, with its compiled-kernel cache.
#[derive(Clone)]
pub struct JitBackend {
    compiler: Arc<Compiler>,
    target: Target,
}

impl JitBackend {
    /// The default target (see the module doc).
    pub fn default_target() -> Target {
        Target {
            vector: 16,
            tile_co: 4,
            broadcast_weights: true,
            native: NativeConvs::Auto,
            sync_batch_stats: false,
        }
    }

    /// The default target with the convs `FNET_JIT_CONV` asks for (auto when unset).
    pub fn new() -> Result<JitBackend, RunError> {
        let native = NativeConvs::from_env()
            .map_err(|e| RunError::new(e).hint("unset it to let the cost table choose"))?;
        Ok(JitBackend {
            compiler: Arc::new(Compiler::new()?),
            target: Target {
                native,
                ..JitBackend::default_target()
            },
        })
    }

    /// The same compiler (and cache) with another code-generation target.
    pub fn with_target(&self, target: Target) -> JitBackend {
        JitBackend {
            compiler: self.compiler.clone(),
            target,
        }
    }

    pub fn target(&self) -> Target {
        self.target
    }

    pub fn compiler(&self) -> &Compiler {
        &self.compiler
    }

    /// [`Backend::prepare`] with the concrete type, whose plan can be inspected.
    pub fn prepare_plan(
        &self,
        graph: &Graph,
        params: &ParamStore<f32>,
        input_shapes: &[Vec<usize>],
    ) -> Result<JitPrepared, RunError> {
        let training_graph = is_training_graph(graph);
        let mode = if training_graph {
            Mode::Train
        } else {
            Mode::Eval
        };
        let crops = crop_nodes(graph);
        let exe = self.build(graph, params, input_shapes, mode)?;
        let mut prepared = JitPrepared {
            crop_key: crops
                .as_ref()
                .map(|c| crop_key(graph, c, params))
                .transpose()?,
            crops,
            plans_built: 1,
            compile: exe.compile,
            inputs: None,
            exe,
            input_shapes: input_shapes.to_vec(),
            param_shapes: BTreeMap::new(),
            baked: BTreeSet::new(),
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
    ) -> Result<JitExecutable, RunError> {
        let plan = build_plan_in(graph, params, input_shapes, self.target, mode)?;
        JitExecutable::new(&self.compiler, plan)
    }
}

impl Backend for JitBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Jit
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            f64: false,
            // Parameters live in the plan's buffers, and those folded on the host are
            // refused, as on a device.
            device_params: true,
            training: true,
        }
    }

    fn device(&self) -> String {
        format!(
            "jit (Cranelift, {} threads, {}-lane vectors)",
            rayon::current_num_threads(),
            self.target.vector
        )
    }

    fn cost_table(&self) -> CostTableId {
        // Fitted on the JIT itself (`fit_cost --backend jit`): direct, im2col,
        // Winograd F2/F4 and the FFT as this backend runs them.
        CostTableId::Jit
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

/// A plan compiled by the JIT.
pub struct JitPrepared {
    crops: Option<Vec<NodeIndex>>,
    crop_key: Option<Vec<Vec<usize>>>,
    plans_built: usize,
    /// What the first build compiled, and how long it took.
    compile: CompileStats,
    /// The inputs last written, kept while crops may change, so a new executable gets
    /// them too.
    inputs: Option<Vec<Tensor<f32>>>,
    exe: JitExecutable,
    input_shapes: Vec<Vec<usize>>,
    param_shapes: BTreeMap<String, Vec<usize>>,
    baked: BTreeSet<String>,
    backend: JitBackend,
    graph: Graph,
    params: ParamStore<f32>,
    mode: Mode,
    training_graph: bool,
    labels: Option<(usize, usize)>,
    crop_params: BTreeSet<String>,
    stale: bool,
    seed: u64,
}

impl JitPrepared {
    pub fn executable(&self) -> &JitExecutable {
        &self.exe
    }

    /// Plans built so far: the first and one per crop change.
    pub fn plans_built(&self) -> usize {
        self.plans_built
    }

    /// What the first build compiled.
    pub fn compile_stats(&self) -> CompileStats {
        self.compile
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

    /// Copies the plan's parameter buffers into `params`.
    fn read_back(&mut self) -> Result<(), RunError> {
        for name in self.exe.plan.params.keys() {
            if let (Some(data), Some(shape)) =
                (self.exe.read_param(name), self.param_shapes.get(name))
            {
                self.params
                    .insert(name.clone(), Tensor::from_vec(shape.clone(), data)?);
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

    /// Before a run after a crop parameter was written: a new plan if the crops the
    /// parameters now decide differ from the executable's.
    fn recrop(&mut self) -> Result<(), RunError> {
        if let Some(crops) = &self.crops {
            let key = crop_key(&self.graph, crops, &self.params)?;
            if self.crop_key.as_ref() == Some(&key) {
                return Ok(());
            }
        }
        self.replan(self.mode, true)?;
        match &self.inputs {
            Some(inputs) => self.exe.write_inputs(inputs),
            None => Ok(()),
        }
    }

    /// Builds the plan again in `mode` from the current parameter values; it replaces
    /// the executable only if it differs (`only_if_changed`).
    fn replan(&mut self, mode: Mode, only_if_changed: bool) -> Result<(), RunError> {
        self.read_back()?;
        let target = self.backend.target;
        let plan = build_plan_in(&self.graph, &self.params, &self.input_shapes, target, mode)?;
        let same = plan.kernels == self.exe.plan.kernels && plan.steps == self.exe.plan.steps;
        if !(only_if_changed && same) {
            self.exe = JitExecutable::new(&self.backend.compiler, plan)?;
            self.plans_built += 1;
            self.exe.set_seed(self.seed);
            self.mode = mode;
            self.record_params();
            self.crop_key = match &self.crops {
                Some(c) => Some(crop_key(&self.graph, c, &self.params)?),
                None => None,
            };
        }
        Ok(())
    }

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
                "parameter `{name}` was baked into the JIT plan on the host (folded into \
                 other constants), so it is not a buffer to read or write"
            ))
            .hint("prepare the model again with the new weights")
        })
    }
}

impl Prepared<f32> for JitPrepared {
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
        self.exe.launch();
        Ok(())
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

    fn run_synced(&mut self, collective: &dyn StatsCollective) -> Result<(), RunError> {
        self.recrop_if_stale()?;
        self.exe.launch_synced(Some(collective));
        Ok(())
    }

    fn set_sync_stats(&mut self, on: bool) -> Result<(), RunError> {
        if self.backend.target.sync_batch_stats == on {
            return Ok(());
        }
        // This prepared model's own copy of the backend: the plans it builds from now
        // on (a re-crop too) keep the steps.
        self.backend.target.sync_batch_stats = on;
        self.replan(self.mode, true)
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
        self.replan(mode, false)
    }

    fn set_seed(&mut self, seed: u64) -> Result<(), RunError> {
        self.seed = seed;
        self.exe.set_seed(seed);
        Ok(())
    }

    fn write_param(&mut self, name: &str, value: &Tensor<f32>) -> Result<(), RunError> {
        if let Some(e) = self.baked_in(name) {
            return Err(e);
        }
        check_param(name, self.param_shapes.get(name), value)?;
        if self.mode == Mode::Train && self.crop_params.contains(name) {
            self.params.insert(name.to_string(), value.clone());
            self.stale = true;
        }
        self.exe.write_param(name, value)
    }

    fn read_param(&self, name: &str) -> Result<Tensor<f32>, RunError> {
        if let Some(e) = self.baked_in(name) {
            return Err(e);
        }
        let (Some(shape), Some(data)) = (self.param_shapes.get(name), self.exe.read_param(name))
        else {
            return Err(no_param_or_buffer(name));
        };
        Ok(Tensor::from_vec(shape.clone(), data)?)
    }

    fn compile_time(&self) -> Option<Duration> {
        Some(self.compile.time)
    }
}
