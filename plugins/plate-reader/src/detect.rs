//! Finding text lines in a frame with PP-OCR's text detector (a DB network: Differentiable
//! Binarization), and the geometry that turns its probability map into straight boxes.
//!
//! The frame is scaled into the model's fixed 640x384 input (aspect kept, the rest padded);
//! the model answers, per input pixel, how likely it is to be text. Pixels above
//! [`TEXT_THRESHOLD`] are joined into 8-connected regions; each region's smallest rotated
//! rectangle, grown by the DB "unclip" margin (the network is trained to mark a shrunken
//! core of each line), is one [`TextLine`], in frame pixels.

use crate::frame::Frame;
use edgewise_guest::nn::Model;
use edgewise_guest::{Error, Result};

/// The detector's input size, as fixed in plugin.toml.
pub const WIDTH: usize = 640;
/// See [`WIDTH`].
pub const HEIGHT: usize = 384;
/// A pixel is text above this probability (PaddleOCR's default).
const TEXT_THRESHOLD: f32 = 0.3;
/// A region is a text line when its mean probability is at least this.
const LINE_THRESHOLD: f32 = 0.6;
/// How much a region is grown: by area x ratio / perimeter on every side (PaddleOCR's 1.6).
const UNCLIP_RATIO: f32 = 1.6;
/// Regions of fewer pixels are noise.
const MIN_PIXELS: usize = 8;
/// The most text lines read in one frame, the largest first: each costs one run of the
/// recogniser (≈ 19 ms), so a frame crowded with text (a hostile one, or a billboard) stays
/// well within the plugin's time per message instead of trapping every time it is sent.
const MAX_LINES: usize = 24;
/// ImageNet statistics the detector was trained with, in its channel order (BGR).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A text line: a rectangle rotated by `angle` (radians, within ±90°) about its centre, its
/// width along the text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextLine {
    pub cx: f32,
    pub cy: f32,
    pub width: f32,
    pub height: f32,
    pub angle: f32,
}

impl TextLine {
    /// Where a point at (u, v) from the centre, in the line's own axes, lies in the frame.
    pub fn point_in_frame(&self, u: f32, v: f32) -> (f32, f32) {
        let (sin, cos) = self.angle.sin_cos();
        (self.cx + u * cos - v * sin, self.cy + u * sin + v * cos)
    }

    /// The upright box around the line: `[left, top, right, bottom]`.
    pub fn bounds(&self) -> [f32; 4] {
        let (w, h) = (self.width / 2.0, self.height / 2.0);
        let corners = [(-w, -h), (w, -h), (w, h), (-w, h)].map(|(u, v)| self.point_in_frame(u, v));
        let xs = corners.map(|c| c.0);
        let ys = corners.map(|c| c.1);
        [
            xs.into_iter().fold(f32::MAX, f32::min),
            ys.into_iter().fold(f32::MAX, f32::min),
            xs.into_iter().fold(f32::MIN, f32::max),
            ys.into_iter().fold(f32::MIN, f32::max),
        ]
    }
}

/// The text detector, with its input buffer kept between frames.
pub struct Detector {
    model: Model,
    input: Vec<f32>,
}

impl Detector {
    pub fn new(model: Model) -> Self {
        Detector {
            model,
            input: vec![0.0; 3 * WIDTH * HEIGHT],
        }
    }

    /// The text lines in `frame`, in frame pixels.
    pub fn find(&mut self, frame: &Frame) -> Result<Vec<TextLine>> {
        let scale = self.fill_input(frame);
        let shape = [1, 3, HEIGHT, WIDTH];
        let (_, probability) =
            crate::run_model(&mut self.model, shape, &self.input, "text detector")?;
        if probability.len() != WIDTH * HEIGHT {
            return Err(Error::msg(format!(
                "the text detector gave {} values, expected a {WIDTH}x{HEIGHT} map",
                probability.len()
            )));
        }
        Ok(lines(&probability, WIDTH, HEIGHT)
            .into_iter()
            .map(|l| TextLine {
                cx: l.cx / scale,
                cy: l.cy / scale,
                width: l.width / scale,
                height: l.height / scale,
                angle: l.angle,
            })
            .collect())
    }

