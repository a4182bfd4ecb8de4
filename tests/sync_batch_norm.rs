//! SyncBatchNorm's training plans in one process (no MPI): two "ranks" are two
//! threads, each running its shard of a batch through its own synchronised plan
//! (`Prepared::set_sync_stats`, `run_synced`), their statistics summed by an
//! in-process collective. The shard-weighted gradients (`Σ_r (n_r/B) g_r`, as
//! `train::distributed::reduce_step` sums them), the loss and the running statistics
//! equal those of one plan at the whole batch, on the JIT and on OpenCL; without the
//! synchronisation they do not. `tests/train_mpi_sync_bn.rs` checks whole runs under
//! `mpirun`.

mod common;

use common::{perturbed_weights, random};
use fnet::autodiff::{differentiate, Loss, TrainingGraph};
use fnet::backend::{Backend, JitBackend, Prepared};
use fnet::runtime::sync_stats::StatsCollective;
use fnet::runtime::{Mode, ParamStore};
use fnet::tensor::Tensor;
use std::sync::{Barrier, Mutex};

/// Two threads' element-wise sum: each adds its buffer in, both wait, both read the
/// total, and the last to leave clears it for the next collective.
struct Pair {
    barrier: Barrier,
    total: Mutex<Vec<f64>>,
}

/// One thread's side of a [`Pair`].
struct Side<'a>(&'a Pair);

impl StatsCollective for Side<'_> {
    fn sum_f64(&self, buf: &mut [f64]) {
        let p = self.0;
        {
            let mut t = p.total.lock().unwrap();
            t.resize(buf.len(), 0.0);
            for (a, b) in t.iter_mut().zip(buf.iter()) {
                *a += b;
            }
        }
        p.barrier.wait();
        buf.copy_from_slice(&p.total.lock().unwrap());
        if p.barrier.wait().is_leader() {
            p.total.lock().unwrap().clear();
        }
        p.barrier.wait();
    }
}

fn setup() -> (TrainingGraph, ParamStore<f32>, Tensor<f32>, Tensor<f32>) {
    let m = common::models::program(&common::mpi::tiny_resnet(8));
    let tg = differentiate(&m.graph, &Loss::default()).unwrap();
    let params = perturbed_weights::<f32>(&m.graph, 11);
    let x = random::<f32>(&[7, 1, 8, 8], 12);
    let labels = Tensor::from_vec(vec![7], vec![0.0, 2.0, 1.0, 1.0, 0.0, 2.0, 2.0]).unwrap();
    (tg, params, x, labels)
}

fn rows(t: &Tensor<f32>, r: std::ops::Range<usize>) -> Tensor<f32> {
    let per: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = r.len();
    Tensor::from_vec(shape, t.data[r.start * per..r.end * per].to_vec()).unwrap()
}

