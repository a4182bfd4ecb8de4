//! `fnetc plot` on FlexConv runs trained with the real binary: the learned kernel,
//! cropped by its mask, is drawn from the run's `model.fnc` (where it is folded to a
//! constant), checked pixel by pixel against that constant and the trainer's record
//! of the learned size; it is the default layer, and unknown layers list it.

mod common;

use common::png_image::Image;
use fnet::plot::kernels::diverging;
use fnet::plot::{plot, PlotArgs, PlotReport};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run_plot(run: &Path, layer: Option<&str>) -> Result<PlotReport, String> {
    plot(&PlotArgs {
        run: run.to_path_buf(),
        out: None,
        layer: layer.map(str::to_string),
    })
    .map_err(|e| e.to_string())
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// `fnetc args` run in `dir`; panics unless it succeeds, returns stdout.
fn fnetc_ok(dir: &Path, args: &[&std::ffi::OsStr]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Trains `model` (the train_golden FlexConv classifier, 8×8 inputs, plus a train
/// block) for 6 steps with the real binary into `dir/run`.
fn train_flex(dir: &Path, model: &str) -> PathBuf {
    common::train_data::write_idx(dir, 30, 8);
    let text = model.to_string()
        + r#"
train {
  data: idx(images: "images.idx", labels: "labels.idx", train: [0, 24], test: [24, 30])
  optimizer: adam(lr: 0.02)
  epochs: 2
  batch: 8
  seed: 5
}
"#;
    std::fs::write(dir.join("flex.fnet"), text).unwrap();
    let run = dir.join("run");
    fnetc_ok(
        dir,
        &[
            "train".as_ref(),
            "flex.fnet".as_ref(),
            "--out".as_ref(),
            run.as_os_str(),
        ],
    );
    run
}

#[test]
fn a_trained_flexconv_kernel_is_drawn_cropped_from_model_fnc() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_golden/flex.fnet");
    let run = train_flex(dir.path(), &std::fs::read_to_string(fixture).unwrap());

    // The reference: the folded constant in model.fnc (what `fnetc run` convolves
    // with), read here with the artifact reader, and the trainer's own record of the
    // learned size.
    let artifact = fnet::io::artifact::read_artifact(&run.join("model.fnc")).unwrap();
    let kernel = artifact
        .graph
        .g
        .node_weights()
        .find_map(|n| match &n.op {
            fnet::ir::op::Op::Const { value, .. } if n.name == "flexconv1.kernel" => {
                Some((**value).clone())
            }
            _ => None,
        })
        .expect("the FlexConv kernel is folded into model.fnc");
    let (kh, kw) = (kernel.shape[2], kernel.shape[3]);
    assert_eq!(kernel.shape[..2], [4, 1]);
    let sizes = common::train_data::metrics(&run, "epoch").pop().unwrap()["kernel_sizes"].clone();
    assert_eq!(sizes["flexconv1"], serde_json::json!([kh, kw]));
    assert!(
        kh <= 7 && kw <= 7 && kh * kw < 49,
        "cropped from the 7×7 horizon: {kh}×{kw}"
    );

    let stdout = fnetc_ok(
        dir.path(),
        &[
            "plot".as_ref(),
            run.as_os_str(),
            "--layer".as_ref(),
            "flexconv1".as_ref(),
        ],
    );
    let png = run.join("plots/kernels_flexconv1.png");
    assert!(stdout.lines().any(|l| Path::new(l) == png), "{stdout}");
    let img = Image::read(&png);

    // Tiles of whole pixels per tap, about 40 px on the long side: kh × kw blocks.
    let per = 40 / kh.max(kw);
    let (th, tw) = (kh * per, kw * per);
    let (left, top, gap) = (
        fnet::plot::kernels::MARGIN_LEFT as usize,
        fnet::plot::kernels::MARGIN_TOP as usize,
        fnet::plot::kernels::GAP as usize,
    );
    let at = |x: usize, y: usize| {
        let p = (y * img.width + x) * 3;
        [img.rgb[p], img.rgb[p + 1], img.rgb[p + 2]]
    };
    let vmax = kernel.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(vmax > 0.0, "a blank kernel");
    for o in 0..4 {
        let y0 = top + o * (th + gap);
        for ky in 0..kh {
            for kx in 0..kw {
                let want = diverging(f64::from(kernel.data[(o * kh + ky) * kw + kx] / vmax));
                for (dy, dx) in [(0, 0), (per - 1, per - 1), (per / 2, 0)] {
                    let (x, y) = (left + kx * per + dx, y0 + ky * per + dy);
                    assert_eq!(
                        at(x, y),
                        want,
                        "out {o} tap ({ky}, {kx}) at pixel ({x}, {y})"
                    );
                }
            }
        }
        // The tile ends where the crop does: white to its right and below it.
        assert_eq!(
            at(left + tw, y0 + th / 2),
            [255, 255, 255],
            "tile {o} is {tw} wide"
        );
        assert_eq!(
            at(left + tw / 2, y0 + th),
            [255, 255, 255],
            "tile {o} is {th} high"
        );
    }
    // Not blank: the largest tap is full red or blue, a whole block of it.
    let full = img.count(diverging(1.0)) + img.count(diverging(-1.0));
    assert!(full >= per * per + 2 * 18, "{full} full-colour pixels");
}

#[test]
fn the_default_kernel_is_a_flexconv_and_unknown_layers_list_them() {
    // A stored 3×3 convolution in front of the FlexConv: both are layers, the
    // FlexConv is drawn by default.
    let dir = tempfile::tempdir().unwrap();
    let run = train_flex(
        dir.path(),
        r#"
model mixed {
  input x: f32[B, 1, 8, 8]
  seed 4
  h = x |> conv2d(2, 3, bias: false) |> relu
      |> flexconv(4, horizon: 7, kernel: magnet(hidden: 8, layers: 2),
                  mask: gauss(sigma: 0.4, threshold: 0.1)) |> relu
  return h |> global_avg_pool |> linear(3)
}
"#,
    );
    let stdout = fnetc_ok(dir.path(), &["plot".as_ref(), run.as_os_str()]);
    assert!(stdout.contains("kernels_flexconv1.png"), "{stdout}");
    assert!(
        !stdout.contains("kernels_conv"),
        "one kernel plot: {stdout}"
    );
    // The stored one still by name, the FlexConv also by its constant's name.
    for (layer, png) in [
        ("conv1", "kernels_conv1.png"),
        ("flexconv1.kernel", "kernels_flexconv1.png"),
    ] {
        let report = run_plot(&run, Some(layer)).unwrap();
        assert!(names(&report.written).contains(&png.to_string()), "{layer}");
        assert!(
            !report.notes.iter().any(|n| n.contains("older")),
            "{:?}",
            report.notes
        );
    }

    // Weights newer than model.fnc (a resumed run that checkpointed since): the
    // FlexConv kernel is still drawn, with a note that it is from the last finish.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let weights = std::fs::File::options()
        .append(true)
        .open(run.join("final.safetensors"))
        .unwrap();
    weights.set_modified(later).unwrap();
    let report = run_plot(&run, None).unwrap();
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("model.fnc is older than")),
        "{:?}",
        report.notes
    );

    let o = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .args([
            "plot".as_ref(),
            run.as_os_str(),
            "--layer".as_ref(),
            "nope".as_ref(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "an error, not a panic");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("model.fnc: no convolution kernel named 'nope'")
            && stderr.contains("conv1.weight")
            && stderr.contains("flexconv1 (FlexConv)"),
        "{stderr}"
    );
}
