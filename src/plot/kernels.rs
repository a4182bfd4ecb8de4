//! `kernels_<layer>.png`: the learned kernels of one convolution as an image grid.
//!
//! A kernel tensor is `[out, in, kh, kw]` (2D) or `[out, in, k]` (1D). Each
//! `(out, in)` slice is one tile: rows are output channels, columns input channels,
//! both capped so the image stays readable. A 1D kernel is a one-row strip. Every tile
//! shares one diverging colour scale, symmetric about 0 and set by the largest
//! magnitude shown, so tiles compare: blue is negative, white 0, red positive.
//!
//! Tiles have a fixed size in pixels and sample the kernel by nearest tap, so a 3×3
//! kernel is drawn as 3×3 blocks and a 784-tap one is thinned to fit.

use super::canvas::{Canvas, FAMILY};
use crate::io::weights::WeightFile;
use crate::runtime::RunError;
use crate::tensor::Tensor;
use plotters::prelude::*;

/// At most this many output channels (rows) and input channels (columns) are drawn.
pub const MAX_OUT: usize = 32;
pub const MAX_IN: usize = 32;

/// The grid's largest side in pixels.
pub const MAX_SIDE: u32 = 2400;

/// Where the first tile's top-left pixel is (public so tests can find the tiles).
pub const MARGIN_TOP: u32 = 80;
pub const MARGIN_LEFT: u32 = 70;
const MARGIN_RIGHT: u32 = 110;
const MARGIN_BOTTOM: u32 = 20;
/// White pixels between tiles.
pub const GAP: u32 = 3;

/// The tensors of `file` that are convolution kernels: rank 3 or 4 with more than
/// one tap, optimiser state (in checkpoints) left out. A FlexConv's kernel network
/// has only 1-tap (pointwise) weights, so it is not listed: its kernel is synthesised
/// at run time and is not in the file (see [`super::folded`] for where it is).
pub fn kernel_names(file: &WeightFile<f32>) -> Vec<&str> {
    file.tensors
        .iter()
        .filter(|(name, t)| {
            !name.starts_with("optimizer.")
                && (t.shape.len() == 3 || t.shape.len() == 4)
                && t.shape[2..].iter().product::<usize>() > 1
        })
        .map(|(n, _)| n.as_str())
        .collect()
}

/// One kernel `--layer` can name: a stored convolution weight, or a FlexConv's
/// kernel folded into the run's `model.fnc`.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The tensor's name (`conv1.weight`), or the FlexConv layer's (`flexconv1`).
    pub name: &'a str,
    pub tensor: &'a Tensor<f32>,
    /// A FlexConv's full horizon when this is its folded kernel (cropped from it).
    pub horizon: Option<&'a [u64]>,
}

impl Candidate<'_> {
    /// `--layer` names a weight with or without `.weight`, a FlexConv by its layer
    /// name or its constant's (`flexconv1.kernel`).
    fn is(&self, layer: &str) -> bool {
        match self.horizon {
            Some(_) => self.name == layer || layer.strip_suffix(".kernel") == Some(self.name),
            None => self.name == layer || self.name.strip_suffix(".weight") == Some(layer),
        }
    }

    /// How the name is listed in errors.
    fn listed(&self) -> String {
        match self.horizon {
            Some(_) => format!("{} (FlexConv)", self.name),
            None => self.name.to_string(),
        }
    }

    /// The name in the plot's title: a FlexConv's says the kernel is cropped and from
    /// what horizon.
    pub fn title(&self) -> String {
        match self.horizon {
            Some(h) => {
                let h: Vec<String> = h.iter().map(|d| d.to_string()).collect();
                format!("{} (FlexConv, cropped from {})", self.name, h.join("×"))
            }
            None => self.name.to_string(),
        }
    }
}

