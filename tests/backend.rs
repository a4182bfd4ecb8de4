//! The backend seam (`fnet::backend`): one graph prepared on the reference
//! interpreter and on OpenCL gives the same outputs; parameter writes change the
//! output as the interpreter run on the changed weights does; reads give back what
//! was written, and the running statistics a training-mode run leaves; `open`
//! resolves `--backend`/`--device`. Then `fnetc run` end to end: `--device` with the
//! reference backend, models with two inputs (`-i NAME=FILE`), the device on stderr,
//! and the `--explain` header.
//!
//! The OpenCL parts need a platform (PoCL is installed by `scripts/setup.sh`); they
//! run on the default device (`FNET_TEST_DEVICE` overrides).
#![cfg(feature = "opencl")]

mod common;

use common::fnetc::{fnetc, text};
use common::opencl::backend;
use common::{assert_close, noise, perturbed_weights, program, random};
use fnet::backend::{open, program_cache, Backend, BackendKind, ReferenceBackend};
use fnet::cost::CostTableId;
use fnet::io::npy::{read_npy_any, write_npy, NpyArray};
use fnet::opencl::DeviceSel;
use fnet::runtime::{run, Mode, ParamStore, RunOptions};
use fnet::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::process::Output;

const MODEL: &str = "model m {\n  input x: f32[B, 3, 6, 6]\n  return x |> conv2d(4, 3, padding: 1) |> batchnorm |> relu |> flatten |> linear(3)\n}";

fn setup() -> (fnet::ir::Graph, ParamStore<f32>, Tensor<f32>) {
    let graph = program(MODEL);
    let store = perturbed_weights::<f32>(&graph, 5);
    (graph, store, random(&[2, 3, 6, 6], 6))
}

/// Both backends, as `fnetc run` would get them.
fn backends() -> Vec<Box<dyn Backend>> {
    vec![Box::new(ReferenceBackend), Box::new(backend().clone())]
}

fn interpreter(graph: &fnet::ir::Graph, store: &ParamStore<f32>, x: &Tensor<f32>) -> Tensor<f32> {
    run(
        graph,
        store,
        std::slice::from_ref(x),
        &RunOptions::default(),
    )
    .expect("interpreter")
    .outputs
    .remove(0)
}

#[test]
fn one_graph_gives_the_same_outputs_on_both_backends() {
    let (graph, store, x) = setup();
    let want = interpreter(&graph, &store, &x);
    for b in backends() {
        let mut p = b
            .prepare(graph.clone(), store.clone(), std::slice::from_ref(&x.shape))
            .unwrap_or_else(|e| panic!("{}: {e}", b.device()));
        assert_eq!(p.input_shapes(), std::slice::from_ref(&x.shape));
        // forward, and the three steps it stands for, give the same.
        let got = p.forward(std::slice::from_ref(&x)).expect("forward");
        assert_close(&b.device(), &got[0], &want, 2e-5);
        p.write_inputs(std::slice::from_ref(&x)).expect("write");
        p.run().expect("run");
        assert_eq!(p.read_outputs().expect("read"), got, "{}", b.device());
        let err = p
            .forward(&[random(&[3, 3, 6, 6], 1)])
            .expect_err("another batch");
        assert!(err.to_string().contains("[2, 3, 6, 6]"), "{err}");
    }
}

