//! Running a plan with JIT-compiled kernels: host memory for the buffers (one
//! allocation per storage slot, shared by the temporaries planned into it, and one per
//! other buffer), the kernels compiled (or found in the compiler's cache), and one
//! launch per step with its buffer addresses resolved, so a run is input copies,
//! calls and output copies.
//!
//! rayon splits each launch's flattened grid into contiguous chunks: about four per
//! thread, so an uneven chunk does not idle the pool; a launch too small to pay for a
//! fork runs on the calling thread. Kernels write disjoint elements per grid point (the
//! OpenCL contract the lowering keeps), so chunks never race.

use super::compile::{CompileStats, Compiler, KernelFn};
use super::kernels::isa::Isa;
use super::native::NativeCall;
use crate::kernel_ir::native::{NativeOp, SyncStats};
use crate::kernel_ir::plan::{BufKind, Plan};
use crate::runtime::sync_stats::{self, StatsCollective};
use crate::runtime::RunError;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Below this many flops and grid points, a launch runs on the calling thread: a
/// rayon fork and join costs more than it saves there. LeNet at batch 1, whose
/// launches are all smaller, ran in 0.110 ms on one thread against 0.141 ms on two
/// with a threshold of 200 kflop and 256 points (best of 200, `fnetc bench`).
const SERIAL_FLOPS: u64 = 1_000_000;
const SERIAL_POINTS: usize = 4096;

/// One step: a kernel launch or a native routine call.
struct Launch {
    work: Work,
    layer: String,
}

enum Work {
    /// The kernel, its argument addresses, and its grid's point count.
    Kernel {
        f: KernelFn,
        args: Vec<*mut f32>,
        points: usize,
        chunks: usize,
    },
    Native(Box<NativeCall>),
    /// A host step combining batch statistics over the ranks (`runtime::sync_stats`):
    /// its buffers' addresses and lengths.
    Sync(SyncStats, Vec<(*mut f32, usize)>),
}

pub struct JitExecutable {
    pub plan: Plan,
    /// Every allocation: storage slots first, then the buffers of their own.
    _memory: Vec<Vec<f32>>,
    /// The address of each plan buffer.
    ptrs: Vec<*mut f32>,
    /// Launches of `plan.steps`, then of `plan.setup`.
    launches: Vec<Launch>,
    /// When each output is final (`Plan::output_ready`).
    ready: Vec<usize>,
    /// What building this executable compiled.
    pub compile: CompileStats,
    /// Whether runs go onto a worker of rayon's pool ([`in_pool`]): when at least two
    /// steps run in parallel.
    pooled: bool,
}

// SAFETY: the raw pointers address `_memory`, owned by the executable and never
// reallocated; `&self` methods that write through them (`launch`) are documented as
// not to be run concurrently with each other, which `&mut` access at the `Prepared`
// seam ensures.
unsafe impl Send for JitExecutable {}
unsafe impl Sync for JitExecutable {}

/// A native step of at least this many flops is taken to run in parallel (the routines'
/// own serial thresholds are 2¹⁸ multiply-adds).
const PARALLEL_NATIVE_FLOPS: u64 = 1 << 19;

struct Args(*const *mut f32);
// SAFETY: see `JitExecutable`; chunks write disjoint elements.
unsafe impl Sync for Args {}
unsafe impl Send for Args {}

