//! The plots of an `fnetc search` run (docs/search.md): `search_p.png`, the heat map
//! of the balanced p(m|a) (`p.npy`, rows in `ranking.json`'s `configs` order);
//! `search_w.png`, W over the epochs (the epoch records' `w`), each configuration
//! under its final most likely model; `search_accuracy.png`, each configuration's final
//! validation accuracy under its most likely and its best model (`ranking.json`).
//! A training run has none of these files and gets none of these plots.

use super::canvas::Canvas;
use super::canvas::FAMILY;
use super::chart::{Chart, Series, PALETTE};
use super::curves::{HEIGHT, WIDTH};
use crate::runtime::RunError;
use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

type Named = (String, Result<Canvas, String>);

/// `[2,4]`.
fn label(c: &[u64]) -> String {
    format!(
        "[{}]",
        c.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    )
}

fn configs_of(ranking: &Value) -> Vec<Vec<u64>> {
    (ranking["configs"].as_array().into_iter().flatten())
        .map(|c| {
            (c.as_array().into_iter().flatten())
                .filter_map(Value::as_u64)
                .collect()
        })
        .collect()
}

/// Every search plot `run` has data for; empty for a training run.
pub fn plots(run: &Path) -> Result<Vec<Named>, RunError> {
    let ranking_path = run.join(crate::search::outputs::RANKING_JSON);
    let epochs: Vec<Value> = std::fs::read_to_string(crate::train::metrics::path(run))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "epoch" && v.get("w").is_some())
        .collect();
    if !ranking_path.is_file() && epochs.is_empty() {
        return Ok(Vec::new());
    }
    let ranking: Option<Value> = std::fs::read_to_string(&ranking_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let mut out = Vec::new();
    let why = "no ranking.json (the search has not finished)".to_string();
    let p = crate::io::npy::read_npy::<f64>(&run.join(crate::search::outputs::P_NPY)).ok();
    out.push((
        "search_p.png".into(),
        match (&ranking, &p) {
            (Some(r), Some(p)) => Ok(heat_map(&configs_of(r), &p.data, p.shape[1])?),
            _ => Err(why.clone()),
        },
    ));
    out.push((
        "search_w.png".into(),
        w_over_time(&epochs, ranking.as_ref()),
    ));
    out.push((
        "search_accuracy.png".into(),
        match &ranking {
            Some(r) => Ok(accuracy(r)?),
            None => Err(why),
        },
    ));
    Ok(out)
}

/// p(m|a) as a grid: a row per configuration, a column per model, white (0) to blue
/// (1), the value written in each cell.
pub fn heat_map(configs: &[Vec<u64>], p: &[f64], models: usize) -> Result<Canvas, RunError> {
    let rows = configs.len();
    let height = (120 + 28 * rows as u32).max(300);
    let mut c = Canvas::new(200 + 90 * models as u32, height);
    let labels: Vec<String> = configs.iter().map(|c| label(c)).collect();
    c.draw("the p(m|a) heat map", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("p(m|a), balanced", (FAMILY, 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5..models as f64 - 0.5, rows as f64 - 0.5..-0.5)?;
        let xl = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                format!("model {}", i as usize)
            } else {
                String::new()
            }
        };
        let yl = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(models + 1)
            .y_labels(rows + 1)
            .x_label_formatter(&xl)
            .y_label_formatter(&yl)
            .label_style((FAMILY, 14))
            .draw()?;
        for a in 0..rows {
            for m in 0..models {
                let v = p[a * models + m].clamp(0.0, 1.0);
                let shade = |w: u8, b: u8| (f64::from(w) + (f64::from(b) - f64::from(w)) * v) as u8;
                let color = RGBColor(shade(255, 0), shade(255, 114), shade(255, 178));
                let (x, y) = (m as f64, a as f64);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                    color.filled(),
                )))?;
                let ink = if v > 0.5 { WHITE } else { BLACK };
                chart.draw_series(std::iter::once(Text::new(
                    format!("{v:.2}"),
                    (x - 0.15, y - 0.2),
                    (FAMILY, 13).into_font().color(&ink),
                )))?;
            }
        }
        Ok(())
    })?;
    Ok(c)
}

