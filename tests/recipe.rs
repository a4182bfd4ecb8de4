//! The typed training recipe: `fnetc check --json` prints the same `train` object as
//! the untyped recipe did, every value reaches its typed field, and values the trainer
//! could not use are rejected at the argument.
//!
//! `tests/fixtures/recipe/NAME.json` holds the `train` object that `fnetc check --json`
//! printed before the recipe was typed, for every example and for the programs in
//! `tests/fixtures/recipe/` that call every constructor with and without its arguments.

mod common;

use fnet::driver::compile_str;
use fnet::eval::Options;
use fnet::recipe::{
    Augment, Data, GroupDecay, Optimizer, Per, Recipe, Regularizer, Schedule, Split,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Each fixture's stem with the program it was captured from.
fn fixtures() -> Vec<(String, PathBuf)> {
    let dir = root().join("tests/fixtures/recipe");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/recipe exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let local = dir.join(format!("{stem}.fnet"));
            let source = if local.exists() {
                local
            } else {
                common::example_path(&stem)
            };
            (stem, source)
        })
        .collect();
    out.sort();
    out
}

fn check_json(path: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .arg("check")
        .arg(path)
        .arg("--json")
        .current_dir(root())
        .output()
        .expect("fnetc runs");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("check --json prints JSON")
}

#[test]
fn check_json_prints_the_train_object_of_the_untyped_recipe() {
    let fixtures = fixtures();
    for name in common::EXAMPLES {
        assert!(
            fixtures.iter().any(|(s, _)| s == name),
            "no fixture for example {name}"
        );
    }
    assert!(fixtures.len() >= common::EXAMPLES.len() + 4);
    for (stem, source) in &fixtures {
        let text =
            std::fs::read_to_string(root().join(format!("tests/fixtures/recipe/{stem}.json")))
                .expect("readable fixture");
        let expected: Value = serde_json::from_str(&text).expect("fixture is JSON");
        let got = &check_json(source)["train"];
        // Value equality tells `0` from `0.0`, so ints stay ints and floats floats.
        assert_eq!(got, &expected, "{stem}: `train` differs from the fixture");
        // Read back into the types, the recipe serialises to the same object.
        let typed: Recipe = serde_json::from_value(got.clone()).expect("reads as a Recipe");
        assert_eq!(&serde_json::to_value(&typed).unwrap(), got, "{stem}");
    }
}

fn recipe(model: &str, train: &str) -> Result<Recipe, String> {
    let text = format!("{model}\ntrain {{\n{train}\n}}\n");
    match compile_str("t.fnet", &text, &Options::default()) {
        Ok((_, m)) => Ok(m.recipe.expect("a train section")),
        Err(r) => Err(r.render()),
    }
}

const TINY: &str = "model tiny {
  input x: f32[B, 3, 8, 8]
  return x |> conv2d(4, 3) as stem |> global_avg_pool |> linear(10) as fc
}";

#[test]
fn values_reach_their_typed_fields() {
    let m = common::example_module("flexnet7_cifar10");
    let r = m.recipe.expect("flexnet7 has a train section");
    let Some(Optimizer::Adam(adam)) = &r.optimizer else {
        panic!("adam: {:?}", r.optimizer)
    };
    assert_eq!((adam.lr, adam.betas, adam.eps), (0.01, [0.9, 0.999], 1e-8));
    assert_eq!(adam.groups.len(), 1);
    assert_eq!(adam.groups[0].pattern, "*.mask_params");
    assert_eq!(adam.groups[0].lr_factor, 0.1);
    assert_eq!(adam.groups[0].weight_decay, GroupDecay::Inherit);
    let masks = m
        .graph
        .params()
        .filter(|(_, p, _)| adam.groups[0].matches(&p.name))
        .count();
    assert_eq!(masks, 15, "one mask per flexconv");
    assert_eq!(
        r.schedule,
        Some(Schedule::Cosine {
            warmup: 5,
            min_lr: 1e-6,
            per: Per::Iteration
        })
    );
    assert_eq!(
        r.augment,
        Some(vec![
            Augment::Flip,
            Augment::RandomCrop {
                size: 32,
                padding: 4
            }
        ])
    );
    assert_eq!((r.epochs, r.batch, r.seed), (Some(350), Some(64), None));

    let r = recipe(
        TINY,
        r#"data: idx(images: "i", labels: "l", train: [0, 8000])
           optimizer: sgd(lr: 1, weight_decay: 5e-4,
                          groups: [group(match: "fc.*", weight_decay: 0)])
           schedule: step(milestones: [2, 5])
           regularizers: [kernel_l2(weight: 1)]
           seed: 0"#,
    );
    let r = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.data,
        Some(Data::Idx {
            images: "i".into(),
            labels: "l".into(),
            train: Some(Split {
                start: 0,
                end: 8000
            }),
            test: None,
        })
    );
    let opt = r.optimizer.expect("sgd");
    assert_eq!(opt.lr(), 1.0);
    assert_eq!(
        opt.groups()[0].weight_decay.resolve(opt.weight_decay()),
        0.0
    );
    assert_eq!(
        r.schedule,
        Some(Schedule::Step {
            milestones: vec![2, 5],
            gamma: 0.1
        })
    );
    assert_eq!(
        r.regularizers,
        Some(vec![Regularizer::KernelL2 { weight: 1.0 }])
    );
    assert_eq!(r.seed, Some(0));
}

