//! `fnetc plot RUN_DIR`: run directories built by hand (metrics lines and safetensors
//! bytes written here, not by the trainer), the PNGs decoded and checked for what they
//! must show: sizes, content, curves that move with the data, the kernel grid's
//! colours in the proportions of the weights; and every malformed input a named error.

mod common;

use common::png_image::Image;
use fnet::plot::curves::{SMOOTHED, TEST};
use fnet::plot::kernels::diverging;
use fnet::plot::{plot, PlotArgs, PlotReport};
use std::path::{Path, PathBuf};
use std::process::Command;

fn rgb(c: plotters::style::RGBColor) -> [u8; 3] {
    [c.0, c.1, c.2]
}

/// Metrics lines of a run: `losses.len()` steps in `epochs` equal epochs, with
/// regulariser terms and FlexConv kernel sizes when `extras`.
fn metrics(losses: &[f64], epochs: usize, test_acc: f64, extras: bool) -> String {
    let per = losses.len() / epochs;
    let mut lines = Vec::new();
    for (i, &loss) in losses.iter().enumerate() {
        let step = i + 1;
        let terms = if extras {
            format!(
                r#","terms":{{"loss.ce":{loss},"reg.orthogonality":{},"reg.antialias":0.001}}"#,
                1.0 / step as f64
            )
        } else {
            String::new()
        };
        lines.push(format!(
            r#"{{"kind":"step","step":{step},"epoch":{},"loss":{loss},"accuracy":0.5,"lr":0.1,"samples_per_s":100.0{terms}}}"#,
            i / per
        ));
        if step % per == 0 {
            let e = step / per - 1;
            let sizes = if extras {
                format!(
                    r#","kernel_sizes":{{"flex1":[{},{}],"flex2":[9]}}"#,
                    33 - 2 * e,
                    33 - 2 * e
                )
            } else {
                String::new()
            };
            lines.push(format!(
                r#"{{"kind":"epoch","epoch":{e},"step":{step},"train_loss":{loss},"train_accuracy":0.6,"test_loss":{},"test_accuracy":{test_acc},"wall_s":1.0{sizes}}}"#,
                loss + 0.1
            ));
        }
    }
    lines.join("\n") + "\n"
}

