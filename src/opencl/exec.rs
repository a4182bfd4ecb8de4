//! Running a plan on an OpenCL device: the plan's kernels, each from the program
//! that holds it (`ClContext::kernels`: kernels built for an earlier plan are reused,
//! under the name they were built with, the new ones built as one program), device
//! buffers for inputs, constants and storage slots, and one kernel object per
//! launch with its buffers bound, so a run is writes, launches and reads only.
//!
//! An `Executable` holds its own handle on the queue (OpenCL objects are reference
//! counted), not a borrow of the `ClContext`, so that `crate::backend` can keep one
//! beside the context it came from.

use super::context::ClContext;
use super::render;
use crate::kernel_ir::native::{NativeOp, SyncStats};
use crate::kernel_ir::plan::{BufKind, Plan, Step};
use crate::runtime::sync_stats::{self, StatsCollective};
use crate::runtime::RunError;
use crate::tensor::Tensor;
use ocl::{Buffer, Kernel, MemFlags, Queue, SpatialDims};

/// Waits for a queue when dropped: host memory that enqueued non-blocking reads
/// write is freed only after them.
struct Drain<'q>(&'q Queue);

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        let _ = self.0.finish();
    }
}

pub struct Executable {
    queue: Queue,
    pub plan: Plan,
    /// The plan's whole program source, for inspection; the programs its kernels
    /// come from may each hold only some of them.
    pub source: String,
    buffers: Vec<Buffer<f32>>,
    /// One per step of `plan.steps`, then of `plan.setup`: `None` for a statistics
    /// step (SyncBatchNorm), which the host runs between launches.
    launches: Vec<Option<Kernel>>,
}

fn cl_err(what: &str, e: impl std::fmt::Display) -> RunError {
    RunError::new(format!("OpenCL: {what}: {e}"))
}

fn dims(grid: &[usize]) -> SpatialDims {
    match *grid {
        [a] => SpatialDims::One(a),
        [a, b] => SpatialDims::Two(a, b),
        [a, b, c, ..] => SpatialDims::Three(a, b, c),
        [] => SpatialDims::One(1),
    }
}

/// The program source of a plan: every distinct kernel, in launch order.
pub fn plan_source(plan: &Plan) -> String {
    render::program(&plan.kernels.iter().collect::<Vec<_>>())
}

impl Executable {
    /// Builds (or takes from the caches) the plan's kernels and uploads the constants.
    pub fn new(ctx: &ClContext, plan: Plan) -> Result<Executable, RunError> {
        let bodies: Vec<String> = plan.kernels.iter().map(render::kernel).collect();
        let named: Vec<(&str, &str)> = (plan.kernels.iter().zip(&bodies))
            .map(|(k, b)| (k.name.as_str(), b.as_str()))
            .collect();
        let built = ctx.kernels(&named)?;
        let source = render::assemble(&bodies);
        let alloc = |len: usize, data: Option<&[f32]>| -> Result<Buffer<f32>, RunError> {
            let mut b = Buffer::<f32>::builder()
                .queue(ctx.queue.clone())
                .len(len.max(1))
                .flags(MemFlags::new().read_write());
            if let Some(d) = data.filter(|d| !d.is_empty()) {
                b = b.copy_host_slice(d);
            }
            b.build().map_err(|e| cl_err("allocating a buffer", e))
        };
        let slots = plan
            .slot_len
            .iter()
            .map(|&len| alloc(len, None))
            .collect::<Result<Vec<_>, _>>()?;
        let mut buffers = Vec::with_capacity(plan.buffers.len());
        let idle = plan.idle_temps();
        for (i, b) in plan.buffers.iter().enumerate() {
            buffers.push(match (&b.kind, plan.slot[i]) {
                (BufKind::Temp, Some(s)) => slots[s].clone(),
                (BufKind::Const(data), _) => alloc(b.len, Some(data))?,
                _ if idle[i] => alloc(1, None)?,
                _ => alloc(b.len, None)?,
            });
        }
        let mut launches = Vec::with_capacity(plan.steps.len() + plan.setup.len());
        for step in plan.steps.iter().chain(&plan.setup) {
            if let Some(NativeOp::SyncStats(_)) = step.native {
                launches.push(None);
                continue;
            }
            if let Some(op) = &step.native {
                // OpenCL targets never allow native steps (`Target::native` is `Off`).
                return Err(RunError::new(format!(
                    "`{}`: the plan calls the native routine {}, which OpenCL cannot run",
                    step.layer,
                    op.name()
                ))
                .hint("lower the plan for an OpenCL target (its `native` is `Off`)"));
            }
            let k = &plan.kernels[step.kernel];
            let mut builder = Kernel::builder();
            builder
                .program(&built[step.kernel].0)
                .name(built[step.kernel].1.as_str())
                .queue(ctx.queue.clone())
                .global_work_size(dims(&k.grid));
            if let Some(l) = k
                .local
                .clone()
                .or_else(|| super::local::choose(&k.grid, &ctx.info))
            {
                builder.local_work_size(dims(&l));
            }
            for &a in &step.args {
                builder.arg(&buffers[a]);
            }
            launches.push(Some(builder.build().map_err(|e| {
                cl_err(&format!("kernel `{}` for `{}`", k.name, step.layer), e)
            })?));
        }
        let exe = Executable {
            queue: ctx.queue.clone(),
            plan,
            source,
            buffers,
            launches,
        };
        exe.run_setup()?;
        Ok(exe)
    }

