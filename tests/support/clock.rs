//! Times for readings that tests publish: recent enough to be inside the default
//! retention (older readings are refused as too old), fixed within the hour so minute
//! and hour boundaries fall where the tests expect them.

use std::time::{SystemTime, UNIX_EPOCH};

const HOUR_MS: i64 = 3_600_000;

/// Two days ago, 46 min 40 s into its hour (ms since the epoch).
pub fn past_t0() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64;
    now - now % HOUR_MS - 48 * HOUR_MS + 2_800_000
}
