//! Which readings are licence plates: plate formats per country, and text lines put together
//! when a plate's characters were found as two lines (a wide gap, as in "AB12 CDE").

use crate::detect::TextLine;
use crate::recognise::Reading;
use edgewise_guest::{Error, Result};
use regex_lite::Regex;
use std::str::FromStr;

/// Plate formats: a country code and a pattern its plates' characters match, whole.
pub struct Patterns(Vec<(String, Regex)>);

impl FromStr for Patterns {
    type Err = Error;

    /// `"FR=[A-Z]{2}[0-9]{3}[A-Z]{2}; GB=..."`: each pattern is matched against a reading's
    /// letters and digits only, from first to last.
    fn from_str(text: &str) -> Result<Self> {
        let mut patterns = Vec::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (country, pattern) = entry.split_once('=').ok_or_else(|| {
                Error::msg(format!("plate pattern `{entry}`: expected COUNTRY=regex"))
            })?;
            let regex = Regex::new(&format!("^(?:{})$", pattern.trim()))
                .map_err(|e| Error::msg(format!("plate pattern for {}: {e}", country.trim())))?;
            patterns.push((country.trim().to_owned(), regex));
        }
        if patterns.is_empty() {
            return Err(Error::msg(
                "no plate patterns: give at least one COUNTRY=regex",
            ));
        }
        Ok(Patterns(patterns))
    }
}

impl Patterns {
    /// The country whose pattern `plate` matches, first in the order given.
    pub fn country(&self, plate: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, r)| r.is_match(plate))
            .map(|(c, _)| c.as_str())
    }
}

/// A plate read in a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Plate {
    pub plate: String,
    pub country: String,
    pub confidence: f32,
    /// `[left, top, right, bottom]` in frame pixels, around the plate's characters.
    pub bounds: [f32; 4],
}

/// A reading's plate characters: upper-case letters and digits, separators (space, dash, dot,
/// middle dot) dropped; `None` when it holds anything else (no plate has it).
pub fn plate_characters(text: &str) -> Option<String> {
    let mut plate = String::new();
    for c in text.chars() {
        match c {
            ' ' | '-' | '.' | '·' | '_' => {}
            c if c.is_ascii_alphanumeric() => plate.push(c.to_ascii_uppercase()),
            _ => return None,
        }
    }
    (!plate.is_empty()).then_some(plate)
}

/// The plates among a frame's readings. A line that is no plate alone is tried with the lines
/// to its right on the same text row (similar height, level, a gap under 1.5 heights), up to
/// three lines in all.
pub fn plates(
    readings: &[(TextLine, Reading)],
    patterns: &Patterns,
    min_confidence: f32,
) -> Vec<Plate> {
    let mut lines: Vec<(&TextLine, &Reading, [f32; 4])> =
        readings.iter().map(|(l, r)| (l, r, l.bounds())).collect();
    lines.sort_by(|a, b| a.2[0].total_cmp(&b.2[0]));
    let read = |parts: &[usize]| -> Option<Plate> {
        let text: String = parts.iter().map(|&i| lines[i].1.text.as_str()).collect();
        let plate = plate_characters(&text)?;
        let country = patterns.country(&plate)?;
        let confidence = parts
            .iter()
            .map(|&i| lines[i].1.confidence)
            .fold(f32::MAX, f32::min);
        let bounds = parts.iter().map(|&i| lines[i].2).fold(
            [f32::MAX, f32::MAX, f32::MIN, f32::MIN],
            |a, b| {
                [
                    a[0].min(b[0]),
                    a[1].min(b[1]),
                    a[2].max(b[2]),
                    a[3].max(b[3]),
                ]
            },
        );
        (confidence >= min_confidence).then(|| Plate {
            plate,
            country: country.to_owned(),
            confidence,
            bounds,
        })
    };
    let mut found: Vec<Plate> = Vec::new();
    let mut used = vec![false; lines.len()];
    for i in 0..lines.len() {
        if used[i] {
            continue;
        }
        let mut parts = vec![i];
        if let Some(plate) = read(&parts) {
            used[i] = true;
            found.push(plate);
            continue;
        }
        while parts.len() < 3 {
            let last = lines[parts[parts.len() - 1]];
            let Some(next) = (0..lines.len())
                .find(|&j| !used[j] && !parts.contains(&j) && same_row(last, lines[j]))
            else {
                break;
            };
            parts.push(next);
            if let Some(plate) = read(&parts) {
                parts.iter().for_each(|&p| used[p] = true);
                found.push(plate);
                break;
            }
        }
    }
    found
}

