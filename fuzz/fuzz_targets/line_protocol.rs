//! InfluxDB line protocol as Telegraf sends it: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = centinela::source::line::parse(text);
        let _ = centinela::source::line::looks_like(text);
    }
});