    /// The bytes of device memory this executable allocated: one buffer per storage
    /// slot, shared by the temporaries planned into it, and one per other buffer
    /// (inputs, outputs, parameters, constants), as `new` allocates them.
    pub fn device_bytes(&self) -> u64 {
        let slots: usize = self.plan.slot_len.iter().map(|&l| l.max(1)).sum();
        let idle = self.plan.idle_temps();
        let own: usize = (self.plan.buffers.iter().zip(&self.plan.slot).zip(idle))
            .filter(|((b, s), _)| !(matches!(b.kind, BufKind::Temp) && s.is_some()))
            .map(|((b, _), idle)| if idle { 1 } else { b.len.max(1) })
            .sum();
        ((slots + own) * std::mem::size_of::<f32>()) as u64
    }

    /// Runs the `setup` launches (kernels synthesised from parameters).
    fn run_setup(&self) -> Result<(), RunError> {
        let setup = &self.launches[self.plan.steps.len()..];
        for (k, step) in setup.iter().zip(&self.plan.setup) {
            let Some(k) = k else { continue };
            // SAFETY: as in `launch`.
            unsafe { k.enq() }.map_err(|e| cl_err(&format!("setting up `{}`", step.layer), e))?;
        }
        self.queue
            .finish()
            .map_err(|e| cl_err("waiting for the queue", e))
    }

    /// Overwrites parameter `name` on the device and re-derives what depends on it
    /// (synthesised FlexConv kernels): a weight update without a new plan. Parameters
    /// the plan baked in on the host (conv biases, batch-norm statistics, mask
    /// parameters that fix a crop) are refused.
    pub fn write_param(&self, name: &str, value: &Tensor<f32>) -> Result<(), RunError> {
        let buf = *self.plan.params.get(name).ok_or_else(|| {
            RunError::new(format!(
                "parameter `{name}` is not a device buffer of this plan (baked in when the plan was made)"
            ))
            .hint("build a new plan with the new weights")
        })?;
        if value.numel() != self.plan.buffers[buf].len {
            return Err(RunError::new(format!(
                "parameter `{name}` has {} elements, got {:?}",
                self.plan.buffers[buf].len, value.shape
            )));
        }
        self.buffers[buf]
            .write(&value.data[..])
            .enq()
            .map_err(|e| cl_err("writing a parameter", e))?;
        self.run_setup()
    }

    /// Reads parameter `name` back from the device (`None`: the plan baked it in on
    /// the host, see `write_param`).
    pub fn read_param(&self, name: &str) -> Option<Result<Vec<f32>, RunError>> {
        let buf = *self.plan.params.get(name)?;
        let mut data = vec![0.0f32; self.plan.buffers[buf].len];
        if data.is_empty() {
            return Some(Ok(data));
        }
        Some(
            self.buffers[buf]
                .read(&mut data[..])
                .enq()
                .map(|()| data)
                .map_err(|e| cl_err("reading a parameter", e)),
        )
    }

    /// Runs the plan on `inputs` (shaped as the plan was built for).
    pub fn run(&self, inputs: &[Tensor<f32>]) -> Result<Vec<Tensor<f32>>, RunError> {
        self.write_inputs(inputs)?;
        self.launch()?;
        self.read_outputs()
    }

