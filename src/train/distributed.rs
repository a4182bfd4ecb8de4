//! Data-parallel training (`mpirun -np N fnetc train …`): the process group the
//! trainer reduces over, how a global batch is split into per-rank shards, and the
//! reduction of one step's outputs. See `docs/distributed.md`.
//!
//! Every rank builds the same global batch (same order, same augmentation draws: the
//! generators derive from seed, epoch and batch position, and augmentation draws
//! sample after sample through the batch), takes its contiguous [`shard`] of it, runs
//! the training graph on that shard, and the ranks then sum their gradients weighted
//! by shard size. Because each rank's loss is the mean over its shard, the weighted sum
//! `Σ_r (n_r / B) · g_r` is exactly the gradient of the global batch's mean loss, also
//! when the last batch of an epoch does not split evenly. Every rank then applies the
//! same update to the same weights, so the ranks stay identical without broadcasting
//! weights; [`checksum`] lets the trainer verify that at each checkpoint.
//!
//! Without the `mpi` cargo feature there is only [`Solo`]; [`join`] refuses to start
//! under a launcher that asked for more than one process, rather than letting N copies
//! of the same run write the same directory.

use super::data::Batch;
use crate::runtime::sync_stats::StatsCollective;
use crate::runtime::{ParamStore, RunError};
use crate::tensor::Tensor;
use std::cell::Cell;
use std::ops::Range;
use std::time::Instant;

/// The processes that train together. Rank 0 writes the run directory.
pub trait Group {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// The rank's index among the ranks on its own host (for picking a device).
    fn local_rank(&self) -> usize;
    /// Element-wise sum over the ranks, in place; every rank gets the result.
    fn sum_f32(&self, buf: &mut [f32]);
    fn sum_f64(&self, buf: &mut [f64]);
    /// Rank 0's `buf` onto every rank.
    fn broadcast_f32(&self, buf: &mut [f32]);
    /// Every rank's `v`, in rank order.
    fn gather_u64(&self, v: u64) -> Vec<u64>;
    /// Ends every rank of the job now (a rank that returned an error would otherwise
    /// leave the others waiting in a collective).
    fn abort(&self, code: i32) -> !;
    /// Sums over the same ranks for another thread (the overlapped all-reduce's,
    /// `super::overlap`), on a communicator of its own, so its collectives never
    /// pair with the ones this thread calls meanwhile (SyncBatchNorm's, during a run).
    /// A collective: every rank calls it at the same point.
    fn reducer(&self) -> Result<Box<dyn Reducer>, RunError>;
}

/// A sum over the ranks that one thread of its own calls (see [`Group::reducer`]).
pub trait Reducer: Send {
    /// Element-wise sum over the ranks, in place; every rank gets the result.
    fn sum_f32(&mut self, buf: &mut [f32]);
}

/// One rank's sum is its own value.
struct SoloReducer;

impl Reducer for SoloReducer {
    fn sum_f32(&mut self, _: &mut [f32]) {}
}

/// One process: no communication at all.
pub struct Solo;

impl Group for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn sum_f32(&self, _: &mut [f32]) {}
    fn sum_f64(&self, _: &mut [f64]) {}
    fn broadcast_f32(&self, _: &mut [f32]) {}
    fn gather_u64(&self, v: u64) -> Vec<u64> {
        vec![v]
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    fn reducer(&self) -> Result<Box<dyn Reducer>, RunError> {
        Ok(Box::new(SoloReducer))
    }
}

/// Rank `rank`'s samples of a global batch of `n` among `size` ranks: contiguous,
/// disjoint, together all of `0..n`, sizes differing by at most one, the larger ones
/// first (so rank 0 has a sample whenever the batch has one).
pub fn shard(n: usize, rank: usize, size: usize) -> Range<usize> {
    // The first n % size ranks get one sample more than the rest.
    let (q, extra) = (n / size, n % size);
    let start = |r: usize| r * q + r.min(extra);
    start(rank)..start(rank + 1)
}

