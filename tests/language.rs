//! Language semantics on small programs: pipelines, currying, naming, symbolic shapes,
//! constants, templates and blocks.

use fnet::driver::compile_str;
use fnet::eval::{Module, Options};
use fnet::ir::print::print_graph;

fn compile(src: &str) -> Module {
    match compile_str("test.fnet", src, &Options::default()) {
        Ok((_, m)) => m,
        Err(r) => panic!("does not compile:\n{}", r.render()),
    }
}

fn error(src: &str) -> String {
    match compile_str("test.fnet", src, &Options::default()) {
        Ok(_) => panic!("compiled, but an error was expected:\n{src}"),
        Err(r) => r.render(),
    }
}

fn out_type(m: &Module) -> String {
    m.graph.node(m.graph.outputs[0]).ty.to_string()
}

fn param_names(m: &Module) -> Vec<String> {
    let mut names: Vec<String> = m.graph.params().map(|(_, n, _)| n.name.clone()).collect();
    names.sort();
    names
}

fn model(body: &str) -> String {
    format!("model t {{\n  input x: f32[B, 3, 16, 16]\n{body}\n}}\n")
}

#[test]
fn pipeline_and_nested_calls_build_the_same_graph() {
    let a = compile(&model("  return x |> conv2d(8, 3, padding: same) |> relu"));
    let b = compile(&model("  return relu(conv2d(x, 8, 3, padding: same))"));
    assert_eq!(print_graph(&a.graph), print_graph(&b.graph));
}

#[test]
fn pipe_fills_the_first_tensor_input() {
    let a = compile(&model("  y = x |> relu\n  return x |> add(y)"));
    let b = compile(&model("  y = x |> relu\n  return x + y"));
    assert_eq!(print_graph(&a.graph), print_graph(&b.graph));
}