impl JitExecutable {
    /// Compiles (or fetches) the plan's kernels, allocates and fills its buffers, and
    /// runs the setup launches.
    pub fn new(compiler: &Compiler, plan: Plan) -> Result<JitExecutable, RunError> {
        let (fns, compile) = compiler.compile(&plan.kernels)?;
        let mut memory: Vec<Vec<f32>> =
            plan.slot_len.iter().map(|&l| vec![0.0; l.max(1)]).collect();
        let idle = plan.idle_temps();
        let mut own = Vec::with_capacity(plan.buffers.len());
        for (i, b) in plan.buffers.iter().enumerate() {
            own.push(match (&b.kind, plan.slot[i]) {
                (BufKind::Temp, Some(s)) => Err(s),
                (BufKind::Const(data), _) => {
                    let mut v = data.clone();
                    v.resize(b.len.max(1), 0.0);
                    memory.push(v);
                    Ok(memory.len() - 1)
                }
                _ if idle[i] => {
                    memory.push(vec![0.0; 1]);
                    Ok(memory.len() - 1)
                }
                _ => {
                    memory.push(vec![0.0; b.len.max(1)]);
                    Ok(memory.len() - 1)
                }
            });
        }
        let ptrs: Vec<*mut f32> = own
            .iter()
            .map(|at| match *at {
                Ok(m) | Err(m) => memory[m].as_mut_ptr(),
            })
            .collect();
        let threads = rayon::current_num_threads();
        let natives = (plan.steps.iter().chain(&plan.setup)).any(|s| {
            s.native
                .is_some_and(|op| !matches!(op, NativeOp::SyncStats(_)))
        });
        let isa = if natives {
            Some(Isa::from_env().map_err(|e| RunError::new(e.to_string()))?)
        } else {
            None
        };
        let param_bufs: std::collections::BTreeSet<usize> = plan.params.values().copied().collect();
        let mut launches = Vec::new();
        for step in plan.steps.iter().chain(&plan.setup) {
            let work = match (&step.native, isa) {
                (Some(NativeOp::SyncStats(op)), _) => Work::Sync(
                    *op,
                    (step.args.iter())
                        .map(|&a| (ptrs[a], plan.buffers[a].len))
                        .collect(),
                ),
                (Some(op), Some(isa)) => {
                    let args = step
                        .args
                        .iter()
                        .map(|&a| (ptrs[a], plan.buffers[a].len))
                        .collect();
                    let w = step.args.get(1).copied().unwrap_or(usize::MAX);
                    let constant = w < plan.buffers.len()
                        && matches!(plan.buffers[w].kind, BufKind::Const(_))
                        && !param_bufs.contains(&w);
                    Work::Native(Box::new(NativeCall::new(
                        *op,
                        isa,
                        args,
                        constant,
                        &step.layer,
                    )?))
                }
                _ => {
                    let k = &plan.kernels[step.kernel];
                    let points: usize = k.grid.iter().product();
                    let serial = k.flops < SERIAL_FLOPS && points < SERIAL_POINTS;
                    Work::Kernel {
                        f: fns[step.kernel].clone(),
                        args: step.args.iter().map(|&a| ptrs[a]).collect(),
                        points,
                        chunks: if serial || threads == 1 {
                            1
                        } else {
                            points.min(4 * threads)
                        },
                    }
                }
            };
            launches.push(Launch {
                work,
                layer: step.layer.clone(),
            });
        }
        let parallel = launches[..plan.steps.len()]
            .iter()
            .filter(|l| match &l.work {
                Work::Kernel { chunks, .. } => *chunks > 1,
                Work::Native(call) => call.flops() >= PARALLEL_NATIVE_FLOPS,
                Work::Sync(..) => false,
            })
            .count();
        let exe = JitExecutable {
            pooled: parallel >= 2 && threads > 1,
            ready: plan.output_ready(),
            plan,
            _memory: memory,
            ptrs,
            launches,
            compile,
        };
        exe.run_setup();
        Ok(exe)
    }

    /// The bytes the buffers hold, as `opencl::Executable::device_bytes` counts them.
    pub fn host_bytes(&self) -> u64 {
        let n: usize = self._memory.iter().map(Vec::len).sum();
        (n * std::mem::size_of::<f32>()) as u64
    }

    /// Runs one step; a statistics step combines over `collective` (`None`: this
    /// process alone, which leaves the statistics as they are).
    fn run(launch: &Launch, collective: Option<&dyn StatsCollective>) {
        let (f, args, points, chunks) = match &launch.work {
            Work::Native(call) => return call.run(),
            Work::Sync(op, bufs) => return Self::sync(*op, bufs, collective),
            Work::Kernel {
                f,
                args,
                points,
                chunks,
            } => (f, args, points, chunks),
        };
        let args = Args(args.as_ptr());
        let (n, chunks) = (*points as i64, *chunks as i64);
        let f = f.f;
        let call = |c: i64| {
            let a = &args;
            // SAFETY: the kernel indexes its buffers within the lengths the plan gave
            // them (the lowering's contract, the same OpenCL relies on), and
            // chunks cover disjoint grid points.
            unsafe { f(a.0, n * c / chunks, n * (c + 1) / chunks) }
        };
        if chunks <= 1 {
            call(0);
        } else {
            (0..chunks).into_par_iter().for_each(call);
        }
    }