/// The samples `r` of batch `b`.
pub fn slice_batch(b: &Batch, r: Range<usize>) -> Batch {
    let per: usize = b.x.shape[1..].iter().product();
    let mut shape = b.x.shape.clone();
    shape[0] = r.len();
    Batch {
        x: Tensor {
            shape,
            data: b.x.data[r.start * per..r.end * per].to_vec(),
        },
        labels: Tensor {
            shape: vec![r.len()],
            data: b.labels.data[r].to_vec(),
        },
    }
}

/// The process count a launcher asked for, and the variable that says so: Open MPI's
/// `OMPI_COMM_WORLD_SIZE`, or `PMI_SIZE` (MPICH, Slurm).
pub fn launcher_size() -> Option<(usize, &'static str)> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .into_iter()
        .find_map(|var| {
            let n = std::env::var(var).ok()?.trim().parse::<usize>().ok()?;
            Some((n, var))
        })
}

/// The group this process trains in: MPI's world when a launcher started several
/// processes, otherwise [`Solo`] (MPI is not even initialised then). With `timeout`,
/// a collective that waits longer ends the job (`super::watchdog`).
pub fn join(timeout: Option<std::time::Duration>) -> Result<Box<dyn Group>, RunError> {
    match launcher_size() {
        Some((n, _var)) if n > 1 => {
            #[cfg(feature = "mpi")]
            {
                Ok(Box::new(super::mpi_group::MpiGroup::init(timeout)?))
            }
            #[cfg(not(feature = "mpi"))]
            {
                let _ = timeout;
                Err(RunError::new(format!(
                    "fnetc was started as one of {n} processes ({_var}={n}), but it was built without MPI support, so each process would train the same run on its own"
                ))
                .hint("rebuild with `cargo build --release --features mpi` (needs Open MPI: apt-get install libopenmpi-dev openmpi-bin libclang-dev), or run fnetc train without mpirun"))
            }
        }
        _ => Ok(Box::new(Solo)),
    }
}

/// The OpenCL device of a rank whose local index is `local`: `--device N` means
/// devices N, N+1, … for the host's ranks 0, 1, …; `--device gpu` (and the default)
/// the host's GPUs in order, one per rank, or else the first device for every rank;
/// `--device cpu` the CPU device for every rank (they share it).
pub fn rank_device(
    sel: Option<crate::opencl::DeviceSel>,
    local: usize,
) -> Result<crate::opencl::DeviceSel, RunError> {
    use crate::opencl::DeviceSel;
    Ok(match sel.unwrap_or_default() {
        DeviceSel::Index(i) => DeviceSel::Index(i + local),
        DeviceSel::Cpu => DeviceSel::Cpu,
        #[cfg(not(feature = "opencl"))]
        DeviceSel::Gpu | DeviceSel::Default => return Err(crate::opencl::not_built()),
        #[cfg(feature = "opencl")]
        s @ (DeviceSel::Gpu | DeviceSel::Default) => {
            let all = crate::opencl::list_devices()?;
            let gpus: Vec<usize> = all
                .iter()
                .filter(|d| d.2.is_gpu)
                .map(|d| d.2.index)
                .collect();
            match gpus.get(local) {
                Some(&i) => DeviceSel::Index(i),
                None if gpus.is_empty() => s,
                None => {
                    return Err(RunError::new(format!(
                        "this host's rank {local} asked for a GPU of its own, but the host has {} GPU(s)",
                        gpus.len()
                    ))
                    .hint("start at most one rank per GPU on each host (mpirun --map-by ppr:G:node), or pick devices with --device N"))
                }
            }
        }
    })
}

/// A hash of every parameter's bytes, in name order: equal on every rank while the
/// ranks hold the same weights.
pub fn checksum(params: &ParamStore<f32>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    };
    for (name, t) in params {
        name.bytes().for_each(&mut eat);
        for v in &t.data {
            v.to_bits().to_le_bytes().into_iter().for_each(&mut eat);
        }
    }
    h
}