/// The stored kernels of `file` as candidates, in name order.
pub fn stored(file: &WeightFile<f32>) -> Vec<Candidate<'_>> {
    kernel_names(file)
        .into_iter()
        .map(|name| Candidate {
            name,
            tensor: &file.tensors[name],
            horizon: None,
        })
        .collect()
}

/// The kernel `--layer` names among `known`. Without `--layer`, the first FlexConv
/// kernel (the learned shape is what these models are about), else the first.
/// `sources` names the files the candidates came from, for the error.
pub fn choose<'a, 'c>(
    known: &'c [Candidate<'a>],
    layer: Option<&str>,
    sources: &str,
) -> Result<&'c Candidate<'a>, RunError> {
    let found = match layer {
        None => known
            .iter()
            .find(|c| c.horizon.is_some())
            .or_else(|| known.first()),
        Some(l) => known.iter().find(|c| c.is(l)),
    };
    if let Some(found) = found {
        return Ok(found);
    }
    let listed = if known.is_empty() {
        "it has none".to_string()
    } else {
        let names: Vec<String> = known.iter().map(Candidate::listed).collect();
        format!("it has: {}", names.join(", "))
    };
    let message = match layer {
        Some(l) => format!("{sources}: no convolution kernel named '{l}'; {listed}"),
        None => format!(
            "{sources}: no convolution kernel to draw (a tensor [out, in, k] or [out, in, kh, kw])"
        ),
    };
    Err(RunError::new(message).hint(
        "give --layer one of the names listed (with or without `.weight`); a FlexConv's \
         kernel is synthesised from its kernel network, and is drawn from the run's \
         model.fnc, which `fnetc train` writes when it finishes",
    ))
}

/// The diverging colour of `t` in [-1, 1]: blue, white at 0, red (ColorBrewer RdBu).
pub fn diverging(t: f64) -> [u8; 3] {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (-1.0, [33.0, 102.0, 172.0]),
        (-0.5, [146.0, 197.0, 222.0]),
        (0.0, [247.0, 247.0, 247.0]),
        (0.5, [244.0, 165.0, 130.0]),
        (1.0, [178.0, 24.0, 43.0]),
    ];
    let t = if t.is_finite() {
        t.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let i = STOPS.iter().rposition(|s| s.0 <= t).unwrap_or(0).min(3);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let f = (t - a) / (b - a);
    std::array::from_fn(|c| (ca[c] + f * (cb[c] - ca[c])).round() as u8)
}

/// Tile size in pixels for a kernel of `kh × kw` taps: about 40 px on the long side
/// for small kernels (whole pixels per tap), one pixel per tap up to 128 for large
/// ones; a 1D kernel is a strip 14 px high (a row label's height).
fn tile_size(kh: usize, kw: usize, one_d: bool) -> (u32, u32) {
    if one_d {
        let w = if kw <= 160 {
            (160 / kw).max(1) * kw
        } else {
            kw.min(800)
        };
        return (14, w as u32);
    }
    let long = kh.max(kw);
    let per = (40 / long).max(1);
    let cap = |n: usize| (n * per).min(128) as u32;
    (cap(kh), cap(kw))
}

