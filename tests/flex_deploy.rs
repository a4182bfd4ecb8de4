//! Deployment at another resolution (docs/experiments.md, experiment 1): the tiny
//! FlexNet of `examples/experiments/flexnet_xres.fnet` trained (a few steps, with the
//! real binary) on images resized to 14×14 runs at 28×28 with
//! `--set R=28 --set H=29 --set SRN=0.25`, and its kernels there are the kernel net
//! re-sampled on the finer grid.
//!
//! The independent check: `linspace(−1, 1, 29)` contains `linspace(−1, 1, 15)` at its
//! even points, and MAGNet and the mask are functions of the coordinate alone, so the
//! 29-tap kernel at fine index 2i must equal 0.25 (the `sampling_rate_norm`) times
//! the 15-tap kernel at coarse index i, wherever both crops keep that point; the mask
//! root is the same, so the fine crop reaches (about) twice as many taps.

mod common;

use fnet::plot::folded::flex_kernels_of;
use fnet::train::source::ModelSource;
use std::path::Path;
use std::process::Command;

fn fnetc(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_fnetc"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fnetc {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The example with its data section pointed at `images.idx` / `labels.idx` (40
/// synthetic 28×28 digits: 32 train, 8 test), one epoch of batch 8.
fn model_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/experiments/flexnet_xres.fnet");
    let text = std::fs::read_to_string(path).unwrap();
    let text = text
        .replace("data/mnist10k/images.idx3-ubyte.gz", "images.idx")
        .replace("data/mnist10k/labels.idx1-ubyte.gz", "labels.idx")
        .replace(
            "train: [0, 8000], test: [8000, 10000]",
            "train: [0, 32], test: [32, 40]",
        )
        .replace("epochs: 5", "epochs: 1")
        .replace("batch: 32", "batch: 8");
    assert!(text.contains("images.idx") && text.contains("[0, 32]") && text.contains("resize: 14"));
    text
}

fn source(text: &str, overrides: &[(&str, &str)]) -> ModelSource {
    ModelSource {
        file: "flexnet_xres.fnet".into(),
        text: text.to_string(),
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        slot_config: None,
    }
}

#[test]
fn a_flexnet_trained_at_14_px_runs_at_28_px_with_its_kernels_resampled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::train_data::write_idx(d, 40, 28);
    let text = model_text();
    std::fs::write(d.join("flexnet_xres.fnet"), &text).unwrap();
    let out = fnetc(d, &["train", "flexnet_xres.fnet", "--out", "run"]);
    assert!(out.contains("test accuracy"), "{out}");

    // Deployed at 28 px on the raw (unresized) images, no fine-tuning.
    let out = fnetc(
        d,
        &[
            "run",
            "flexnet_xres.fnet",
            "-w",
            "run/final.safetensors",
            "--set",
            "R=28",
            "--set",
            "H=29",
            "--set",
            "SRN=0.25",
            "-i",
            "images.idx",
            "--range",
            "32..40",
            "--labels",
            "labels.idx",
        ],
    );
    assert!(
        out.contains("accuracy") && out.contains("8 samples"),
        "{out}"
    );

    let weights = fnet::io::weights::read_weights::<f32>(&d.join("run/final.safetensors"))
        .unwrap()
        .tensors;
    let file = d.join("run/final.safetensors");
    let coarse = flex_kernels_of(&source(&text, &[]), &weights, &file).unwrap();
    let fine = flex_kernels_of(
        &source(&text, &[("R", "28"), ("H", "29"), ("SRN", "0.25")]),
        &weights,
        &file,
    )
    .unwrap();
    assert_eq!(coarse.len(), 5, "stem + 2 blocks × 2 FlexConvs");
    assert_eq!(fine.len(), 5);
    for (c, f) in coarse.iter().zip(&fine) {
        assert_eq!(c.horizon, vec![15, 15]);
        assert_eq!(f.horizon, vec![29, 29]);
        let cs = &c.tensor.shape;
        let fs = &f.tensor.shape;
        assert_eq!(cs[..2], fs[..2]);
        // Centred odd crops: half-widths in taps.
        let (ch, cw) = ((cs[2] - 1) / 2, (cs[3] - 1) / 2);
        let (fh, fw) = ((fs[2] - 1) / 2, (fs[3] - 1) / 2);
        // The same root |x| < r: the fine crop holds the coarse crop's points, and at
        // most one more fine step beyond them on each side.
        for (a, b) in [(ch, fh), (cw, fw)] {
            assert!(
                b == 2 * a || b == 2 * a + 1,
                "{}: crop {cs:?} vs {fs:?}",
                c.layer
            );
        }
        let mut worst = 0f32;
        let mut scale = 0f32;
        for o in 0..cs[0] {
            for i in 0..cs[1] {
                for y in 0..cs[2] {
                    for x in 0..cs[3] {
                        let cv = c.tensor.data[((o * cs[1] + i) * cs[2] + y) * cs[3] + x];
                        let (fy, fx) = (fh - 2 * ch + 2 * y, fw - 2 * cw + 2 * x);
                        let fv = f.tensor.data[((o * fs[1] + i) * fs[2] + fy) * fs[3] + fx];
                        worst = worst.max((fv - 0.25 * cv).abs());
                        scale = scale.max(cv.abs());
                    }
                }
            }
        }
        assert!(
            scale > 0.0,
            "{}: an all-zero kernel checks nothing",
            c.layer
        );
        assert!(
            worst <= 1e-5 * scale.max(1.0),
            "{}: fine kernel at even taps differs from 0.25 × the coarse kernel by {worst} (scale {scale})",
            c.layer
        );
    }
}