#[test]
fn write_param_changes_the_output_as_the_interpreter_does() {
    let (graph, mut store, x) = setup();
    let before = interpreter(&graph, &store, &x);
    let w = store.get("linear1.weight").expect("weight");
    let data = noise(w.numel(), 8).into_iter().map(|v| v as f32).collect();
    let new = Tensor::from_vec(w.shape.clone(), data).expect("shape");
    store.insert("linear1.weight".into(), new.clone());
    let want = interpreter(&graph, &store, &x);
    assert!(before.max_abs_diff(&want).expect("shape") > 1e-2);
    let (_, original, _) = setup();
    for b in backends() {
        let what = b.device();
        let mut p = b
            .prepare(
                graph.clone(),
                original.clone(),
                std::slice::from_ref(&x.shape),
            )
            .expect("prepare");
        assert_close(
            &what,
            &p.forward(std::slice::from_ref(&x)).expect("run")[0],
            &before,
            2e-5,
        );
        p.write_param("linear1.weight", &new).expect("write");
        assert_eq!(p.read_param("linear1.weight").expect("read"), new, "{what}");
        assert_close(
            &what,
            &p.forward(std::slice::from_ref(&x)).expect("run")[0],
            &want,
            2e-5,
        );
        // Unknown names and wrong shapes are refused, naming the parameter.
        let err = p.write_param("linear9.weight", &new).expect_err("unknown");
        assert!(err.message.contains("`linear9.weight`"), "{what}: {err}");
        let err = p
            .write_param("linear1.weight", &random(&[2, 2], 1))
            .expect_err("shape");
        assert!(err.message.contains("[3, 144]"), "{what}: {err}");
        assert!(p.read_param("nope").is_err(), "{what}");
    }
}

#[test]
fn running_statistics_read_back_after_a_training_mode_run() {
    let (graph, store, x) = setup();
    let name = "bn1.running_mean";
    let mut p = ReferenceBackend
        .prepare(graph.clone(), store.clone(), std::slice::from_ref(&x.shape))
        .expect("prepare");
    assert_eq!(&p.read_param(name).expect("read"), &store[name]);
    p.set_mode(Mode::Train).expect("training mode");
    let train = RunOptions {
        mode: Mode::Train,
        ..RunOptions::default()
    };
    let want = run(&graph, &store, std::slice::from_ref(&x), &train).expect("interpreter");
    let got = p.forward(std::slice::from_ref(&x)).expect("train step");
    assert_close("training output", &got[0], &want.outputs[0], 1e-6);
    let updated = p.read_param(name).expect("read");
    assert_eq!(&updated, &want.updated_buffers[name]);
    assert!(updated.max_abs_diff(&store[name]).expect("shape") > 1e-4);

    // OpenCL folds the statistics into an evaluation plan; training mode re-plans
    // with every parameter and statistic a device buffer, updated by the run.
    let mut p = backend()
        .prepare(graph, store, std::slice::from_ref(&x.shape))
        .expect("prepare");
    let err = p.read_param(name).expect_err("baked in");
    assert!(err.message.contains("baked into the OpenCL plan"), "{err}");
    assert!(backend().capabilities().training);
    p.set_mode(Mode::Train).expect("training mode");
    let got = p.forward(std::slice::from_ref(&x)).expect("train step");
    assert_close("OpenCL training output", &got[0], &want.outputs[0], 1e-4);
    let updated = p.read_param(name).expect("a device buffer in training");
    assert_close(
        "OpenCL running mean",
        &updated,
        &want.updated_buffers[name],
        1e-5,
    );
}

#[test]
fn f64_runs_where_the_backend_can() {
    let (graph, store, x) = setup();
    let store64: ParamStore<f64> = store.iter().map(|(k, v)| (k.clone(), v.cast())).collect();
    let x64: Tensor<f64> = x.cast();
    let want = run(
        &graph,
        &store64,
        std::slice::from_ref(&x64),
        &RunOptions::default(),
    )
    .expect("interpreter");
    assert!(ReferenceBackend.capabilities().f64);
    let got = ReferenceBackend
        .prepare_f64(
            graph.clone(),
            store64.clone(),
            std::slice::from_ref(&x.shape),
        )
        .and_then(|mut p| p.forward(std::slice::from_ref(&x64)))
        .expect("f64");
    assert_eq!(got, want.outputs);
    assert!(!backend().capabilities().f64);
    let err = backend()
        .prepare_f64(graph, store64, std::slice::from_ref(&x.shape))
        .err()
        .expect("f32 only");
    assert!(err.message.contains("f32 only"), "{err}");
}

