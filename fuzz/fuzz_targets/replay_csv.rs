//! A replay CSV file: never a panic; an error names a line inside the file.
#![no_main]

use centinela::engine::Zone;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for zone in [Zone::Utc, "+05:30".parse().unwrap_or_default()] {
        match centinela::source::csv::parse(text, "fuzz.csv", "#", zone) {
            Ok(readings) => assert!(readings.iter().all(|r| r.value.is_finite())),
            Err(e) => {
                let line = e.line.unwrap_or(1);
                assert!(line >= 1 && line <= text.lines().count().max(1), "{e}");
            }
        }
    }
});
