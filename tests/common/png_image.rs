//! Decoding the PNGs `fnetc plot` writes, for the plot tests.

use std::path::Path;

/// A decoded RGB image.
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Image {
    pub fn read(path: &Path) -> Image {
        let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut dec = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .unwrap();
        let mut buf = vec![0; dec.output_buffer_size()];
        let info = dec.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        Image {
            width: info.width as usize,
            height: info.height as usize,
            rgb: buf,
        }
    }

    pub fn pixels(&self) -> impl Iterator<Item = (usize, usize, [u8; 3])> + '_ {
        self.rgb
            .chunks_exact(3)
            .enumerate()
            .map(|(i, p)| (i % self.width, i / self.width, [p[0], p[1], p[2]]))
    }

    pub fn count(&self, rgb: [u8; 3]) -> usize {
        self.pixels().filter(|p| p.2 == rgb).count()
    }

    pub fn non_white(&self) -> usize {
        self.pixels().filter(|p| p.2 != [255, 255, 255]).count()
    }

    /// Mean row of the pixels of colour `rgb` with `x` in `[x0, x1)`; `None` if none.
    pub fn mean_row(&self, rgb: [u8; 3], x0: usize, x1: usize) -> Option<f64> {
        let rows: Vec<usize> = self
            .pixels()
            .filter(|&(x, _, c)| c == rgb && x >= x0 && x < x1)
            .map(|p| p.1)
            .collect();
        (!rows.is_empty()).then(|| rows.iter().sum::<usize>() as f64 / rows.len() as f64)
    }
}