#[test]
fn open_resolves_backend_and_device_in_one_place() {
    let fnet_model = Path::new("m.fnet");
    let r = open(BackendKind::Reference, None, fnet_model).expect("reference");
    assert_eq!(r.kind(), BackendKind::Reference);
    assert_eq!(r.cost_table(), CostTableId::Reference);
    let err = open(
        BackendKind::Reference,
        Some(DeviceSel::Index(7)),
        fnet_model,
    )
    .err()
    .expect("a device for the interpreter");
    assert!(err.message.contains("--device 7"), "{err}");
    assert!(err.to_string().contains("--backend opencl"), "{err}");
    let cl = open(BackendKind::Opencl, None, Path::new("/nowhere/m.fnc")).expect("opencl");
    assert_eq!(cl.kind(), BackendKind::Opencl);
    assert_eq!(
        cl.cost_table(),
        CostTableId::opencl(backend().context().info.is_gpu)
    );
    assert!(cl.device().contains(&backend().context().info.name));
    assert_eq!(
        program_cache(Path::new("dir/m.fnc")),
        Some(PathBuf::from("dir/m.fnc.clcache"))
    );
    assert_eq!(program_cache(fnet_model), fnet::opencl::default_cache_dir());
}

// ---- `fnetc run` end to end ----

fn tmp(name: &str) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("backend");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name).to_str().expect("utf-8").to_string()
}

const TWO: &str =
    "model two {\n  input p: f32[B, 4]\n  input q: f32[B, 4]\n  return (p * q) |> linear(3)\n}\n";