/// The bytes of a safetensors file of f32 tensors, written by hand from the format
/// (8-byte header length, JSON header, little-endian data).
fn safetensors(tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
    let (mut header, mut data) = (Vec::new(), Vec::new());
    for (name, shape, values) in tensors {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        let start = data.len();
        for v in *values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header.push(format!(
            r#""{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{start},{}]}}"#,
            dims.join(","),
            data.len()
        ));
    }
    let mut h = format!("{{{}}}", header.join(",")).into_bytes();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// A 2-output, 1-input 3×3 kernel: out 0 is +1 but −1 at the centre, out 1 is 0.5.
fn conv_kernel() -> Vec<f32> {
    let mut w = vec![1.0; 9];
    w[4] = -1.0;
    w.extend([0.5; 9]);
    w
}

fn full_run(dir: &Path, losses: &[f64], test_acc: f64) {
    std::fs::write(
        dir.join("metrics.jsonl"),
        metrics(losses, 4, test_acc, true),
    )
    .unwrap();
    let k = conv_kernel();
    let bytes = safetensors(&[
        ("conv1.weight", &[2, 1, 3, 3], &k),
        ("conv1.bias", &[2], &[0.0, 0.0]),
        ("fc.weight", &[2, 18], &[0.1; 36]),
        // A FlexConv kernel network's pointwise weight: not a kernel to draw.
        ("flex1.kernel_net.0.weight", &[8, 2, 1, 1], &[0.2; 16]),
    ]);
    std::fs::write(dir.join("final.safetensors"), bytes).unwrap();
}

fn run_plot(run: &Path, layer: Option<&str>) -> Result<PlotReport, String> {
    plot(&PlotArgs {
        run: run.to_path_buf(),
        out: None,
        layer: layer.map(str::to_string),
        checkpoint: None,
    })
    .map_err(|e| e.to_string())
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn falling(n: usize) -> Vec<f64> {
    (0..n).map(|i| 2.0 * (-(i as f64) / 40.0).exp()).collect()
}

#[test]
fn a_full_run_gets_every_plot_with_content() {
    let dir = tempfile::tempdir().unwrap();
    full_run(dir.path(), &falling(200), 0.9);
    let report = run_plot(dir.path(), None).unwrap();
    assert_eq!(
        names(&report.written),
        [
            "loss.png",
            "accuracy.png",
            "kernel_sizes.png",
            "regularizers.png",
            "kernels_conv1.png"
        ]
    );
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    for path in &report.written {
        assert_eq!(path.parent().unwrap(), dir.path().join("plots"));
        let img = Image::read(path);
        let name = path.file_name().unwrap().to_string_lossy();
        match &*name {
            "regularizers.png" => assert_eq!((img.width, img.height), (1000, 640), "two panels"),
            "kernels_conv1.png" => assert!(img.width >= 200 && img.height >= 100),
            _ => assert_eq!((img.width, img.height), (1000, 600), "{name}"),
        }
        // Not blank: a good share of drawn pixels, in many colours (text, axes, data).
        let drawn = img.non_white();
        assert!(
            drawn > img.width * img.height / 50,
            "{name}: only {drawn} pixels drawn"
        );
        let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.2).collect();
        assert!(colours.len() > 10, "{name}: {} colours", colours.len());
    }
}

#[test]
fn the_loss_curve_follows_the_data() {
    // A falling loss is drawn high on the left and low on the right; a rising one the
    // other way round. Columns 150–350 and 550–800 of 1000 avoid the axis labels and
    // the legend (upper right).
    let mut rows = Vec::new();
    let ramp: Vec<f64> = (0..200).map(|i| 2.0 - i as f64 / 100.0).collect();
    for losses in [ramp.clone(), ramp.into_iter().rev().collect()] {
        let dir = tempfile::tempdir().unwrap();
        full_run(dir.path(), &losses, 0.9);
        run_plot(dir.path(), None).unwrap();
        let img = Image::read(&dir.path().join("plots/loss.png"));
        let left = img
            .mean_row(rgb(SMOOTHED), 150, 350)
            .expect("smoothed curve on the left");
        let right = img
            .mean_row(rgb(SMOOTHED), 550, 800)
            .expect("smoothed curve on the right");
        rows.push((left, right));
        // The test loss is drawn too (markers and a line).
        assert!(img.count(rgb(TEST)) > 100);
    }
    let ((fl, fr), (rl, rr)) = (rows[0], rows[1]);
    assert!(
        fl + 100.0 < fr,
        "falling loss: left row {fl}, right row {fr}"
    );
    assert!(
        rr + 100.0 < rl,
        "rising loss: left row {rl}, right row {rr}"
    );
}

#[test]
fn the_test_accuracy_sits_at_its_value() {
    // Fixed 0–100 % axis: 95 % is drawn well above 20 %.
    let mut rows = Vec::new();
    for acc in [0.95, 0.2] {
        let dir = tempfile::tempdir().unwrap();
        full_run(dir.path(), &falling(200), acc);
        run_plot(dir.path(), None).unwrap();
        let img = Image::read(&dir.path().join("plots/accuracy.png"));
        rows.push(
            img.mean_row(rgb(TEST), 100, 850)
                .expect("the test accuracy curve"),
        );
    }
    // The plot area is about 480 px high: 75 points of the axis are about 360 px.
    assert!(
        rows[0] + 250.0 < rows[1],
        "95 % at row {}, 20 % at row {}",
        rows[0],
        rows[1]
    );
}

#[test]
fn the_kernel_grid_shows_the_weights_in_proportion() {
    let dir = tempfile::tempdir().unwrap();
    full_run(dir.path(), &falling(40), 0.9);
    run_plot(dir.path(), Some("conv1")).unwrap();
    let img = Image::read(&dir.path().join("plots/kernels_conv1.png"));
    // Scale: the largest magnitude, 1. Taps at +1 are full red, −1 full blue, 0.5 half
    // red; each tap covers the same square of pixels. The colour bar adds as many full
    // red pixels (its top row) as full blue ones (its bottom row).
    let (red, blue, half) = (
        img.count(diverging(1.0)),
        img.count(diverging(-1.0)),
        img.count(diverging(0.5)),
    );
    let tap = (red - blue) / 7; // 8 red taps, 1 blue.
    assert_eq!((red - blue) % 7, 0, "red {red}, blue {blue}");
    assert!(
        tap >= 16 && tap.isqrt().pow(2) == tap,
        "a tap is {tap} pixels, not a square"
    );
    assert_eq!(half, 9 * tap, "the 0.5 kernel's nine taps");
}

#[test]
fn one_d_kernels_are_rows() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = safetensors(&[("tcn.weight", &[1, 1, 5], &[1.0, 1.0, 1.0, -1.0, 0.5])]);
    std::fs::write(dir.path().join("final.safetensors"), bytes).unwrap();
    let report = run_plot(dir.path(), None).unwrap();
    assert_eq!(names(&report.written), ["kernels_tcn.png"]);
    assert!(
        report.notes.iter().any(|n| n.contains("no metrics.jsonl")),
        "{:?}",
        report.notes
    );
    let img = Image::read(&report.written[0]);
    let (red, blue, half) = (
        img.count(diverging(1.0)),
        img.count(diverging(-1.0)),
        img.count(diverging(0.5)),
    );
    assert_eq!(
        red - blue,
        2 * half,
        "3 red taps, 1 blue, 1 half: red {red} blue {blue}"
    );
    // A row: the half-red tap is wider than it is high.
    let xs: Vec<usize> = img
        .pixels()
        .filter(|p| p.2 == diverging(0.5))
        .map(|p| p.0)
        .collect();
    let ys: Vec<usize> = img
        .pixels()
        .filter(|p| p.2 == diverging(0.5))
        .map(|p| p.1)
        .collect();
    let extent = |v: &[usize]| v.iter().max().unwrap() - v.iter().min().unwrap() + 1;
    assert!(
        extent(&xs) > extent(&ys),
        "{} wide, {} high",
        extent(&xs),
        extent(&ys)
    );
}

