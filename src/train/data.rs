//! Training data: the recipe's `data:` loaded into memory as two splits of images and
//! integer labels, checked against the model (sample shape, label range), and served
//! in seeded shuffled batches by a prefetch thread that prepares batch k+1 while the
//! step on batch k runs.
//!
//! Shuffling and augmentation draw from generators seeded by `(seed, epoch)` alone,
//! never by how far a previous run got, so a resumed run sees exactly the batches an
//! uninterrupted one would.

use crate::io::idx::{read_idx_images, read_idx_labels};
use crate::io::npy::{read_npy, read_npy_numbers, NpyNumber};
use crate::io::{IoError, IoErrorKind};
use crate::recipe::{Augment, Data, Split};
use crate::runtime::RunError;
use crate::tensor::Tensor;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One split of a data set: `images` is `[N, …sample shape]`, one label each.
#[derive(Clone, Debug, PartialEq)]
pub struct Samples {
    pub images: Tensor<f32>,
    pub labels: Vec<u32>,
}

impl Samples {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The shape of one sample.
    pub fn sample_shape(&self) -> &[usize] {
        &self.images.shape[1..]
    }

    fn sample(&self, i: usize) -> &[f32] {
        let n: usize = self.sample_shape().iter().product();
        &self.images.data[i * n..(i + 1) * n]
    }
}

/// A loaded data set: the split to train on and, when the recipe names one, the split
/// to test on.
#[derive(Clone, Debug)]
pub struct DataSet {
    pub train: Samples,
    pub test: Option<Samples>,
    /// What it was loaded from, in words, for the run's log.
    pub about: String,
}

/// Finds a data file named in the recipe: as written (relative to the working
/// directory), else relative to the model file's directory.
fn locate(name: &str, model_dir: &Path) -> PathBuf {
    let p = PathBuf::from(name);
    if p.is_absolute() || p.exists() {
        return p;
    }
    let beside = model_dir.join(&p);
    if beside.exists() {
        beside
    } else {
        p
    }
}

/// The error for a data set that is not there, naming every file it needs.
fn missing(kind: &str, expected: &[String], model_dir: &Path, hint: &str) -> RunError {
    RunError::new(format!(
        "the {kind} data set is missing: expected {} (looked in the working directory and in `{}`)",
        expected
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", "),
        model_dir.display()
    ))
    .hint(hint.to_string())
}

/// Loads `data` for a model whose samples have `sample_shape` and whose output has
/// `classes` classes. Paths in the recipe are relative to the working directory, or to
/// the model file's directory.
pub fn load(
    data: &Data,
    model_dir: &Path,
    sample_shape: &[usize],
    classes: usize,
) -> Result<DataSet, RunError> {
    load_resized(data, None, model_dir, sample_shape, classes)
}

/// [`load`], with every image of both splits first resampled to `resize`×`resize`
/// when the recipe's `resize:` asks for it (`super::resize`).
pub fn load_resized(
    data: &Data,
    resize: Option<u64>,
    model_dir: &Path,
    sample_shape: &[usize],
    classes: usize,
) -> Result<DataSet, RunError> {
    let mut set = match data {
        Data::Idx {
            images,
            labels,
            train,
            test,
        } => load_idx(images, labels, *train, *test, model_dir)?,
        Data::Cifar10 { dir } => load_cifar10(dir, model_dir)?,
        Data::Npy { inputs, labels } => load_npy(inputs, labels, model_dir)?,
    };
    if let Some(n) = resize {
        set.train = super::resize::resize_samples(&set.train, n as usize)?;
        if let Some(t) = &set.test {
            set.test = Some(super::resize::resize_samples(t, n as usize)?);
        }
        set.about = format!("{} resized to {n}×{n}", set.about);
    }
    for (name, split) in [("train", Some(&set.train)), ("test", set.test.as_ref())] {
        let Some(s) = split else { continue };
        if s.sample_shape() != sample_shape {
            return Err(RunError::new(format!(
                "the {name} samples of {} have shape {:?}, but the model's input takes samples of shape {sample_shape:?}",
                set.about,
                s.sample_shape()
            ))
            .hint("train this model on data of its input shape, or change the model's `input`"));
        }
        if let Some((i, l)) = s
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(RunError::new(format!(
                "label {i} of the {name} split of {} is {l}, but the model has {classes} classes (0..{})",
                set.about,
                classes - 1
            ))
            .hint("the model's last layer must have one output per class"));
        }
        if s.is_empty() {
            return Err(RunError::new(format!(
                "the {name} split of {} is empty",
                set.about
            )));
        }
    }
    Ok(set)
}

