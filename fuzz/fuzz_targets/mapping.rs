//! A message through the topic mappings people use (Zigbee2MQTT, Tasmota, Shelly,
//! Telegraf line protocol, plain numbers): never a panic, and every reading valid.
#![no_main]

use std::sync::OnceLock;

use centinela::config::{Config, MapConfig};
use centinela::source::decode::{Decoder, Limits};
use centinela::source::name::check_series;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000_000;

const MAPS: &str = r#"
[[ingest.map]]
filter = "zigbee2mqtt/+"
series = "zigbee/{1}"
[[ingest.map]]
filter = "tele/+/SENSOR"
series = "tasmota/{1}"
format = "json"
ts = "Time"
[[ingest.map]]
filter = "shellies/+/status/#"
series = "shelly/{1}/{#}"
fields = ["apower", "aenergy.total", "temperature.tC"]
unit = "W"
[[ingest.map]]
filter = "telegraf/+"
series = "telegraf/{1}"
format = "influx"
[[ingest.map]]
filter = "plain/#"
series = "plain/{#}"
format = "number"
"#;

const TOPICS: [&str; 6] = [
    "zigbee2mqtt/",
    "tele/",
    "shellies/",
    "telegraf/",
    "plain/",
    "sensors/",
];

fn maps() -> &'static [MapConfig] {
    static MAPS_CFG: OnceLock<Vec<MapConfig>> = OnceLock::new();
    MAPS_CFG.get_or_init(|| {
        Config::parse(MAPS, "<fuzz maps>")
            .expect("the fuzz mappings are valid")
            .ingest
            .map
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte: which mapping's topic family (and retained); then the rest of the
    // topic up to a newline; the rest is the payload.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let tail = String::from_utf8_lossy(&rest[..split]);
    let payload = rest.get(split + 1..).unwrap_or_default();
    let mut topic = TOPICS[pick as usize % TOPICS.len()].to_string();
    topic.push_str(&tail);
    if pick & 0x80 != 0 && topic.starts_with("tele/") {
        topic.push_str("/SENSOR");
    }
    let limits = Limits {
        max_future_ms: Some(300_000),
        max_past_ms: Some(30 * 86_400_000),
        max_series: Some(1_000),
    };
    let mut d = Decoder::with_mappings("sensors", 64 * 1024, maps(), limits);
    let mut out = Vec::new();
    let _ = d.decode_message(&topic, payload, pick & 0x40 != 0, NOW, &mut out);
    for r in &out {
        assert!(check_series(&r.series).is_ok(), "{:?}", r.series);
        assert!(r.value.is_finite(), "{}", r.value);
    }
});
