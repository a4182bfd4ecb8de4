//! Elementwise hot loops the kernel IR cannot vectorise: ReLU's backward, whose
//! select takes a per-element condition (the IR's `select` has a scalar one).

use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// `dx = x ≤ 0 ? 0 : dy` (the interpreter's rule: a NaN `x` passes `dy`), in chunks
/// over rayon; a loop the compiler vectorises.
pub fn relu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let part = |(dx, (x, dy)): (&mut [f32], (&[f32], &[f32]))| {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
            *d = if x <= 0.0 { 0.0 } else { g };
        }
    };
    if dx.len() <= CHUNK {
        part((dx, (x, dy)));
    } else {
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
            .for_each(part);
    }
}
