//! Speech segments from per-frame speech probabilities: a state machine with hysteresis, a
//! minimum speech duration, a minimum silence that ends speech, and a maximum speech length.
//! Positions are in samples since the stream began.

/// The rules, in samples.
#[derive(Clone, Copy)]
pub struct Rules {
    /// A frame at or above this probability is speech.
    pub threshold: f32,
    /// Speech goes on while the probability stays at or above `threshold - hysteresis`.
    pub hysteresis: f32,
    /// Speech shorter than this is not reported.
    pub min_speech: u64,
    /// Silence this long ends speech.
    pub min_silence: u64,
    /// Speech this long is cut: an end, and a new start where it goes on.
    pub max_speech: u64,
}

/// A change the segmenter reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Speech began at this position.
    Start(u64),
    /// Speech that began at `from` ended at `at`; `cut` when it reached the maximum length.
    End {
        /// Where it began.
        from: u64,
        /// Where it ended.
        at: u64,
        /// Whether the maximum length cut it.
        cut: bool,
    },
}

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Segmenter {
    /// No speech.
    #[default]
    Silence,
    /// Speech since `from`; silent since `silence_from` if so. Reported once its speech (up
    /// to the current silence) lasts `min_speech`; until then it may still end unreported.
    Speech {
        /// Where it began.
        from: u64,
        /// Where the current run of silence within it began.
        silence_from: Option<u64>,
        /// Whether its start was reported.
        reported: bool,
    },
}

impl Segmenter {
    /// Advances by one frame from `at` to `end` with speech probability `p`; the changes go
    /// to `out`.
    pub fn step(&mut self, p: f32, at: u64, end: u64, rules: &Rules, out: &mut Vec<Change>) {
        let low = rules.threshold - rules.hysteresis;
        let (from, silence_from, reported) = match *self {
            Segmenter::Silence if p >= rules.threshold => (at, None, false),
            Segmenter::Silence => return,
            Segmenter::Speech { from, reported, .. } if p >= low => (from, None, reported),
            Segmenter::Speech {
                from,
                silence_from,
                reported,
            } => {
                let silence_from = silence_from.unwrap_or(at);
                if end - silence_from >= rules.min_silence {
                    // Over; shorter speech than the minimum ends unreported.
                    if reported {
                        out.push(Change::End {
                            from,
                            at: silence_from,
                            cut: false,
                        });
                    }
                    *self = Segmenter::Silence;
                    return;
                }
                (from, Some(silence_from), reported)
            }
        };
        let spoken_until = silence_from.unwrap_or(end);
        let reported = reported || {
            let long_enough = spoken_until - from >= rules.min_speech;
            if long_enough {
                out.push(Change::Start(from));
            }
            long_enough
        };
        *self = Segmenter::Speech {
            from,
            silence_from,
            reported,
        };
        if reported && end - from >= rules.max_speech {
            // Cut here; what goes on is a new segment (unless it is already trailing off).
            out.push(Change::End {
                from,
                at: end,
                cut: true,
            });
            *self = match silence_from {
                None => {
                    out.push(Change::Start(end));
                    Segmenter::Speech {
                        from: end,
                        silence_from: None,
                        reported: true,
                    }
                }
                Some(_) => Segmenter::Silence,
            };
        }
    }
}
