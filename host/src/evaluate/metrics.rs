//! The metrics of an evaluation, as plain functions of expected and predicted values.
//!
//! No plugin and no I/O here, so every definition can be checked against a hand-computed case.
//! `docs/evaluation.md` states each definition; the conventions for empty cases are those of
//! scikit-learn's defaults (a precision with no prediction is 0).

use std::collections::BTreeSet;

/// Counts of (expected, predicted) label pairs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Confusion {
    /// Every label, expected or predicted, sorted: the rows and the columns.
    pub labels: Vec<String>,
    /// `counts[expected][predicted]`, indexed like `labels`.
    pub counts: Vec<Vec<u64>>,
    /// The labels that were expected somewhere: the classes that precision, recall and the
    /// macro averages are over (a prediction like `uncertain` is never a class).
    #[serde(skip)]
    classes: Vec<usize>,
}

impl Confusion {
    /// The matrix of `pairs` of (expected, predicted).
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)> + Clone) -> Self {
        let mut labels = BTreeSet::new();
        let mut expected = BTreeSet::new();
        for (e, p) in pairs.clone() {
            labels.insert(e);
            labels.insert(p);
            expected.insert(e);
        }
        let labels: Vec<String> = labels.into_iter().map(str::to_owned).collect();
        let index = |l: &str| labels.iter().position(|x| x == l).unwrap_or_default();
        let mut counts = vec![vec![0; labels.len()]; labels.len()];
        for (e, p) in pairs {
            counts[index(e)][index(p)] += 1;
        }
        let classes = expected.into_iter().map(index).collect();
        Self {
            labels,
            counts,
            classes,
        }
    }

    /// The classes (expected labels), in order.
    pub fn classes(&self) -> impl Iterator<Item = &str> {
        self.classes.iter().map(|&i| self.labels[i].as_str())
    }

    fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    fn tp_fp_fn(&self, i: usize) -> (u64, u64, u64) {
        let tp = self.counts[i][i];
        let predicted: u64 = self.counts.iter().map(|row| row[i]).sum();
        let expected: u64 = self.counts[i].iter().sum();
        (tp, predicted - tp, expected - tp)
    }

    /// Correct predictions over all predictions.
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.labels.len()).map(|i| self.counts[i][i]).sum();
        ratio(correct, self.total())
    }

    /// Precision, recall and F1 of `label`; `None` when it is not a label here.
    pub fn scores(&self, label: &str) -> Option<Scores> {
        let i = self.labels.iter().position(|l| l == label)?;
        let (tp, fp, fn_) = self.tp_fp_fn(i);
        Some(Scores::from_counts(tp, fp, fn_))
    }

    /// The F1 averaged over the classes, each class weighing the same.
    pub fn macro_f1(&self) -> f64 {
        let f1: Vec<f64> = self
            .classes
            .iter()
            .map(|&i| {
                let (tp, fp, fn_) = self.tp_fp_fn(i);
                Scores::from_counts(tp, fp, fn_).f1
            })
            .collect();
        mean(&f1)
    }

    /// The F1 of the counts summed over the classes, each sample weighing the same.
    pub fn micro_f1(&self) -> f64 {
        let (tp, fp, fn_) = self.classes.iter().fold((0, 0, 0), |acc, &i| {
            let (tp, fp, fn_) = self.tp_fp_fn(i);
            (acc.0 + tp, acc.1 + fp, acc.2 + fn_)
        });
        Scores::from_counts(tp, fp, fn_).f1
    }
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// True positives over predicted positives (0 with none predicted).
    pub precision: f64,
    /// True positives over actual positives (0 with none actual).
    pub recall: f64,
    /// Their harmonic mean (0 when both are 0).
    pub f1: f64,
}

impl Scores {
    fn from_counts(tp: u64, fp: u64, fn_: u64) -> Self {
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            f1,
        }
    }
}