/// W[a, m] at each epoch's end, each configuration under its final most likely model.
fn w_over_time(epochs: &[Value], ranking: Option<&Value>) -> Result<Canvas, String> {
    if epochs.is_empty() {
        return Err("no epoch records with `w` in metrics.jsonl".into());
    }
    let configs = ranking.map(configs_of).unwrap_or_default();
    let model_of = |a: usize| -> usize {
        let Some(r) = ranking else { return 0 };
        let want = configs.get(a);
        (r["ranking"].as_array().into_iter().flatten())
            .find(|l| {
                let c: Vec<u64> = (l["config"].as_array().into_iter().flatten())
                    .filter_map(Value::as_u64)
                    .collect();
                Some(&c) == want
            })
            .and_then(|l| l["model"].as_u64())
            .unwrap_or(0) as usize
    };
    let rows = |e: &Value| -> Vec<Vec<f64>> {
        (e["w"].as_array().into_iter().flatten())
            .map(|r| {
                (r.as_array().into_iter().flatten())
                    .filter_map(Value::as_f64)
                    .collect()
            })
            .collect()
    };
    let n = rows(&epochs[0]).len();
    let mut chart = Chart::new(
        "W over the epochs (each configuration, its most likely model)",
        "epoch",
        "W",
    );
    chart.integer_x = true;
    chart.legend_lower = true;
    for a in 0..n {
        let m = model_of(a);
        let pts: Vec<(f64, f64)> = epochs
            .iter()
            .filter_map(|e| {
                let w = rows(e);
                Some((e["epoch"].as_f64()? + 1.0, *w.get(a)?.get(m)?))
            })
            .collect();
        let name = configs.get(a).map_or(format!("configuration {a}"), |c| {
            format!("{} m{m}", label(c))
        });
        chart
            .series
            .push(Series::marked(name, PALETTE[a % PALETTE.len()], pts));
    }
    let mut c = Canvas::new(WIDTH, HEIGHT);
    c.draw("W over time", |root| chart.draw(root))
        .map_err(|e| e.to_string())?;
    Ok(c)
}

/// A bar per configuration (ranked): validation accuracy under its most likely model,
/// and a marker at its best model's.
pub fn accuracy(ranking: &Value) -> Result<Canvas, RunError> {
    let lines: Vec<(String, f64, f64)> = (ranking["ranking"].as_array().into_iter().flatten())
        .map(|l| {
            let c: Vec<u64> = (l["config"].as_array().into_iter().flatten())
                .filter_map(Value::as_u64)
                .collect();
            (
                label(&c),
                100.0 * l["accuracy"].as_f64().unwrap_or(0.0),
                100.0 * l["best_accuracy"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let n = lines.len().max(1);
    let lo = lines.iter().map(|l| l.1.min(l.2)).fold(100.0f64, f64::min);
    let floor = (lo - 5.0).clamp(0.0, 100.0).floor();
    let mut c = Canvas::new((140 + 70 * n as u32).max(WIDTH), HEIGHT);
    c.draw("the per-configuration accuracy", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "validation accuracy per configuration (bar: most likely model; dot: best model)",
                (FAMILY, 18),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, floor..100.0)?;
        let xl = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < lines.len() {
                lines[i as usize].0.clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(n + 1)
            .x_label_formatter(&xl)
            .y_desc("accuracy %")
            .label_style((FAMILY, 13))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for (i, (_, ml, best)) in lines.iter().enumerate() {
            let x = i as f64;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x - 0.35, floor), (x + 0.35, *ml)],
                PALETTE[0].filled(),
            )))?;
            chart.draw_series(std::iter::once(Circle::new(
                (x, *best),
                5,
                PALETTE[1].filled(),
            )))?;
        }
        Ok(())
    })?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_map_cells_take_the_probability_colour() {
        let configs = vec![vec![1, 2], vec![1, 3]];
        // Row 0 all on model 0, row 1 all on model 1.
        let c = heat_map(&configs, &[1.0, 0.0, 0.0, 1.0], 2).unwrap();
        let px = |x: u32, y: u32| {
            let i = ((y * c.width + x) * 3) as usize;
            [c.rgb[i], c.rgb[i + 1], c.rgb[i + 2]]
        };
        // Count full-blue and white pixels: two cells of each, of equal size.
        let (mut blue, mut white) = (0, 0);
        for y in 0..c.height {
            for x in 0..c.width {
                match px(x, y) {
                    [0, 114, 178] => blue += 1,
                    [255, 255, 255] => white += 1,
                    _ => {}
                }
            }
        }
        assert!(blue > 1000, "{blue}");
        assert!(white > blue, "{white} {blue}");
    }
}
