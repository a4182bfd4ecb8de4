//! The data-parallel gradient all-reduce, overlapped with the backward (bucketed, as
//! PyTorch's DistributedDataParallel does it; docs/distributed.md).
//!
//! The backend hands each training-graph output out as soon as it is final
//! (`Prepared::run_streaming`); the backward finishes the last layers' gradients first.
//! Each gradient, weighted by the rank's share of the global batch (`n_r / B`, the
//! same `f32` product as the flat reduction of `distributed::reduce_step`), is copied
//! into its bucket; a bucket is full once all its gradients are in, and goes to a
//! communication thread that all-reduces it on a communicator of its own
//! (`Group::reducer`) while the backend computes the earlier layers' gradients. After
//! the run the main thread waits for every bucket's sum and copies it back.
//!
//! Every rank must all-reduce the same buckets in the same order, also when its
//! backend finishes gradients in another order (a rank with one sample fewer runs
//! another plan) or runs nothing (a rank without samples). So the [`Layout`] is fixed
//! from the gradients' sizes alone, walking the gradients from the last to the first
//! (the order the backward finishes them: ResNet-20's JIT plan finishes them in
//! exactly that order, `tests/jit_streaming.rs`), and buckets go to the communication
//! thread strictly in layout order: a full bucket waits for the ones before it.
//!
//! Each element's sum is the same sum of the same `f32` products as in the flat
//! reduction, only in another all-reduce call; with two ranks (`a + b = b + a`) the
//! result is bit-identical to it (`tests/train_mpi.rs`). With more ranks MPI may
//! associate a sum differently for another message size, so the last bits may differ
//! from the flat reduction (every rank still gets the same result).

use super::distributed::{Group, Reducer};
use crate::runtime::RunError;
use crate::tensor::Tensor;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which gradients go into which bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Each bucket's gradients (indices into the gradient list), in the order they
    /// sit in the bucket.
    pub buckets: Vec<Vec<usize>>,
    /// Each gradient's bucket and offset in it.
    place: Vec<(usize, usize)>,
    /// Each bucket's length in elements.
    lens: Vec<usize>,
}

impl Layout {
    /// Buckets for gradients of `sizes` elements (in output order): the gradients from
    /// the last to the first, a bucket closed once it holds at least `elems` elements
    /// (so a gradient larger than `elems` is a bucket of its own).
    pub fn new(sizes: &[usize], elems: usize) -> Layout {
        let mut buckets: Vec<Vec<usize>> = Vec::new();
        let mut lens: Vec<usize> = Vec::new();
        let mut place = vec![(0, 0); sizes.len()];
        let mut open = false;
        for g in (0..sizes.len()).rev() {
            if !open {
                buckets.push(Vec::new());
                lens.push(0);
                open = true;
            }
            let b = buckets.len() - 1;
            place[g] = (b, lens[b]);
            buckets[b].push(g);
            lens[b] += sizes[g];
            if lens[b] >= elems.max(1) {
                open = false;
            }
        }
        Layout {
            buckets,
            place,
            lens,
        }
    }
}

/// What one step's overlapped reduction cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spent {
    /// Seconds the main thread waited for the sums after the run: the communication
    /// the overlap did not hide.
    pub wait_s: f64,
    /// Seconds the communication thread spent in the step's all-reduces.
    pub allreduce_s: f64,
}

/// The communication thread and one step's buckets.
pub struct Overlap {
    layout: Layout,
    to_comm: Option<Sender<(usize, Vec<f32>)>>,
    from_comm: Receiver<(usize, Vec<f32>, Duration)>,
    thread: Option<JoinHandle<()>>,
    /// This step's share weight and buckets being filled (`None`: sent).
    weight: f32,
    filling: Vec<Option<Vec<f32>>>,
    /// Gradients each bucket still waits for.
    missing: Vec<usize>,
    /// Buckets handed to the communication thread this step, and their sums taken back.
    sent: usize,
    received: usize,
}