/// The outputs of one plan at the whole batch, and of two synchronised (or, with
/// `sync` false, plain) ranks at 4 and 3 samples, reduced as the trainer reduces them:
/// the loss and gradients shard-weighted, the buffers rank 0's.
fn one_and_two(
    backend: &(dyn Fn() -> Box<dyn Backend> + Sync),
    sync: bool,
) -> (Vec<Tensor<f32>>, Vec<Tensor<f32>>, TrainingGraph) {
    let (tg, params, x, labels) = setup();
    let prepare = |n: usize| {
        let mut p = backend()
            .prepare(
                tg.graph.clone(),
                params.clone(),
                &[vec![n, 1, 8, 8], vec![n]],
            )
            .unwrap();
        p.set_mode(Mode::Train).unwrap();
        p
    };
    let one = prepare(7).forward(&[x.clone(), labels.clone()]).unwrap();
    let pair = Pair {
        barrier: Barrier::new(2),
        total: Mutex::new(Vec::new()),
    };
    let shards = [0..4, 4..7];
    let outs: Vec<Vec<Tensor<f32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = shards
            .iter()
            .map(|r| {
                let (pair, prepare, x, labels) = (&pair, &prepare, &x, &labels);
                s.spawn(move || {
                    let mut p = prepare(r.len());
                    p.set_sync_stats(sync).unwrap();
                    p.write_inputs(&[rows(x, r.clone()), rows(labels, r.clone())])
                        .unwrap();
                    p.run_synced(&Side(pair)).unwrap();
                    p.read_outputs().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (ng, nb) = (tg.grads.len(), tg.buffers.len());
    let mut two = outs[0].clone();
    for i in 0..1 + ng {
        for (k, v) in two[i].data.iter_mut().enumerate() {
            *v = (4.0 * outs[0][i].data[k] + 3.0 * outs[1][i].data[k]) / 7.0;
        }
    }
    // Both ranks hold the same running statistics when synchronised.
    if sync {
        let buffers = |r: usize| &outs[r][1 + ng..1 + ng + nb];
        for (i, (a, b)) in buffers(0).iter().zip(buffers(1)).enumerate() {
            assert_eq!(a.data, b.data, "rank 1's buffer {i}");
        }
    }
    (one, two, tg)
}

/// The largest `|a − b| / (1e-3 + |a|)` over the loss, gradients and buffers, and the
/// output's name.
fn largest_difference(
    one: &[Tensor<f32>],
    two: &[Tensor<f32>],
    tg: &TrainingGraph,
) -> (f32, String) {
    let names: Vec<String> = std::iter::once("loss".to_string())
        .chain(tg.grads.iter().map(|g| format!("grad {g}")))
        .chain(tg.buffers.iter().map(|b| format!("update {b}")))
        .collect();
    let mut worst = (0.0f32, String::new());
    for (i, name) in names.iter().enumerate() {
        for (a, b) in one[i].data.iter().zip(&two[i].data) {
            let err = (a - b).abs() / (1e-3 + a.abs());
            if err > worst.0 {
                worst = (err, name.clone());
            }
        }
    }
    worst
}

fn jit() -> Box<dyn Backend> {
    Box::new(JitBackend::new().unwrap())
}

#[test]
fn two_synchronised_shards_give_the_whole_batchs_gradients_on_the_jit() {
    let (one, two, tg) = one_and_two(&jit, true);
    let with = largest_difference(&one, &two, &tg);
    let (one, plain, _) = one_and_two(&jit, false);
    let without = largest_difference(&one, &plain, &tg);
    eprintln!("jit: largest difference with sync {with:?}, without {without:?}");
    assert!(
        with.0 <= 1e-4,
        "synchronised: {} differs by {}",
        with.1,
        with.0
    );
    assert!(without.0 > 1e-2, "per-shard statistics: only {without:?}");
}

#[cfg(feature = "opencl")]
#[test]
fn two_synchronised_shards_give_the_whole_batchs_gradients_on_opencl() {
    let (one, two, tg) = one_and_two(&|| Box::new(common::opencl::backend().clone()), true);
    let with = largest_difference(&one, &two, &tg);
    eprintln!("opencl: largest difference with sync {with:?}");
    assert!(
        with.0 <= 1e-4,
        "synchronised: {} differs by {}",
        with.1,
        with.0
    );
}

/// Two statistics steps per batch norm (the forward's moments, the backward's sums),
/// and none in a plan that was not asked for them; a plain `run` of a synchronised
/// plan (no collective: one process) computes what the plain plan computes.
#[test]
fn a_synchronised_plan_has_two_host_steps_per_batch_norm_and_alone_changes_nothing() {
    use fnet::kernel_ir::native::NativeOp;
    let (tg, params, x, labels) = setup();
    let backend = JitBackend::new().unwrap();
    let shapes = [vec![7, 1, 8, 8], vec![7]];
    let mut plain = backend.prepare_plan(&tg.graph, &params, &shapes).unwrap();
    let mut synced = backend.prepare_plan(&tg.graph, &params, &shapes).unwrap();
    synced.set_sync_stats(true).unwrap();
    let count = |p: &fnet::backend::JitPrepared| {
        (p.executable().plan.steps.iter())
            .filter(|s| matches!(s.native, Some(NativeOp::SyncStats(_))))
            .count()
    };
    assert_eq!(count(&plain), 0);
    assert_eq!(count(&synced), 2 * 5);
    let a = plain.forward(&[x.clone(), labels.clone()]).unwrap();
    let b = synced.forward(&[x, labels]).unwrap();
    let worst = largest_difference(&a, &b, &tg);
    assert!(worst.0 <= 1e-5, "{worst:?}");
}