    pub fn write_inputs(&self, inputs: &[Tensor<f32>]) -> Result<(), RunError> {
        if inputs.len() != self.plan.inputs.len() {
            return Err(RunError::new(format!(
                "the plan takes {} input(s), got {}",
                self.plan.inputs.len(),
                inputs.len()
            )));
        }
        for ((buf, shape), t) in self.plan.inputs.iter().zip(inputs) {
            if &t.shape != shape {
                return Err(RunError::new(format!(
                    "input of shape {:?} for a plan built for {shape:?}",
                    t.shape
                )));
            }
            if !t.data.is_empty() {
                self.buffers[*buf]
                    .write(&t.data[..])
                    .enq()
                    .map_err(|e| cl_err("writing an input", e))?;
            }
        }
        Ok(())
    }

    /// Sets the seed of the next runs' dropout masks (`runtime::dropout`); a plan
    /// without dropout ignores it.
    pub fn set_seed(&self, seed: u64) -> Result<(), RunError> {
        let Some(buf) = self.plan.seed else {
            return Ok(());
        };
        let words = crate::runtime::dropout::seed_words(seed).map(|w| w as f32);
        self.buffers[buf]
            .write(&words[..])
            .enq()
            .map_err(|e| cl_err("writing the dropout seed", e))
    }

    /// Enqueues every launch and waits for them; a training plan then copies its
    /// running-statistic updates into the statistics' buffers.
    pub fn launch(&self) -> Result<(), RunError> {
        self.launch_synced(None)
    }

    /// [`Executable::launch`] with the statistics steps of a synchronised plan
    /// (SyncBatchNorm) combining over `collective`: each reads its small buffers back
    /// (a blocking read, after the launches before it), combines on the host and
    /// writes them again before the next launch is enqueued.
    pub fn launch_synced(&self, collective: Option<&dyn StatsCollective>) -> Result<(), RunError> {
        for (k, step) in self.launches.iter().zip(&self.plan.steps) {
            let Some(k) = k else {
                self.sync(step, collective)?;
                continue;
            };
            // SAFETY: every argument is a buffer of the length the kernel indexes, by
            // construction of the plan.
            unsafe { k.enq() }.map_err(|e| cl_err(&format!("running `{}`", step.layer), e))?;
        }
        self.enqueue_updates()?;
        self.queue
            .finish()
            .map_err(|e| cl_err("waiting for the queue", e))
    }

    /// Enqueues the copies of a training plan's running-statistic updates into the
    /// statistics' buffers.
    fn enqueue_updates(&self) -> Result<(), RunError> {
        for &(from, to) in &self.plan.updates {
            let len = self.plan.buffers[to].len;
            self.buffers[from]
                .copy(&self.buffers[to], Some(0), Some(len))
                .enq()
                .map_err(|e| cl_err("updating a running statistic", e))?;
        }
        Ok(())
    }

    /// Runs the statistics step `step` on the host (`runtime::sync_stats`).
    fn sync(&self, step: &Step, collective: Option<&dyn StatsCollective>) -> Result<(), RunError> {
        let Some(NativeOp::SyncStats(op)) = step.native else {
            unreachable!("only statistics steps have no kernel")
        };
        let mut bufs = Vec::with_capacity(step.args.len());
        for &a in &step.args {
            let mut data = vec![0.0f32; self.plan.buffers[a].len];
            // Blocking (ocl's default): the queue is in order, so this waits for the
            // launches that wrote the buffer.
            self.buffers[a]
                .read(&mut data[..])
                .enq()
                .map_err(|e| cl_err(&format!("reading `{}`'s statistics", step.layer), e))?;
            bufs.push(data);
        }
        let written = match op {
            SyncStats::Moments { c, count } => {
                sync_stats::combine_moments(&mut bufs[0], c, count, collective);
                0
            }
            SyncStats::BackwardSums { c } => {
                let (m, st) = bufs.split_at_mut(1);
                sync_stats::combine_backward_sums(&m[0], &mut st[0], c, collective);
                1
            }
        };
        self.buffers[step.args[written]]
            .write(&bufs[written][..])
            .enq()
            .map_err(|e| cl_err(&format!("writing `{}`'s statistics", step.layer), e))
    }