    fn sync(op: SyncStats, bufs: &[(*mut f32, usize)], collective: Option<&dyn StatsCollective>) {
        // SAFETY: each address holds its buffer's length (or one element for an idle
        // temporary, which no step reads or writes); the lowering gives a statistics
        // step distinct buffers, and no launch runs beside this one.
        let view = |i: usize| unsafe { std::slice::from_raw_parts_mut(bufs[i].0, bufs[i].1) };
        match op {
            SyncStats::Moments { c, count } => {
                sync_stats::combine_moments(view(0), c, count, collective)
            }
            SyncStats::BackwardSums { c } => {
                sync_stats::combine_backward_sums(view(0), view(1), c, collective)
            }
        }
    }

    fn run_setup(&self) {
        for l in &self.launches[self.plan.steps.len()..] {
            Self::run(l, None);
        }
    }

    /// The launches' layers, in step order (for profiles).
    pub fn layers(&self) -> impl Iterator<Item = &str> {
        self.launches.iter().map(|l| l.layer.as_str())
    }

    fn slice(&self, buf: usize) -> &[f32] {
        // SAFETY: `ptrs[buf]` addresses at least the buffer's length (or one element
        // for an idle temporary, never read).
        unsafe { std::slice::from_raw_parts(self.ptrs[buf], self.plan.buffers[buf].len) }
    }

    fn write(&self, buf: usize, data: &[f32]) {
        let len = data.len().min(self.plan.buffers[buf].len);
        // SAFETY: as in `slice`; no launch runs during a write (`&mut` at the seam).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptrs[buf], len) }
    }

    /// Overwrites parameter `name` and re-derives what depends on it (the setup
    /// launches), as `opencl::Executable::write_param` does.
    pub fn write_param(&self, name: &str, value: &Tensor<f32>) -> Result<(), RunError> {
        let buf = *self.plan.params.get(name).ok_or_else(|| {
            RunError::new(format!(
                "parameter `{name}` is not a buffer of this plan (baked in when the plan was made)"
            ))
            .hint("build a new plan with the new weights")
        })?;
        if value.numel() != self.plan.buffers[buf].len {
            return Err(RunError::new(format!(
                "parameter `{name}` has {} elements, got {:?}",
                self.plan.buffers[buf].len, value.shape
            )));
        }
        self.write(buf, &value.data);
        self.run_setup();
        Ok(())
    }

    /// Parameter `name`'s current value (`None`: baked in on the host).
    pub fn read_param(&self, name: &str) -> Option<Vec<f32>> {
        let buf = *self.plan.params.get(name)?;
        Some(self.slice(buf).to_vec())
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
            self.write(*buf, &t.data);
        }
        Ok(())
    }

    /// Sets the seed of the next runs' dropout masks (`runtime::dropout`).
    pub fn set_seed(&self, seed: u64) {
        if let Some(buf) = self.plan.seed {
            let words = crate::runtime::dropout::seed_words(seed).map(|w| w as f32);
            self.write(buf, &words);
        }
    }

    /// Runs every step; a training plan then copies its running-statistic updates into
    /// the statistics' buffers.
    pub fn launch(&self) {
        self.launch_synced(None)
    }

    /// [`JitExecutable::launch`] with the statistics steps of a synchronised plan
    /// (SyncBatchNorm) combining over `collective`.
    pub fn launch_synced(&self, collective: Option<&dyn StatsCollective>) {
        let steps = InPool((self, collective));
        in_pool(self.pooled, move || {
            let (exe, collective) = steps.get();
            for l in &exe.launches[..exe.plan.steps.len()] {
                Self::run(l, collective);
            }
        });
        self.apply_updates();
    }

    /// Copies a training plan's running-statistic updates into the statistics' buffers.
    fn apply_updates(&self) {
        for &(from, to) in &self.plan.updates {
            let len = self.plan.buffers[to].len.min(self.plan.buffers[from].len);
            // SAFETY: both buffers hold at least `len` elements; an update never
            // copies a buffer onto itself (`copy` tolerates overlap regardless).
            unsafe { std::ptr::copy(self.ptrs[from], self.ptrs[to], len) }
        }
    }

    /// [`JitExecutable::launch`] step by step: the wall time of each step.
    pub fn launch_timed(&self) -> Vec<std::time::Duration> {
        let exe = InPool(self);
        in_pool(self.pooled, move || {
            let exe = exe.get();
            exe.launches[..exe.plan.steps.len()]
                .iter()
                .map(|l| {
                    let t = std::time::Instant::now();
                    Self::run(l, None);
                    t.elapsed()
                })
                .collect()
        })
    }

    pub fn read_outputs(&self) -> Result<Vec<Tensor<f32>>, RunError> {
        (0..self.plan.outputs.len())
            .map(|i| self.read_output(i))
            .collect()
    }

    fn read_output(&self, i: usize) -> Result<Tensor<f32>, RunError> {
        let (buf, shape) = &self.plan.outputs[i];
        let n: usize = shape.iter().product();
        let data = self.slice(*buf)[..n].to_vec();
        Ok(Tensor::from_vec(shape.clone(), data)?)
    }

    /// When each output is final, as a count of steps run (see `ready`): the
    /// earliest point [`JitExecutable::launch_streaming`] hands it out.
    pub fn output_ready(&self) -> &[usize] {
        &self.ready
    }

    /// [`JitExecutable::launch`], handing each output to `on_ready` (with its index)
    /// as soon as the last step that touches its buffer has run, while the later
    /// steps are still to come: each output exactly once, with the value
    /// [`JitExecutable::read_outputs`] reads after `launch`.
    /// Statistics steps (SyncBatchNorm) combine over `collective` as in
    /// [`JitExecutable::launch_synced`].
    pub fn launch_streaming(
        &self,
        collective: Option<&dyn StatsCollective>,
        on_ready: &mut dyn FnMut(usize, Tensor<f32>),
    ) -> Result<(), RunError> {
        let args = InPool((self, collective, on_ready));
        in_pool(self.pooled, move || {
            let (exe, collective, on_ready) = args.get();
            let steps = exe.plan.steps.len();
            let due = crate::kernel_ir::plan::due_after(&exe.ready, steps);
            let mut hand = |at: usize| -> Result<(), RunError> {
                for &i in &due[at] {
                    on_ready(i, exe.read_output(i)?);
                }
                Ok(())
            };
            hand(0)?;
            for (k, l) in exe.launches[..steps].iter().enumerate() {
                Self::run(l, collective);
                hand(k + 1)?;
            }
            exe.apply_updates();
            hand(steps + 1)
        })
    }
}

