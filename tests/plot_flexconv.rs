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

/// `fnet plot --checkpoint N --out DIR` (or without `--checkpoint` when `N` is `None`).
fn plot_at(run: &Path, step: Option<u64>, out: &Path) -> Result<PlotReport, String> {
    plot(&PlotArgs {
        run: run.to_path_buf(),
        out: Some(out.to_path_buf()),
        layer: None,
        checkpoint: step,
    })
    .map_err(|e| e.to_string())
}

/// A run killed before it finished has checkpoints but no `model.fnc`: the FlexConv
/// kernel is drawn from the newest checkpoint, through the model the run recorded
/// (`source.json`), exactly as `model.fnc` would have drawn it; `--checkpoint N`
/// draws an earlier one, as a `model.fnc` compiled (`fnetc compile -w`) from that
/// checkpoint's weights draws it.
#[test]
fn a_killed_runs_flexconv_kernel_is_drawn_from_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_golden/flex.fnet");
    let run = train_flex(dir.path(), &std::fs::read_to_string(fixture).unwrap());
    let steps: Vec<u64> = fnet::train::checkpoint::list(&run)
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(steps, [3, 6], "a checkpoint at each epoch's end");
    let png = |out: &Path| Image::read(&out.join("kernels_flexconv1.png"));

    // The reference: the finished run's plot, from model.fnc.
    let finished = dir.path().join("finished");
    plot_at(&run, None, &finished).unwrap();
    // Killed after its last checkpoint: no model.fnc, no final weights.
    std::fs::remove_file(run.join("model.fnc")).unwrap();
    std::fs::remove_file(run.join("final.safetensors")).unwrap();
    let killed = dir.path().join("killed");
    let report = plot_at(&run, None, &killed).unwrap();
    assert!(
        report.notes.iter().any(|n| n.contains("step-00000006")),
        "{:?}",
        report.notes
    );
    let (a, b) = (png(&finished), png(&killed));
    assert!(a.non_white() > 0);
    assert!(
        (a.width, a.height) == (b.width, b.height) && a.rgb == b.rgb,
        "the newest checkpoint draws what model.fnc drew"
    );

    // --checkpoint 3 against `fnetc compile -w` of that checkpoint's weights.
    let c =
        fnet::train::checkpoint::load(&run.join("checkpoints/step-00000003.safetensors")).unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    fnet::io::weights::write_weights(&other.join("w.safetensors"), &c.params).unwrap();
    fnetc_ok(
        dir.path(),
        &[
            "compile".as_ref(),
            "flex.fnet".as_ref(),
            "-w".as_ref(),
            other.join("w.safetensors").as_os_str(),
            "-o".as_ref(),
            other.join("model.fnc").as_os_str(),
        ],
    );
    let want = dir.path().join("want");
    plot_at(&other, None, &want).unwrap();
    let early = dir.path().join("early");
    plot_at(&run, Some(3), &early).unwrap();
    let (w, e) = (png(&want), png(&early));
    assert!((w.width, w.height) == (e.width, e.height) && w.rgb == e.rgb);
    assert!(e.rgb != b.rgb, "step 3's kernel is not step 6's");

    // --checkpoint of a step the run does not keep lists those it does.
    let err = plot_at(&run, Some(4), &early).unwrap_err();
    assert!(
        err.contains("no checkpoint of step 4") && err.contains("it has steps 3, 6"),
        "{err}"
    );
    // A run without source.json (from before it was recorded): no FlexConv to draw
    // from a checkpoint, said in a note, and the other plots are still written.
    std::fs::remove_file(run.join("source.json")).unwrap();
    let report = plot_at(&run, None, &dir.path().join("old")).unwrap();
    assert!(!names(&report.written).contains(&"kernels_flexconv1.png".to_string()));
    assert!(names(&report.written).contains(&"loss.png".to_string()));
    assert!(
        report.notes.iter().any(|n| n.contains("source.json")),
        "{:?}",
        report.notes
    );
}
