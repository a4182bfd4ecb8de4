//! Reference kernels against PyTorch golden fixtures (written by
//! `tools/golden.py` into `tests/fixtures/golden/`).
//!
//! Tolerance: |a − b| <= tol · max(1, max|expected|), with tol 1e-4 for f32
//! fixtures and 1e-10 for f64 ones unless a case says otherwise.

mod common;

use std::path::PathBuf;

use fnet::io::weights::{read_weights, WeightFile};
use fnet::reference::activation::{gelu, relu};
use fnet::reference::basis::{basis_block, BasisNorm};
use fnet::reference::conv::{causal_conv1d, conv, ConvParams};
use fnet::reference::fft_conv::{fft_causal_conv1d, fft_conv2d_same};
use fnet::reference::layout::last_timestep;
use fnet::reference::lc::{lc_block, lc_fold};
use fnet::reference::linear::{linear, Linear};
use fnet::reference::magnet::{magnet_kernel, GaborFilter, MagnetParams};
use fnet::reference::mask::{dynamic_crop_axes, gaussian_mask, grid_from_axes, rel_positions_grid};
use fnet::reference::norm::{batch_norm_eval, batch_norm_train, Affine, RunningStats};
use fnet::reference::pool::{avg_pool2d, global_avg_pool, max_pool2d, Pool2d};
use fnet::reference::shortcut::option_a;
use fnet::tensor::{Scalar, Tensor};

fn fixture<T: Scalar>(name: &str) -> WeightFile<T> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(format!("{name}.safetensors"));
    read_weights(&p).unwrap_or_else(|e| panic!("{e}"))
}

fn get<'a, T: Scalar>(f: &'a WeightFile<T>, name: &str) -> &'a Tensor<T> {
    f.get(name, None).unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
fn close<T: Scalar, U: Scalar>(what: &str, got: &Tensor<T>, want: &Tensor<U>, tol: f64) {
    common::assert_close(what, got, want, tol);
}

const F32: f64 = 1e-4;
const F64: f64 = 1e-10;

#[test]
fn conv2d_cases() {
    let f = fixture::<f32>("conv2d_3x3");
    let y = conv(
        get(&f, "x"),
        get(&f, "w"),
        Some(&get(&f, "b").data),
        &ConvParams::same(&[3, 3]),
    );
    close("3x3", &y.unwrap(), get(&f, "y"), F32);

    let f = fixture::<f32>("conv2d_33x33");
    let y = conv(
        get(&f, "x"),
        get(&f, "w"),
        Some(&get(&f, "b").data),
        &ConvParams::same(&[33, 33]),
    );
    close("33x33", &y.unwrap(), get(&f, "y"), F32);

    let f = fixture::<f32>("conv2d_stride2");
    let p = ConvParams::same(&[3, 3]).with_stride(vec![2, 2]);
    close(
        "stride 2",
        &conv(get(&f, "x"), get(&f, "w"), None, &p).unwrap(),
        get(&f, "y"),
        F32,
    );

    let f = fixture::<f32>("conv2d_dilated_groups");
    let p = ConvParams::unit(2)
        .with_padding(vec![(2, 2), (2, 2)])
        .with_dilation(vec![2, 2])
        .with_groups(2);
    let y = conv(get(&f, "x"), get(&f, "w"), Some(&get(&f, "b").data), &p);
    close("dilated groups", &y.unwrap(), get(&f, "y"), F32);

    let f = fixture::<f32>("conv2d_asym_pad");
    let p = ConvParams::unit(2)
        .with_padding(vec![(0, 1), (1, 2)])
        .with_stride(vec![1, 2]);
    close(
        "asym pad",
        &conv(get(&f, "x"), get(&f, "w"), None, &p).unwrap(),
        get(&f, "y"),
        F32,
    );
}

#[test]
fn conv1d_general() {
    let f = fixture::<f32>("conv1d_general");
    let p = ConvParams::unit(1)
        .with_stride(vec![2])
        .with_padding(vec![(3, 3)])
        .with_dilation(vec![2])
        .with_groups(2);
    let y = conv(get(&f, "x"), get(&f, "w"), Some(&get(&f, "b").data), &p);
    close("conv1d", &y.unwrap(), get(&f, "y"), F32);
}