#[test]
fn automatic_names_count_per_kind_and_scope() {
    let m = compile(&model(
        "  block unit(c: int) (h) { return h |> conv2d(c, 3, padding: 1) |> batchnorm |> conv2d(c, 1) }\n  \
         return x |> unit(4) |> unit(4) |> conv2d(2, 1) as head",
    ));
    let names = param_names(&m);
    for expected in [
        "unit1.conv1.weight",
        "unit1.conv2.weight",
        "unit1.bn1.weight",
        "unit2.conv2.bias",
        "head.weight",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn repeat_as_name_makes_an_indexed_container() {
    let m = compile(&model("  block b() (h) { return h |> conv2d(3, 3, padding: 1) }\n  return x |> repeat 3 b() as layers"));
    let names = param_names(&m);
    assert!(
        names.contains(&"layers.0.conv1.weight".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"layers.2.conv1.weight".to_string()),
        "{names:?}"
    );
    assert_eq!(names.len(), 6);
}

#[test]
fn templates_name_their_single_layer_and_scope_compositions() {
    let m = compile(&model(
        "  def c3(c) = conv2d(c, 3, padding: same)\n  def cbr(c) = conv2d(c, 3, padding: same) |> batchnorm |> relu\n  \
         return x |> c3(4) |> c3(4) |> cbr(5)",
    ));
    let names = param_names(&m);
    assert!(
        names.contains(&"c3_1.weight".to_string()),
        "digit-ending names get `_`: {names:?}"
    );
    assert!(names.contains(&"c3_2.weight".to_string()), "{names:?}");
    assert!(
        names.contains(&"cbr1.conv1.weight".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"cbr1.bn1.weight".to_string()), "{names:?}");
}

#[test]
fn symbolic_lengths_flow_through_strided_layers() {
    let m = compile(
        "model s {\n  input x: f32[N, 4, T]\n  \
         return x |> conv1d(8, 3, stride: 2, padding: 1) |> conv1d(8, 3, stride: 2, padding: 1) |> conv1d(8, 5, padding: same)\n}",
    );
    assert_eq!(out_type(&m), "f32[N,8,(T-1)/4+1]");
    let m = compile("model s {\n  input x: f32[B, 1, T]\n  return x |> conv1d(4, 9, padding: causal) |> last\n}");
    assert_eq!(out_type(&m), "f32[B,4]");
}

#[test]
fn block_defaults_may_use_earlier_parameters_and_model_constants() {
    let m = compile(&model(
        "  W = 4\n  block b(c: int, d: int = c * 2 + W) (h) { return h |> conv2d(d, 1) }\n  return x |> b(3)",
    ));
    assert_eq!(out_type(&m), "f32[B,10,16,16]");
}

#[test]
fn layers_are_values_that_blocks_can_take() {
    let m = compile(&model(
        "  block wrap(act: layer) (h) { return h |> conv2d(3, 1) |> act }\n  return x |> wrap(relu) |> wrap(dropout(0.1))",
    ));
    let text = print_graph(&m.graph);
    assert!(
        text.contains("relu(") && text.contains("dropout(") && text.contains("p=0.1"),
        "{text}"
    );
}

#[test]
fn literals_comments_and_keyword_arguments() {
    let m = compile(
        "// line comment\n# hash comment\n/* block\n comment */\nmodel t {\n  input x: f32[B, 2, 8, 8]\n  \
         p = 0.25\n  flag = false\n  return x |> conv2d(out_channels: 6, kernel: [3, 1], padding: [1, 0], bias: flag) |> dropout(p: p)\n}",
    );
    assert_eq!(out_type(&m), "f32[B,6,8,8]");
    assert_eq!(m.graph.param_counts().trainable, 6 * 2 * 3);
}

#[test]
fn residual_shape_errors_point_at_the_add_and_suggest_a_shortcut() {
    let text = error(&model(
        "  y = x |> conv2d(8, 3, padding: 1)\n  return y + x",
    ));
    assert!(text.contains("test.fnet:4:10"), "{text}");
    assert!(text.contains("[B, 8, 16, 16] and [B, 3, 16, 16]"), "{text}");
    assert!(text.contains("shortcut"), "{text}");
}

#[test]
fn typos_get_suggestions() {
    assert!(error(&model("  return x |> covn2d(8, 3)")).contains("did you mean `conv2d`?"));
    assert!(
        error(&model("  return x |> conv2d(8, 3, strid: 2)")).contains("did you mean `stride`?")
    );
    assert!(
        error(&model("  return x |> conv2d(8, 3, padding: sme)")).contains("did you mean `same`?")
    );
    assert!(
        error(&model("  hidden = x |> relu\n  return hiden")).contains("did you mean `hidden`?")
    );
}

#[test]
fn recursion_is_reported_not_looped() {
    let text = error(&model("  block p() (h) { return h |> q() }\n  block q() (h) { return h |> p() }\n  return x |> p()"));
    assert!(
        text.contains("uses itself") && text.contains("p -> q -> p"),
        "{text}"
    );
}

#[test]
fn huge_repeat_counts_are_rejected_quickly() {
    let text = error(&model("  return x |> repeat 1000000000 relu"));
    assert!(
        text.contains("repeat count 1000000000 is out of range"),
        "{text}"
    );
    let text = error(&model("  return x |> repeat 10000 (relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu |> relu)"));
    assert!(text.contains("more than 200000 graph nodes"), "{text}");
}

#[test]
fn compact_renumbers_densely_after_removal() {
    let mut m = compile(&model("  y = x |> relu\n  return x |> gelu"));
    let relu = m
        .graph
        .g
        .node_indices()
        .find(|&n| m.graph.node(n).name == "relu1")
        .expect("relu");
    m.graph.g.remove_node(relu);
    m.graph.compact().expect("acyclic");
    m.graph.verify().expect("valid");
    let idx: Vec<usize> = m.graph.g.node_indices().map(|n| n.index()).collect();
    assert_eq!(idx, (0..idx.len()).collect::<Vec<_>>());
    assert!(print_graph(&m.graph).contains("%1 = gelu(%0)"));
}

#[test]
fn verify_catches_a_wrong_stored_type() {
    let mut m = compile(&model("  return x |> relu"));
    let out = m.graph.outputs[0];
    m.graph.g[out].ty = fnet::ir::TensorType::known(fnet::ir::DType::F32, &[1]);
    let err = m.graph.verify().expect_err("type mismatch");
    assert!(err.to_string().contains("stored type f32[1]"), "{err}");
}

#[test]
fn reserved_words_name_nothing_and_the_docs_list_them() {
    // docs/language.md §2.1 lists exactly the words arguments take.
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/language.md"))
        .expect("docs/language.md");
    let line = docs
        .lines()
        .find(|l| l.starts_with("* **Reserved words**"))
        .expect("a reserved-words item in §2.1");
    let start = docs.find(line).unwrap();
    let item: String = docs[start..]
        .lines()
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let listed = item.split(':').nth(1).expect("`: word, ...`");
    let listed: Vec<&str> = listed
        .split('.')
        .next()
        .unwrap()
        .split(',')
        .map(|w| w.trim().trim_matches('`'))
        .collect();
    assert_eq!(listed, fnet::eval::builtins::all_words(), "{item}");
    // Every declaration that expressions look up refuses a word, naming it and an
    // argument that takes it.
    for (decl, word) in [
        ("  same = 3\n  return x", "same"),
        ("  def valid() = relu\n  return x |> valid", "valid"),
        (
            "  block none() (h) { return h }\n  return x |> none",
            "none",
        ),
        ("  block b() (a) { return a }\n  return x |> b", "a"),
        ("  def c(fft) = relu\n  return x |> c(1)", "fft"),
        (
            "  basis projection = shared_basis(channels: 3, shared: 3, unique: 1)\n  return x",
            "projection",
        ),
    ] {
        let text = error(&model(decl));
        assert!(
            text.starts_with(&format!("error[E0309]: `{word}` is a reserved word")),
            "{decl}: {text}"
        );
        assert!(text.contains(&format!(": {word})`")), "{decl}: {text}");
    }
    let text = error("model t {\n  input causal: f32[B, 3, 8]\n  return causal\n}\n");
    assert!(text.contains("`causal` is a reserved word"), "{text}");
    // Layer names and the model's name are not looked up, so they may be words; and
    // a word passes through an untyped template parameter.
    let m = compile(&model(
        "  def c(p) = conv2d(4, 3, padding: p)\n  return x |> c(same) |> relu as same",
    ));
    assert_eq!(out_type(&m), "f32[B,4,16,16]");
    compile("model same {\n  input x: f32[B, 3, 8]\n  return x\n}\n");
}