/// A two-input model, its weights and an input per name; the interpreter's output.
/// The two-input model, its weights and inputs in files named after `tag` (each test
/// its own: the tests run in parallel, and one writing a file another reads truncates
/// it under the reader), and the interpreter's output.
fn two_inputs(tag: &str) -> (String, String, String, String, Tensor<f32>) {
    let model = tmp(&format!("{tag}-two.fnet"));
    std::fs::write(&model, TWO).expect("write model");
    let weights = tmp(&format!("{tag}-two.safetensors"));
    let o = fnetc(&["init", &model, "-o", &weights, "--seed", "3"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (a, b) = (random::<f32>(&[2, 4], 1), random::<f32>(&[2, 4], 2));
    let (pa, pb) = (tmp(&format!("{tag}-a.npy")), tmp(&format!("{tag}-b.npy")));
    write_npy(Path::new(&pa), &a).expect("a");
    write_npy(Path::new(&pb), &b).expect("b");
    let graph = program(TWO);
    let store = fnet::io::weights::read_weights::<f32>(Path::new(&weights))
        .expect("weights")
        .tensors;
    let want = run(&graph, &store, &[a, b], &RunOptions::default())
        .expect("interpreter")
        .outputs
        .remove(0);
    (model, weights, pa, pb, want)
}

/// `fnetc run` on the two-input model with `p` from file `a` and `q` from `b`,
/// then `extra`.
fn run_two(model: &str, weights: &str, a: &str, b: &str, extra: &[&str]) -> Output {
    let (ia, ib) = (format!("p={a}"), format!("q={b}"));
    let mut args = vec!["run", model, "-w", weights, "-i", &ia, "-i", &ib];
    args.extend_from_slice(extra);
    fnetc(&args)
}

fn read_f32(path: &str) -> Tensor<f32> {
    match read_npy_any(Path::new(path)).expect("output") {
        NpyArray::F32(t) => t,
        NpyArray::F64(t) => t.cast(),
    }
}

#[test]
fn run_takes_each_input_by_name() {
    let (model, weights, a, b, want) = two_inputs("by_name");
    // Given in either order, by name.
    for (i, order) in [[("p", &a), ("q", &b)], [("q", &b), ("p", &a)]]
        .iter()
        .enumerate()
    {
        let out = tmp(&format!("two_out{i}.npy"));
        let ia = format!("{}={}", order[0].0, order[0].1);
        let ib = format!("{}={}", order[1].0, order[1].1);
        let o = fnetc(&[
            "run", &model, "-w", &weights, "-i", &ia, "-i", &ib, "-o", &out,
        ]);
        assert!(o.status.success(), "{:?}", text(&o));
        assert_close("two inputs", &read_f32(&out), &want, 1e-6);
    }
    // The names decide which file is which: `q` given `p`'s file computes p · p.
    let out = tmp("two_swapped.npy");
    let o = run_two(&model, &weights, &a, &a, &["-o", &out]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(read_f32(&out).max_abs_diff(&want).expect("shape") > 1e-3);

    let refused = |args: &[&str], needles: &[&str]| {
        let mut all = vec!["run", &model, "-w", &weights];
        all.extend_from_slice(args);
        let o = fnetc(&all);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: no `{n}` in {err}");
        }
    };
    refused(&["-i", &a], &["2 inputs (`p`, `q`)", "-i p=FILE -i q=FILE"]);
    refused(&["-i", &format!("p={a}")], &["needs input(s) `q`"]);
    refused(
        &["-i", &format!("p={a}"), "-i", &format!("c={b}")],
        &["no input `c`", "`p`, `q`"],
    );
    refused(
        &["-i", &format!("p={a}"), "-i", &format!("p={b}")],
        &["`p` is given twice"],
    );
    refused(&["-i", &format!("p={a}"), "-i", &b], &["has no input name"]);
    // `-o` onto the second input is refused, and leaves its bytes alone.
    let before = std::fs::read(&b).expect("b");
    refused(
        &["-i", &format!("p={a}"), "-i", &format!("q={b}"), "-o", &b],
        &["would overwrite an input"],
    );
    assert_eq!(std::fs::read(&b).expect("b"), before);
}

#[test]
fn a_device_with_the_reference_backend_is_an_error() {
    let (model, weights, a, b, _) = two_inputs("reference_device");
    let o = run_two(
        &model,
        &weights,
        &a,
        &b,
        &["--backend", "reference", "--device", "7"],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--device 7") && err.contains("--backend opencl"),
        "{err}"
    );
    // bench resolves the same way.
    let o = fnetc(&["bench", &model, "--backend", "reference", "--device", "cpu"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--device cpu"), "{err}");
}

#[test]
fn run_on_opencl_names_its_device_on_stderr() {
    let (model, weights, a, b, want) = two_inputs("opencl");
    let out = tmp("two_opencl.npy");
    let device = std::env::var("FNET_TEST_DEVICE").unwrap_or_else(|_| "default".into());
    let o = run_two(
        &model,
        &weights,
        &a,
        &b,
        &["--backend", "opencl", "--device", &device, "-o", &out],
    );
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let info = &backend().context().info;
    assert!(
        err.contains("running on opencl") && err.contains(&info.name),
        "{err}"
    );
    assert_close("opencl", &read_f32(&out), &want, 2e-5);
    // Without --backend the JIT runs it; with --f64, the reference interpreter.
    let o = run_two(&model, &weights, &a, &b, &[]);
    let (_, err) = text(&o);
    assert!(
        o.status.success() && err.contains("running on jit (Cranelift"),
        "{err}"
    );
    let o = run_two(&model, &weights, &a, &b, &["--f64"]);
    let (_, err) = text(&o);
    assert!(
        o.status.success() && err.contains("running on reference interpreter"),
        "{err}"
    );
}

#[test]
fn explain_says_where_its_table_was_fitted() {
    let o = fnetc(&[
        "compile",
        "examples/lenet_mnist.fnet",
        "--explain",
        "--cost-model",
        "opencl-gpu",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let head = out.lines().next().expect("a header");
    let table = fnet::cost::CostTable::of(CostTableId::OpenclGpu);
    assert!(head.contains("costed for OpenCL on a GPU"), "{head}");
    assert!(
        head.contains(&format!("(table fitted on {})", table.machine)),
        "{head}"
    );
}