fn load_idx(
    images: &str,
    labels: &str,
    train: Option<Split>,
    test: Option<Split>,
    model_dir: &Path,
) -> Result<DataSet, RunError> {
    let (ip, lp) = (locate(images, model_dir), locate(labels, model_dir));
    if !ip.exists() || !lp.exists() {
        return Err(missing(
            "idx",
            &[images.to_string(), labels.to_string()],
            model_dir,
            "IDX files are MNIST's format (images idx3-ubyte, labels idx1-ubyte, gzipped or not); \
             torchvision.datasets.MNIST(root, download=True) writes them under root/MNIST/raw/, \
             and this repository ships 10,000 digits in data/mnist10k/",
        ));
    }
    let n = crate::io::idx::idx_len(&ip)?;
    let nl = crate::io::idx::idx_len(&lp)?;
    if n != nl {
        return Err(RunError::new(format!(
            "`{}` holds {n} images but `{}` holds {nl} labels",
            ip.display(),
            lp.display()
        ))
        .hint("the images and labels files must come from the same data set"));
    }
    let range = |s: Option<Split>, default: std::ops::Range<usize>| match s {
        Some(s) => s.start as usize..s.end as usize,
        None => default,
    };
    let read = |r: std::ops::Range<usize>| -> Result<Samples, RunError> {
        let images = read_idx_images(&ip, r.clone())?;
        let labels = read_idx_labels(&lp, r)?;
        Ok(Samples {
            images,
            labels: labels.into_iter().map(u32::from).collect(),
        })
    };
    let train = read(range(train, 0..n))?;
    let test = test.map(|t| read(range(Some(t), 0..n))).transpose()?;
    Ok(DataSet {
        train,
        test,
        about: format!("`{}`", ip.display()),
    })
}

/// CIFAR-10's binary batches: records of one label byte and 3·32·32 pixel bytes
/// (channel-major), scaled to `[0, 1]`.
fn load_cifar10(dir: &str, model_dir: &Path) -> Result<DataSet, RunError> {
    let d = locate(dir, model_dir);
    let train_names: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    let all: Vec<String> = train_names
        .iter()
        .cloned()
        .chain(["test_batch.bin".to_string()])
        .collect();
    if all.iter().any(|f| !d.join(f).exists()) {
        return Err(missing(
            "cifar10",
            &all.iter().map(|f| format!("{dir}/{f}")).collect::<Vec<_>>(),
            model_dir,
            "the CIFAR-10 binary version (cifar-10-binary.tar.gz) unpacks to cifar-10-batches-bin/ \
             with these six files; name that directory in `cifar10(dir)`",
        ));
    }
    let read = |names: &[String]| -> Result<Samples, RunError> {
        let (mut data, mut labels) = (Vec::new(), Vec::new());
        for f in names {
            let p = d.join(f);
            let bytes = std::fs::read(&p).map_err(|e| IoError::os(&p, &e, "read"))?;
            const REC: usize = 1 + 3 * 32 * 32;
            if bytes.is_empty() || bytes.len() % REC != 0 {
                return Err(IoError::new(
                    &p,
                    IoErrorKind::BadFormat,
                    format!("a whole number of {REC}-byte CIFAR-10 records"),
                    format!("{} bytes", bytes.len()),
                    "the file is truncated or not a CIFAR-10 binary batch; fetch it again",
                )
                .into());
            }
            for rec in bytes.chunks_exact(REC) {
                labels.push(u32::from(rec[0]));
                data.extend(rec[1..].iter().map(|&b| f32::from(b) / 255.0));
            }
        }
        let n = labels.len();
        Ok(Samples {
            images: Tensor {
                shape: vec![n, 3, 32, 32],
                data,
            },
            labels,
        })
    };
    Ok(DataSet {
        train: read(&train_names)?,
        test: Some(read(&["test_batch.bin".to_string()])?),
        about: format!("CIFAR-10 in `{}`", d.display()),
    })
}

