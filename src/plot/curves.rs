//! The curve plots of a run, built from its metrics records: `loss.png`,
//! `accuracy.png`, `kernel_sizes.png` and `regularizers.png`. Each returns `None`, with
//! the reason, when the records lack what it needs; the caller turns that into a note.

use super::canvas::Canvas;
use super::chart::{Chart, Series, PALETTE};
use super::records::RunRecords;
use crate::runtime::RunError;
use plotters::prelude::*;

/// Size of the single-chart plots.
pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 600;

/// The colours tests look for: the smoothed training loss, the test loss, and the
/// training and test accuracy.
pub const SMOOTHED: RGBColor = PALETTE[0];
pub const TEST: RGBColor = PALETTE[1];
/// The raw per-step loss: a light tint of the smoothed curve's blue.
pub const RAW: RGBColor = RGBColor(166, 206, 227);

/// An exponential moving average with bias correction (as TensorBoard's smoothing),
/// whose span grows with the run: about a twentieth of the steps, at most 200. The
/// correction keeps the first values from being pulled towards 0.
pub fn smooth(values: &[f64]) -> Vec<f64> {
    let span = (values.len() as f64 / 20.0).clamp(1.0, 200.0);
    let beta = 1.0 - 2.0 / (span + 1.0);
    let (mut avg, mut weight) = (0.0, 0.0);
    values
        .iter()
        .map(|&v| {
            if !v.is_finite() {
                return v;
            }
            avg = beta * avg + (1.0 - beta) * v;
            weight = beta * weight + (1.0 - beta);
            avg / weight
        })
        .collect()
}

/// One canvas holding `chart`.
fn single(chart: &Chart, what: &str) -> Result<Canvas, RunError> {
    let mut c = Canvas::new(WIDTH, HEIGHT);
    c.draw(what, |root| chart.draw(root))?;
    Ok(c)
}

pub type Plot = Result<Result<Canvas, String>, RunError>;

/// Training loss per step, raw and smoothed, and the test loss at each evaluation
/// (epoch ends and `--eval-every` steps), all against the step.
pub fn loss(r: &RunRecords) -> Plot {
    let raw: Vec<(f64, f64)> = r
        .steps
        .iter()
        .filter_map(|s| Some((s.step as f64, s.loss?)))
        .collect();
    let mut test: Vec<(f64, f64)> = r
        .epochs
        .iter()
        .filter_map(|e| Some((e.step? as f64, e.test_loss?)))
        .chain(
            r.evals
                .iter()
                .filter_map(|e| Some((e.step as f64, e.test_loss?))),
        )
        .collect();
    test.sort_by(|a, b| a.0.total_cmp(&b.0));
    if raw.is_empty() && test.is_empty() {
        return Ok(Err(
            "no step record has a \"loss\" and no test loss was logged".into(),
        ));
    }
    let mut chart = Chart::new("Loss", "step", "loss");
    if !raw.is_empty() {
        let ys: Vec<f64> = raw.iter().map(|p| p.1).collect();
        let smoothed = raw.iter().zip(smooth(&ys)).map(|(p, y)| (p.0, y)).collect();
        let mut r = Series::line("train (per step)", RAW, raw);
        r.width = 1;
        chart.series.push(r);
        chart
            .series
            .push(Series::line("train (smoothed)", SMOOTHED, smoothed));
    }
    if !test.is_empty() {
        chart.series.push(Series::marked("test", TEST, test));
    }
    Ok(Ok(single(&chart, "loss.png")?))
}

/// Training and test accuracy, in percent, per epoch (numbered from 1: the epoch
/// just completed).
pub fn accuracy(r: &RunRecords) -> Plot {
    let pick = |f: fn(&super::records::EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        r.epochs
            .iter()
            .filter_map(|e| Some((e.epoch as f64 + 1.0, 100.0 * f(e)?)))
            .collect()
    };
    let train = pick(|e| e.train_accuracy);
    let test = pick(|e| e.test_accuracy);
    if train.is_empty() && test.is_empty() {
        return Ok(Err("no epoch record has an accuracy".into()));
    }
    let mut chart = Chart::new("Accuracy", "epoch", "accuracy (%)");
    chart.y_range = Some((0.0, 100.0));
    chart.integer_x = true;
    chart.legend_lower = true;
    if !train.is_empty() {
        chart.series.push(Series::marked("train", SMOOTHED, train));
    }
    if !test.is_empty() {
        chart.series.push(Series::marked("test", TEST, test));
    }
    Ok(Ok(single(&chart, "accuracy.png")?))
}

