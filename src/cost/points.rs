//! The measured points a cost table was fitted on, as the CSV committed beside it
//! (`src/cost/<backend>_points.csv`): one row per (shape, algorithm) with the features,
//! the measured and the predicted seconds. Reading it back lets a table be refitted
//! after a change of features without measuring again
//! (`examples/fit_cost.rs --from-points`), and lets tests compare a table's choices
//! with what was measured.

use super::fit::Sample;
use super::{ConvShape, CostTable, CostTableId, CostedAlgo};
use crate::ir::op::Padding;
use std::fmt::Write;

const HEADER: &str =
    "algo,batch,ci,co,input,kernel,stride,dilation,groups,padding,features,measured_s,predicted_s";

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join("x")
}

/// The CSV of `samples` with `table`'s features and predictions.
pub fn write_points(samples: &[Sample], table: &CostTable) -> String {
    let mut csv = format!("{HEADER}\n");
    for s in samples {
        let (feats, pred) = match (
            s.shape.features_of(table.backend, s.algo),
            table.row(s.algo),
        ) {
            (Some(f), Some(c)) => {
                let text: Vec<String> = f.iter().map(|v| format!("{v:.6e}")).collect();
                (text.join(" "), c.seconds(&f))
            }
            _ => (String::new(), f64::INFINITY),
        };
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{feats},{:.6e},{pred:.6e}",
            s.algo.name(),
            s.shape.batch,
            s.shape.ci,
            s.shape.co,
            join(&s.shape.input),
            join(&s.shape.kernel),
            join(&s.shape.stride),
            join(&s.shape.dilation),
            s.shape.groups,
            // The IR's `[1:1,1:1]`, with `;` for the CSV's commas.
            s.shape.padding.to_string().replace(',', ";"),
            s.seconds,
        );
    }
    csv
}

fn parse_padding(p: &str) -> Result<Padding, String> {
    match p {
        "same" => Ok(Padding::Same),
        "causal" => Ok(Padding::Causal),
        _ => p
            .trim_matches(|c| c == '[' || c == ']')
            .split(';')
            .map(|lo_hi| {
                let (lo, hi) = lo_hi
                    .split_once(':')
                    .ok_or_else(|| format!("padding `{p}`: expected lo:hi pairs"))?;
                Ok((
                    lo.parse().map_err(|_| format!("padding `{p}`"))?,
                    hi.parse().map_err(|_| format!("padding `{p}`"))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Padding::Explicit),
    }
}

/// The samples of a points CSV (features and predictions are recomputed, not read).
pub fn read_points(csv: &str) -> Result<Vec<Sample>, String> {
    let mut lines = csv.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h == HEADER => {}
        _ => return Err(format!("expected the header `{HEADER}`")),
    }
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let at = |e: String| format!("line {}: {e}", i + 1);
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 13 {
                return Err(at(format!("expected 13 fields, got {}", f.len())));
            }
            let int = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| at(format!("`{s}` is not a size")))
            };
            let dims = |s: &str| s.split('x').map(int).collect::<Result<Vec<u64>, String>>();
            let algo = CostedAlgo::from_name(f[0])
                .ok_or_else(|| at(format!("unknown algorithm `{}`", f[0])))?;
            Ok(Sample {
                algo,
                shape: ConvShape {
                    batch: int(f[1])?,
                    ci: int(f[2])?,
                    co: int(f[3])?,
                    input: dims(f[4])?,
                    kernel: dims(f[5])?,
                    stride: dims(f[6])?,
                    dilation: dims(f[7])?,
                    groups: int(f[8])?,
                    padding: parse_padding(f[9]).map_err(at)?,
                },
                seconds: f[11]
                    .parse()
                    .map_err(|_| at(format!("`{}` is not a time", f[11])))?,
            })
        })
        .collect()
}

/// Where `backend`'s committed points live in the source tree.
pub fn committed_path(backend: CostTableId) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/cost")
        .join(format!("{}_points.csv", backend.name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::ConvAlgo;
    use crate::kernel_ir::native::JitConvData;

    #[test]
    fn points_round_trip() {
        let mut strided = ConvShape::plain(
            2,
            4,
            8,
            &[16, 16],
            &[3, 3],
            Padding::Explicit(vec![(1, 1), (0, 2)]),
        );
        strided.stride = vec![2, 2];
        let samples = vec![
            Sample {
                algo: CostedAlgo::Forward(ConvAlgo::Direct),
                shape: strided,
                seconds: 1.5e-5,
            },
            Sample {
                algo: CostedAlgo::Forward(ConvAlgo::Fft),
                shape: ConvShape::plain(1, 30, 30, &[784], &[785], Padding::Causal),
                seconds: 2.25e-3,
            },
            Sample {
                algo: CostedAlgo::Data(JitConvData::Col2im),
                shape: ConvShape::plain(8, 16, 32, &[16, 16], &[3, 3], Padding::Same),
                seconds: 3.5e-4,
            },
        ];
        let csv = write_points(&samples, CostTable::of(CostTableId::Jit));
        assert!(csv.contains("\ndata_col2im,8,16,32,16x16,"), "{csv}");
        let back = read_points(&csv).expect("parses");
        assert_eq!(back.len(), 3);
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!((a.algo, &a.shape), (b.algo, &b.shape));
            assert!((a.seconds - b.seconds).abs() <= 1e-6 * a.seconds);
        }
        let err = read_points("algo,batch\nfft,1").unwrap_err();
        assert!(err.contains("header"), "{err}");
    }

    #[test]
    fn every_committed_points_file_reads() {
        for b in CostTableId::ALL {
            let text = std::fs::read_to_string(committed_path(b)).expect("committed points");
            let s = read_points(&text).unwrap_or_else(|e| panic!("{}: {e}", b.name()));
            assert_eq!(
                s.len(),
                super::super::CostTable::of(b).points,
                "{}",
                b.name()
            );
        }
    }
}