impl Overlap {
    /// Starts the communication thread on a reducer of `group`'s (a collective: every
    /// rank calls it at the same point), for gradients of `sizes` elements in buckets
    /// of `bucket_bytes`.
    pub fn start(
        group: &dyn Group,
        sizes: &[usize],
        bucket_bytes: usize,
    ) -> Result<Overlap, RunError> {
        let mut reducer: Box<dyn Reducer> = group.reducer()?;
        let layout = Layout::new(sizes, bucket_bytes / std::mem::size_of::<f32>());
        let (to_comm, jobs) = channel::<(usize, Vec<f32>)>();
        let (done, from_comm) = channel();
        let thread = std::thread::Builder::new()
            .name("fnetc-allreduce".into())
            .spawn(move || {
                // Buckets arrive in layout order, the same on every rank, so the
                // ranks' all-reduces pair up. The loop ends when the trainer drops
                // the sender; the reducer (its communicator) is dropped here.
                for (b, mut buf) in jobs {
                    let t = Instant::now();
                    reducer.sum_f32(&mut buf);
                    if done.send((b, buf, t.elapsed())).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| RunError::new(format!("could not start the all-reduce thread: {e}")))?;
        let n = layout.buckets.len();
        Ok(Overlap {
            layout,
            to_comm: Some(to_comm),
            from_comm,
            thread: Some(thread),
            weight: 0.0,
            filling: vec![None; n],
            missing: vec![0; n],
            sent: 0,
            received: 0,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Starts a step whose gradients weigh `weight` (`n_r / B`).
    pub fn begin(&mut self, weight: f32) {
        self.weight = weight;
        for (b, grads) in self.layout.buckets.iter().enumerate() {
            self.filling[b] = Some(Vec::with_capacity(self.layout.lens[b]));
            self.filling[b]
                .as_mut()
                .expect("just set")
                .resize(self.layout.lens[b], 0.0);
            self.missing[b] = grads.len();
        }
        self.sent = 0;
        self.received = 0;
    }

    /// Gradient `g` (its index in the gradient list) of this step; a bucket it
    /// completes goes to the communication thread, after every bucket before it.
    pub fn add(&mut self, g: usize, data: &[f32]) -> Result<(), RunError> {
        let (b, at) = self.layout.place[g];
        let w = self.weight;
        let Some(buf) = self.filling[b].as_mut() else {
            return Err(RunError::new(format!(
                "internal error: gradient {g} arrived twice in one step"
            )));
        };
        for (d, v) in buf[at..at + data.len()].iter_mut().zip(data) {
            *d = v * w;
        }
        self.missing[b] -= 1;
        while self.sent < self.missing.len() && self.missing[self.sent] == 0 {
            let full = self.filling[self.sent].take().expect("sent once");
            self.to_comm
                .as_ref()
                .expect("open until dropped")
                .send((self.sent, full))
                .map_err(|_| RunError::new("the all-reduce thread ended"))?;
            self.sent += 1;
        }
        Ok(())
    }

    /// Waits for every bucket's sum and writes it into `grads` (the gradients in
    /// output order).
    pub fn finish(&mut self, grads: &mut [Tensor<f32>]) -> Result<Spent, RunError> {
        if self.sent < self.layout.buckets.len() {
            let g = self.layout.buckets[self.sent][0];
            return Err(RunError::new(format!(
                "internal error: the run never handed out gradient {g} (bucket {} of {})",
                self.sent + 1,
                self.layout.buckets.len()
            )));
        }
        let t = Instant::now();
        let mut spent = Spent::default();
        while self.received < self.sent {
            let (b, buf, took) = self
                .from_comm
                .recv()
                .map_err(|_| RunError::new("the all-reduce thread ended during a step"))?;
            self.received += 1;
            spent.allreduce_s += took.as_secs_f64();
            let mut at = 0;
            for &g in &self.layout.buckets[b] {
                let k = grads[g].data.len();
                grads[g].data.copy_from_slice(&buf[at..at + k]);
                at += k;
            }
        }
        spent.wait_s = t.elapsed().as_secs_f64();
        Ok(spent)
    }
}

impl Drop for Overlap {
    fn drop(&mut self) {
        // The thread ends once the sender is gone. Joined only between steps: a step
        // abandoned on an error may leave it in an all-reduce the other ranks never
        // join, and the rank is about to end the job (`Group::abort`) anyway.
        self.to_comm = None;
        if self.received == self.sent {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::distributed::Solo;

    #[test]
    fn buckets_fill_from_the_last_gradient_and_close_at_the_size() {
        // Gradients of 3, 5, 2, 4 elements in buckets of 6: 4 + 2, then 5 + 3.
        let l = Layout::new(&[3, 5, 2, 4], 6);
        assert_eq!(l.buckets, [vec![3, 2], vec![1, 0]]);
        assert_eq!(l.lens, [6, 8]);
        assert_eq!(l.place, [(1, 5), (1, 0), (0, 4), (0, 0)]);
        // Buckets of one element: one gradient each; of 100: one bucket.
        assert_eq!(
            Layout::new(&[3, 5, 2], 1).buckets,
            [vec![2], vec![1], vec![0]]
        );
        assert_eq!(Layout::new(&[3, 5, 2], 100).buckets, [vec![2, 1, 0]]);
        assert!(Layout::new(&[], 4).buckets.is_empty());
    }

    /// One rank: each gradient comes back weighted, whatever order it arrived in;
    /// a bucket whose predecessor is not full waits for it.
    #[test]
    fn one_rank_gives_back_the_weighted_gradients() {
        let sizes = [2, 3, 1];
        let mut ov = Overlap::start(&Solo, &sizes, 2 * 4).unwrap();
        assert_eq!(ov.layout().buckets, [vec![2, 1], vec![0]]);
        let data = [vec![1.0, 2.0], vec![3.0, 4.0, 5.0], vec![6.0]];
        for _ in 0..2 {
            ov.begin(0.5);
            // Gradient 0 first: its bucket is full but waits for bucket 0.
            ov.add(0, &data[0]).unwrap();
            assert_eq!(ov.sent, 0);
            ov.add(2, &data[2]).unwrap();
            ov.add(1, &data[1]).unwrap();
            assert_eq!(ov.sent, 2);
            let mut grads: Vec<Tensor<f32>> = sizes
                .iter()
                .map(|&k| Tensor {
                    shape: vec![k],
                    data: vec![0.0; k],
                })
                .collect();
            ov.finish(&mut grads).unwrap();
            assert_eq!(grads[0].data, [0.5, 1.0]);
            assert_eq!(grads[1].data, [1.5, 2.0, 2.5]);
            assert_eq!(grads[2].data, [3.0]);
        }
    }

    #[test]
    fn a_gradient_never_handed_out_is_an_error_not_a_wait() {
        let mut ov = Overlap::start(&Solo, &[2, 2], 4).unwrap();
        ov.begin(1.0);
        ov.add(1, &[1.0, 1.0]).unwrap();
        let mut grads = vec![
            Tensor {
                shape: vec![2],
                data: vec![0.0; 2],
            };
            2
        ];
        let e = ov.finish(&mut grads).unwrap_err();
        assert!(e.to_string().contains("never handed out gradient 0"), "{e}");
    }
}
