//! The memory plan: no two live values share a buffer (except an elementwise op
//! writing over its dying first input), every buffer fits its values, and reuse pays.

use fnet::driver::{compile_file, compile_str};
use fnet::eval::Options;
use fnet::ir::graph::Graph;
use fnet::ir::op::Op;
use fnet::passes::memory_plan::{plan, MemoryPlan};
use std::path::Path;

const EXAMPLES: &[&str] = &[
    "lenet_mnist",
    "resnet20_cifar10",
    "resnet20_lc_cifar10",
    "resnet20_slots_cifar10",
    "resnet32_s16u1d_cifar10",
    "flexnet7_cifar10",
    "flextcn6_smnist",
];

fn example(name: &str) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.fnet"));
    compile_file(&path, &Options::default())
        .unwrap_or_else(|r| panic!("{}", r.render()))
        .1
        .graph
}

/// Bytes of a value with every symbolic dimension set to `batch` (f32).
fn size(graph: &Graph, n: petgraph::stable_graph::NodeIndex, batch: u64) -> u64 {
    graph.node(n).ty.shape.iter().fold(4, |acc, d| {
        acc * match d {
            fnet::ir::types::Dim::Known(k) => *k,
            fnet::ir::types::Dim::Dyn { max } => *max,
            fnet::ir::types::Dim::Sym(_) => batch,
        }
    })
}

/// Checks the plan independently of how it was made.
fn check(graph: &Graph, p: &MemoryPlan, batch: u64, name: &str) {
    let values: Vec<_> = p.lifetime.keys().copied().collect();
    for &v in &values {
        let b = p.assignment[&v];
        assert!(
            p.buffer_bytes[b] >= size(graph, v, batch),
            "{name}: buffer too small"
        );
    }
    for (i, &a) in values.iter().enumerate() {
        for &b in &values[i + 1..] {
            if p.assignment[&a] != p.assignment[&b] {
                continue;
            }
            let (la, lb) = (p.lifetime[&a], p.lifetime[&b]);
            let (first, second) = if la.0 <= lb.0 { (a, b) } else { (b, a) };
            let (lf, ls) = (p.lifetime[&first], p.lifetime[&second]);
            if lf.1 < ls.0 {
                continue; // disjoint lifetimes
            }
            // Touching at one step is allowed only for an in-place elementwise write
            // over the first operand, which dies there.
            let in_place = lf.1 == ls.0
                && graph.operands(second).first() == Some(&first)
                && matches!(
                    graph.node(second).op,
                    Op::Relu
                        | Op::Gelu
                        | Op::Dropout { .. }
                        | Op::Scale { .. }
                        | Op::Add
                        | Op::Mul
                        | Op::BatchNorm { .. }
                        | Op::Flatten
                );
            assert!(
                in_place,
                "{name}: `{}` {lf:?} and `{}` {ls:?} share buffer {}",
                graph.node(first).name,
                graph.node(second).name,
                p.assignment[&a]
            );
        }
    }
    let s = &p.summary;
    assert_eq!(s.arena_bytes, p.buffer_bytes.iter().sum::<u64>());
    assert!(s.arena_bytes <= s.no_reuse_bytes, "{name}");
}

#[test]
fn every_example_gets_a_valid_plan_that_reuses_memory() {
    for name in EXAMPLES {
        let graph = example(name);
        for batch in [1, 64] {
            let p = plan(&graph, batch);
            check(&graph, &p, batch, name);
            assert!(
                p.summary.arena_bytes * 2 < p.summary.no_reuse_bytes,
                "{name}: arena {} vs no reuse {}",
                p.summary.arena_bytes,
                p.summary.no_reuse_bytes
            );
        }
    }
}

#[test]
fn a_chain_needs_two_buffers_and_relu_writes_in_place() {
    let src = "model m {
  input x: f32[B, 2, 8, 8]
  return x |> conv2d(4, 3, padding: 1, bias: false) |> relu |> conv2d(4, 3, padding: 1, bias: false) |> relu |> conv2d(4, 3, padding: 1, bias: false)
}";
    let graph = compile_str("m.fnet", src, &Options::default())
        .unwrap_or_else(|r| panic!("{}", r.render()))
        .1
        .graph;
    let p = plan(&graph, 1);
    check(&graph, &p, 1, "chain");
    // Input 2·64·4 = 512 B; each conv/relu 4·64·4 = 1024 B. x → c1 (new buffer), relu
    // over c1 in place; c2 finds x's buffer free but too small and grows it to 1024 B;
    // relu over c2; c3 takes c1's freed buffer. Two buffers of 1024 B.
    assert_eq!(p.summary.buffers, 2, "{:?}", p.buffer_bytes);
    assert_eq!(p.summary.arena_bytes, 2 * 1024);
    assert_eq!(p.summary.no_reuse_bytes, 512 + 5 * 1024);
    assert_eq!(p.summary.weight_bytes, 4 * (4 * 2 * 9 + 2 * 4 * 4 * 9));
}

#[test]
fn the_plan_is_reported_on_the_printed_ir() {
    let graph = example("resnet20_cifar10");
    let mut g = graph.clone();
    let mut ctx = fnet::passes::PassContext::new(fnet::passes::CompileMode::Inference);
    ctx.batch = 64;
    fnet::passes::pipeline::from_names(&["memory-plan".to_string()])
        .expect("pass exists")
        .run(&mut g, &mut ctx, &mut |_| {})
        .expect("runs");
    let printed = fnet::ir::print::print_graph(&g);
    let s = g.memory.expect("summary stored");
    assert_eq!(s.batch, 64);
    assert!(
        printed.contains(&format!("arena={}B", s.arena_bytes)),
        "{printed}"
    );
    assert_eq!(s, plan(&graph, 64).summary);
}

/// After the whole pipeline, values computed from weights alone (folded BatchNorm,
/// synthesised FlexConv kernels) are kept with the weights, not in the arena.
#[test]
fn weight_derived_values_stay_out_of_the_arena() {
    use fnet::passes::{pipeline::default_pipeline, CompileMode, PassContext};
    for name in ["resnet20_cifar10", "flexnet7_cifar10"] {
        let mut graph = example(name);
        let mut ctx = PassContext::new(CompileMode::Inference);
        default_pipeline(CompileMode::Inference)
            .run(&mut graph, &mut ctx, &mut |_| {})
            .expect("pipeline");
        let p = plan(&graph, 64);
        check(&graph, &p, 64, name);
        for &n in p.lifetime.keys() {
            let op = graph.node(n).op.name();
            assert!(
                !matches!(
                    op,
                    "bn_fold" | "lc_fold" | "flex_kernel" | "const" | "param"
                ),
                "{name}: `{}` ({op}) planned as an activation",
                graph.node(n).name
            );
        }
        assert!(p.summary.buffers <= 4, "{name}: {:?}", p.buffer_bytes);
    }
}