#[test]
fn causal_784_direct_and_fft() {
    let f = fixture::<f32>("causal_conv1d_784");
    let (x, w, b) = (get(&f, "x"), get(&f, "w"), &get(&f, "b").data);
    let direct = causal_conv1d(x, w, Some(b)).unwrap();
    let fft = fft_causal_conv1d(x, w, Some(b)).unwrap();
    for (name, want) in [("y", get(&f, "y")), ("y_fft", get(&f, "y_fft"))] {
        close(&format!("direct vs {name}"), &direct, want, F32);
        close(&format!("fft vs {name}"), &fft, want, F32);
    }
    // In f64 both paths agree far more tightly than either does with torch's f32.
    let (x64, w64) = (x.to_f64(), w.to_f64());
    let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let d64 = causal_conv1d(&x64, &w64, Some(&b64)).unwrap();
    close(
        "f64 fft vs direct",
        &fft_causal_conv1d(&x64, &w64, Some(&b64)).unwrap(),
        &d64,
        F64,
    );

    let f = fixture::<f32>("causal_conv1d_even");
    let (x, w) = (get(&f, "x"), get(&f, "w"));
    close(
        "even kernel",
        &causal_conv1d(x, w, None).unwrap(),
        get(&f, "y"),
        F32,
    );
    close(
        "even kernel fft",
        &fft_causal_conv1d(x, w, None).unwrap(),
        get(&f, "y"),
        F32,
    );
}

#[test]
fn fft_conv2d_51_f64() {
    let f = fixture::<f64>("fft_conv2d_51_f64");
    let (x, w, b) = (get(&f, "x"), get(&f, "w"), &get(&f, "b").data);
    let direct = conv(x, w, Some(b), &ConvParams::same(&[51, 51])).unwrap();
    let fft = fft_conv2d_same(x, w, Some(b)).unwrap();
    for (name, want) in [("y", get(&f, "y")), ("y_fft", get(&f, "y_fft"))] {
        close(&format!("direct vs {name}"), &direct, want, F64);
        close(&format!("fft vs {name}"), &fft, want, F64);
    }
}

#[test]
fn mask_and_crop() {
    let f = fixture::<f32>("mask_crop");
    // torch's CPU linspace rounds differently depending on vectorisation
    // (and FMA), so grids agree to an ulp or so, not bit for bit.
    let g33 = rel_positions_grid::<f32>(&[33, 33]);
    close("grid 33", &g33, get(&f, "full33.grid"), 1e-6);
    let g784 = rel_positions_grid::<f32>(&[784]);
    close("grid 784", &g784, get(&f, "full784.grid"), 1e-6);
    for (name, horizon) in [
        ("h33", 33),
        ("h17", 17),
        ("aniso", 33),
        ("wide", 9),
        ("c784", 784),
        ("c40", 40),
    ] {
        let params = get(&f, &format!("{name}.params"));
        let dims = vec![horizon; params.shape[0]];
        let axes = dynamic_crop_axes(&dims, params, 0.1).unwrap();
        let grid = grid_from_axes(&axes);
        let sizes: Vec<f32> = axes.iter().map(|a| a.len() as f32).collect();
        assert_eq!(
            sizes,
            get(&f, &format!("{name}.size")).data,
            "{name} crop size"
        );
        close(
            &format!("{name} grid"),
            &grid,
            get(&f, &format!("{name}.grid")),
            1e-6,
        );
        let mask = gaussian_mask(&grid, params).unwrap();
        close(
            &format!("{name} mask"),
            &mask,
            get(&f, &format!("{name}.mask")),
            1e-6,
        );
    }
}

fn magnet_params(f: &WeightFile<f64>, layers: usize) -> MagnetParams<f64> {
    let lin = |w: &str, b: &str| Linear {
        weight: get(f, w).clone(),
        bias: Some(get(f, b).data.clone()),
    };
    MagnetParams {
        filters: (0..=layers)
            .map(|l| GaborFilter {
                linear: lin(&format!("filter.{l}.weight"), &format!("filter.{l}.bias")),
                gamma: get(f, &format!("filter.{l}.gamma")).clone(),
                mu: get(f, &format!("filter.{l}.mu")).clone(),
            })
            .collect(),
        hidden: (0..layers)
            .map(|l| lin(&format!("hidden.{l}.weight"), &format!("hidden.{l}.bias")))
            .collect(),
        output: lin("output.weight", "output.bias"),
    }
}