    /// Scales `frame` into the input (top left, aspect kept, the rest zero: the mean colour
    /// after normalising) and returns the scale from frame to input pixels. Shrinking averages
    /// up to 4x4 samples per input pixel, so that fine print survives large frames.
    fn fill_input(&mut self, frame: &Frame) -> f32 {
        let scale = (WIDTH as f32 / frame.width as f32).min(HEIGHT as f32 / frame.height as f32);
        let (w, h) = (
            ((frame.width as f32 * scale).round() as usize).min(WIDTH),
            ((frame.height as f32 * scale).round() as usize).min(HEIGHT),
        );
        let taps = (1.0 / scale).ceil().clamp(1.0, 4.0) as usize;
        self.input.fill(0.0);
        let plane = WIDTH * HEIGHT;
        for y in 0..h {
            for x in 0..w {
                let mut sum = [0.0f32; 3];
                for ty in 0..taps {
                    for tx in 0..taps {
                        let fx = (x as f32 + (tx as f32 + 0.5) / taps as f32) / scale;
                        let fy = (y as f32 + (ty as f32 + 0.5) / taps as f32) / scale;
                        let rgb = frame.sample(fx, fy);
                        sum.iter_mut().zip(rgb).for_each(|(s, v)| *s += v);
                    }
                }
                let n = (taps * taps) as f32;
                // Channels in BGR order, as PaddleOCR feeds OpenCV images.
                for (c, value) in [sum[2], sum[1], sum[0]].into_iter().enumerate() {
                    self.input[c * plane + y * WIDTH + x] = (value / n / 255.0 - MEAN[c]) / STD[c];
                }
            }
        }
        scale
    }
}

/// The text lines of a `width` x `height` probability map, in map pixels: at most
/// [`MAX_LINES`], the largest.
fn lines(probability: &[f32], width: usize, height: usize) -> Vec<TextLine> {
    let text: Vec<bool> = probability.iter().map(|p| *p > TEXT_THRESHOLD).collect();
    let mut found: Vec<TextLine> = regions(&text, width, height)
        .into_iter()
        .filter(|region| region.len() >= MIN_PIXELS)
        .filter(|region| {
            let sum: f32 = region
                .iter()
                .map(|&(x, y)| probability[y * width + x])
                .sum();
            sum / region.len() as f32 >= LINE_THRESHOLD
        })
        .filter_map(|region| {
            let r = min_area_rect(&convex_hull(&outline(&region)))?;
            if r.height < 2.0 {
                return None;
            }
            let grow = r.width * r.height * UNCLIP_RATIO / (2.0 * (r.width + r.height));
            Some(TextLine {
                width: r.width + 2.0 * grow,
                height: r.height + 2.0 * grow,
                ..r
            })
        })
        .collect();
    found.sort_by(|a, b| (b.width * b.height).total_cmp(&(a.width * a.height)));
    found.truncate(MAX_LINES);
    found
}

/// The 8-connected regions of `true` pixels, each as its pixels' (x, y).
fn regions(mask: &[bool], width: usize, height: usize) -> Vec<Vec<(usize, usize)>> {
    let mut seen = vec![false; mask.len()];
    let mut found = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut region = Vec::new();
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            region.push((x, y));
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let j = ny * width + nx;
                    if mask[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        found.push(region);
    }
    found
}

/// The outer corners of a region's leftmost and rightmost pixel in each row: the convex hull of
/// these is the hull of the whole region, from far fewer points.
fn outline(region: &[(usize, usize)]) -> Vec<(f32, f32)> {
    let mut rows: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
    for &(x, y) in region {
        let row = rows.entry(y).or_insert((x, x));
        row.0 = row.0.min(x);
        row.1 = row.1.max(x);
    }
    rows.into_iter()
        .flat_map(|(y, (left, right))| {
            let (y, l, r) = (y as f32, left as f32, right as f32 + 1.0);
            [(l, y), (l, y + 1.0), (r, y), (r, y + 1.0)]
        })
        .collect()
}