#[test]
fn values_the_trainer_cannot_use_are_out_of_range_at_the_argument() {
    for (train, arg, hint) in [
        (
            r#"data: idx(images: "i", labels: "l", train: [8000, 0])"#,
            "train",
            "start < end",
        ),
        (
            r#"data: idx(images: "i", labels: "l", test: [0, 1, 2])"#,
            "test",
            "[start, end)",
        ),
        (
            r#"data: idx(images: "i", labels: "l", test: [-1, 5])"#,
            "test",
            "[start, end)",
        ),
        ("augment: [random_crop(size: 0)]", "size", "positive"),
        (
            "augment: [random_crop(size: 8, padding: -1)]",
            "padding",
            "non-negative",
        ),
        ("schedule: cosine(warmup: -1)", "warmup", "non-negative"),
        (
            "schedule: plateau(patience: -2)",
            "patience",
            "non-negative",
        ),
    ] {
        let err = recipe(TINY, train).expect_err(train);
        assert!(err.starts_with("error[E0204]"), "{train}: {err}");
        assert!(err.contains(&format!("`{arg}` of")), "{train}: {err}");
        assert!(err.contains(hint), "{train}: {err}");
    }
    let slots = "model s {
  input x: f32[B, 3, 8, 8]
  slots p = pool_slots(count: 2, active: 1, pool: maxpool(2), default: [1])
  return x |> slot(p) |> conv2d(4, 3) |> slot(p) |> global_avg_pool |> linear(10)
}";
    let err = recipe(slots, "search: mixture(models: 0)").expect_err("no models");
    assert!(
        err.contains("`models` of `mixture` is out of range"),
        "{err}"
    );
}

#[test]
fn sync_bn_is_a_bool() {
    assert_eq!(recipe(TINY, "sync_bn: true").unwrap().sync_bn, Some(true));
    assert_eq!(recipe(TINY, "sync_bn: false").unwrap().sync_bn, Some(false));
    assert_eq!(recipe(TINY, "epochs: 2").unwrap().sync_bn, None);
    let err = recipe(TINY, "sync_bn: 1").expect_err("an int");
    assert!(err.starts_with("error[E0202]"), "{err}");
    assert!(err.contains("`sync_bn` must be `true` or `false`"), "{err}");
    let err = recipe(TINY, "sync_b: true").expect_err("a typo");
    assert!(err.contains("sync_bn"), "suggests the key: {err}");
}

#[test]
fn resize_is_a_positive_int_with_its_place_in_errors() {
    assert_eq!(recipe(TINY, "resize: 14").unwrap().resize, Some(14));
    assert_eq!(recipe(TINY, "epochs: 2").unwrap().resize, None);
    for bad in ["resize: 0", "resize: -3", "resize: 1.5", "resize: \"14\""] {
        let err = recipe(TINY, bad).expect_err(bad);
        assert!(err.starts_with("error[E0202]"), "{bad}: {err}");
        assert!(
            err.contains("`resize` must be a positive int"),
            "{bad}: {err}"
        );
        // The value's place: line 6 (the train section's first line), after `resize: `.
        assert!(err.contains("t.fnet:6:9"), "{bad}: {err}");
    }
}

#[test]
fn bucket_kb_is_an_int_from_zero_with_its_place_in_errors() {
    assert_eq!(recipe(TINY, "bucket_kb: 0").unwrap().bucket_kb, Some(0));
    assert_eq!(recipe(TINY, "bucket_kb: 64").unwrap().bucket_kb, Some(64));
    assert_eq!(
        recipe(TINY, "bucket_kb: 1048576").unwrap().bucket_kb,
        Some(1 << 20)
    );
    assert_eq!(recipe(TINY, "epochs: 2").unwrap().bucket_kb, None);
    for bad in [
        "bucket_kb: -1",
        "bucket_kb: 1048577",
        "bucket_kb: 2.5",
        "bucket_kb: true",
    ] {
        let err = recipe(TINY, bad).expect_err(bad);
        assert!(err.starts_with("error[E0202]"), "{bad}: {err}");
        assert!(
            err.contains("`bucket_kb` must be an int from 0 (no overlap) to 1048576"),
            "{bad}: {err}"
        );
        // The value's place: line 6 (the train section's first line), after `bucket_kb: `.
        assert!(err.contains("t.fnet:6:12"), "{bad}: {err}");
    }
    let err = recipe(TINY, "bucket_k: 4").expect_err("a typo");
    assert!(err.contains("bucket_kb"), "suggests the key: {err}");
}

#[test]
fn an_input_dimension_may_name_a_constant_declared_above() {
    let model = |set: &[(&str, &str)]| {
        let text = "model m {\n  R = 14\n  input x: f32[B, 1, R, R]\n  return x |> conv2d(4, 3, padding: 1) |> global_avg_pool |> linear(10)\n}\n";
        let options = Options {
            overrides: set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Options::default()
        };
        compile_str("t.fnet", text, &options).map_err(|r| r.render())
    };
    let shape = |set: &[(&str, &str)]| {
        let (_, m) = model(set).unwrap();
        let x = m.graph.inputs[0];
        format!("{:?}", m.graph.node(x).ty.shape)
    };
    assert!(shape(&[]).contains("Known(14)"), "{}", shape(&[]));
    assert!(
        shape(&[("R", "28")]).contains("Known(28)"),
        "{}",
        shape(&[("R", "28")])
    );
    let err = model(&[("R", "0")]).unwrap_err();
    assert!(
        err.contains("E0204") && err.contains("t.fnet:3:22"),
        "{err}"
    );
}