/// Whether `right` continues `left`'s row of text: about as tall, level with it, and starting
/// past its middle, at most 1.5 of its heights after its end. Boxes are grown by the detector's
/// unclip margin, so two words a space apart overlap: by up to 0.8 of a height.
fn same_row(left: (&TextLine, &Reading, [f32; 4]), right: (&TextLine, &Reading, [f32; 4])) -> bool {
    let (a, b) = (left.2, right.2);
    let (ha, hb) = (a[3] - a[1], b[3] - b[1]);
    let gap = b[0] - a[2];
    let level = ((a[1] + a[3]) - (b[1] + b[3])).abs() / 2.0;
    let past_middle = b[0] > (a[0] + a[2]) / 2.0;
    hb > ha / 1.5
        && hb < ha * 1.5
        && level < ha / 2.0
        && past_middle
        && gap > -ha * 0.8
        && gap < ha * 1.5
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        left: f32,
        top: f32,
        width: f32,
        height: f32,
        text: &str,
        confidence: f32,
    ) -> (TextLine, Reading) {
        (
            TextLine {
                cx: left + width / 2.0,
                cy: top + height / 2.0,
                width,
                height,
                angle: 0.0,
            },
            Reading {
                text: text.to_owned(),
                confidence,
            },
        )
    }

    fn patterns() -> Patterns {
        "FR=[A-Z]{2}[0-9]{3}[A-Z]{2}; GB=[A-Z]{2}[0-9]{2}[A-Z]{3}"
            .parse()
            .expect("patterns")
    }

    #[test]
    fn separators_are_dropped_and_foreign_characters_disqualify() {
        assert_eq!(plate_characters("ab-123 cd").as_deref(), Some("AB123CD"));
        assert_eq!(plate_characters("AB·123"), Some("AB123".into()));
        assert_eq!(plate_characters("AB12福"), None);
        assert_eq!(plate_characters(" - "), None);
    }

    #[test]
    fn a_plate_is_a_whole_match_and_names_its_country() {
        let p = patterns();
        assert_eq!(p.country("AB123CD"), Some("FR"));
        assert_eq!(p.country("AB12CDE"), Some("GB"));
        assert_eq!(p.country("XAB123CD"), None);
        assert!(
            "FR=[A-Z"
                .parse::<Patterns>()
                .is_err_and(|e| e.to_string().contains("FR"))
        );
        assert!("".parse::<Patterns>().is_err());
        assert!(
            "just-a-regex"
                .parse::<Patterns>()
                .is_err_and(|e| e.to_string().contains("COUNTRY=regex"))
        );
    }

    #[test]
    fn a_plate_split_in_two_lines_is_read_whole_and_signs_are_not_plates() {
        let readings = [
            line(130.0, 50.0, 30.0, 20.0, "CDE", 0.95),
            line(100.0, 52.0, 25.0, 20.0, "AB12", 0.99),
            line(10.0, 10.0, 80.0, 20.0, "PARKING", 0.99),
            line(100.0, 150.0, 90.0, 20.0, "XY-123-ZZ", 0.97),
        ];
        let found = plates(&readings, &patterns(), 0.5);
        let names: Vec<(&str, &str)> = found
            .iter()
            .map(|p| (p.plate.as_str(), p.country.as_str()))
            .collect();
        assert_eq!(names, [("AB12CDE", "GB"), ("XY123ZZ", "FR")]);
        assert_eq!(found[0].bounds, [100.0, 50.0, 160.0, 72.0]);
        assert!((found[0].confidence - 0.95).abs() < 1e-6);
    }

    #[test]
    fn grown_boxes_of_two_words_overlap_and_still_make_one_plate() {
        // As found in a 1280x720 frame: "ZK89" and "WNV", 51 px high, overlapping by 27 px.
        let readings = [
            line(749.4, 469.4, 135.2, 51.2, "ZK89", 0.99),
            line(857.5, 469.5, 131.0, 51.0, "WNV", 0.94),
        ];
        let found = plates(&readings, &patterns(), 0.5);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].plate, "ZK89WNV");
    }

    #[test]
    fn lines_far_apart_or_unsure_are_no_plate() {
        let far = [
            line(0.0, 0.0, 25.0, 20.0, "AB12", 0.99),
            line(100.0, 0.0, 30.0, 20.0, "CDE", 0.99),
        ];
        assert!(plates(&far, &patterns(), 0.5).is_empty());
        let unsure = [line(0.0, 0.0, 90.0, 20.0, "AB-123-CD", 0.4)];
        assert!(plates(&unsure, &patterns(), 0.5).is_empty());
    }
}
