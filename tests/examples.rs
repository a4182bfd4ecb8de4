//! The shipped examples: exact parameter counts (derived from the papers' official
//! code, SEEDS.md), IR snapshots, and per-example structural facts.

use fnet::driver::compile_file;
use fnet::eval::{Module, Options};
use fnet::ir::op::Op;
use fnet::ir::print::print_graph;
use std::path::Path;

fn compile(name: &str, options: &Options) -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    match compile_file(&path, options) {
        Ok((_, m)) => m,
        Err(report) => panic!("{name} does not compile:\n{}", report.render()),
    }
}

fn default(name: &str) -> Module {
    compile(name, &Options::default())
}

/// (file, trainable, frozen, shared)
const COUNTS: &[(&str, u64, u64, u64)] = &[
    ("flexnet7_cifar10.fnet", 671_650, 0, 0),
    ("flextcn6_smnist.fnet", 373_324, 0, 0),
    ("resnet20_cifar10.fnet", 269_722, 0, 0),
    ("resnet20_lc_cifar10.fnet", 34_538, 267_696, 0),
    // 2 shared bases per stage: 2·(16·16·9 + 32·32·9 + 64·64·9).
    (
        "resnet32_s16u1d_cifar10.fnet",
        245_642,
        0,
        2 * 9 * (16 * 16 + 32 * 32 + 64 * 64),
    ),
    ("resnet20_slots_cifar10.fnet", 270_906, 0, 0),
    // LeNet-5 style: 6·25+6 + 16·6·25+16 + 400·120+120 + 120·84+84 + 84·10+10.
    ("lenet_mnist.fnet", 156 + 2416 + 48_120 + 10_164 + 850, 0, 0),
];

#[test]
fn parameter_counts_match_the_papers() {
    for &(file, trainable, frozen, shared) in COUNTS {
        let c = default(file).graph.param_counts();
        assert_eq!(
            (c.trainable, c.frozen, c.shared),
            (trainable, frozen, shared),
            "{file}"
        );
    }
}

#[test]
fn lc_expansion_is_settable() {
    // SEEDS.md §2.6: E = 8 gives 262,122 learnable and 2.14M frozen parameters.
    let opts = Options {
        overrides: vec![("E".into(), "8".into())],
        ..Options::default()
    };
    let c = compile("resnet20_lc_cifar10.fnet", &opts)
        .graph
        .param_counts();
    assert_eq!(c.trainable, 262_122);
    assert_eq!(c.frozen, 8 * 267_696);
}

#[test]
fn every_example_has_a_stable_ir_snapshot() {
    for &(file, ..) in COUNTS {
        let m = default(file);
        m.graph.verify().expect("verified");
        let text = print_graph(&m.graph);
        // Printing twice, and compiling twice, gives identical text.
        assert_eq!(
            text,
            print_graph(&default(file).graph),
            "{file} is not deterministic"
        );
        insta::assert_snapshot!(file.trim_end_matches(".fnet"), text);
    }
}

#[test]
fn flexconv_kernels_are_cropped_and_data_dependent() {
    let m = default("flexnet7_cifar10.fnet");
    let crops: Vec<_> = m
        .graph
        .g
        .node_indices()
        .filter(|&n| matches!(m.graph.node(n).op, Op::MaskCrop { .. }))
        .collect();
    assert_eq!(crops.len(), 15, "stem + 7 blocks x 2");
    for n in crops {
        assert_eq!(m.graph.node(n).ty.to_string(), "f32[2,<=33,<=33]");
    }
    let tcn = default("flextcn6_smnist.fnet");
    let causal = tcn
        .graph
        .g
        .node_indices()
        .filter(|&n| matches!(tcn.graph.node(n).op, Op::MaskCrop { causal: true, .. }))
        .count();
    assert_eq!(causal, 12);
    assert_eq!(
        tcn.graph.node(tcn.graph.outputs[0]).ty.to_string(),
        "f32[B,10]"
    );
}