    /// [`Executable::launch`], waiting after every launch: the wall time of each step,
    /// in `plan.steps` order. For profiling only: the waits cost what a pipelined
    /// queue hides (PoCL's per-launch overhead), so the sum exceeds a `launch`.
    pub fn launch_timed(&self) -> Result<Vec<std::time::Duration>, RunError> {
        let mut times = Vec::with_capacity(self.launches.len());
        for (k, step) in self.launches.iter().zip(&self.plan.steps) {
            let t = std::time::Instant::now();
            match k {
                // SAFETY: as in `launch`.
                Some(k) => unsafe { k.enq() }
                    .map_err(|e| cl_err(&format!("running `{}`", step.layer), e))?,
                None => self.sync(step, None)?,
            }
            self.queue
                .finish()
                .map_err(|e| cl_err("waiting for the queue", e))?;
            times.push(t.elapsed());
        }
        Ok(times)
    }

    /// [`Executable::launch`], handing each output to `on_ready` (with its index) as
    /// soon as it is final (`Plan::output_ready`): every launch is enqueued with a
    /// non-blocking read of each output after its last writer, and the host waits on
    /// the reads in that order while the device runs the later launches. Each output
    /// exactly once, with the value [`Executable::read_outputs`] reads after `launch`.
    /// Statistics steps (SyncBatchNorm) combine over `collective` as in
    /// [`Executable::launch_synced`].
    pub fn launch_streaming(
        &self,
        collective: Option<&dyn StatsCollective>,
        on_ready: &mut dyn FnMut(usize, Tensor<f32>),
    ) -> Result<(), RunError> {
        let steps = self.plan.steps.len();
        let due = self.plan.outputs_due();
        // The reads' host memory: allocated before any read is enqueued, and neither
        // moved nor freed while a read may still write it. `_drain` (dropped before
        // `host`, also on an error or a panic in `on_ready`) waits for the queue.
        let mut host: Vec<Vec<f32>> = (self.plan.outputs.iter())
            .map(|(_, shape)| vec![0.0f32; shape.iter().product()])
            .collect();
        let _drain = Drain(&self.queue);
        let mut events: Vec<Option<ocl::Event>> = vec![None; host.len()];
        for (at, outputs) in due.iter().enumerate() {
            if (1..=steps).contains(&at) {
                let step = &self.plan.steps[at - 1];
                match &self.launches[at - 1] {
                    // SAFETY: as in `launch`.
                    Some(k) => unsafe { k.enq() }
                        .map_err(|e| cl_err(&format!("running `{}`", step.layer), e))?,
                    None => self.sync(step, collective)?,
                }
            } else if at == steps + 1 {
                self.enqueue_updates()?;
            }
            for &i in outputs {
                if host[i].is_empty() {
                    continue;
                }
                let mut ev = ocl::Event::empty();
                // SAFETY: `host[i]` outlives the read (see `_drain`), and nothing
                // touches it until its event has completed.
                unsafe {
                    self.buffers[self.plan.outputs[i].0]
                        .read(&mut host[i][..])
                        .block(false)
                        .enew(&mut ev)
                        .enq()
                }
                .map_err(|e| cl_err("reading an output", e))?;
                events[i] = Some(ev);
            }
        }
        self.queue
            .flush()
            .map_err(|e| cl_err("flushing the queue", e))?;
        for i in due.into_iter().flatten() {
            if let Some(ev) = &events[i] {
                ev.wait_for()
                    .map_err(|e| cl_err("waiting for an output", e))?;
            }
            let data = std::mem::take(&mut host[i]);
            on_ready(i, Tensor::from_vec(self.plan.outputs[i].1.clone(), data)?);
        }
        self.queue
            .finish()
            .map_err(|e| cl_err("waiting for the queue", e))
    }

    pub fn read_outputs(&self) -> Result<Vec<Tensor<f32>>, RunError> {
        let mut out = Vec::with_capacity(self.plan.outputs.len());
        for (buf, shape) in &self.plan.outputs {
            let mut data = vec![0.0f32; shape.iter().product()];
            if !data.is_empty() {
                self.buffers[*buf]
                    .read(&mut data[..])
                    .enq()
                    .map_err(|e| cl_err("reading an output", e))?;
            }
            out.push(Tensor::from_vec(shape.clone(), data)?);
        }
        Ok(out)
    }
}
