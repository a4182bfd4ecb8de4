//! The reference interpreter on whole models and small programs, checked against
//! independent computations: direct kernel calls, the LC fold, f64 runs, and the
//! FFT path.

mod common;

use fnet::driver::{compile_file, compile_str};
use fnet::eval::{Module, Options};
use fnet::ir::op::ConvAlgo;
use fnet::reference::conv::{conv, ConvParams};
use fnet::reference::lc::lc_fold;
use fnet::runtime::{initialise, run, Mode, ParamStore, RunOptions};
use fnet::tensor::Tensor;
use std::path::Path;

fn example(name: &str, options: &Options) -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    compile_file(&path, options)
        .map(|(_, m)| m)
        .unwrap_or_else(|r| panic!("{}", r.render()))
}

fn program(src: &str) -> Module {
    compile_str("t.fnet", src, &Options::default())
        .map(|(_, m)| m)
        .unwrap_or_else(|r| panic!("{}", r.render()))
}

/// Deterministic pseudo-random values in [-1, 1).
fn input(shape: &[usize], seed: u64) -> Tensor<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(shape.to_vec(), data).expect("shape")
}

fn forward(
    m: &Module,
    store: &ParamStore<f32>,
    x: Tensor<f32>,
    options: &RunOptions,
) -> Tensor<f32> {
    run(&m.graph, store, &[x], options)
        .unwrap_or_else(|e| panic!("{e}"))
        .outputs
        .remove(0)
}

#[track_caller]
fn close(a: &Tensor<f32>, b: &Tensor<f32>, rel: f64) {
    common::assert_close("", a, b, rel);
}

#[test]
fn every_small_example_runs_and_f32_matches_f64() {
    for (file, shape) in [
        ("lenet_mnist.fnet", vec![3, 1, 28, 28]),
        ("resnet20_cifar10.fnet", vec![2, 3, 32, 32]),
        ("resnet20_lc_cifar10.fnet", vec![2, 3, 32, 32]),
        ("resnet32_s16u1d_cifar10.fnet", vec![2, 3, 32, 32]),
        ("resnet20_slots_cifar10.fnet", vec![2, 3, 32, 32]),
    ] {
        let m = example(file, &Options::default());
        let store = initialise::<f32>(&m.graph, 3).expect("init");
        let x = input(&shape, 1);
        let y = forward(&m, &store, x.clone(), &RunOptions::default());
        assert_eq!(y.shape, vec![shape[0], 10], "{file}");
        assert!(y.data.iter().all(|v| v.is_finite()), "{file}");
        let store64: ParamStore<f64> = store.iter().map(|(k, v)| (k.clone(), v.to_f64())).collect();
        let y64 = run(&m.graph, &store64, &[x.to_f64()], &RunOptions::default())
            .expect("f64 run")
            .outputs
            .remove(0);
        close(&y, &y64.to_f32(), 1e-4);
    }
}

#[test]
fn flexconv_models_start_with_the_papers_crop_sizes() {
    let m = example("flexnet7_cifar10.fnet", &Options::default());
    let store = initialise::<f32>(&m.graph, 0).expect("init");
    let r = run(
        &m.graph,
        &store,
        &[input(&[1, 3, 32, 32], 2)],
        &RunOptions::default(),
    )
    .expect("run");
    assert_eq!(r.kernel_sizes.len(), 15);
    assert!(
        r.kernel_sizes.values().all(|k| k == &vec![5, 5]),
        "{:?}",
        r.kernel_sizes
    );
    assert_eq!(r.outputs[0].shape, vec![1, 10]);
}

#[test]
fn conv_layer_equals_the_direct_kernel() {
    let m = program("model c {\n  input x: f32[B, 3, 9, 7]\n  return x |> conv2d(5, [3, 5], stride: 2, padding: [1, 2], dilation: 1) as c\n}");
    let store = initialise::<f32>(&m.graph, 11).expect("init");
    let x = input(&[2, 3, 9, 7], 4);
    let y = forward(&m, &store, x.clone(), &RunOptions::default());
    let p = ConvParams::unit(2)
        .with_stride(vec![2, 2])
        .with_padding(vec![(1, 1), (2, 2)]);
    let want = conv(&x, &store["c.weight"], Some(&store["c.bias"].data), &p).expect("conv");
    assert_eq!(y.shape, vec![2, 5, 5, 4]);
    close(&y, &want, 1e-6);
}

