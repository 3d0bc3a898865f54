//! A configuration file: parsed and validated without a panic; an error names a
//! position inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = centinela::config::Config::parse(text, "fuzz.toml") {
        if let Some(line) = e.line {
            assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "{e}");
        }
    }
});