#[test]
fn missing_fields_skip_their_plots_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    // No terms, no kernel sizes, no test accuracy: an older or a plain run.
    let text = metrics(&falling(20), 2, 0.5, false)
        .replace(r#""test_accuracy":0.5"#, r#""test_accuracy":null"#);
    std::fs::write(dir.path().join("metrics.jsonl"), text).unwrap();
    let report = run_plot(dir.path(), None).unwrap();
    assert_eq!(names(&report.written), ["loss.png", "accuracy.png"]);
    let notes = report.notes.join("\n");
    for skipped in [
        "kernel_sizes.png skipped",
        "regularizers.png skipped",
        "kernels_*.png skipped",
    ] {
        assert!(notes.contains(skipped), "{notes}");
    }
}

#[test]
fn kernels_come_from_the_newest_checkpoint_without_final_weights() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("checkpoints");
    std::fs::create_dir(&ck).unwrap();
    // Step 1's kernel is all −1, step 2's all +1; the optimiser state sorts first and
    // is a rank-4 tensor too, but is not a layer.
    for (step, v) in [(1, -1.0f32), (2, 1.0)] {
        let bytes = safetensors(&[
            ("optimizer.exp_avg:a.weight", &[1, 1, 3, 3], &[-1.0; 9]),
            ("a.weight", &[1, 1, 3, 3], &[v; 9]),
        ]);
        std::fs::write(ck.join(format!("step-{step:08}.safetensors")), bytes).unwrap();
    }
    let report = run_plot(dir.path(), None).unwrap();
    assert_eq!(names(&report.written), ["kernels_a.png"]);
    let img = Image::read(&report.written[0]);
    assert!(img.count(diverging(1.0)) > img.count(diverging(-1.0)) + 100);
}

#[test]
fn bad_run_directories_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = run_plot(&missing, None).unwrap_err();
    assert!(
        e.contains("cannot read run directory") && e.contains("nope"),
        "{e}"
    );
    assert!(e.contains("help:"), "{e}");

    let file = dir.path().join("a_file");
    std::fs::write(&file, "x").unwrap();
    let e = run_plot(&file, None).unwrap_err();
    assert!(e.contains("a_file is not a directory"), "{e}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = run_plot(&empty, None).unwrap_err();
    assert!(
        e.contains("empty holds no metrics.jsonl") && e.contains("nothing to plot"),
        "{e}"
    );
}