/// The learned kernel size of each FlexConv layer at each epoch's end: one line per
/// layer, or two (height, width) when a 2D layer's sides differ.
pub fn kernel_sizes(r: &RunRecords) -> Plot {
    let mut lines: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for e in &r.epochs {
        for (layer, sizes) in &e.kernel_sizes {
            let x = e.epoch as f64 + 1.0;
            let square = sizes.iter().all(|&k| k == sizes[0]);
            if square {
                lines
                    .entry(layer.clone())
                    .or_default()
                    .push((x, sizes[0] as f64));
            } else {
                for (k, side) in sizes.iter().zip(["height", "width", "depth"]) {
                    lines
                        .entry(format!("{layer} ({side})"))
                        .or_default()
                        .push((x, *k as f64));
                }
            }
        }
    }
    if lines.is_empty() {
        return Ok(Err(
            "no epoch record has \"kernel_sizes\" (the model has no FlexConv, or the run predates their logging)".into(),
        ));
    }
    let mut chart = Chart::new(
        "Learned kernel size (FlexConv)",
        "epoch",
        "kernel size (taps)",
    );
    chart.integer_x = true;
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let mut s = Series::marked(name, PALETTE[i % PALETTE.len()], pts);
        // Layers past the palette's length get a dashed look by thinner lines.
        s.width = if i < PALETTE.len() { 2 } else { 1 };
        chart.series.push(s);
    }
    Ok(Ok(single(&chart, "kernel_sizes.png")?))
}

/// Each `reg.*` term of the loss against the step, one panel per term (their scales
/// differ by orders of magnitude, so one shared axis would flatten all but one).
pub fn regularizers(r: &RunRecords) -> Plot {
    let mut terms: std::collections::BTreeMap<&str, Vec<(f64, f64)>> = Default::default();
    for s in &r.steps {
        for (name, &v) in &s.terms {
            if name.starts_with("reg.") {
                terms.entry(name).or_default().push((s.step as f64, v));
            }
        }
    }
    if terms.is_empty() {
        return Ok(Err("no step record has \"reg.*\" terms (the recipe has no regularisers, or the run predates their logging)".into()));
    }
    let panel_h = 320;
    let mut c = Canvas::new(WIDTH, panel_h * terms.len() as u32);
    c.draw("regularizers.png", |root| {
        let panels = root.split_evenly((terms.len(), 1));
        for (i, ((name, pts), area)) in terms.iter().zip(&panels).enumerate() {
            let mut chart = Chart::new(*name, "step", "value");
            let title = match *name {
                "reg.orthogonality" => "reg.orthogonality (basis orthogonality residual)",
                other => other,
            };
            chart.title = title.into();
            chart.series.push(Series::line(
                "",
                PALETTE[(i + 2) % PALETTE.len()],
                pts.clone(),
            ));
            chart.draw(area)?;
        }
        Ok(())
    })?;
    Ok(Ok(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_a_bias_corrected_moving_average() {
        // 20 values → span 1 → β = 0: no smoothing at all.
        let v: Vec<f64> = (0..20).map(|i| i as f64).collect();
        assert_eq!(smooth(&v), v);
        // 60 values → span 3 → β = 1/2. By hand: a₁ = 4; a₂ = (½·4·½ + ½·2)/(¾) ...
        let mut v = vec![4.0, 2.0];
        v.resize(60, 0.0);
        let s = smooth(&v);
        assert!((s[0] - 4.0).abs() < 1e-12);
        // avg = ½·(½·4) + ½·2 = 2, weight = ¾ → 8/3.
        assert!((s[1] - 8.0 / 3.0).abs() < 1e-12, "{}", s[1]);
        // A constant stays exactly constant (the bias correction's point).
        assert!(smooth(&[3.0; 100]).iter().all(|&x| (x - 3.0).abs() < 1e-12));
    }
}