#[test]
fn lc_block_equals_its_folded_conv() {
    let m = program("model l {\n  input x: f32[B, 4, 8, 8]\n  return x |> lc(6, 3, expansion: 4, padding: 1) as l\n}");
    let store = initialise::<f32>(&m.graph, 5).expect("init");
    let x = input(&[2, 4, 8, 8], 6);
    let y = forward(&m, &store, x.clone(), &RunOptions::default());
    let folded = lc_fold(&store["l.basis.weight"], &store["l.coeff.weight"]).expect("fold");
    let want = conv(
        &x,
        &folded,
        None,
        &ConvParams::unit(2).with_padding(vec![(1, 1), (1, 1)]),
    )
    .expect("conv");
    close(&y, &want, 1e-5);
}

#[test]
fn lc_basis_is_reproducible_from_its_seed() {
    let src = "model l {\n  input x: f32[B, 2, 4, 4]\n  seed SEED\n  return x |> lc(3, 3, seed: 42) as a |> lc(3, 3) as b\n}";
    let one = initialise::<f32>(&program(&src.replace("SEED", "1")).graph, 1).expect("init");
    let two = initialise::<f32>(&program(&src.replace("SEED", "2")).graph, 2).expect("init");
    assert_eq!(
        one["a.basis.weight"], two["a.basis.weight"],
        "explicit seed wins over the model seed"
    );
    assert_ne!(one["b.basis.weight"], two["b.basis.weight"]);
}

#[test]
fn initialisation_is_deterministic_and_follows_each_init() {
    let m = example("resnet32_s16u1d_cifar10.fnet", &Options::default());
    let a = initialise::<f32>(&m.graph, 9).expect("init");
    let b = initialise::<f32>(&m.graph, 9).expect("init");
    let c = initialise::<f32>(&m.graph, 10).expect("init");
    assert_eq!(a, b);
    assert_ne!(a["conv1.weight"], c["conv1.weight"]);
    // Double sharing: the two bases of a stage are the halves of one orthogonal
    // [2s, c·9] matrix, so all 2s rows are orthonormal together.
    let rows: Vec<&[f32]> = a["stage2.shared.0.weight"]
        .data
        .chunks(288)
        .chain(a["stage2.shared.1.weight"].data.chunks(288))
        .collect();
    assert_eq!(rows.len(), 64);
    for (i, r) in rows.iter().enumerate() {
        for (j, s) in rows.iter().enumerate() {
            let dot: f64 = r
                .iter()
                .zip(s.iter())
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-5, "rows {i},{j}: {dot}");
        }
    }
    // PyTorch's default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    let fc = &a["fc.weight"];
    let bound = 1.0 / 64f32.sqrt();
    assert!(fc.data.iter().all(|v| v.abs() <= bound));
    assert!(fc.data.iter().any(|v| v.abs() > 0.9 * bound));
    assert!(a["layer1.basic1.bn1.running_var"]
        .data
        .iter()
        .all(|&v| v == 1.0));
}

#[test]
fn magnet_init_scales_sines_by_gamma_and_sets_the_mask() {
    let m = example("flextcn6_smnist.fnet", &Options::default());
    let s = initialise::<f32>(&m.graph, 4).expect("init");
    let mask = &s["tcn1.flex1.mask_params"];
    assert_eq!(mask.data, vec![1.0, 0.075], "causal: mean 1, sigma 0.075");
    // Gamma(6/(l+1), 1) widths have mean 6/(l+1): check the 4 filters' sample means.
    for l in 0..4 {
        let g = &s[&format!("tcn1.flex1.kernel_net.filters.{l}.gamma")];
        let mean = g.data.iter().map(|&v| f64::from(v)).sum::<f64>() / g.numel() as f64;
        let want = 6.0 / (l + 1) as f64;
        assert!(
            (mean - want).abs() < 0.5 * want,
            "filter {l}: mean {mean}, want {want}"
        );
        // |Wg| <= 1/sqrt(D) · 25.6/sqrt(4) · γ
        let w = &s[&format!("tcn1.flex1.kernel_net.filters.{l}.linear.weight")];
        for (wv, gv) in w.data.iter().zip(&g.data) {
            assert!(wv.abs() <= 12.8 * gv + 1e-5);
        }
    }
}

