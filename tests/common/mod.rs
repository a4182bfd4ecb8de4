//! Helpers shared by the integration tests: the examples, small programs, and
//! deterministic pseudo-random inputs and weights.
#![allow(dead_code)] // each test binary uses a different subset

use fnet::driver::{compile_file, compile_str};
use fnet::eval::{Module, Options};
use fnet::ir::graph::Graph;
use fnet::runtime::{initialise, ParamStore};
use fnet::tensor::{Scalar, Tensor};
use std::path::{Path, PathBuf};

/// Every example, by file stem.
pub const EXAMPLES: &[&str] = &[
    "flexnet7_cifar10",
    "flextcn6_smnist",
    "lenet_mnist",
    "resnet20_cifar10",
    "resnet20_lc_cifar10",
    "resnet20_slots_cifar10",
    "resnet32_s16u1d_cifar10",
];

pub fn example_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.fnet"))
}

pub fn example_module(name: &str) -> Module {
    compile_file(&example_path(name), &Options::default())
        .unwrap_or_else(|r| panic!("{name}: {}", r.render()))
        .1
}

pub fn example(name: &str) -> Graph {
    example_module(name).graph
}

pub fn program(text: &str) -> Graph {
    compile_str("test.fnet", text, &Options::default())
        .unwrap_or_else(|r| panic!("{}", r.render()))
        .1
        .graph
}

/// Deterministic values in [-1, 1) (an LCG; `seed` picks the stream).
pub fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// A tensor of `noise`.
pub fn random<T: Scalar>(shape: &[usize], seed: u64) -> Tensor<T> {
    let data = noise(shape.iter().product(), seed)
        .into_iter()
        .map(<T as Scalar>::from_f64)
        .collect();
    Tensor::from_vec(shape.to_vec(), data).expect("shape")
}

/// The first input's shape with every symbolic dimension set to `batch`.
pub fn input_shape(graph: &Graph, batch: usize) -> Vec<usize> {
    graph
        .node(graph.inputs[0])
        .ty
        .shape
        .iter()
        .map(|d| d.known().map_or(batch, |k| k as usize))
        .collect()
}

/// `initialise`, then every 1-D tensor (biases, BatchNorm affine and running
/// statistics) moved off its initial value, so folds that mishandle them show.
/// Variances stay positive.
pub fn perturbed_weights<T: Scalar>(graph: &Graph, seed: u64) -> ParamStore<T> {
    let mut store = initialise::<T>(graph, seed).expect("init");
    for (i, (name, t)) in store.iter_mut().enumerate() {
        if t.ndim() != 1 {
            continue;
        }
        let r = noise(t.numel(), seed.wrapping_add(i as u64));
        for (v, r) in t.data.iter_mut().zip(r) {
            let moved = if name.ends_with("running_var") {
                0.75 + 0.5 * r.abs()
            } else {
                v.to_f64() + 0.3 * r
            };
            *v = <T as Scalar>::from_f64(moved);
        }
    }
    store
}
pub mod fnetc;
pub mod golden_weights;
pub mod jit;
pub mod kernel_eval;
pub mod kinks;
pub mod models;
pub mod mpi;
#[cfg(feature = "opencl")]
pub mod opencl;
pub mod png_image;
pub mod train_data;

/// Asserts `got` equals `want` within `rel` × the larger of 1 and `want`'s largest
/// magnitude (tolerances scaled to magnitude), and returns the max |difference|.
#[track_caller]
pub fn assert_close<T: Scalar, U: Scalar>(
    what: &str,
    got: &Tensor<T>,
    want: &Tensor<U>,
    rel: f64,
) -> f64 {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let err = got.max_abs_diff(want).expect("same shape");
    let scale = want.max_abs().max(1.0);
    assert!(
        err <= rel * scale,
        "{what}: max |diff| {err:e} > {rel:e} × {scale}"
    );
    err
}
