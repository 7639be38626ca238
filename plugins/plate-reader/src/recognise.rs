//! Reading one text line with PP-OCR's recogniser (an SVTR network trained with CTC).
//!
//! The line is cut out of the frame along its own axes (straightening a tilted line) into the
//! model's 48-pixel-high input, its width following the line's aspect up to 320 pixels, the rest
//! padded. The model answers, for each of its 40 time steps, a probability for every character
//! of its dictionary and for CTC's "blank"; [`ctc_decode`] turns that into text.

use crate::detect::TextLine;
use crate::frame::Frame;
use edgewise_guest::nn::Model;
use edgewise_guest::{Error, Result};

/// The recogniser's input size, as fixed in plugin.toml.
const HEIGHT: usize = 48;
const WIDTH: usize = 320;

/// The recogniser's characters: class i > 0 is line i of this file, class 0 is CTC's blank and
/// the class after the last line a space. It ships in the ONNX file's metadata, which wasi-nn
/// does not expose, so scripts/prepare-models writes it out and it is compiled in here: the
/// component and the model it reads are pinned together by the bundle's manifest.
const DICTIONARY: &str = include_str!("../model/text_rec.dict");

/// A line's text and how sure the model is of it: the mean probability of its characters.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub text: String,
    pub confidence: f32,
}

/// The recogniser, with its characters and input buffer.
pub struct Recogniser {
    model: Model,
    characters: Vec<&'static str>,
    input: Vec<f32>,
}

impl Recogniser {
    pub fn new(model: Model) -> Self {
        let mut characters = vec![""];
        characters.extend(DICTIONARY.lines());
        characters.push(" ");
        Recogniser {
            model,
            characters,
            input: vec![0.0; 3 * HEIGHT * WIDTH],
        }
    }

    /// Reads `line` in `frame`.
    pub fn read(&mut self, frame: &Frame, line: &TextLine) -> Result<Reading> {
        self.fill_input(frame, line);
        let (shape, probabilities) = crate::run_model(
            &mut self.model,
            [1, 3, HEIGHT, WIDTH],
            &self.input,
            "text recogniser",
        )?;
        let classes = self.characters.len();
        if shape.last().map(|c| *c as usize) != Some(classes) {
            return Err(Error::msg(format!(
                "the text recogniser's output {shape:?} does not end in the dictionary's {classes} classes"
            )));
        }
        Ok(ctc_decode(&probabilities, &self.characters))
    }

    /// Samples the line, straightened, into the input: normalised to [-1, 1], BGR.
    fn fill_input(&mut self, frame: &Frame, line: &TextLine) {
        let width = ((HEIGHT as f32 * line.width / line.height).ceil() as usize).clamp(1, WIDTH);
        self.input.fill(0.0);
        let plane = HEIGHT * WIDTH;
        for y in 0..HEIGHT {
            let v = ((y as f32 + 0.5) / HEIGHT as f32 - 0.5) * line.height;
            for x in 0..width {
                let u = ((x as f32 + 0.5) / width as f32 - 0.5) * line.width;
                let (fx, fy) = line.point_in_frame(u, v);
                let [r, g, b] = frame.sample(fx, fy);
                for (c, value) in [b, g, r].into_iter().enumerate() {
                    self.input[c * plane + y * WIDTH + x] = value / 127.5 - 1.0;
                }
            }
        }
    }
}

/// Greedy CTC decoding of `steps x characters.len()` probabilities: the likeliest class per
/// step, repeats merged, blanks (class 0) dropped.
fn ctc_decode(probabilities: &[f32], characters: &[&str]) -> Reading {
    let mut text = String::new();
    let mut kept = Vec::new();
    let mut previous = 0;
    for step in probabilities.chunks_exact(characters.len()) {
        let (best, p) = step
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |best, (i, p)| if p > best.1 { (i, p) } else { best },
            );
        if best != 0 && best != previous {
            text.push_str(characters[best]);
            kept.push(p);
        }
        previous = best;
    }
    let confidence = if kept.is_empty() {
        0.0
    } else {
        kept.iter().sum::<f32>() / kept.len() as f32
    };
    Reading { text, confidence }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let chars = ["", "A", "B"];
        // Steps: A A blank A B B → "AAB" (a blank separates two real A's).
        let one_hot = |i: usize, p: f32| {
            let mut step = [(1.0 - p) / 2.0; 3];
            step[i] = p;
            step
        };
        let steps = [
            one_hot(1, 0.9),
            one_hot(1, 0.7),
            one_hot(0, 0.8),
            one_hot(1, 0.6),
            one_hot(2, 1.0),
            one_hot(2, 0.5),
        ];
        let reading = ctc_decode(&steps.concat(), &chars);
        assert_eq!(reading.text, "AAB");
        // The first step of each kept character: 0.9, 0.6, 1.0.
        assert!((reading.confidence - (0.9 + 0.6 + 1.0) / 3.0).abs() < 1e-6);
        assert_eq!(
            ctc_decode(&[one_hot(0, 0.9)].concat(), &chars).confidence,
            0.0
        );
    }

    #[test]
    fn the_dictionary_has_the_latin_plate_characters() {
        let chars: Vec<&str> = DICTIONARY.lines().collect();
        for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-".chars() {
            assert!(chars.contains(&c.to_string().as_str()), "{c} missing");
        }
    }
}
