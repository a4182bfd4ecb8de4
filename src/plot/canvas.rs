//! An RGB canvas that plotters draws into, encoded as PNG and written atomically.
//!
//! plotters' own PNG encoder pulls in the `image` crate (with JPEG and more) and writes
//! the file in place; drawing into a buffer and encoding it with `png` keeps the
//! dependency small and lets the file go through [`crate::io::write_output`]. Text
//! uses the `ab_glyph` backend with a font embedded in the binary, so plots render on
//! a machine without fontconfig or system fonts.

use crate::runtime::RunError;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// DejaVu Sans, subset to ASCII, Latin-1 and a few symbols (`assets/fonts/`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");

/// The family name every plot asks for.
pub const FAMILY: &str = "sans-serif";

/// Registers the embedded font once per process (plotters keeps a global table).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType file checked in with the source; a failure
        // here would be a build problem, and the plots would then have no text
        // rather than crash.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
        let _ = plotters::style::register_font(FAMILY, FontStyle::Bold, FONT);
    });
}

/// A `w × h` RGB image being drawn.
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Canvas {
        register_font();
        Canvas {
            width,
            height,
            rgb: vec![255; width as usize * height as usize * 3],
        }
    }

    /// Runs `draw` on a plotters drawing area over the whole canvas (white already).
    /// Drawing errors (a text that does not fit, …) become a `RunError` naming `what`.
    pub fn draw(
        &mut self,
        what: &str,
        draw: impl for<'b> FnOnce(
            &DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
        ) -> Result<(), Box<dyn std::error::Error>>,
    ) -> Result<(), RunError> {
        let size = (self.width, self.height);
        let result = {
            let root = BitMapBackend::with_buffer(&mut self.rgb, size).into_drawing_area();
            let r = draw(&root).map_err(|e| e.to_string());
            r.and_then(|()| root.present().map_err(|e| e.to_string()))
        };
        result.map_err(|e| RunError::new(format!("could not draw {what}: {e}")))
    }

    /// The PNG file's bytes (8-bit RGB).
    pub fn encode(&self) -> Result<Vec<u8>, RunError> {
        let mut bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut bytes, self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .and_then(|mut w| w.write_image_data(&self.rgb))
            .map_err(|e| RunError::new(format!("could not encode a PNG: {e}")))?;
        Ok(bytes)
    }

    /// Encodes and writes the image to `path` atomically, never over one of `inputs`.
    pub fn save(&self, path: &Path, inputs: &[&Path]) -> Result<(), RunError> {
        let bytes = self.encode()?;
        Ok(crate::io::write_output(path, inputs, |w| {
            w.write_all(&bytes)
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_text_with_the_embedded_font_and_round_trips_through_png() {
        let mut c = Canvas::new(120, 40);
        c.draw("a label", |root| {
            root.draw(&Text::new(
                "Loss 0.5",
                (5, 5),
                (FAMILY, 20).into_font().color(&BLACK),
            ))?;
            Ok(())
        })
        .unwrap();
        let dark = c.rgb.chunks(3).filter(|p| p[0] < 128).count();
        assert!(dark > 50, "the text left {dark} dark pixels");
        let bytes = c.encode().unwrap();
        let mut dec = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; dec.output_buffer_size()];
        let info = dec.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (120, 40));
        assert_eq!(&buf[..info.buffer_size()], &c.rgb[..]);
    }
}
