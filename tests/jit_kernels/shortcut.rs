//! The option-A shortcut and its backward against their definitions, bit for bit, on
//! odd sizes, strides 1 to 3, 1-D maps, no channel padding, and calls large enough to
//! run in parallel; and the backward as the forward's adjoint.

use crate::common::random;
use fnet::jit::kernels::shortcut::{shortcut_a, shortcut_a_backward, Shortcut};

fn geometry(n: usize, ci: usize, hw: [usize; 2], co: usize, stride: [usize; 2]) -> Shortcut {
    Shortcut {
        n,
        ci,
        hw,
        co,
        out: [hw[0].div_ceil(stride[0]), hw[1].div_ceil(stride[1])],
        stride,
        pad: (co - ci) / 2,
    }
}

fn cases() -> Vec<Shortcut> {
    vec![
        geometry(64, 16, [32, 32], 32, [2, 2]), // ResNet-20's first: parallel
        geometry(3, 32, [16, 16], 64, [2, 2]),
        geometry(2, 3, [7, 9], 9, [2, 2]), // odd sizes, 3 channels each side
        geometry(1, 4, [5, 5], 4, [1, 1]), // identity
        geometry(2, 2, [10, 11], 6, [3, 3]),
        geometry(2, 5, [1, 37], 7, [1, 2]), // 1-D, an odd channel pad
    ]
}

/// `y[b, c, oh, ow] = x[b, c − pad, oh·sh, ow·sw]` inside the input's channels, else 0.
fn naive(g: &Shortcut, x: &[f32]) -> Vec<f32> {
    let mut y = Vec::new();
    for b in 0..g.n {
        for c in 0..g.co {
            for oh in 0..g.out[0] {
                for ow in 0..g.out[1] {
                    let v = if c >= g.pad && c - g.pad < g.ci {
                        let (ih, iw) = (oh * g.stride[0], ow * g.stride[1]);
                        x[((b * g.ci + c - g.pad) * g.hw[0] + ih) * g.hw[1] + iw]
                    } else {
                        0.0
                    };
                    y.push(v);
                }
            }
        }
    }
    y
}

/// Every input position that is kept takes its output's gradient, the rest 0.
fn naive_backward(g: &Shortcut, dy: &[f32]) -> Vec<f32> {
    let mut dx = Vec::new();
    for b in 0..g.n {
        for c in 0..g.ci {
            for ih in 0..g.hw[0] {
                for iw in 0..g.hw[1] {
                    let kept = ih % g.stride[0] == 0 && iw % g.stride[1] == 0;
                    let (oh, ow) = (ih / g.stride[0], iw / g.stride[1]);
                    dx.push(if kept {
                        dy[((b * g.co + c + g.pad) * g.out[0] + oh) * g.out[1] + ow]
                    } else {
                        0.0
                    });
                }
            }
        }
    }
    dx
}

#[test]
fn shortcut_matches_the_definition_bit_for_bit() {
    for (i, g) in cases().iter().enumerate() {
        assert!(g.valid(), "{g:?}");
        let (lx, ly) = g.lens();
        let x = random(lx, 500 + i as u64);
        let mut y = vec![f32::NAN; ly];
        shortcut_a(g, &x, &mut y);
        let want = naive(g, &x);
        assert!(
            y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{g:?}"
        );
        let dy = random(ly, 600 + i as u64);
        let mut dx = vec![f32::NAN; lx];
        shortcut_a_backward(g, &dy, &mut dx);
        let want = naive_backward(g, &dy);
        assert!(
            dx.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "backward {g:?}"
        );
        // The backward is the forward's adjoint: <S x, dy> = <x, Sᵀ dy>.
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a * b) as f64).sum::<f64>();
        let (l, r) = (dot(&y, &dy), dot(&x, &dx));
        assert!((l - r).abs() <= 1e-9 * (1.0 + l.abs()), "{g:?}: {l} vs {r}");
    }
}

#[test]
fn inconsistent_geometry_is_not_valid() {
    let g = geometry(1, 4, [8, 8], 8, [2, 2]);
    assert!(!Shortcut { out: [4, 5], ..g }.valid());
    assert!(!Shortcut { pad: 5, ..g }.valid());
    assert!(!Shortcut {
        stride: [0, 2],
        ..g
    }
    .valid());
}