/// `.npy` inputs (f32, samples along the first axis) and integer labels: all of it is
/// training data, there is no test split.
fn load_npy(inputs: &str, labels: &str, model_dir: &Path) -> Result<DataSet, RunError> {
    let (ip, lp) = (locate(inputs, model_dir), locate(labels, model_dir));
    if !ip.exists() || !lp.exists() {
        return Err(missing(
            "npy",
            &[inputs.to_string(), labels.to_string()],
            model_dir,
            "write them with numpy.save: inputs float32 [N, ...sample shape], labels integers [N]",
        ));
    }
    let images = read_npy::<f32>(&ip)?;
    let (shape, values) = read_npy_numbers(&lp)?;
    if shape.len() != 1 || images.shape.first() != Some(&shape[0]) {
        return Err(RunError::new(format!(
            "`{}` has shape {shape:?}, but the labels of `{}` (shape {:?}) must be one integer per sample",
            lp.display(),
            ip.display(),
            images.shape
        ))
        .hint("labels are a 1-D array as long as the inputs' first axis"));
    }
    let labels = values
        .iter()
        .enumerate()
        .map(|(i, v)| match *v {
            NpyNumber::Int(k) if k >= 0 && k <= i128::from(u32::MAX) => Ok(k as u32),
            NpyNumber::Float(f) if f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX) => {
                Ok(f as u32)
            }
            _ => Err(RunError::new(format!(
                "label {i} of `{}` is {v}, not a class index (an integer from 0)",
                lp.display()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DataSet {
        train: Samples { images, labels },
        test: None,
        about: format!("`{}`", ip.display()),
    })
}

/// The order in which epoch `epoch` visits the `n` training samples.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng(seed, epoch, 0));
    order
}

/// A generator for one purpose (`stream`) of one epoch: independent of everything a
/// run did before.
fn rng(seed: u64, epoch: u64, stream: u64) -> Pcg64 {
    let mix = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(stream.wrapping_mul(0x94D0_49BB_1331_11EB));
    Pcg64::seed_from_u64(mix)
}

/// One batch: samples `[b, …]` and labels `[b]` as the training graph takes them.
#[derive(Debug)]
pub struct Batch {
    pub x: Tensor<f32>,
    pub labels: Tensor<f32>,
}

/// Gathers samples `idx` of `s` into a batch, augmenting each as `augment` says with a
/// generator drawn for the batch's position `pos` in the epoch.
pub fn gather(
    s: &Samples,
    idx: &[usize],
    augment: &[Augment],
    seed: u64,
    epoch: u64,
    pos: u64,
) -> Batch {
    let shape = s.sample_shape().to_vec();
    let per: usize = shape.iter().product();
    let mut data = Vec::with_capacity(idx.len() * per);
    let mut r = rng(seed, epoch, 1 + pos);
    for &i in idx {
        let mut sample = s.sample(i).to_vec();
        for a in augment {
            sample = apply(a, sample, &shape, &mut r);
        }
        data.extend(sample);
    }
    let mut bshape = vec![idx.len()];
    bshape.extend(&shape);
    Batch {
        x: Tensor {
            shape: bshape,
            data,
        },
        labels: Tensor {
            shape: vec![idx.len()],
            data: idx.iter().map(|&i| s.labels[i] as f32).collect(),
        },
    }
}

/// Refuses augmentations that cannot apply to samples of `shape`: the model's input
/// shape is fixed, so a crop must keep the sample's size.
pub fn check_augment(augment: &[Augment], shape: &[usize]) -> Result<(), RunError> {
    for a in augment {
        let Augment::RandomCrop { size, .. } = a else {
            continue;
        };
        let hw = &shape[shape.len().saturating_sub(2)..];
        if shape.len() < 2 || hw.iter().any(|&d| d as u64 != *size) {
            return Err(RunError::new(format!(
                "augment: random_crop(size: {size}) on samples of shape {shape:?}: the crop must \
                 be as large as the sample (its last two axes), since the model's input shape is fixed"
            ))
            .hint("crop with padding to the sample's own size, e.g. random_crop(size: 32, padding: 4) on CIFAR"));
        }
    }
    Ok(())
}

/// One augmentation of one sample `[C, H, W]` (any leading axes are channels).
fn apply(a: &Augment, x: Vec<f32>, shape: &[usize], r: &mut Pcg64) -> Vec<f32> {
    let (h, w) = match shape {
        [.., h, w] if shape.len() >= 2 => (*h, *w),
        _ => return x,
    };
    let planes = x.len() / (h * w).max(1);
    match a {
        Augment::Flip => {
            if !r.random_bool(0.5) {
                return x;
            }
            let mut out = x;
            for p in 0..planes {
                for row in out[p * h * w..(p + 1) * h * w].chunks_mut(w) {
                    row.reverse();
                }
            }
            out
        }
        Augment::RandomCrop { size, padding } => {
            // Pad with zeros, then take a size×size window; a window of the sample's own
            // size keeps its shape (the usual 32 with padding 4 on CIFAR).
            // `check_augment` has made sure that `size` is the sample's own size.
            let (size, pad) = (*size as usize, *padding as usize);
            let (ph, pw) = (h + 2 * pad, w + 2 * pad);
            let top = r.random_range(0..=ph - size);
            let left = r.random_range(0..=pw - size);
            let mut out = vec![0.0; x.len()];
            for p in 0..planes {
                for i in 0..h {
                    for j in 0..w {
                        let (si, sj) = (i + top, j + left);
                        if si >= pad && si < pad + h && sj >= pad && sj < pad + w {
                            out[p * h * w + i * w + j] = x[p * h * w + (si - pad) * w + (sj - pad)];
                        }
                    }
                }
            }
            out
        }
    }
}

/// Batches of one epoch, prepared on a thread of their own: the next batch is gathered
/// (and augmented) while the current step runs.
pub struct Prefetch {
    rx: Receiver<(usize, Batch)>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Batches `from..` of epoch `epoch` of `samples`, `batch` samples each (the last
    /// one smaller when `batch` does not divide the split).
    pub fn start(
        samples: Arc<Samples>,
        batch: usize,
        from: usize,
        augment: Vec<Augment>,
        seed: u64,
        epoch: u64,
    ) -> Prefetch {
        let (tx, rx) = sync_channel(2);
        let handle = std::thread::spawn(move || {
            let order = epoch_order(seed, epoch, samples.len());
            for (k, idx) in order.chunks(batch).enumerate().skip(from) {
                let b = gather(&samples, idx, &augment, seed, epoch, k as u64);
                if tx.send((k, b)).is_err() {
                    return;
                }
            }
        });
        Prefetch {
            rx,
            handle: Some(handle),
        }
    }
}

impl Iterator for Prefetch {
    type Item = (usize, Batch);

    fn next(&mut self) -> Option<(usize, Batch)> {
        self.rx.recv().ok()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Dropping the receiver first makes a blocked sender return.
        let (_, dead) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Test-split batches in order, without augmentation.
pub fn in_order(s: &Samples, batch: usize) -> impl Iterator<Item = Batch> + '_ {
    let idx: Vec<usize> = (0..s.len()).collect();
    (0..s.len().div_ceil(batch)).map(move |k| {
        let end = ((k + 1) * batch).min(s.len());
        gather(s, &idx[k * batch..end], &[], 0, 0, 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: usize) -> Samples {
        Samples {
            images: Tensor {
                shape: vec![n, 1, 2, 3],
                data: (0..n * 6).map(|v| v as f32).collect(),
            },
            labels: (0..n as u32).collect(),
        }
    }

    #[test]
    fn shuffles_are_seeded_per_epoch_and_cover_every_sample() {
        let a = epoch_order(1, 0, 50);
        assert_eq!(a, epoch_order(1, 0, 50));
        assert_ne!(a, epoch_order(1, 1, 50));
        assert_ne!(a, epoch_order(2, 0, 50));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn prefetch_serves_the_epochs_batches_from_any_point() {
        let s = Arc::new(samples(10));
        let all: Vec<(usize, Batch)> = Prefetch::start(s.clone(), 4, 0, vec![], 3, 0).collect();
        assert_eq!(
            all.iter()
                .map(|(_, b)| b.labels.data.len())
                .collect::<Vec<_>>(),
            [4, 4, 2]
        );
        let order = epoch_order(3, 0, 10);
        assert_eq!(
            all[1].1.labels.data,
            order[4..8].iter().map(|&i| i as f32).collect::<Vec<_>>()
        );
        // The sample's pixels travel with its label.
        let i = order[4];
        assert_eq!(all[1].1.x.data[..6], s.images.data[i * 6..i * 6 + 6]);
        let rest: Vec<(usize, Batch)> = Prefetch::start(s, 4, 1, vec![], 3, 0).collect();
        assert_eq!(rest[0].0, 1);
        assert_eq!(rest[0].1.x.data, all[1].1.x.data);
    }

    #[test]
    fn flip_mirrors_rows_and_crop_shifts_with_zero_padding() {
        let x: Vec<f32> = (1..=6).map(|v| v as f32).collect();
        let mut r = rng(0, 0, 0);
        let mut flipped = 0;
        for _ in 0..40 {
            let y = apply(&Augment::Flip, x.clone(), &[1, 2, 3], &mut r);
            if y != x {
                assert_eq!(y, [3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
                flipped += 1;
            }
        }
        assert!(
            (5..35).contains(&flipped),
            "flip is a coin toss: {flipped}/40"
        );
        let crop = Augment::RandomCrop {
            size: 3,
            padding: 0,
        };
        let err = check_augment(&[crop], &[1, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("random_crop(size: 3)"), "{err}");
        let crop = Augment::RandomCrop {
            size: 2,
            padding: 1,
        };
        let sq: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let y = apply(&crop, sq.clone(), &[1, 2, 2], &mut r);
            // Every window of the padded 4×4 image keeps the pixels in place or shifts
            // them by at most one, filling with zeros.
            assert!(y.iter().all(|v| *v == 0.0 || sq.contains(v)), "{y:?}");
            seen.insert(y.iter().map(|v| *v as i32).collect::<Vec<_>>());
        }
        assert_eq!(seen.len(), 9, "all nine offsets occur: {seen:?}");
        assert!(seen.contains(&vec![0, 0, 0, 1]) && seen.contains(&vec![1, 2, 3, 4]));
    }
}
