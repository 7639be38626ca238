//! The wall clock, as the gateway reads it: milliseconds since the Unix epoch.
//!
//! One place reads `SystemTime`, so every timestamp the gateway writes (journal entries,
//! status, command checks) comes from the same source. A clock before 1970 reads as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