#[test]
fn fft_and_direct_agree_on_long_causal_kernels() {
    let m = program(
        "model s {\n  input x: f32[B, 2, 300]\n  return x |> flexconv(4, horizon: same, causal: true, mask: gauss(sigma: 0.5)) as f\n}",
    );
    let store = initialise::<f32>(&m.graph, 8).expect("init");
    let x = input(&[2, 2, 300], 9);
    let direct = run(
        &m.graph,
        &store,
        std::slice::from_ref(&x),
        &RunOptions {
            force_algo: Some(ConvAlgo::Direct),
            ..RunOptions::default()
        },
    )
    .expect("direct");
    let fft = run(
        &m.graph,
        &store,
        &[x],
        &RunOptions {
            force_algo: Some(ConvAlgo::Fft),
            ..RunOptions::default()
        },
    )
    .expect("fft");
    assert!(
        direct.kernel_sizes["f"][0] > 150,
        "wide mask keeps a long kernel: {:?}",
        direct.kernel_sizes
    );
    close(&fft.outputs[0], &direct.outputs[0], 1e-4);
}

#[test]
fn training_mode_uses_batch_statistics_and_updates_buffers() {
    let m = program("model b {\n  input x: f32[B, 2, 4, 4]\n  return x |> batchnorm as bn\n}");
    let store = initialise::<f32>(&m.graph, 0).expect("init");
    let x = input(&[3, 2, 4, 4], 1);
    let eval = forward(&m, &store, x.clone(), &RunOptions::default());
    close(&eval, &x.map(|v| v / (1.0f32 + 1e-5).sqrt()), 1e-6);
    let r = run(
        &m.graph,
        &store,
        &[x],
        &RunOptions {
            mode: Mode::Train,
            ..RunOptions::default()
        },
    )
    .expect("train");
    let y = &r.outputs[0];
    let mean: f32 = y.data[..16]
        .iter()
        .chain(&y.data[32..48])
        .chain(&y.data[64..80])
        .sum::<f32>()
        / 48.0;
    assert!(
        mean.abs() < 1e-5,
        "channel 0 is normalised by its batch statistics"
    );
    assert!(
        r.updated_buffers.contains_key("bn.running_mean")
            && r.updated_buffers.contains_key("bn.running_var")
    );
}

#[test]
fn slot_configuration_changes_where_pooling_happens() {
    let early = example(
        "resnet20_slots_cifar10.fnet",
        &Options {
            slot_config: Some(vec![1, 2]),
            ..Options::default()
        },
    );
    let store = initialise::<f32>(&early.graph, 1).expect("init");
    let x = input(&[1, 3, 32, 32], 3);
    let a = forward(&early, &store, x.clone(), &RunOptions::default());
    let late = example(
        "resnet20_slots_cifar10.fnet",
        &Options {
            slot_config: Some(vec![8, 9]),
            ..Options::default()
        },
    );
    let b = forward(&late, &store, x, &RunOptions::default());
    assert_eq!(a.shape, b.shape);
    assert!(
        a.max_abs_diff(&b).expect("shape") > 1e-3,
        "same weights, different pooling, different outputs"
    );
}

#[test]
fn wrong_inputs_and_weights_are_reported() {
    let m = example("lenet_mnist.fnet", &Options::default());
    let mut store = initialise::<f32>(&m.graph, 1).expect("init");
    let err = run(
        &m.graph,
        &store,
        &[input(&[2, 1, 32, 32], 1)],
        &RunOptions::default(),
    )
    .expect_err("wrong size");
    assert!(
        err.message
            .contains("expected shape f32[B,1,28,28], got [2, 1, 32, 32]"),
        "{err}"
    );
    store.remove("conv1.bias");
    store.insert("conv2.weight".into(), Tensor::zeros(vec![16, 6, 3, 3]));
    store.insert("extra.weight".into(), Tensor::zeros(vec![1]));
    let err = fnet::runtime::check_store(&m.graph, &store, "w.safetensors").expect_err("mismatch");
    let text = err.to_string();
    assert!(text.contains("conv1.bias [6] (trainable)"), "{text}");
    assert!(
        text.contains("conv2.weight: expected [16, 6, 5, 5], found [16, 6, 3, 3]"),
        "{text}"
    );
    assert!(text.contains("extra.weight"), "{text}");
}

#[test]
fn an_op_reading_one_value_twice_squares_it() {
    let m = program("model sq {\n  input x: f32[B, 2, 3]\n  return x * x\n}\n");
    let x = input(&[2, 2, 3], 9);
    let store = ParamStore::new();
    let y = run(
        &m.graph,
        &store,
        std::slice::from_ref(&x),
        &RunOptions::default(),
    )
    .expect("runs")
    .outputs
    .remove(0);
    for (a, b) in x.data.iter().zip(&y.data) {
        assert_eq!(a * a, *b);
    }
}