#[test]
fn a_malformed_metrics_line_is_named_by_file_and_line() {
    for (bad, says) in [
        ("{\"kind\":\"step\",", "expected one JSON object per line"),
        (
            "{\"kind\":\"step\",\"step\":3,\"loss\":\"high\"}",
            "\"loss\" to be a number",
        ),
        (
            "{\"kind\":\"epoch\",\"epoch\":0,\"kernel_sizes\":[3]}",
            "\"kernel_sizes\" to be an object",
        ),
        ("17", "expected a JSON object, found a number"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut text = metrics(&falling(8), 2, 0.5, true);
        // Inserted as line 4 of the file, between steps 3 and 4.
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(3, bad);
        text = lines.join("\n");
        std::fs::write(dir.path().join("metrics.jsonl"), text).unwrap();
        let e = run_plot(dir.path(), None).unwrap_err();
        let want = format!("{}:4: ", dir.path().join("metrics.jsonl").display());
        assert!(e.starts_with(&want), "{bad}: {e}");
        assert!(e.contains(says), "{bad}: {e}");
        assert!(
            !dir.path().join("plots/loss.png").exists(),
            "nothing is plotted from a damaged file"
        );
    }
}

#[test]
fn an_unknown_layer_lists_the_known_ones_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    full_run(dir.path(), &falling(40), 0.9);
    let e = run_plot(dir.path(), Some("conv9")).unwrap_err();
    assert!(
        e.contains("final.safetensors: no convolution kernel named 'conv9'"),
        "{e}"
    );
    assert!(e.contains("it has: conv1.weight"), "{e}");
    assert!(
        !e.contains("fc.weight") && !e.contains("kernel_net"),
        "only kernels are listed: {e}"
    );
    let out = dir.path().join("plots");
    assert!(std::fs::read_dir(&out).map_or(true, |mut d| d.next().is_none()));
    // The full tensor name works as well as the layer's.
    run_plot(dir.path(), Some("conv1.weight")).unwrap();

    // --layer with no weights at all.
    let bare = tempfile::tempdir().unwrap();
    std::fs::write(
        bare.path().join("metrics.jsonl"),
        metrics(&falling(8), 2, 0.5, false),
    )
    .unwrap();
    let e = run_plot(bare.path(), Some("conv1")).unwrap_err();
    assert!(
        e.contains("no final.safetensors, no checkpoint and no model.fnc"),
        "{e}"
    );

    // Weights without a kernel to draw (FlexConvs only): a note without --layer, an
    // error naming the file with it.
    let bytes = safetensors(&[("flex1.kernel_net.0.weight", &[8, 2, 1], &[0.2; 16])]);
    std::fs::write(bare.path().join("final.safetensors"), bytes).unwrap();
    let report = run_plot(bare.path(), None).unwrap();
    assert_eq!(names(&report.written), ["loss.png", "accuracy.png"]);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("holds no convolution kernel")),
        "{:?}",
        report.notes
    );
    let e = run_plot(bare.path(), Some("flex1")).unwrap_err();
    assert!(
        e.contains("no convolution kernel named 'flex1'; it has none"),
        "{e}"
    );

    // A damaged weights file is named.
    std::fs::write(dir.path().join("final.safetensors"), b"not safetensors").unwrap();
    let e = run_plot(dir.path(), None).unwrap_err();
    assert!(e.contains("final.safetensors"), "{e}");
}

#[test]
fn the_command_prints_the_paths_and_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    full_run(dir.path(), &falling(40), 0.9);
    let out = dir.path().join("pngs");
    let o = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args([
            "plot".as_ref(),
            dir.path().as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed.len(), 5, "{stdout}");
    for p in printed {
        assert!(
            p.starts_with(&*out.to_string_lossy()) && Path::new(p).is_file(),
            "{p}"
        );
    }

    std::fs::write(dir.path().join("metrics.jsonl"), "{\"kind\":\"step\"}\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args([
            "plot".as_ref(),
            dir.path().as_os_str(),
            "--layer".as_ref(),
            "zzz".as_ref(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "an error, not a panic");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("error:") && stderr.contains("no convolution kernel named 'zzz'"),
        "{stderr}"
    );
}

#[test]
fn a_run_written_by_fnetc_train_plots() {
    // The contract with the trainer: what `fnetc train` writes today is read, and its
    // plots are drawn (this model has no FlexConv and no regulariser: those two are
    // skipped with notes).
    let dir = tempfile::tempdir().unwrap();
    common::train_data::write_idx(dir.path(), 64, 6);
    let model = dir.path().join("tiny.fnet");
    std::fs::write(
        &model,
        r#"
model tiny {
  input x: f32[B, 1, 6, 6]
  seed 3
  return x |> conv2d(4, 3, bias: false) |> relu |> flatten |> linear(3)
}

train {
  data: idx(images: "images.idx", labels: "labels.idx", train: [0, 48], test: [48, 64])
  loss: cross_entropy()
  optimizer: sgd(lr: 0.1, momentum: 0.9)
  epochs: 3
  batch: 12
  seed: 7
}
"#,
    )
    .unwrap();
    let run = dir.path().join("run");
    let o = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .current_dir(dir.path())
        .args([
            "train".as_ref(),
            model.as_os_str(),
            "--out".as_ref(),
            run.as_os_str(),
        ])
        .args(["--eval-every", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let records = fnet::plot::records::read(&run.join("metrics.jsonl")).unwrap();
    assert_eq!(records.steps.len(), 12, "3 epochs of 4 steps");
    assert_eq!(records.epochs.len(), 3);
    assert!(!records.evals.is_empty());
    assert!(records
        .epochs
        .iter()
        .all(|e| e.test_accuracy.is_some() && e.step.is_some()));

    let report = run_plot(&run, None).unwrap();
    let written = names(&report.written);
    assert_eq!(written[..2], ["loss.png", "accuracy.png"]);
    assert_eq!(written.len(), 3, "{written:?}");
    assert!(written[2].starts_with("kernels_") && written[2].ends_with(".png"));
    let kernels = Image::read(&report.written[2]);
    assert!(kernels.non_white() > 1000);
}