/// SyncBatchNorm's collective (`sync_bn: true`): the batch statistics a synchronised
/// training plan combines inside its step (`runtime::sync_stats`, where the weighting
/// is derived) are summed over `group`, in f64, from the thread that runs the plan.
/// Counts the collectives and the seconds spent in them for the step's `comm_s`.
pub struct RankStats<'a> {
    pub group: &'a dyn Group,
    /// False on a rank with no sample of the global batch, which runs a stand-in
    /// sample only to take part in the collectives.
    pub contributes: bool,
    pub calls: Cell<u64>,
    pub seconds: Cell<f64>,
}

impl<'a> RankStats<'a> {
    pub fn new(group: &'a dyn Group, contributes: bool) -> RankStats<'a> {
        RankStats {
            group,
            contributes,
            calls: Cell::new(0),
            seconds: Cell::new(0.0),
        }
    }
}

impl StatsCollective for RankStats<'_> {
    fn sum_f64(&self, buf: &mut [f64]) {
        let t = Instant::now();
        self.group.sum_f64(buf);
        self.calls.set(self.calls.get() + 1);
        self.seconds
            .set(self.seconds.get() + t.elapsed().as_secs_f64());
    }
    fn contributes(&self) -> bool {
        self.contributes
    }
}

/// One step's training-graph outputs on one rank: the loss, `ng` gradients, `nb`
/// updated buffers, `nt` loss terms (the logits are not needed here), computed on
/// `n` samples of a global batch of `global`, with `correct` right predictions.
/// With `grads_reduced` the gradients already are the global batch's (the overlapped
/// all-reduce, `super::overlap`, summed them during the run).
pub struct StepParts<'a> {
    pub grads_reduced: bool,
    pub outputs: &'a mut [Tensor<f32>],
    pub ng: usize,
    pub nb: usize,
    pub nt: usize,
    pub n: usize,
    pub global: usize,
    pub correct: u64,
}

/// What the reduction gives every rank: the global batch's loss, right predictions
/// and loss terms, and the seconds spent in the collectives.
pub struct Reduced {
    pub loss: f64,
    pub correct: u64,
    pub terms: Vec<f64>,
    pub comm_s: f64,
}