/// Compiles `k` with `compiler` and runs it on `bufs` (one per kernel parameter, in
/// order), its grid split into `chunks` ranges run one after another: for tests and
/// micro-benchmarks of single kernels.
///
/// # Safety
///
/// Every index `k` reads or writes lies within its buffer, as a plan's lowering
/// guarantees for the plan's kernels; a kernel that indexes past a buffer is undefined
/// behaviour, as in OpenCL.
pub unsafe fn run_kernel(
    compiler: &Compiler,
    k: &crate::kernel_ir::Kernel,
    bufs: &mut [Vec<f32>],
    chunks: usize,
) -> Result<(), RunError> {
    if bufs.len() != k.params.len() {
        return Err(RunError::new(format!(
            "kernel `{}` takes {} buffers, got {}",
            k.name,
            k.params.len(),
            bufs.len()
        )));
    }
    let (fns, _) = compiler.compile(std::slice::from_ref(k))?;
    let args: Vec<*mut f32> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
    let n: i64 = k.grid.iter().product::<usize>() as i64;
    let chunks = chunks.max(1) as i64;
    for c in 0..chunks {
        // SAFETY: the caller's contract.
        unsafe { (fns[0].f)(args.as_ptr(), n * c / chunks, n * (c + 1) / chunks) }
    }
    Ok(())
}

/// A value handed to a rayon worker of this process's pool.
struct InPool<T>(T);
// SAFETY: the calling thread blocks until the pool has run `f`, so nothing touches the
// wrapped values concurrently; they are used from one thread at a time, which may be
// another than the caller's. What is wrapped here is the executor (Sync), the
// statistics collective (MPI, initialised with MPI_THREAD_MULTIPLE) and a streaming
// run's `on_ready`, whose one caller (`train::overlap`) only sends into a channel.
unsafe impl<T> Send for InPool<T> {}

impl<T> InPool<T> {
    /// The value (a method, so a closure captures the whole wrapper, not its field).
    fn get(self) -> T {
        self.0
    }
}

/// Runs `f` on a worker of rayon's global pool when `pooled`, so that every parallel
/// step inside forks and joins within the pool: from outside it, each would be
/// injected and the calling thread put to sleep until a worker finished it (two thread
/// wake-ups per step, which at batch 1 cost more than the step). Entering the pool
/// costs those two wake-ups once, so a plan with fewer than two parallel steps stays
/// on the calling thread.
fn in_pool<R: Send>(pooled: bool, f: impl FnOnce() -> R + Send) -> R {
    if pooled && rayon::current_thread_index().is_none() {
        rayon::scope(|_| f())
    } else {
        f()
    }
}