/// The area under the ROC curve of `scores` for `positives` (one flag per score): the
/// probability that a positive scores above a negative, ties counting half (Mann-Whitney U).
/// `None` without both a positive and a negative.
pub fn roc_auc(scores: &[f64], positives: &[bool]) -> Option<f64> {
    let n_pos = positives.iter().filter(|p| **p).count();
    let n_neg = positives.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Ranks from 1, tied scores sharing their average rank.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos +=
            average_rank * order[i..=j].iter().filter(|&&k| positives[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// A time interval `[start, end)` in milliseconds.
pub type Interval = (f64, f64);

/// How found intervals (`predicted`) match labelled ones (`expected`) on one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SegmentCounts {
    /// Labelled time.
    pub expected_ms: f64,
    /// Found time.
    pub predicted_ms: f64,
    /// Time both labelled and found.
    pub overlap_ms: f64,
    /// Labelled segments.
    pub expected: u64,
    /// Labelled segments found (overlap over union at least the minimum).
    pub expected_found: u64,
    /// Found segments.
    pub predicted: u64,
    /// Found segments that match a labelled one.
    pub predicted_right: u64,
}

impl SegmentCounts {
    /// Compares one stream's intervals; `min_overlap` is the overlap over union at which two
    /// segments match.
    pub fn compare(expected: &[Interval], predicted: &[Interval], min_overlap: f64) -> Self {
        let (e, p) = (union(expected), union(predicted));
        let matches =
            |a: &Interval, others: &[Interval]| others.iter().any(|b| iou(*a, *b) >= min_overlap);
        Self {
            expected_ms: length(&e),
            predicted_ms: length(&p),
            overlap_ms: intersection(&e, &p),
            expected: expected.len() as u64,
            expected_found: expected.iter().filter(|a| matches(a, predicted)).count() as u64,
            predicted: predicted.len() as u64,
            predicted_right: predicted.iter().filter(|a| matches(a, expected)).count() as u64,
        }
    }

    /// The segment metrics by name.
    pub fn metrics(&self) -> [(&'static str, f64); 6] {
        // With nothing labelled and nothing found, nothing was missed or invented.
        let fraction = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 1.0 };
        let count = |part: u64, whole: u64| fraction(part as f64, whole as f64);
        [
            ("coverage", fraction(self.overlap_ms, self.expected_ms)),
            (
                "time_precision",
                fraction(self.overlap_ms, self.predicted_ms),
            ),
            ("missed_ms", self.expected_ms - self.overlap_ms),
            ("false_ms", self.predicted_ms - self.overlap_ms),
            ("segment_recall", count(self.expected_found, self.expected)),
            (
                "segment_precision",
                count(self.predicted_right, self.predicted),
            ),
        ]
    }
}

/// Counts over several streams are their sums.
impl std::ops::Add for SegmentCounts {
    type Output = Self;

    /// The sum of two streams' counts.
    fn add(self, o: Self) -> Self {
        Self {
            expected_ms: self.expected_ms + o.expected_ms,
            predicted_ms: self.predicted_ms + o.predicted_ms,
            overlap_ms: self.overlap_ms + o.overlap_ms,
            expected: self.expected + o.expected,
            expected_found: self.expected_found + o.expected_found,
            predicted: self.predicted + o.predicted,
            predicted_right: self.predicted_right + o.predicted_right,
        }
    }
}

/// Sorted, disjoint intervals covering the same time as `intervals`.
fn union(intervals: &[Interval]) -> Vec<Interval> {
    let mut sorted: Vec<Interval> = intervals.iter().copied().filter(|(s, e)| e > s).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<Interval> = Vec::with_capacity(sorted.len());
    for (s, e) in sorted {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn length(disjoint: &[Interval]) -> f64 {
    disjoint.iter().map(|(s, e)| e - s).sum()
}

/// The time two sets of disjoint intervals share.
fn intersection(a: &[Interval], b: &[Interval]) -> f64 {
    a.iter()
        .flat_map(|x| {
            b.iter()
                .map(move |y| (x.1.min(y.1) - x.0.max(y.0)).max(0.0))
        })
        .sum()
}

/// Overlap over union of two intervals.
fn iou(a: Interval, b: Interval) -> f64 {
    let overlap = (a.1.min(b.1) - a.0.max(b.0)).max(0.0);
    let union = (a.1 - a.0) + (b.1 - b.0) - overlap;
    if union > 0.0 { overlap / union } else { 0.0 }
}

/// A box `[x1, y1, x2, y2]` with its label, if it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Boxed {
    /// The corners: left, top, right, bottom.
    pub corners: [f64; 4],
    /// Its label.
    pub label: Option<String>,
}

/// How found boxes match labelled ones, over any number of frames.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BoxCounts {
    /// Labelled boxes.
    pub expected: u64,
    /// Found boxes.
    pub predicted: u64,
    /// Pairs matched.
    pub matched: u64,
    /// The sum of the matched pairs' overlap over union.
    pub iou_sum: f64,
    /// Labelled boxes whose best-overlapping found box (by place alone) has exactly its label.
    pub exact: u64,
    /// Characters of the labels of labelled boxes.
    pub label_chars: u64,
    /// Character edits (insertions, deletions, substitutions) from each labelled box's label to
    /// the label of the found box in its place; a box nothing was found at costs its whole label.
    pub char_errors: u64,
}

impl BoxCounts {
    /// Matches one frame's boxes: greedily, the pair with the largest overlap over union
    /// first, each box at most once, a pair only with an IoU of at least `min_iou` and the same
    /// label when both have one.
    pub fn add_frame(&mut self, expected: &[Boxed], predicted: &[Boxed], min_iou: f64) {
        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (i, e) in expected.iter().enumerate() {
            for (j, p) in predicted.iter().enumerate() {
                let same = match (&e.label, &p.label) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                let iou = box_iou(&e.corners, &p.corners);
                if same && iou >= min_iou {
                    pairs.push((iou, i, j));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut used_e, mut used_p) = (vec![false; expected.len()], vec![false; predicted.len()]);
        for (iou, i, j) in pairs {
            if !used_e[i] && !used_p[j] {
                used_e[i] = true;
                used_p[j] = true;
                self.matched += 1;
                self.iou_sum += iou;
            }
        }
        self.expected += expected.len() as u64;
        self.predicted += predicted.len() as u64;
        self.add_readings(expected, predicted, min_iou);
    }

    /// How well the labels were read where the boxes were found, for `exact_match` and `cer`:
    /// boxes paired by place alone (greedily, largest overlap first, at least `min_iou`), so
    /// that a misread label costs its wrong characters, not the whole box.
    fn add_readings(&mut self, expected: &[Boxed], predicted: &[Boxed], min_iou: f64) {
        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (i, e) in expected
            .iter()
            .enumerate()
            .filter(|(_, e)| e.label.is_some())
        {
            for (j, p) in predicted.iter().enumerate() {
                let iou = box_iou(&e.corners, &p.corners);
                if iou >= min_iou {
                    pairs.push((iou, i, j));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut read: Vec<Option<&str>> = vec![None; expected.len()];
        let mut used = vec![false; predicted.len()];
        for (_, i, j) in pairs {
            if read[i].is_none() && !used[j] {
                used[j] = true;
                read[i] = Some(predicted[j].label.as_deref().unwrap_or(""));
            }
        }
        for (e, found) in expected.iter().zip(read) {
            let Some(label) = &e.label else { continue };
            let chars = label.chars().count() as u64;
            self.label_chars += chars;
            match found {
                Some(text) if text == label => self.exact += 1,
                Some(text) => self.char_errors += edit_distance(label, text) as u64,
                None => self.char_errors += chars,
            }
        }
    }

    /// The detection metrics by name.
    pub fn metrics(&self) -> [(&'static str, f64); 6] {
        let precision = ratio(self.matched, self.predicted);
        let recall = ratio(self.matched, self.expected);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        let mean_iou = if self.matched > 0 {
            self.iou_sum / self.matched as f64
        } else {
            0.0
        };
        [
            ("precision", precision),
            ("recall", recall),
            ("f1", f1),
            ("mean_iou", mean_iou),
            ("exact_match", ratio(self.exact, self.expected)),
            (
                "cer",
                if self.label_chars > 0 {
                    self.char_errors as f64 / self.label_chars as f64
                } else {
                    0.0
                },
            ),
        ]
    }
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Overlap over union of two boxes.
fn box_iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let area = |r: &[f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let overlap = w * h;
    let union = area(a) + area(b) - overlap;
    if union > 0.0 { overlap / union } else { 0.0 }
}

/// The regression metrics by name, of (truth, prediction) pairs.
pub fn regression(pairs: &[(f64, f64)], tolerance: f64) -> [(&'static str, f64); 4] {
    let errors: Vec<f64> = pairs.iter().map(|(t, p)| (p - t).abs()).collect();
    let squares: Vec<f64> = errors.iter().map(|e| e * e).collect();
    let within = errors.iter().filter(|e| **e <= tolerance).count();
    [
        ("mae", mean(&errors)),
        ("rmse", mean(&squares).sqrt()),
        ("max_error", errors.iter().copied().fold(0.0, f64::max)),
        (
            "within_tolerance",
            ratio(within as u64, errors.len() as u64),
        ),
    ]
}

/// The `p`th percentile (0 < p ≤ 100) by nearest rank: the smallest value with at least p %
/// of the values at or below it. 0 for no values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The mean, 0 for no values.
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// 10 samples of three classes, counted by hand:
    ///
    /// ```text
    ///             predicted  a  b  c
    /// expected a             3  1  0
    /// expected b             0  2  1
    /// expected c             1  0  2
    /// ```
    fn three_classes() -> Confusion {
        let pairs = [
            ("a", "a"),
            ("a", "a"),
            ("a", "a"),
            ("a", "b"),
            ("b", "b"),
            ("b", "b"),
            ("b", "c"),
            ("c", "c"),
            ("c", "c"),
            ("c", "a"),
        ];
        Confusion::new(pairs.iter().copied())
    }

    #[test]
    fn a_confusion_matrix_counts_expected_by_predicted() {
        let m = three_classes();
        assert_eq!(m.labels, ["a", "b", "c"]);
        assert_eq!(m.counts, [[3, 1, 0], [0, 2, 1], [1, 0, 2]]);
        assert!(close(m.accuracy(), 0.7));
    }

    #[test]
    fn precision_recall_and_f1_match_the_hand_computed_values() {
        let m = three_classes();
        // a: tp 3, fp 1 (a c predicted a), fn 1 → P 3/4, R 3/4, F1 3/4.
        let a = m.scores("a").expect("present");
        assert!(close(a.precision, 0.75) && close(a.recall, 0.75) && close(a.f1, 0.75));
        // b: tp 2, fp 1, fn 1 → 2/3 each.
        let b = m.scores("b").expect("present");
        assert!(close(b.f1, 2.0 / 3.0));
        // c: tp 2, fp 1, fn 1 → 2/3 each.
        assert!(close(m.scores("c").expect("present").f1, 2.0 / 3.0));
        assert!(close(m.macro_f1(), (0.75 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0));
        // Every prediction is a class: micro F1 is the accuracy.
        assert!(close(m.micro_f1(), 0.7));
        assert_eq!(m.scores("d"), None);
    }

    #[test]
    fn a_prediction_that_is_no_class_counts_against_recall_only() {
        let pairs = [("a", "a"), ("a", "uncertain"), ("b", "b"), ("b", "b")];
        let m = Confusion::new(pairs.iter().copied());
        assert_eq!(m.classes().collect::<Vec<_>>(), ["a", "b"]);
        let a = m.scores("a").expect("present");
        assert!(close(a.precision, 1.0) && close(a.recall, 0.5));
        assert!(close(a.f1, 2.0 / 3.0));
        // micro: tp 3, fp 0, fn 1 → P 1, R 3/4, F1 6/7.
        assert!(close(m.micro_f1(), 6.0 / 7.0));
        assert!(close(m.macro_f1(), (2.0 / 3.0 + 1.0) / 2.0));
    }

    #[test]
    fn roc_auc_of_a_small_known_case() {
        // Positives score 0.9, 0.8, 0.4; negatives 0.7, 0.3, 0.4. Of the 9 pairs, the positive
        // wins 7 and ties 1 (0.4 against 0.4) → (7 + 0.5) / 9.
        let scores = [0.9, 0.8, 0.4, 0.7, 0.3, 0.4];
        let positives = [true, true, true, false, false, false];
        assert!(close(
            roc_auc(&scores, &positives).expect("present"),
            7.5 / 9.0
        ));
        // Perfectly separated, and reversed.
        assert_eq!(roc_auc(&[0.9, 0.1], &[true, false]), Some(1.0));
        assert_eq!(roc_auc(&[0.1, 0.9], &[true, false]), Some(0.0));
        // Undefined without both kinds.
        assert_eq!(roc_auc(&[0.5, 0.6], &[true, true]), None);
    }

    #[test]
    fn segments_measure_covered_missed_and_invented_time() {
        // Labelled: 1000-2000 and 3000-4000. Found: 1200-2100 (matches the first: IoU
        // 800/1100), 3900-4500 (IoU 100/1500: no match) and 6000-6500 (invented).
        let expected = [(1000.0, 2000.0), (3000.0, 4000.0)];
        let predicted = [(1200.0, 2100.0), (3900.0, 4500.0), (6000.0, 6500.0)];
        let c = SegmentCounts::compare(&expected, &predicted, 0.5);
        assert!(close(c.expected_ms, 2000.0));
        assert!(close(c.predicted_ms, 2000.0));
        assert!(close(c.overlap_ms, 900.0));
        let m: std::collections::BTreeMap<_, _> = c.metrics().into_iter().collect();
        assert!(close(m["coverage"], 0.45));
        assert!(close(m["time_precision"], 0.45));
        assert!(close(m["missed_ms"], 1100.0));
        assert!(close(m["false_ms"], 1100.0));
        assert!(close(m["segment_recall"], 0.5));
        assert!(close(m["segment_precision"], 1.0 / 3.0));
    }

    #[test]
    fn overlapping_found_segments_count_their_time_once() {
        let c = SegmentCounts::compare(&[(0.0, 100.0)], &[(0.0, 60.0), (40.0, 100.0)], 0.5);
        assert!(close(c.predicted_ms, 100.0) && close(c.overlap_ms, 100.0));
    }

    #[test]
    fn boxes_match_greedily_by_overlap_and_label() {
        let b = |x1: f64, y1: f64, x2: f64, y2: f64, label: Option<&str>| Boxed {
            corners: [x1, y1, x2, y2],
            label: label.map(str::to_owned),
        };
        // Two plates labelled; found: one on the first (IoU 80/100 = 0.8), one half off the
        // second (IoU 50/150 = 1/3, under 0.5), one with the wrong label on the first.
        let expected = [
            b(0.0, 0.0, 10.0, 10.0, Some("AB123")),
            b(20.0, 0.0, 30.0, 10.0, Some("CD456")),
        ];
        let predicted = [
            b(0.0, 0.0, 10.0, 8.0, Some("AB123")),
            b(25.0, 0.0, 35.0, 10.0, Some("CD456")),
            b(0.0, 0.0, 10.0, 10.0, Some("XX999")),
        ];
        let mut c = BoxCounts::default();
        c.add_frame(&expected, &predicted, 0.5);
        assert_eq!((c.expected, c.predicted, c.matched), (2, 3, 1));
        let m: std::collections::BTreeMap<_, _> = c.metrics().into_iter().collect();
        assert!(close(m["precision"], 1.0 / 3.0));
        assert!(close(m["recall"], 0.5));
        assert!(close(m["f1"], 0.4));
        assert!(close(m["mean_iou"], 0.8));
        // Read by place alone, the box of XX999 overlaps the first plate best (IoU 1): 5 edits
        // of 5; nothing lies on the second at 0.5 or more: 5 missed. CER 10/10, no exact match.
        assert_eq!((c.exact, c.char_errors, c.label_chars), (0, 10, 10));
        assert!(close(m["exact_match"], 0.0) && close(m["cer"], 1.0));
        // Without labels the best pair wins and each box is used once.
        let mut c = BoxCounts::default();
        c.add_frame(
            &[b(0.0, 0.0, 10.0, 10.0, None)],
            &[b(0.0, 0.0, 10.0, 9.0, None), b(0.0, 0.0, 10.0, 10.0, None)],
            0.5,
        );
        assert_eq!(c.matched, 1);
        assert!(close(c.iou_sum, 1.0));
    }

    #[test]
    fn reading_metrics_count_character_edits_where_boxes_were_found() {
        let b = |x1: f64, label: &str| Boxed {
            corners: [x1, 0.0, x1 + 10.0, 10.0],
            label: Some(label.to_owned()),
        };
        let mut c = BoxCounts::default();
        // One read exactly, one with a letter wrong (1 edit), one missing a letter (1 edit),
        // one not found at all (its 4 characters); an extra found box costs no characters.
        c.add_frame(
            &[
                b(0.0, "AB12"),
                b(20.0, "CD34"),
                b(40.0, "EF56"),
                b(60.0, "GH78"),
            ],
            &[
                b(0.0, "AB12"),
                b(20.0, "CO34"),
                b(40.0, "EF5"),
                b(90.0, "ZZ99"),
            ],
            0.5,
        );
        assert_eq!((c.exact, c.char_errors, c.label_chars), (1, 6, 16));
        let m: std::collections::BTreeMap<_, _> = c.metrics().into_iter().collect();
        assert!(close(m["exact_match"], 0.25) && close(m["cer"], 6.0 / 16.0));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn regression_errors() {
        let m: std::collections::BTreeMap<_, _> =
            regression(&[(1.0, 1.5), (2.0, 2.0), (3.0, 1.0)], 0.5)
                .into_iter()
                .collect();
        assert!(close(m["mae"], 2.5 / 3.0));
        assert!(close(m["rmse"], (4.25f64 / 3.0).sqrt()));
        assert!(close(m["max_error"], 2.0));
        assert!(close(m["within_tolerance"], 2.0 / 3.0));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), 2.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
