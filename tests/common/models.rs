//! Models and inputs the backend tests share: programs from source or from
//! `examples/`, seeded inputs and seeded, perturbed weights. Nothing here needs a
//! backend, so the JIT tests build without the `opencl` feature.

use super::{noise, perturbed_weights};
use fnet::driver::{compile_file, compile_str};
use fnet::eval::{Module, Options};
use fnet::runtime::ParamStore;
use fnet::tensor::Tensor;

pub fn program(src: &str) -> Module {
    compile_str("t.fnet", src, &Options::default())
        .map(|(_, m)| m)
        .unwrap_or_else(|r| panic!("{}", r.render()))
}

/// An example by file name (`resnet20_cifar10.fnet`).
pub fn example(file: &str) -> Module {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    compile_file(&path, &Options::default())
        .map(|(_, m)| m)
        .unwrap_or_else(|r| panic!("{}", r.render()))
}

pub fn input(shape: &[usize], seed: u64) -> Tensor<f32> {
    super::random(shape, seed)
}

pub fn noise_f32(n: usize, seed: u64) -> Vec<f32> {
    noise(n, seed).into_iter().map(|v| v as f32).collect()
}

/// Seeded weights with every vector moved off its initial value.
pub fn weights(m: &Module, seed: u64) -> ParamStore<f32> {
    perturbed_weights(&m.graph, seed)
}
