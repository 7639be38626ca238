//! Vehicles through a gate: each plate reported once per visit, and counted per window.
//!
//! A plate seen again within the dedupe window of its last sighting is the same visit (a car
//! waits at the barrier across many frames). Time is the frame's arrival time at the gateway,
//! so a replayed stream counts as it did live. A plugin has no timer: a window's count is
//! published by the first frame of a later window, for every window in which frames arrived.

use std::collections::HashMap;

/// A count window that has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub from_ms: u64,
    pub to_ms: u64,
    pub vehicles: u64,
}

/// Sightings above this many per camera are forgotten oldest first: a hostile stream of ever
/// new plates cannot grow the plugin's memory without bound.
const MAX_PLATES: usize = 4096;

/// One camera's sightings and its open count window.
#[derive(Debug, Default)]
struct Camera {
    last_seen: HashMap<String, u64>,
    window_start: Option<u64>,
    vehicles: u64,
    last_frame_ms: u64,
}

/// Every camera's state, at most `max_cameras` of them.
#[derive(Debug)]
pub struct Traffic {
    cameras: HashMap<String, Camera>,
    dedupe_ms: u64,
    window_ms: u64,
    max_cameras: usize,
}

impl Traffic {
    pub fn new(dedupe_ms: u64, window_ms: u64, max_cameras: usize) -> Self {
        Traffic {
            cameras: HashMap::new(),
            dedupe_ms,
            window_ms: window_ms.max(1),
            max_cameras: max_cameras.max(1),
        }
    }

    /// A frame from `camera` at `at_ms`: closes its count window if the frame is past it.
    pub fn frame(&mut self, camera: &str, at_ms: u64) -> Option<Count> {
        if !self.cameras.contains_key(camera) && self.cameras.len() >= self.max_cameras {
            let stalest = self
                .cameras
                .iter()
                .min_by_key(|(_, c)| c.last_frame_ms)
                .map(|(name, _)| name.clone());
            stalest.map(|name| self.cameras.remove(&name));
        }
        let window_ms = self.window_ms;
        let cam = self.cameras.entry(camera.to_owned()).or_default();
        cam.last_frame_ms = at_ms;
        let start = at_ms - at_ms % window_ms;
        match cam.window_start {
            Some(open) if start > open => {
                let count = Count {
                    from_ms: open,
                    to_ms: open + window_ms,
                    vehicles: cam.vehicles,
                };
                cam.window_start = Some(start);
                cam.vehicles = 0;
                Some(count)
            }
            Some(_) => None,
            None => {
                cam.window_start = Some(start);
                None
            }
        }
    }

    /// `plate` seen by `camera` at `at_ms`: true when it is a new visit (report and count it),
    /// false when the plate was seen within the dedupe window.
    pub fn sighting(&mut self, camera: &str, plate: &str, at_ms: u64) -> bool {
        let dedupe_ms = self.dedupe_ms;
        let cam = self.cameras.entry(camera.to_owned()).or_default();
        let new_visit = cam
            .last_seen
            .get(plate)
            .is_none_or(|&last| at_ms.saturating_sub(last) > dedupe_ms);
        if cam.last_seen.len() >= MAX_PLATES && !cam.last_seen.contains_key(plate) {
            cam.last_seen
                .retain(|_, &mut last| at_ms.saturating_sub(last) <= dedupe_ms);
            if cam.last_seen.len() >= MAX_PLATES {
                let oldest = cam
                    .last_seen
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(p, _)| p.clone());
                oldest.map(|p| cam.last_seen.remove(&p));
            }
        }
        cam.last_seen.insert(plate.to_owned(), at_ms);
        if new_visit {
            cam.vehicles += 1;
        }
        new_visit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_car_is_one_visit_until_it_has_been_gone_a_window() {
        let mut t = Traffic::new(30_000, 60_000, 8);
        assert!(t.sighting("gate", "AB123CD", 1_000));
        assert!(!t.sighting("gate", "AB123CD", 20_000));
        // 29 s after the last sighting: still the same visit.
        assert!(!t.sighting("gate", "AB123CD", 49_000));
        assert!(t.sighting("gate", "AB123CD", 79_001));
        // Cameras are apart: the next gate sees it anew.
        assert!(t.sighting("exit", "AB123CD", 79_500));
    }

    #[test]
    fn a_window_is_counted_at_the_first_frame_after_it() {
        let mut t = Traffic::new(30_000, 60_000, 8);
        assert_eq!(t.frame("gate", 61_000), None);
        t.sighting("gate", "AB123CD", 61_000);
        t.sighting("gate", "XY987ZW", 70_000);
        t.sighting("gate", "AB123CD", 80_000);
        assert_eq!(t.frame("gate", 119_999), None);
        assert_eq!(
            t.frame("gate", 185_000),
            Some(Count {
                from_ms: 60_000,
                to_ms: 120_000,
                vehicles: 2
            })
        );
        // The window without frames (120–180 s) is not reported; the open one starts at 180 s.
        assert_eq!(
            t.frame("gate", 240_000),
            Some(Count {
                from_ms: 180_000,
                to_ms: 240_000,
                vehicles: 0
            })
        );
    }

    #[test]
    fn state_stays_bounded() {
        let mut t = Traffic::new(1_000_000, 60_000, 2);
        for (i, cam) in ["a", "b", "c"].into_iter().enumerate() {
            t.frame(cam, i as u64);
        }
        assert_eq!(t.cameras.len(), 2);
        assert!(!t.cameras.contains_key("a"));
        for i in 0..(MAX_PLATES as u64 + 10) {
            t.sighting("b", &format!("P{i}"), i);
        }
        assert_eq!(t.cameras["b"].last_seen.len(), MAX_PLATES);
        assert!(!t.cameras["b"].last_seen.contains_key("P0"));
    }
}