#[test]
fn shared_bases_are_single_tensors_with_many_users() {
    let m = default("resnet32_s16u1d_cifar10.fnet");
    assert_eq!(m.graph.bases.len(), 3);
    for (_, node, role) in m.graph.params() {
        if role == fnet::ir::ParamRole::Shared {
            let id = m
                .graph
                .g
                .node_indices()
                .find(|&i| m.graph.node(i).name == node.name)
                .expect("param");
            // Double sharing: each basis is read by one conv in each of 4 blocks.
            assert_eq!(m.graph.users(id).len(), 4, "{}", node.name);
        }
    }
    for b in &m.graph.bases {
        assert_eq!(b.unique.len(), 8, "4 blocks x 2 convs use {}", b.name);
        assert_eq!(b.ortho_weight, 10.0);
    }
}

#[test]
fn all_36_slot_configurations_elaborate_to_classifiers() {
    let mut configs = 0;
    for a in 1..=9u64 {
        for b in a + 1..=9 {
            let m = compile(
                "resnet20_slots_cifar10.fnet",
                &Options {
                    slot_config: Some(vec![b, a]),
                    ..Options::default()
                },
            );
            let active: Vec<u64> = m
                .graph
                .g
                .node_indices()
                .filter_map(|n| match &m.graph.node(n).op {
                    Op::Slot {
                        index,
                        active: true,
                        ..
                    } => Some(*index),
                    _ => None,
                })
                .collect();
            assert_eq!(active, vec![a, b]);
            assert_eq!(m.graph.node(m.graph.outputs[0]).ty.to_string(), "f32[B,10]");
            assert_eq!(
                m.graph.param_counts().trainable,
                270_906,
                "weights do not depend on the configuration"
            );
            configs += 1;
        }
    }
    assert_eq!(configs, 36);
}

#[test]
fn default_slot_configuration_is_resnet20_placement() {
    let m = default("resnet20_slots_cifar10.fnet");
    assert_eq!(m.graph.slots[0].config, vec![4, 7]);
    // [4,3,3]: layers 0-3 at 32 px, 4-6 at 16 px, 7-9 at 8 px; the last block sees 8x8.
    let last_conv = m
        .graph
        .g
        .node_indices()
        .rfind(|&n| matches!(m.graph.node(n).op, Op::Conv { .. }))
        .expect("convs");
    assert_eq!(m.graph.node(last_conv).ty.to_string(), "f32[B,64,8,8]");
}

#[test]
fn invalid_slot_configuration_names_the_valid_ones() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/resnet20_slots_cifar10.fnet");
    for bad in [vec![4], vec![4, 4], vec![0, 3], vec![4, 10], vec![1, 2, 3]] {
        let err = compile_file(
            &path,
            &Options {
                slot_config: Some(bad.clone()),
                ..Options::default()
            },
        )
        .expect_err("invalid");
        let text = err.render();
        assert!(
            text.contains("choose 2 distinct slots from 1 to 9 (36 configurations)"),
            "{bad:?}: {text}"
        );
    }
}

#[test]
fn check_json_has_inputs_outputs_and_counts() {
    let m = default("resnet20_lc_cifar10.fnet");
    let j = fnet::summary::json(&m);
    assert_eq!(j["params"]["trainable"], 34_538);
    assert_eq!(j["params"]["frozen"], 267_696);
    assert_eq!(j["inputs"][0]["name"], "x");
    assert_eq!(j["inputs"][0]["type"], "f32[B,3,32,32]");
    assert_eq!(j["outputs"][0]["type"], "f32[B,10]");
    assert_eq!(j["train"]["optimizer"]["kind"], "sgd");
    assert_eq!(j["train"]["optimizer"]["nesterov"], true);
    // The layer table's rows add up to the totals.
    let rows: u64 = j["layers"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|l| l["params"].as_u64().expect("n"))
        .sum();
    assert_eq!(rows, 34_538 + 267_696);
}