#[test]
fn magnet_kernels() {
    for (name, cin) in [("magnet2d_f64", 3), ("magnet1d_f64", 2)] {
        let f = fixture::<f64>(name);
        let p = magnet_params(&f, 3);
        let grid = get(&f, "grid");
        close(
            name,
            &magnet_kernel(&p, grid, cin, 1.0).unwrap(),
            get(&f, "kernel"),
            F64,
        );
        let srn = magnet_kernel(&p, grid, cin, 0.25).unwrap();
        close(&format!("{name} srn"), &srn, get(&f, "kernel_srn"), F64);
        // The f32 path on the same parameters: sin of arguments up to ~100
        // loses digits, so only a loose bound holds.
        let p32 = MagnetParams {
            filters: p
                .filters
                .iter()
                .map(|g| GaborFilter {
                    linear: Linear {
                        weight: g.linear.weight.to_f32(),
                        bias: g
                            .linear
                            .bias
                            .as_ref()
                            .map(|b| b.iter().map(|&v| v as f32).collect()),
                    },
                    gamma: g.gamma.to_f32(),
                    mu: g.mu.to_f32(),
                })
                .collect(),
            hidden: p
                .hidden
                .iter()
                .map(|u| Linear {
                    weight: u.weight.to_f32(),
                    bias: u
                        .bias
                        .as_ref()
                        .map(|b| b.iter().map(|&v| v as f32).collect()),
                })
                .collect(),
            output: Linear {
                weight: p.output.weight.to_f32(),
                bias: p
                    .output
                    .bias
                    .as_ref()
                    .map(|b| b.iter().map(|&v| v as f32).collect()),
            },
        };
        let k32 = magnet_kernel(&p32, &grid.to_f32(), cin, 1.0).unwrap();
        close(&format!("{name} f32"), &k32, get(&f, "kernel"), 1e-3);
    }
}

#[test]
fn flexconv_end_to_end() {
    // 2D: crop, MAGNet on the cropped grid, mask, same conv.
    let f = fixture::<f64>("flexconv2d_f64");
    let p = magnet_params(&f, 3);
    let mp = get(&f, "mask_params");
    let grid = grid_from_axes(&dynamic_crop_axes(&[11, 11], mp, 0.1).unwrap());
    close("flexconv2d grid", &grid, get(&f, "grid"), F64);
    let mask = gaussian_mask(&grid, mp).unwrap();
    let mut k = magnet_kernel(&p, &grid, 3, 1.0).unwrap();
    let plane = mask.numel();
    for (i, v) in k.data.iter_mut().enumerate() {
        *v *= mask.data[i % plane];
    }
    close("flexconv2d kernel", &k, get(&f, "kernel"), F64);
    let ks = k.shape[2..].to_vec();
    let y = conv(
        get(&f, "x"),
        &k,
        Some(&get(&f, "b").data),
        &ConvParams::same(&ks),
    )
    .unwrap();
    close("flexconv2d y", &y, get(&f, "y"), F64);

    // 1D causal.
    let f = fixture::<f64>("flexconv1d_f64");
    let p = magnet_params(&f, 3);
    let mp = get(&f, "mask_params");
    let grid = grid_from_axes(&dynamic_crop_axes(&[40], mp, 0.1).unwrap());
    close("flexconv1d grid", &grid, get(&f, "grid"), F64);
    let mask = gaussian_mask(&grid, mp).unwrap();
    let mut k = magnet_kernel(&p, &grid, 2, 1.0).unwrap();
    let plane = mask.numel();
    for (i, v) in k.data.iter_mut().enumerate() {
        *v *= mask.data[i % plane];
    }
    close("flexconv1d kernel", &k, get(&f, "kernel"), F64);
    close(
        "flexconv1d y",
        &causal_conv1d(get(&f, "x"), &k, None).unwrap(),
        get(&f, "y"),
        F64,
    );
    close(
        "flexconv1d y fft",
        &fft_causal_conv1d(get(&f, "x"), &k, None).unwrap(),
        get(&f, "y"),
        F64,
    );
}

#[test]
fn lc_block_and_fold() {
    let f = fixture::<f32>("lc_block");
    let (x, ws, c) = (get(&f, "x"), get(&f, "ws"), get(&f, "c"));
    let p = ConvParams::same(&[3, 3]);
    close(
        "lc block",
        &lc_block(x, ws, c, &p).unwrap(),
        get(&f, "y"),
        F32,
    );
    let wc = lc_fold(ws, c).unwrap();
    close("lc fold", &wc, get(&f, "wc"), F32);
    close(
        "folded conv",
        &conv(x, &wc, None, &p).unwrap(),
        get(&f, "y"),
        F32,
    );
    let p2 = p.with_stride(vec![2, 2]);
    close(
        "lc stride 2",
        &lc_block(x, ws, c, &p2).unwrap(),
        get(&f, "y_stride2"),
        F32,
    );
    close(
        "folded stride 2",
        &conv(x, &wc, None, &p2).unwrap(),
        get(&f, "y_stride2"),
        F32,
    );
}