/// Draws `tensor` (named `name`) as a grid of tiles.
pub fn render(name: &str, tensor: &Tensor<f32>) -> Result<Canvas, RunError> {
    let s = &tensor.shape;
    let one_d = s.len() == 3;
    let (outs, ins) = (s[0], s[1]);
    let (kh, kw) = if one_d { (1, s[2]) } else { (s[2], s[3]) };
    let (th, tw) = tile_size(kh, kw, one_d);
    // Long kernels make wide tiles: fewer of them fit in MAX_SIDE pixels.
    let fit = |tile: u32| (MAX_SIDE / (tile + GAP)).max(1) as usize;
    let (rows, cols) = (outs.min(MAX_OUT).min(fit(th)), ins.min(MAX_IN).min(fit(tw)));
    let grid_w = cols as u32 * (tw + GAP);
    let grid_h = rows as u32 * (th + GAP);
    let shape: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    let title = format!("Kernels of {name} [{}]", shape.join(", "));
    // Wide enough for the title too (a FlexConv's names its horizon): DejaVu Sans at
    // 22 px averages under 11 px a character.
    let title_w = 24 + 11 * title.chars().count() as u32;
    let width = (MARGIN_LEFT + grid_w + MARGIN_RIGHT).max(640).max(title_w);
    let bar_h = grid_h.clamp(120, 300);
    let height = MARGIN_TOP + grid_h.max(bar_h) + MARGIN_BOTTOM;
    let taps = kh * kw;
    let at =
        |o: usize, i: usize, y: usize, x: usize| tensor.data[((o * ins + i) * kh + y) * kw + x];

    let mut vmax = 0f32;
    for o in 0..rows {
        for i in 0..cols {
            for t in 0..taps {
                let v = at(o, i, t / kw, t % kw);
                if v.is_finite() {
                    vmax = vmax.max(v.abs());
                }
            }
        }
    }
    let scale = if vmax > 0.0 { vmax } else { 1.0 };

    let sub = format!(
        "rows: output channels ({} of {outs}), columns: input channels ({} of {ins}){}",
        rows,
        cols,
        if one_d { ", each row a 1D kernel" } else { "" }
    );
    let mut c = Canvas::new(width, height);
    let bar = (MARGIN_LEFT + grid_w + 30, MARGIN_TOP, 18u32, bar_h);
    c.draw("the kernel grid", |root| {
        root.draw(&Text::new(
            title.as_str(),
            (12, 10),
            (FAMILY, 22).into_font(),
        ))?;
        root.draw(&Text::new(
            sub.as_str(),
            (12, 40),
            (FAMILY, 14).into_font().color(&RGBColor(80, 80, 80)),
        ))?;
        let small = (FAMILY, 12).into_font().color(&BLACK);
        // Row labels where they fit (every row, or every few).
        let every = (16 / (th + GAP) as usize).max(1);
        for o in (0..rows).step_by(every) {
            let y = (MARGIN_TOP + o as u32 * (th + GAP) + th / 2) as i32 - 6;
            root.draw(&Text::new(format!("out {o}"), (14, y), small.clone()))?;
        }
        let col_every = (50 / (tw + GAP) as usize).max(1);
        for i in (0..cols).step_by(col_every) {
            let x = (MARGIN_LEFT + i as u32 * (tw + GAP)) as i32;
            root.draw(&Text::new(
                format!("in {i}"),
                (x, MARGIN_TOP as i32 - 18),
                small.clone(),
            ))?;
        }
        let (bx, by, _, bh) = bar;
        for (label, frac) in [(scale, 0.0), (0.0, 0.5), (-scale, 1.0)] {
            let y = by as i32 + (frac * bh as f64) as i32 - 6;
            root.draw(&Text::new(
                format!("{label:+.3}"),
                (bx as i32 + 24, y),
                small.clone(),
            ))?;
        }
        Ok(())
    })?;

    let mut put = |x: u32, y: u32, rgb: [u8; 3]| {
        let p = (y as usize * width as usize + x as usize) * 3;
        c.rgb[p..p + 3].copy_from_slice(&rgb);
    };
    for o in 0..rows {
        for i in 0..cols {
            let (x0, y0) = (
                MARGIN_LEFT + i as u32 * (tw + GAP),
                MARGIN_TOP + o as u32 * (th + GAP),
            );
            for py in 0..th {
                let ky = (py as usize * kh) / th as usize;
                for px in 0..tw {
                    let kx = (px as usize * kw) / tw as usize;
                    let v = f64::from(at(o, i, ky, kx) / scale);
                    put(x0 + px, y0 + py, diverging(v));
                }
            }
        }
    }
    let (bx, by, bw, bh) = bar;
    for py in 0..bh {
        let t = 1.0 - 2.0 * py as f64 / (bh - 1) as f64;
        for px in 0..bw {
            put(bx + px, by + py, diverging(t));
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_colour_map_is_blue_white_red() {
        assert_eq!(diverging(-1.0), [33, 102, 172]);
        assert_eq!(diverging(0.0), [247, 247, 247]);
        assert_eq!(diverging(1.0), [178, 24, 43]);
        assert_eq!(diverging(5.0), [178, 24, 43]);
        assert_eq!(diverging(f64::NAN), [247, 247, 247]);
        // Halfway between the 0 and 0.5 stops.
        assert_eq!(diverging(0.25), [246, 206, 189]);
    }

    #[test]
    fn long_kernels_show_fewer_tiles() {
        let t = Tensor {
            shape: vec![40, 30, 784],
            data: (0..40 * 30 * 784).map(|i| (i % 7) as f32 - 3.0).collect(),
        };
        let c = render("tcn.weight", &t).unwrap();
        // 784-px strips: 3 columns fit in 2400 px; 32 rows of 17 px.
        assert_eq!(c.width, 70 + 3 * (784 + 3) + 110);
        assert_eq!(c.height, 80 + 32 * 17 + 20);
    }

    /// A FlexConv's long title on a one-column grid ends inside the image: the last
    /// columns of the title band are background, and the title reaches past 640 px.
    #[test]
    fn long_titles_are_not_clipped() {
        let t = Tensor {
            shape: vec![6, 1, 11, 11],
            data: vec![0.5; 6 * 121],
        };
        let c = render("flexconv1 (FlexConv, cropped from 15×15)", &t).unwrap();
        let inked = |x: u32| {
            (8..36u32).any(|y| {
                let p = ((y * c.width + x) * 3) as usize;
                c.rgb[p..p + 3].iter().any(|&v| v < 200)
            })
        };
        let last = (0..c.width).rev().find(|&x| inked(x)).expect("a title");
        assert!(last > 640, "the title ends at {last}");
        assert!(last + 8 < c.width, "clipped: ink at {last} of {}", c.width);
    }

    #[test]
    fn layers_are_named_with_or_without_their_suffix_and_flexconvs_come_first() {
        let t = Tensor {
            shape: vec![1, 1, 3],
            data: vec![1.0; 3],
        };
        let known = [
            Candidate {
                name: "a.weight",
                tensor: &t,
                horizon: None,
            },
            Candidate {
                name: "flex",
                tensor: &t,
                horizon: Some(&[7]),
            },
        ];
        let pick = |l: Option<&str>| choose(&known, l, "f").map(|c| c.name);
        assert_eq!(pick(None).unwrap(), "flex");
        assert_eq!(pick(Some("a")).unwrap(), "a.weight");
        assert_eq!(pick(Some("a.weight")).unwrap(), "a.weight");
        assert_eq!(pick(Some("flex.kernel")).unwrap(), "flex");
        let e = pick(Some("flex.weight")).unwrap_err().to_string();
        assert!(
            e.contains(
                "f: no convolution kernel named 'flex.weight'; it has: a.weight, flex (FlexConv)"
            ),
            "{e}"
        );
        assert_eq!(pick(Some("a.kernel")).ok(), None);
        assert_eq!(choose(&known[..1], None, "f").unwrap().name, "a.weight");
        assert_eq!(known[1].title(), "flex (FlexConv, cropped from 7)");
    }

    #[test]
    fn tiles_keep_whole_pixels_per_tap() {
        assert_eq!(tile_size(3, 3, false), (39, 39));
        assert_eq!(tile_size(5, 3, false), (40, 24));
        assert_eq!(tile_size(65, 65, false), (65, 65));
        assert_eq!(tile_size(1, 9, true), (14, 153));
        assert_eq!(tile_size(1, 784, true), (14, 784));
    }
}
