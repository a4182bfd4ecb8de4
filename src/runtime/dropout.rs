//! Dropout masks from a counter-based hash, so that every backend draws the same mask
//! without sharing a random stream: element `i` of the dropout layer `layer` in the
//! run seeded `seed` is kept when
//!
//! ```text
//! key  = H(H(salt(layer), seed16_lo), seed16_hi)     seed16: the seed folded to 32 bits
//! keep = (H(key, i) as i32) >= threshold(p)           threshold = ⌈p·2³²⌉ − 2³¹
//! ```
//!
//! with `H(a, b) = fmix32(a ^ fmix32(b))` (MurmurHash3's 32-bit finaliser, a bijection
//! with full avalanche) and `salt` the 32-bit FNV-1a of the layer's name. A kept
//! element is scaled by `1/(1 − p)`. Only wrapping 32-bit integer operations enter, so
//! the OpenCL kernel (`kernel_ir::Expr::Hash`) computes the same bits; the seed
//! reaches a device as two 16-bit words stored exactly in f32.
//!
//! The layer name is the forward `dropout` node's; the training graph's
//! `<layer>.grad_mask` draws the mask of `<layer>`, so the training forward and the
//! model's own training-mode forward drop the same elements. Different layers get
//! different salts, hence independent masks; a trainer gives each step its own seed
//! ([`step_seed`]).

/// MurmurHash3's 32-bit finaliser.
pub fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The hash of a pair: `fmix32(a ^ fmix32(b))`.
pub fn hash2(a: u32, b: u32) -> u32 {
    fmix32(a ^ fmix32(b))
}

/// 32-bit FNV-1a of a layer's name: the layer's salt.
pub fn salt(layer: &str) -> u32 {
    layer.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The dropout layer a node's mask belongs to: `<layer>.grad_mask` (the training
/// graph's mask node) draws `<layer>`'s mask.
pub fn layer_of(node: &str) -> &str {
    node.strip_suffix(".grad_mask").unwrap_or(node)
}

/// The run seed as two 16-bit words, each exact in an f32.
pub fn seed_words(seed: u64) -> [u32; 2] {
    let s = (seed ^ (seed >> 32)) as u32;
    [s & 0xffff, s >> 16]
}

/// The key of one layer's mask in one run.
pub fn key(seed: u64, layer: &str) -> u32 {
    let [lo, hi] = seed_words(seed);
    hash2(hash2(salt(layer), lo), hi)
}

/// Element `i` is kept when its hash, read as an `i32`, is at least this.
pub fn threshold(p: f64) -> i32 {
    let t = (p * 4_294_967_296.0).ceil() - 2_147_483_648.0;
    t.clamp(i32::MIN as f64, i32::MAX as f64) as i32
}

/// Whether element `i` of the mask keyed `key` is kept at threshold `t`.
pub fn kept(key: u32, i: u32, t: i32) -> bool {
    hash2(key, i) as i32 >= t
}

/// The seed of training step `step` of a run seeded `seed`.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let s = seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (u64::from(fmix32(s as u32)) << 32) | u64::from(fmix32((s >> 32) as u32 ^ 0x5bd1_e995))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_one_minus_p_and_layers_differ() {
        let t = threshold(0.3);
        let (a, b) = (key(7, "drop1"), key(7, "drop2"));
        let n = 100_000u32;
        let kept_a = (0..n).filter(|&i| kept(a, i, t)).count() as f64 / n as f64;
        assert!((kept_a - 0.7).abs() < 0.01, "{kept_a}");
        let same = (0..n).filter(|&i| kept(a, i, t) == kept(b, i, t)).count() as f64;
        // Independent masks agree on 0.7² + 0.3² of the elements.
        assert!((same / n as f64 - 0.58).abs() < 0.01);
        assert_ne!(key(7, "drop1"), key(8, "drop1"));
        assert_eq!(threshold(0.0), i32::MIN);
        assert!((0..1000).all(|i| kept(a, i, threshold(0.0))));
    }

    #[test]
    fn murmur_finaliser_known_values() {
        assert_eq!(fmix32(0), 0);
        assert_eq!(fmix32(1), 0x514e_28b7);
        assert_eq!(layer_of("d.grad_mask"), "d");
    }
}
