//! A line chart: titled axes, any number of named series (lines, markers or both),
//! and a legend. Every curve plot (`loss.png`, `accuracy.png`, `kernel_sizes.png`,
//! the panels of `regularizers.png`) is one of these, so they share one look.

use super::canvas::FAMILY;
use plotters::coord::Shift;
use plotters::prelude::*;

/// A colour-blind-safe palette (Okabe–Ito), in the order series take it.
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // green
    RGBColor(204, 121, 167), // purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky
    RGBColor(120, 120, 120), // grey
];

/// One named series of `(x, y)` points. Points with a non-finite coordinate are
/// dropped when drawn (a diverged run still plots up to the divergence).
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    pub line: bool,
    pub markers: bool,
    pub width: u32,
}

impl Series {
    pub fn line(name: impl Into<String>, color: RGBColor, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            color,
            points,
            line: true,
            markers: false,
            width: 2,
        }
    }

    /// A line with a marker on every point: for per-epoch values, which are few.
    pub fn marked(name: impl Into<String>, color: RGBColor, points: Vec<(f64, f64)>) -> Series {
        Series {
            markers: true,
            ..Series::line(name, color, points)
        }
    }

    fn finite(&self) -> Vec<(f64, f64)> {
        self.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    }
}

/// A tick label without plotters' trailing `.0` on whole numbers (`100`, not `100.0`),
/// and in scientific notation below 1e-4 (`2.0e-5`).
pub fn tick_label(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-4 {
        return format!("{v:.1e}");
    }
    // Ticks are rounded to a few digits; what is left past 6 decimals is float noise.
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    /// A fixed y range (accuracy: 0–100 %); otherwise the data's, padded.
    pub y_range: Option<(f64, f64)>,
    /// Label only whole numbers on x (epochs).
    pub integer_x: bool,
    /// Where the legend goes: where the curves are not (loss falls, accuracy rises).
    pub legend_lower: bool,
}

impl Chart {
    pub fn new(title: impl Into<String>, x_desc: &str, y_desc: &str) -> Chart {
        Chart {
            title: title.into(),
            x_desc: x_desc.into(),
            y_desc: y_desc.into(),
            series: Vec::new(),
            y_range: None,
            integer_x: false,
            legend_lower: false,
        }
    }

    /// The padded data ranges, never empty.
    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let pts: Vec<(f64, f64)> = self.series.iter().flat_map(Series::finite).collect();
        let span = |vals: &mut dyn Iterator<Item = f64>| {
            let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            if lo > hi {
                (0.0, 1.0)
            } else if hi - lo < 1e-12 * lo.abs().max(1.0) {
                // One value: a band around it, so the point is not on the frame.
                let d = (lo.abs() * 0.1).max(0.5);
                (lo - d, hi + d)
            } else {
                (lo, hi)
            }
        };
        let (x0, x1) = span(&mut pts.iter().map(|p| p.0));
        let x = if self.integer_x {
            (x0.floor() - 0.5, x1.ceil() + 0.5)
        } else {
            (x0, x1)
        };
        let y = self.y_range.unwrap_or_else(|| {
            let (y0, y1) = span(&mut pts.iter().map(|p| p.1));
            let pad = (y1 - y0) * 0.05;
            // Headroom for an upper legend (a line per series), so it covers no data.
            let legend = if self.legend_lower || self.series.len() < 2 {
                0.0
            } else {
                (y1 - y0) * 0.07 * self.series.len() as f64
            };
            (y0 - pad, y1 + pad + legend)
        });
        (x, y)
    }

    /// Draws the chart over the whole of `area`.
    pub fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> Result<(), Box<dyn std::error::Error + 'static>>
    where
        DB::ErrorType: 'static,
    {
        let ((x0, x1), (y0, y1)) = self.ranges();
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let whole = |v: &f64| {
            if (v - v.round()).abs() < 1e-6 {
                format!("{}", v.round() as i64)
            } else {
                String::new()
            }
        };
        let plain = |v: &f64| tick_label(*v);
        let x_labels = if self.integer_x {
            ((x1 - x0).round() as usize).clamp(2, 12)
        } else {
            10
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(&self.x_desc)
            .y_desc(&self.y_desc)
            .x_labels(x_labels)
            .y_labels(8)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215));
        mesh.y_label_formatter(&plain);
        if self.integer_x {
            mesh.x_label_formatter(&whole);
        } else {
            mesh.x_label_formatter(&plain);
        }
        mesh.draw()?;
        for s in &self.series {
            let pts = s.finite();
            let color = s.color;
            let width = s.width;
            if s.line {
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))?
                    .label(&s.name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
                    });
            }
            if s.markers {
                let drawn = chart.draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, 4, color.filled()))
                        .collect::<Vec<_>>(),
                )?;
                if !s.line {
                    drawn
                        .label(&s.name)
                        .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
                }
            }
        }
        if self.series.len() > 1 || self.series.iter().any(|s| !s.name.is_empty()) {
            chart
                .configure_series_labels()
                .position(if self.legend_lower {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperRight
                })
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .draw()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::tick_label;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(100.0), "100");
        assert_eq!(tick_label(0.35), "0.35");
        assert_eq!(tick_label(0.0015), "0.0015");
        assert_eq!(tick_label(0.0005), "0.0005");
        assert_eq!(tick_label(2e-5), "2.0e-5");
        assert_eq!(tick_label(-0.0), "0");
        assert_eq!(tick_label(0.30000000000000004), "0.3");
    }
}