/// The convex hull, counter-clockwise (Andrew's monotone chain).
fn convex_hull(points: &[(f32, f32)]) -> Vec<(f32, f32)> {
    let mut points = points.to_vec();
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    points.dedup();
    if points.len() < 3 {
        return points;
    }
    let cross = |o: (f32, f32), a: (f32, f32), b: (f32, f32)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(f32, f32)> = Vec::with_capacity(points.len() * 2);
    for pass in [points.clone(), points.into_iter().rev().collect()] {
        let start = hull.len();
        for p in pass {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// The smallest rectangle around a convex polygon (one of its sides lies on a hull edge),
/// its width the longer side.
fn min_area_rect(hull: &[(f32, f32)]) -> Option<TextLine> {
    let mut best: Option<(f32, TextLine)> = None;
    for (i, &(x0, y0)) in hull.iter().enumerate() {
        let (x1, y1) = hull[(i + 1) % hull.len()];
        let angle = (y1 - y0).atan2(x1 - x0);
        let (sin, cos) = angle.sin_cos();
        let (mut u0, mut u1, mut v0, mut v1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for &(x, y) in hull {
            let (u, v) = (x * cos + y * sin, -x * sin + y * cos);
            (u0, u1, v0, v1) = (u0.min(u), u1.max(u), v0.min(v), v1.max(v));
        }
        let area = (u1 - u0) * (v1 - v0);
        if best.as_ref().is_none_or(|(a, _)| area < *a) {
            let (cu, cv) = ((u0 + u1) / 2.0, (v0 + v1) / 2.0);
            best = Some((
                area,
                TextLine {
                    cx: cu * cos - cv * sin,
                    cy: cu * sin + cv * cos,
                    width: u1 - u0,
                    height: v1 - v0,
                    angle,
                },
            ));
        }
    }
    best.map(|(_, r)| upright(r))
}

/// The same rectangle with its width along the longer side and its angle within ±90°, so that
/// text reads left to right.
fn upright(mut r: TextLine) -> TextLine {
    use std::f32::consts::{FRAC_PI_2, PI};
    if r.height > r.width {
        (r.width, r.height) = (r.height, r.width);
        r.angle += FRAC_PI_2;
    }
    while r.angle > FRAC_PI_2 {
        r.angle -= PI;
    }
    while r.angle <= -FRAC_PI_2 {
        r.angle += PI;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-3
    }

    #[test]
    fn an_upright_bar_becomes_one_grown_line() {
        // A 20x4 bar of text probability at (10, 6) in a 40x16 map.
        let (w, h) = (40, 16);
        let mut map = vec![0.0; w * h];
        for y in 6..10 {
            for x in 10..30 {
                map[y * w + x] = 0.9;
            }
        }
        let found = lines(&map, w, h);
        assert_eq!(found.len(), 1);
        let l = found[0];
        // Grown by 20 * 4 * 1.6 / (2 * 24) = 8/3 on every side.
        let grow = 20.0 * 4.0 * 1.6 / 48.0;
        assert!(close(l.cx, 20.0) && close(l.cy, 8.0), "{l:?}");
        assert!(
            close(l.width, 20.0 + 2.0 * grow) && close(l.height, 4.0 + 2.0 * grow),
            "{l:?}"
        );
        assert!(close(l.angle.sin(), 0.0), "{l:?}");
    }

    #[test]
    fn a_frame_crowded_with_text_gives_only_its_largest_lines() {
        // 60 separate bars, 3 rows high, of growing length: only the longest MAX_LINES stay.
        let (w, h) = (400, 240);
        let mut map = vec![0.0; w * h];
        for i in 0..60 {
            let (row, col) = (i / 4, i % 4);
            let len = 10 + i / 2;
            for y in row * 16..row * 16 + 3 {
                for x in col * 100..col * 100 + len {
                    map[y * w + x] = 0.9;
                }
            }
        }
        let found = lines(&map, w, h);
        assert_eq!(found.len(), MAX_LINES);
        // Two bars of each length: the 24 kept are those of length 28 to 39.
        let grown = |len: usize| {
            let mut one = vec![0.0; w * h];
            for y in 0..3 {
                for x in 0..len {
                    one[y * w + x] = 0.9;
                }
            }
            lines(&one, w, h)[0].width
        };
        let shortest_kept = found.iter().map(|l| l.width).fold(f32::MAX, f32::min);
        assert!(
            close(shortest_kept, grown(28)),
            "{shortest_kept} vs {}",
            grown(28)
        );
        assert!(grown(27) < grown(28));
    }

    #[test]
    fn faint_regions_and_specks_are_not_lines() {
        let (w, h) = (20, 10);
        let mut map = vec![0.0; w * h];
        for x in 2..12 {
            map[2 * w + x] = 0.4; // above the pixel threshold, under the line threshold
        }
        map[7 * w + 15] = 0.99; // one pixel
        assert!(lines(&map, w, h).is_empty());
    }

    #[test]
    fn a_tilted_rectangle_is_found_at_its_angle() {
        // The corners of a 10x2 rectangle rotated by 30° about the origin.
        let r = TextLine {
            cx: 0.0,
            cy: 0.0,
            width: 10.0,
            height: 2.0,
            angle: 30f32.to_radians(),
        };
        let corners = [(-5.0, -1.0), (5.0, -1.0), (5.0, 1.0), (-5.0, 1.0)]
            .map(|(u, v)| r.point_in_frame(u, v));
        let found = min_area_rect(&convex_hull(&corners)).expect("a rectangle");
        assert!(
            close(found.width, 10.0) && close(found.height, 2.0),
            "{found:?}"
        );
        assert!(close(found.angle, 30f32.to_radians()), "{found:?}");
        let b = found.bounds();
        let expect = [corners.map(|c| c.0), corners.map(|c| c.1)];
        assert!(close(b[0], expect[0].into_iter().fold(f32::MAX, f32::min)));
        assert!(close(b[3], expect[1].into_iter().fold(f32::MIN, f32::max)));
    }
}
