//! Compiled artifacts: the graph survives a write/read unchanged, an artifact runs to
//! the same outputs as the unoptimised model, and damaged files are clear errors.

mod common;

use common::{example_path, random, EXAMPLES};
use fnet::cli::compile::{compile, write_compiled, CompileArgs, Compiled};
use fnet::driver::compile_file;
use fnet::eval::Options;
use fnet::io::artifact::{read_artifact, GraphRecord, METADATA_KEY};
use fnet::io::weights::{write_weights, write_weights_with_metadata};
use fnet::io::IoErrorKind;
use fnet::ir::print::print_graph;
use fnet::passes::CompileMode;
use fnet::runtime::{initialise, run, ParamStore, RunOptions};
use fnet::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifact");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn args(model: PathBuf, weights: Option<PathBuf>) -> CompileArgs {
    CompileArgs {
        model,
        options: Options::default(),
        mode: CompileMode::Inference,
        passes: None,
        print_after: Vec::new(),
        verbose: false,
        weights,
        batch: 2,
        cost_backend: fnet::cost::CostTableId::Reference,
        precision: fnet::ir::DType::F32,
    }
}

fn compiled(args: &CompileArgs) -> Compiled {
    compile(args).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_example_round_trips_through_its_record() {
    for name in EXAMPLES {
        let out = compiled(&args(example_path(name), None));
        let record = GraphRecord::from_graph(&out.graph);
        let json = serde_json::to_string(&record).expect("serialises");
        let back: GraphRecord = serde_json::from_str(&json).expect("parses");
        let graph = back.to_graph().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(print_graph(&graph), print_graph(&out.graph), "{name}");
        assert_eq!(graph.g.node_count(), out.graph.g.node_count());
    }
}

fn artifact_matches_unoptimised(name: &str, sample: &[usize]) {
    let (_, module) = compile_file(&example_path(name), &Options::default()).expect("compiles");
    let mut store: ParamStore<f32> = initialise(&module.graph, 7).expect("init");
    // Running statistics away from their initial 0/1, so folding them is not trivial.
    for (k, t) in store.iter_mut() {
        if k.ends_with("running_mean") || k.ends_with("running_var") {
            for (i, v) in t.data.iter_mut().enumerate() {
                *v = if k.ends_with("var") {
                    0.5 + (i % 7) as f32 * 0.1
                } else {
                    0.05 * (i % 5) as f32 - 0.1
                };
            }
        }
    }
    let weights = tmp(&format!("{name}.safetensors"));
    write_weights(&weights, &store).expect("writes weights");
    let a = args(example_path(name), Some(weights));
    let path = tmp(&format!("{name}.fnc"));
    let header = write_compiled(&compiled(&a), &a, &path).expect("writes artifact");
    assert!(header.layout.iter().all(|e| e.bound), "{name}: all bound");
    let artifact = read_artifact(&path).expect("reads artifact");
    let bound = artifact.weights.expect("weights travel with the artifact");
    let x: Tensor<f32> = random(sample, 3);
    let want = run(
        &module.graph,
        &store,
        std::slice::from_ref(&x),
        &RunOptions::default(),
    )
    .expect("runs");
    let got = run(&artifact.graph, &bound, &[x], &RunOptions::default()).expect("runs");
    let (w, g) = (&want.outputs[0], &got.outputs[0]);
    assert_eq!(w.shape, g.shape);
    let scale = w.data.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (a, b) in w.data.iter().zip(&g.data) {
        assert!((a - b).abs() <= 1e-4 * scale, "{name}: {a} vs {b}");
    }
}

#[test]
fn an_artifact_runs_like_the_unoptimised_model() {
    artifact_matches_unoptimised("lenet_mnist", &[3, 1, 28, 28]);
    artifact_matches_unoptimised("resnet20_cifar10", &[2, 3, 32, 32]);
    artifact_matches_unoptimised("resnet20_lc_cifar10", &[1, 3, 32, 32]);
}

#[test]
fn compiling_without_weights_binds_none() {
    let a = args(example_path("lenet_mnist"), None);
    let path = tmp("unbound.fnc");
    let header = write_compiled(&compiled(&a), &a, &path).expect("writes");
    assert!(header.layout.iter().all(|e| !e.bound));
    assert_eq!(header.layout.len(), 10);
    let artifact = read_artifact(&path).expect("reads");
    assert!(artifact.weights.is_none());
    assert_eq!(artifact.header.provenance.mode, CompileMode::Inference);
    assert!(artifact
        .header
        .provenance
        .passes
        .contains(&"memory-plan".to_string()));
}

#[test]
fn refuses_to_overwrite_its_inputs() {
    let model = tmp("copy.fnet");
    std::fs::copy(example_path("lenet_mnist"), &model).expect("copy");
    let before = std::fs::read(&model).expect("read");
    let a = args(model.clone(), None);
    let Err(err) = write_compiled(&compiled(&a), &a, &model) else {
        panic!("refused");
    };
    assert!(err.to_string().contains("would overwrite"), "{err}");
    assert_eq!(std::fs::read(&model).expect("read"), before);
}

#[test]
fn damaged_artifacts_are_clear_errors() {
    let weights = tmp("plain.safetensors");
    let store = BTreeMap::from([(
        "w".to_string(),
        Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).expect("shape"),
    )]);
    write_weights(&weights, &store).expect("writes");
    let e = read_artifact(&weights).err().expect("not an artifact");
    assert_eq!(e.kind, IoErrorKind::BadFormat);
    assert!(e.found.contains("weights file"), "{e:?}");

    let bad_json = tmp("bad_json.fnc");
    let meta = HashMap::from([(METADATA_KEY.to_string(), "{not json".to_string())]);
    write_weights_with_metadata(&bad_json, &store, Some(meta)).expect("writes");
    let e = read_artifact(&bad_json).err().expect("bad header");
    assert_eq!(e.kind, IoErrorKind::BadFormat);
    assert!(e.hint.contains("fnetc compile"), "{e:?}");

    // A later format version is refused with the version it has.
    let a = args(example_path("lenet_mnist"), None);
    let good = tmp("good.fnc");
    let header = write_compiled(&compiled(&a), &a, &good).expect("writes");
    let mut json = serde_json::to_value(&header).expect("json");
    json["version"] = serde_json::json!(99);
    let future = tmp("future.fnc");
    let meta = HashMap::from([(METADATA_KEY.to_string(), json.to_string())]);
    write_weights_with_metadata(&future, &BTreeMap::<String, Tensor<f32>>::new(), Some(meta))
        .expect("writes");
    let e = read_artifact(&future).err().expect("future version");
    assert!(e.found.contains("version 99"), "{e:?}");

    // A node reading a later node is an inconsistent graph, not a panic.
    let mut json = serde_json::to_value(&header).expect("json");
    json["graph"]["nodes"][0]["operands"] = serde_json::json!([5]);
    let cyclic = tmp("cyclic.fnc");
    let meta = HashMap::from([(METADATA_KEY.to_string(), json.to_string())]);
    write_weights_with_metadata(&cyclic, &BTreeMap::<String, Tensor<f32>>::new(), Some(meta))
        .expect("writes");
    let e = read_artifact(&cyclic).err().expect("inconsistent");
    assert!(e.expected.contains("consistent"), "{e:?}");

    // Cut short.
    let bytes = std::fs::read(&good).expect("read");
    let cut = tmp("cut.fnc");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    assert!(read_artifact(&cut).is_err());
}
