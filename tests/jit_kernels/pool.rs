//! 2-D max and average pooling against a naive loop written from the kernel IR pool's
//! definition (−∞ or 0 to start, `acc < x ? x : acc` or a sum over the taps inside,
//! the average scaled by `1/(kh·kw)`), bit for bit: windows with and without padding,
//! overlapping and tiled (the 2×2 and 3×3 fast paths), windows past the edge, one and
//! many planes (the parallel path), an empty input.

use crate::common::random;
use fnet::jit::kernels::pool::{pool2d, Pool2d};

fn naive(p: &Pool2d, x: &[f32]) -> Vec<f32> {
    let [h, w] = p.hw;
    let [oh, ow] = p.out;
    let mut y = Vec::new();
    for pl in 0..p.planes {
        for r in 0..oh {
            for o in 0..ow {
                let mut acc = if p.max { f32::NEG_INFINITY } else { 0.0 };
                for i in 0..p.k[0] {
                    for j in 0..p.k[1] {
                        let ih = (r * p.stride[0] + i) as isize - p.pad[0] as isize;
                        let iw = (o * p.stride[1] + j) as isize - p.pad[1] as isize;
                        if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                            continue;
                        }
                        let v = x[(pl * h + ih as usize) * w + iw as usize];
                        acc = if !p.max {
                            acc + v
                        } else if acc < v {
                            v
                        } else {
                            acc
                        };
                    }
                }
                y.push(if p.max {
                    acc
                } else {
                    acc * (1.0 / (p.k[0] * p.k[1]) as f32)
                });
            }
        }
    }
    y
}

#[test]
fn pools_match_the_definition_bit_for_bit() {
    let geo = |planes, hw: [usize; 2], k: [usize; 2], stride: [usize; 2], pad: [usize; 2]| {
        let out = [0, 1].map(|a| (hw[a] + 2 * pad[a] - k[a]) / stride[a] + 1);
        Pool2d {
            planes,
            hw,
            out,
            k,
            stride,
            pad,
            max: true,
        }
    };
    let cases = [
        geo(6, [28, 28], [2, 2], [2, 2], [0, 0]),
        geo(400, [10, 10], [2, 2], [2, 2], [0, 0]),
        geo(3, [9, 9], [3, 3], [3, 3], [0, 0]),
        geo(2, [7, 9], [2, 2], [2, 2], [0, 0]), // odd sizes: a column and row left over
        geo(3, [8, 8], [3, 3], [2, 2], [1, 1]),
        geo(2, [5, 7], [3, 2], [1, 2], [1, 0]),
        geo(1, [1, 13], [1, 4], [1, 3], [0, 2]),
        geo(2, [3, 3], [5, 5], [1, 1], [2, 2]),
        geo(300, [12, 12], [3, 3], [2, 2], [1, 1]),
        geo(2, [0, 0], [1, 1], [1, 1], [1, 1]), // an empty input: windows of padding only
    ];
    for (i, g) in cases.into_iter().enumerate() {
        for max in [true, false] {
            let p = Pool2d { max, ..g };
            let mut x = random(p.planes * p.hw[0] * p.hw[1], 500 + i as u64);
            if let Some(first) = x.first_mut() {
                *first = f32::NAN; // a max skips a NaN tap; an average carries it
            }
            let want = naive(&p, &x);
            let mut y = vec![0.0; want.len()];
            pool2d(&p, &x, &mut y);
            for (k, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{p:?}: output {k}: {a} against {b}"
                );
            }
        }
    }
}
