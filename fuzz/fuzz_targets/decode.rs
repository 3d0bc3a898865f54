//! One MQTT message under the prefix: never a panic, and every reading that comes out
//! is one the store may keep (a valid series name, a finite value, a time inside the
//! window).
#![no_main]

use centinela::source::decode::{Decoder, Limits};
use centinela::source::name::check_series;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    // First byte: retained or not; then the topic up to a newline; the rest is the payload.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let topic = String::from_utf8_lossy(&rest[..split]);
    let payload = rest.get(split + 1..).unwrap_or_default();
    let limits = Limits {
        max_future_ms: Some(300_000),
        max_past_ms: Some(30 * 86_400_000),
        max_series: Some(1_000),
    };
    let mut d = Decoder::with_mappings("sensors", 64 * 1024, &[], limits);
    let mut out = Vec::new();
    let topic = format!("sensors/{topic}");
    let _ = d.decode_message(&topic, payload, flags & 1 == 1, NOW, &mut out);
    for r in &out {
        assert!(check_series(&r.series).is_ok(), "{:?}", r.series);
        assert!(r.value.is_finite(), "{}", r.value);
        assert!(r.ts <= NOW + 300_000 && r.ts >= NOW - 30 * 86_400_000, "{}", r.ts);
    }
});