/// Turns one rank's outputs into the global batch's, in place: the gradients become
/// `Σ_r (n_r / B) g_r` (one flat all-reduce, unless `grads_reduced`: the overlapped
/// buckets did it), the buffers (BatchNorm running statistics) rank 0's (with
/// `sync_bn` every rank's are already the global batch's, [`RankStats`]; the broadcast
/// keeps them bit-identical); the loss, accuracy and terms the global batch's.
pub fn reduce_step(group: &dyn Group, p: StepParts<'_>) -> Reduced {
    let t = Instant::now();
    let w = p.n as f32 / p.global as f32;
    let flat_sum = |tensors: &mut [Tensor<f32>], weigh: bool| {
        let mut flat: Vec<f32> = Vec::with_capacity(tensors.iter().map(|t| t.data.len()).sum());
        for t in tensors.iter() {
            if weigh {
                flat.extend(t.data.iter().map(|v| v * w));
            } else {
                flat.extend(&t.data);
            }
        }
        if weigh {
            group.sum_f32(&mut flat);
        } else {
            group.broadcast_f32(&mut flat);
        }
        let mut at = 0;
        for t in tensors.iter_mut() {
            let k = t.data.len();
            t.data.copy_from_slice(&flat[at..at + k]);
            at += k;
        }
    };
    if !p.grads_reduced {
        flat_sum(&mut p.outputs[1..1 + p.ng], true);
    }
    flat_sum(&mut p.outputs[1 + p.ng..1 + p.ng + p.nb], false);
    let nf = p.n as f64;
    let mut scalars = vec![nf * f64::from(p.outputs[0].data[0]), p.correct as f64];
    let terms = &p.outputs[1 + p.ng + p.nb..1 + p.ng + p.nb + p.nt];
    scalars.extend(terms.iter().map(|t| nf * f64::from(t.data[0])));
    group.sum_f64(&mut scalars);
    let g = p.global as f64;
    Reduced {
        loss: scalars[0] / g,
        correct: scalars[1] as u64,
        terms: scalars[2..].iter().map(|s| s / g).collect(),
        comm_s: t.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_balanced_and_cover_the_batch() {
        for n in 0..40 {
            for size in 1..7 {
                let mut next = 0;
                let mut lens = Vec::new();
                for rank in 0..size {
                    let r = shard(n, rank, size);
                    assert_eq!(r.start, next, "n {n} size {size} rank {rank}: contiguous");
                    next = r.end;
                    lens.push(r.len());
                }
                assert_eq!(next, n, "n {n} size {size}: covers the batch");
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(hi - lo <= 1, "n {n} size {size}: balanced {lens:?}");
                assert!(lens.windows(2).all(|w| w[0] >= w[1]), "larger first");
                if n > 0 {
                    assert!(lens[0] > 0, "rank 0 has a sample");
                }
            }
        }
        // Hand values: 10 among 3 → 4, 3, 3; 1 among 2 → rank 0 alone.
        assert_eq!(
            (0..3).map(|r| shard(10, r, 3)).collect::<Vec<_>>(),
            [0..4, 4..7, 7..10]
        );
        assert_eq!(shard(1, 1, 2), 1..1);
    }

    #[test]
    fn a_slice_is_the_batch_samples() {
        let b = Batch {
            x: Tensor {
                shape: vec![3, 2],
                data: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            },
            labels: Tensor {
                shape: vec![3],
                data: vec![7.0, 8.0, 9.0],
            },
        };
        let s = slice_batch(&b, 1..3);
        assert_eq!(s.x.shape, [2, 2]);
        assert_eq!(s.x.data, [2.0, 3.0, 4.0, 5.0]);
        assert_eq!(s.labels.data, [8.0, 9.0]);
    }

    #[test]
    fn one_rank_reduction_is_the_identity_on_gradients() {
        let t = |v: Vec<f32>| Tensor {
            shape: vec![v.len()],
            data: v,
        };
        let mut outs = vec![
            t(vec![0.5]),
            t(vec![1.0, -2.0]),
            t(vec![3.0]),
            t(vec![0.25]),
        ];
        let r = reduce_step(
            &Solo,
            StepParts {
                grads_reduced: false,
                outputs: &mut outs,
                ng: 1,
                nb: 1,
                nt: 1,
                n: 4,
                global: 4,
                correct: 3,
            },
        );
        assert_eq!(outs[1].data, [1.0, -2.0]);
        assert_eq!(outs[2].data, [3.0]);
        assert_eq!((r.loss, r.correct, r.terms), (0.5, 3, vec![0.25]));
    }

    #[test]
    fn a_numbered_device_is_offset_by_the_local_rank() {
        use crate::opencl::DeviceSel;
        assert_eq!(
            rank_device(Some(DeviceSel::Index(0)), 0).unwrap(),
            DeviceSel::Index(0)
        );
        assert_eq!(
            rank_device(Some(DeviceSel::Index(1)), 2).unwrap(),
            DeviceSel::Index(3)
        );
        assert_eq!(
            rank_device(Some(DeviceSel::Cpu), 3).unwrap(),
            DeviceSel::Cpu
        );
    }

    #[test]
    fn checksums_tell_weights_apart() {
        let mut a = ParamStore::new();
        a.insert(
            "w".to_string(),
            Tensor {
                shape: vec![2],
                data: vec![1.0, 2.0],
            },
        );
        let mut b = a.clone();
        assert_eq!(checksum(&a), checksum(&b));
        b.get_mut("w").unwrap().data[1] = 2.0000002;
        assert_ne!(checksum(&a), checksum(&b));
    }
}