#[test]
fn shared_basis_block() {
    let f = fixture::<f32>("basis_block");
    let (gamma, beta) = (&get(&f, "bn.weight").data, &get(&f, "bn.bias").data);
    let affine = Some(Affine { gamma, beta });
    let start = RunningStats::new(4);
    let norm = BasisNorm::Train {
        affine,
        running: Some(&start),
        momentum: 0.1,
        eps: 1e-5,
    };
    let (x, u, s, c) = (
        get(&f, "x"),
        get(&f, "unique"),
        get(&f, "shared"),
        get(&f, "coeff"),
    );
    let (y, stats) = basis_block(x, u, s, norm, c).unwrap();
    close("basis train", &y, get(&f, "y"), F32);
    let stats = stats.unwrap();
    let t = |v: &Vec<f32>| Tensor::from_vec(vec![4], v.clone()).unwrap();
    close(
        "basis running mean",
        &t(&stats.mean),
        get(&f, "running_mean"),
        F32,
    );
    close(
        "basis running var",
        &t(&stats.var),
        get(&f, "running_var"),
        F32,
    );
    let norm = BasisNorm::Eval {
        affine,
        running: &stats,
        eps: 1e-5,
    };
    close(
        "basis eval",
        &basis_block(x, u, s, norm, c).unwrap().0,
        get(&f, "y_eval"),
        F32,
    );
}

#[test]
fn batchnorm_modes() {
    let f = fixture::<f32>("batchnorm");
    let x = get(&f, "x");
    let affine = Some(Affine {
        gamma: &get(&f, "gamma").data,
        beta: &get(&f, "beta").data,
    });
    let running = RunningStats {
        mean: get(&f, "running_mean").data.clone(),
        var: get(&f, "running_var").data.clone(),
    };
    let (y, upd) = batch_norm_train(x, affine, Some(&running), 0.1, 1e-5).unwrap();
    close("bn train", &y, get(&f, "y_train"), F32);
    let upd = upd.unwrap();
    let t = |v: &Vec<f32>| Tensor::from_vec(vec![3], v.clone()).unwrap();
    close(
        "bn new mean",
        &t(&upd.mean),
        get(&f, "new_running_mean"),
        F32,
    );
    close("bn new var", &t(&upd.var), get(&f, "new_running_var"), F32);
    let ye = batch_norm_eval(x, affine, &running, 1e-5).unwrap();
    close("bn eval", &ye, get(&f, "y_eval"), F32);
    let (yn, none) = batch_norm_train(x, None, None, 0.1, 1e-5).unwrap();
    assert!(none.is_none());
    close("bn no stats", &yn, get(&f, "y_nostats"), F32);
}

#[test]
fn pooling() {
    let f = fixture::<f32>("pool");
    let x = get(&f, "x");
    let p3 = Pool2d {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
    };
    close(
        "max 2",
        &max_pool2d(x, &Pool2d::square(2)).unwrap(),
        get(&f, "max_k2s2"),
        0.0,
    );
    close(
        "max 3/2/1",
        &max_pool2d(x, &p3).unwrap(),
        get(&f, "max_k3s2p1"),
        0.0,
    );
    close(
        "avg",
        &avg_pool2d(x, &p3, true).unwrap(),
        get(&f, "avg_k3s2p1"),
        F32,
    );
    close(
        "avg nopad",
        &avg_pool2d(x, &p3, false).unwrap(),
        get(&f, "avg_k3s2p1_nopad"),
        F32,
    );
    close(
        "global",
        &global_avg_pool(x).unwrap(),
        get(&f, "global_avg"),
        F32,
    );
}

#[test]
fn shortcut_activations_linear_select() {
    let f = fixture::<f32>("misc");
    close(
        "option A",
        &option_a(get(&f, "x"), 8).unwrap(),
        get(&f, "option_a"),
        0.0,
    );
    let a = get(&f, "act_in");
    close("relu", &relu(a), get(&f, "relu"), 0.0);
    close("gelu", &gelu(a), get(&f, "gelu"), 1e-6);
    let y = linear(
        get(&f, "lin_x"),
        get(&f, "lin_w"),
        Some(&get(&f, "lin_b").data),
    )
    .unwrap();
    close("linear", &y, get(&f, "lin_y"), F32);
    close(
        "last step",
        &last_timestep(get(&f, "seq")).unwrap(),
        get(&f, "seq_last"),
        0.0,
    );
}
