//! Shared helpers: a seeded generator and the ISA paths to run.

use fnet::jit::kernels::isa::Isa;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

/// `len` values uniform in [-1, 1) from `seed`.
pub fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Pcg64::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Every ISA this CPU supports; each test runs all of them (AVX-512, AVX2 and
/// portable on the development machine), so the env variable is not needed.
pub fn isas() -> Vec<Isa> {
    let all = Isa::available();
    assert!(all.iter().any(|i| *i == Isa::portable()));
    all
}
