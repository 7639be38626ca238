//! Camera frames: a JPEG or PNG payload decoded to RGB pixels, and sampling between pixels.
//!
//! The size a frame declares is checked before a pixel is unpacked, so a small payload that
//! claims to be a huge image (a decompression bomb) costs nothing but its refusal.

use edgewise_guest::{Error, Result};

/// The largest frame read: 1920x1080, the biggest a gate camera commonly sends. Larger frames
/// are refused (they would need more memory than the plugin's limit for no better reading).
pub const MAX_WIDTH: usize = 1920;
/// See [`MAX_WIDTH`].
pub const MAX_HEIGHT: usize = 1080;

/// A decoded frame: `width * height` RGB pixels, row by row.
pub struct Frame {
    pub width: usize,
    pub height: usize,
    rgb: Vec<u8>,
}

impl Frame {
    /// Decodes a JPEG or PNG payload; anything else is refused, naming what it looks like.
    pub fn decode(payload: &[u8]) -> Result<Frame> {
        match payload {
            [0xFF, 0xD8, 0xFF, ..] => jpeg(payload),
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => png(payload),
            _ => Err(Error::msg(format!(
                "not a JPEG or PNG frame: {} bytes starting {}",
                payload.len(),
                looks_like(payload)
            ))),
        }
    }

    /// The colour at (x, y) in pixel units (pixel centres at .5), interpolated between the four
    /// nearest pixels; outside the frame the nearest edge pixel.
    pub fn sample(&self, x: f32, y: f32) -> [f32; 3] {
        let x = (x - 0.5).clamp(0.0, (self.width - 1) as f32);
        let y = (y - 0.5).clamp(0.0, (self.height - 1) as f32);
        let (x0, y0) = (x as usize, y as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let at = |x: usize, y: usize, c: usize| f32::from(self.rgb[(y * self.width + x) * 3 + c]);
        std::array::from_fn(|c| {
            let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
            let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
            top * (1.0 - fy) + bottom * fy
        })
    }
}

fn check_size(format: &str, width: usize, height: usize) -> Result<()> {
    if width == 0 || height == 0 || width > MAX_WIDTH || height > MAX_HEIGHT {
        return Err(Error::msg(format!(
            "{format} frame of {width}x{height} pixels: frames up to {MAX_WIDTH}x{MAX_HEIGHT} are read"
        )));
    }
    Ok(())
}

fn jpeg(payload: &[u8]) -> Result<Frame> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let options = DecoderOptions::default()
        .set_max_width(MAX_WIDTH)
        .set_max_height(MAX_HEIGHT)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(payload), options);
    decoder
        .decode_headers()
        .map_err(|e| Error::msg(format!("JPEG frame: {e:?}")))?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| Error::msg("JPEG frame without dimensions"))?;
    check_size("JPEG", width, height)?;
    let rgb = decoder
        .decode()
        .map_err(|e| Error::msg(format!("JPEG frame of {width}x{height}: {e:?}")))?;
    if rgb.len() != width * height * 3 {
        return Err(Error::msg(format!(
            "JPEG frame of {width}x{height} decoded to {} bytes, not RGB",
            rgb.len()
        )));
    }
    Ok(Frame { width, height, rgb })
}

fn png(payload: &[u8]) -> Result<Frame> {
    let mut decoder = png::Decoder::new_with_limits(
        std::io::Cursor::new(payload),
        png::Limits {
            bytes: MAX_WIDTH * MAX_HEIGHT * 8,
        },
    );
    // Palette and low bit depths expanded, 16 bits cut to 8: every PNG becomes 8-bit gray or
    // colour, with or without alpha.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let header = decoder
        .read_header_info()
        .map_err(|e| Error::msg(format!("PNG frame: {e}")))?;
    check_size("PNG", header.width as usize, header.height as usize)?;
    let mut reader = decoder
        .read_info()
        .map_err(|e| Error::msg(format!("PNG frame: {e}")))?;
    let mut buf = vec![
        0;
        reader
            .output_buffer_size()
            .ok_or_else(|| Error::msg("PNG frame too large to decode"))?
    ];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| Error::msg(format!("PNG frame: {e}")))?;
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let pixels = buf.get(..info.buffer_size()).unwrap_or(&buf);
    let rgb = pixels
        .chunks_exact(channels)
        .flat_map(|p| match p.len() {
            1 | 2 => [p[0], p[0], p[0]],
            _ => [p[0], p[1], p[2]],
        })
        .collect::<Vec<u8>>();
    if rgb.len() != width * height * 3 {
        return Err(Error::msg(format!(
            "PNG frame of {width}x{height} is truncated"
        )));
    }
    Ok(Frame { width, height, rgb })
}

/// What a refused payload looks like, for the dead letter.
fn looks_like(payload: &[u8]) -> String {
    let known: [(&[u8], &str); 6] = [
        (b"GIF8", "GIF"),
        (b"RIFF", "RIFF (WebP or WAV)"),
        (b"BM", "BMP"),
        (b"{", "JSON"),
        (b"[", "JSON"),
        (&[0xFF, 0xD8], "a broken JPEG marker"),
    ];
    let head: String = payload.iter().take(8).map(|b| format!("{b:02x}")).collect();
    match known.iter().find(|(magic, _)| payload.starts_with(magic)) {
        Some((_, name)) => format!("{head} (looks like {name})"),
        None if payload.is_empty() => "nothing (empty payload)".to_owned(),
        None => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_formats_are_named_in_the_refusal() {
        let refusal = |bytes: &[u8]| Frame::decode(bytes).err().map(|e| e.to_string());
        assert!(refusal(b"GIF89a....").is_some_and(|e| e.contains("GIF")));
        assert!(refusal(b"{\"frame\": 1}").is_some_and(|e| e.contains("JSON")));
        assert!(refusal(b"").is_some_and(|e| e.contains("empty")));
    }
}
