//! The decoder against the payloads devices send, good and bad.

use super::*;
use crate::config::MapFormat;

const NOW: Timestamp = 1_700_000_000_000;

type Got = Vec<(String, f64, Timestamp, Option<String>)>;

fn run(topic: &str, payload: &[u8]) -> Result<Got, &'static str> {
    let mut d = Decoder::new("sensors", 1024);
    let mut out = Vec::new();
    d.decode(topic, payload, NOW, &mut out)
        .map_err(|e| e.reason())?;
    Ok(out
        .into_iter()
        .map(|r| {
            (
                r.series.to_string(),
                r.value,
                r.ts,
                r.unit.map(|u| u.to_string()),
            )
        })
        .collect())
}

fn one(series: &str, value: f64, ts: Timestamp, unit: Option<&str>) -> Got {
    vec![(series.to_string(), value, ts, unit.map(str::to_string))]
}

#[test]
fn good_payloads() {
    let t = "sensors/greenhouse/node1/temperature";
    let s = "greenhouse/node1/temperature";
    let cases: &[(&str, &[u8], Got)] = &[
        (t, b"21.5", one(s, 21.5, NOW, None)),
        (t, b" -3 \n", one(s, -3.0, NOW, None)),
        (t, b"1e3", one(s, 1000.0, NOW, None)),
        (t, b"true", one(s, 1.0, NOW, None)),
        (t, br#"{"value":21.5}"#, one(s, 21.5, NOW, None)),
        (
            t,
            r#"{"value":21.5,"ts":1700000001000,"unit":"°C"}"#.as_bytes(),
            one(s, 21.5, 1_700_000_001_000, Some("°C")),
        ),
        (
            t,
            br#"{"value":21.5,"ts":1700000002}"#,
            one(s, 21.5, 1_700_000_002_000, None),
        ),
        (
            t,
            br#"{"value":"22.25","ts":"2023-11-14T22:13:20.500Z"}"#,
            one(s, 22.25, 1_700_000_000_500, None),
        ),
        (
            t,
            br#"{"value":1,"ts":"2023-11-14T23:13:20+01:00"}"#,
            one(s, 1.0, 1_700_000_000_000, None),
        ),
        (t, br#"{"value":21.5,"ts":null}"#, one(s, 21.5, NOW, None)),
    ];
    for (topic, payload, want) in cases {
        assert_eq!(
            &run(topic, payload).unwrap(),
            want,
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
}

#[test]
fn object_of_fields_yields_one_reading_per_field() {
    let got = run(
        "sensors/lab/node7",
        br#"{"humidity":40.5,"co2":612,"status":"ok","ts":1700000003000}"#,
    )
    .unwrap();
    let mut got: Vec<_> = got.into_iter().map(|(s, v, ts, _)| (s, v, ts)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("lab/node7/co2".to_string(), 612.0, 1_700_000_003_000),
            ("lab/node7/humidity".to_string(), 40.5, 1_700_000_003_000)
        ]
    );
}

#[test]
fn bad_payloads_are_named_by_reason() {
    let t = "sensors/a/b/c";
    let big = vec![b'1'; 2000];
    let cases: &[(&str, &[u8], &str)] = &[
        (t, b"warm", "not_a_number"),
        (t, b"", "not_a_number"),
        (t, b"NaN", "not_finite"),
        (t, b"inf", "not_finite"),
        (t, b"-infinity", "not_finite"),
        (t, b"\xff\xfe21", "invalid_utf8"),
        (t, &big, "oversized"),
        ("other/a/b", b"1", "outside_prefix"),
        ("sensors", b"1", "outside_prefix"),
        ("sensors/", b"1", "outside_prefix"),
        ("sensors/a//b", b"1", "outside_prefix"),
        ("sensorsX/a", b"1", "outside_prefix"),
        (t, br#"{"value":21.5"#, "malformed_json"),
        (t, br#"{"value":"hot"}"#, "not_a_number"),
        (t, br#"{"value":1e999}"#, "malformed_json"),
        (t, br#"{"status":"ok"}"#, "no_numeric_fields"),
        (t, br#"{"value":1,"ts":"yesterday"}"#, "bad_timestamp"),
        (t, br#"{"value":1,"ts":-5}"#, "bad_timestamp"),
        (t, br#"{"a":1,"b":"NaN"}"#, "not_finite"),
    ];
    for (topic, payload, reason) in cases {
        assert_eq!(
            run(topic, payload),
            Err(*reason),
            "{topic} {}",
            String::from_utf8_lossy(payload)
        );
    }
}

#[test]
fn a_bad_field_drops_the_whole_message() {
    let mut d = Decoder::new("sensors", 1024);
    let mut out = Vec::new();
    assert!(d
        .decode("sensors/a", br#"{"x":1,"y":"inf"}"#, NOW, &mut out)
        .is_err());
    assert!(out.is_empty());
}

#[test]
fn empty_prefix_takes_the_whole_topic() {
    let mut d = Decoder::new("", 1024);
    let mut out = Vec::new();
    d.decode("home/t", b"1", NOW, &mut out).unwrap();
    assert_eq!(&*out[0].series, "home/t");
}

#[test]
fn series_names_are_interned() {
    let mut d = Decoder::new("sensors", 1024);
    let mut out = Vec::new();
    d.decode("sensors/a/b", b"1", NOW, &mut out).unwrap();
    d.decode("sensors/a/b", b"2", NOW, &mut out).unwrap();
    assert!(Arc::ptr_eq(&out[0].series, &out[1].series));
}

fn mapping(filter: &str, series: &str, format: MapFormat) -> MapConfig {
    MapConfig {
        filter: filter.into(),
        series: series.into(),
        format,
        fields: vec![],
        ts: None,
        unit: None,
    }
}

const DAY: i64 = 86_400_000;

fn limits() -> Limits {
    Limits {
        max_future_ms: Some(300_000),
        max_past_ms: Some(30 * DAY),
        max_series: None,
    }
}

/// (readings as (series, value, ts), refused reasons, skipped fields)
type Mapped = (Vec<(String, f64, Timestamp)>, Vec<&'static str>, usize);

fn mapped(maps: &[MapConfig], topic: &str, payload: &str) -> Result<Mapped, &'static str> {
    let mut d = Decoder::with_mappings("sensors", 64 * 1024, maps, limits());
    let mut out = Vec::new();
    d.decode(topic, payload.as_bytes(), NOW, &mut out)
        .map_err(|e| e.reason())?;
    Ok((
        out.into_iter()
            .map(|r| (r.series.to_string(), r.value, r.ts))
            .collect(),
        d.refused().iter().map(DecodeError::reason).collect(),
        d.skipped(),
    ))
}

fn r(s: &str, v: f64) -> (String, f64, Timestamp) {
    (s.to_string(), v, NOW)
}

#[test]
fn device_payloads_through_mappings() {
    let z2m = mapping("zigbee2mqtt/+", "zigbee/{1}", MapFormat::Auto);
    let mut tasmota = mapping("tele/+/SENSOR", "tasmota/{1}", MapFormat::Json);
    tasmota.ts = Some("Time".into());
    let mut shelly = mapping("+/status/switch:0", "shelly/{1}", MapFormat::Auto);
    shelly.fields = vec![
        "apower".into(),
        "voltage".into(),
        "aenergy.total".into(),
        "temperature.tC".into(),
    ];
    let mut esphome = mapping("+/sensor/+/state", "esphome/{1}/{2}", MapFormat::Number);
    esphome.unit = Some("°C".into());
    let ha = mapping("homeassistant/+/+/state", "ha/{1}/{2}", MapFormat::Auto);
    let telegraf = mapping("telegraf/+/#", "telegraf/{1}", MapFormat::Auto);
    let maps = [z2m, tasmota, shelly, esphome, ha, telegraf];
    let t = "2023-11-14T22:10:00";
    let cases: Vec<(&str, String, Mapped)> = vec![
        (
            "zigbee2mqtt/living_room",
            r#"{"battery":100,"humidity":58.3,"linkquality":65,"temperature":21.7,"voltage":3000,"contact":false,"update":{"state":"idle"}}"#.into(),
            (
                vec![
                    r("zigbee/living_room/battery", 100.0),
                    r("zigbee/living_room/contact", 0.0),
                    r("zigbee/living_room/humidity", 58.3),
                    r("zigbee/living_room/linkquality", 65.0),
                    r("zigbee/living_room/temperature", 21.7),
                    r("zigbee/living_room/voltage", 3000.0),
                ],
                vec![],
                1,
            ),
        ),
        (
            "tele/kitchen/SENSOR",
            format!(r#"{{"Time":"{t}","AM2301":{{"Temperature":22.3,"Humidity":40.1}},"TempUnit":"C"}}"#),
            (
                vec![
                    ("tasmota/kitchen/AM2301/Humidity".into(), 40.1, NOW - 200_000),
                    ("tasmota/kitchen/AM2301/Temperature".into(), 22.3, NOW - 200_000),
                ],
                vec![],
                1,
            ),
        ),
        (
            "shellyplus1pm-441793d69718/status/switch:0",
            r#"{"id":0,"source":"init","output":true,"apower":8.9,"voltage":237.5,"current":0.04,"aenergy":{"total":6.532,"by_minute":[45.9,47.1,45.9],"minute_ts":1654511700},"temperature":{"tC":23.5,"tF":74.4}}"#.into(),
            (
                vec![
                    r("shelly/shellyplus1pm-441793d69718/apower", 8.9),
                    r("shelly/shellyplus1pm-441793d69718/voltage", 237.5),
                    r("shelly/shellyplus1pm-441793d69718/aenergy/total", 6.532),
                    r("shelly/shellyplus1pm-441793d69718/temperature/tC", 23.5),
                ],
                vec![],
                0,
            ),
        ),
        (
            "livingroom/sensor/temperature/state",
            "21.4".into(),
            (vec![r("esphome/livingroom/temperature", 21.4)], vec![], 0),
        ),
        ("homeassistant/light/porch/state", "on".into(), (vec![r("ha/light/porch", 1.0)], vec![], 0)),
        ("homeassistant/switch/pump/state", "OFF".into(), (vec![r("ha/switch/pump", 0.0)], vec![], 0)),
        (
            "telegraf/host1/cpu",
            "cpu,cpu=cpu-total,host=host1 usage_idle=97.5,usage_user=1.2 1699999990000000000\nmem,host=host1 used=5i,used_human=\"5 B\" 1699999990000000000".into(),
            (
                vec![
                    ("telegraf/host1/cpu/usage_idle".into(), 97.5, NOW - 10_000),
                    ("telegraf/host1/cpu/usage_user".into(), 1.2, NOW - 10_000),
                    ("telegraf/host1/mem/used".into(), 5.0, NOW - 10_000),
                ],
                vec![],
                1,
            ),
        ),
        // Not mapped: the prefix still reads it as before.
        ("sensors/a/b", "1".into(), (vec![r("a/b", 1.0)], vec![], 0)),
    ];
    for (topic, payload, want) in cases {
        assert_eq!(
            mapped(&maps, topic, &payload),
            Ok(want),
            "{topic} {payload}"
        );
    }
    let mut d = Decoder::with_mappings("sensors", 1024, &maps, limits());
    let mut out = Vec::new();
    d.decode(
        "livingroom/sensor/temperature/state",
        b"21.4",
        NOW,
        &mut out,
    )
    .unwrap();
    assert_eq!(out[0].unit.as_deref(), Some("°C"));
}

#[test]
fn the_first_matching_mapping_decides() {
    let maps = [
        mapping("home/+/power", "power/{1}", MapFormat::Number),
        mapping("home/#", "home/{#}", MapFormat::Number),
    ];
    assert_eq!(
        mapped(&maps, "home/k/power", "5").unwrap().0,
        vec![r("power/k", 5.0)]
    );
    assert_eq!(
        mapped(&maps, "home/k/other", "6").unwrap().0,
        vec![r("home/k/other", 6.0)]
    );
    assert_eq!(mapped(&maps, "elsewhere", "6"), Err("outside_prefix"));
}

#[test]
fn mapped_payloads_that_give_nothing_or_are_bad() {
    let auto = [mapping("d/+", "d/{1}", MapFormat::Auto)];
    let json = [mapping("d/+", "d/{1}", MapFormat::Json)];
    let influx = [mapping("d/+", "d/{1}", MapFormat::Influx)];
    let number = [mapping("d/+", "d/{1}", MapFormat::Number)];
    // Only strings: nothing to read, counted as skipped, not an error.
    assert_eq!(
        mapped(&auto, "d/button", r#"{"action":"single","list":[1,2]}"#),
        Ok((vec![], vec![], 2))
    );
    assert_eq!(mapped(&auto, "d/x", "idle"), Err("not_a_number"));
    assert_eq!(mapped(&auto, "d/x", "{\"a\":"), Err("malformed_json"));
    assert_eq!(mapped(&auto, "d/x", "cpu v=abc"), Err("bad_line_protocol"));
    assert_eq!(mapped(&json, "d/x", "[1,2]"), Err("not_a_number"));
    assert_eq!(
        mapped(&json, "d/x", "7"),
        Ok((vec![r("d/x", 7.0)], vec![], 0))
    );
    assert_eq!(mapped(&influx, "d/x", "21.5"), Err("bad_line_protocol"));
    assert_eq!(mapped(&number, "d/x", "{\"a\":1}"), Err("not_a_number"));
    assert_eq!(mapped(&number, "d/x", "NaN"), Err("not_finite"));
    let mut ts = mapping("d/+", "d/{1}", MapFormat::Json);
    ts.ts = Some("meta.ts".into());
    assert_eq!(
        mapped(&[ts.clone()], "d/x", r#"{"v":1,"meta":{"ts":"soon"}}"#),
        Err("bad_timestamp")
    );
    assert_eq!(
        mapped(&[ts], "d/x", r#"{"v":1,"meta":{"ts":1699999999000}}"#),
        Ok((vec![("d/x/v".into(), 1.0, NOW - 1000)], vec![], 0))
    );
}

#[test]
fn bad_series_names_are_refused_one_by_one() {
    let maps = [mapping("z/+", "z/{1}", MapFormat::Json)];
    let (got, refused, _) = mapped(
        &maps,
        "z/dev",
        "{\"ok\":1,\"a+b\":2,\"c#\":3,\"\":4,\"nul\\u0000\":5,\"esc\\u001b[2J\":6}",
    )
    .unwrap();
    assert_eq!(got, vec![r("z/dev/ok", 1.0)]);
    let mut refused = refused;
    refused.sort_unstable();
    assert_eq!(
        refused,
        vec![
            "series_control_char",
            "series_empty_level",
            "series_nul",
            "series_wildcard",
            "series_wildcard"
        ]
    );
    let long = format!("{{\"{}\":1}}", "k".repeat(300));
    assert_eq!(
        mapped(&maps, "z/dev", &long).unwrap().1,
        vec!["series_too_long"]
    );
    // The prefix path checks its names the same way.
    let (got, refused, _) = mapped(&[], "sensors/a/b\u{7}", "1").unwrap();
    assert!(got.is_empty());
    assert_eq!(refused, vec!["series_control_char"]);
}

#[test]
fn bad_units_are_dropped_and_counted() {
    let mut d = Decoder::new("sensors", 64 * 1024);
    let mut out = Vec::new();
    let long = format!(r#"{{"value":1,"unit":"{}"}}"#, "x".repeat(10_000));
    d.decode("sensors/a/b", long.as_bytes(), NOW, &mut out)
        .unwrap();
    assert_eq!(d.refused()[0].reason(), "unit_too_long");
    d.decode(
        "sensors/a/b",
        br#"{"value":2,"unit":"\u001b[31m"}"#,
        NOW,
        &mut out,
    )
    .unwrap();
    assert_eq!(d.refused()[0].reason(), "unit_control_char");
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|r| r.unit.is_none()));
}

#[test]
fn timestamps_outside_the_window_are_refused() {
    let cases: &[(&str, Option<&str>)] = &[
        (
            r#"{"value":20,"ts":"3000-01-01T00:00:00Z"}"#,
            Some("future_timestamp"),
        ),
        (
            r#"{"value":20,"ts":1700000301000}"#,
            Some("future_timestamp"),
        ),
        (r#"{"value":20,"ts":1700000299000}"#, None),
        (r#"{"value":20,"ts":0}"#, Some("too_old")),
        (
            r#"{"value":20,"ts":"0001-01-01T00:00:00Z"}"#,
            Some("too_old"),
        ),
        (
            r#"{"value":20,"ts":"1970-01-01T00:00:00Z"}"#,
            Some("too_old"),
        ),
        (r#"{"value":20,"ts":1697000000000}"#, Some("too_old")),
        (r#"{"value":20,"ts":1698000000000}"#, None),
        (
            r#"{"a":1,"b":2,"ts":"3000-01-01T00:00:00Z"}"#,
            Some("future_timestamp"),
        ),
    ];
    for (payload, want) in cases {
        let (got, refused, _) = mapped(&[], "sensors/a/b", payload).unwrap();
        match want {
            Some(reason) => {
                assert!(got.is_empty(), "{payload}");
                assert!(
                    !refused.is_empty() && refused.iter().all(|r| r == reason),
                    "{payload}: {refused:?}"
                );
            }
            None => assert_eq!((got.len(), refused.len()), (1, 0), "{payload}"),
        }
    }
    let influx = [mapping("t/+", "t/{1}", MapFormat::Influx)];
    let (got, refused, _) =
        mapped(&influx, "t/h", "cpu v=1 32503680000000000000").unwrap_or_default();
    assert!(
        got.is_empty() && refused.is_empty(),
        "a timestamp past i64 ns is a parse error"
    );
    let (got, refused, _) = mapped(&influx, "t/h", "cpu v=1 7258118400000000000").unwrap();
    assert_eq!((got.len(), refused), (0, vec!["future_timestamp"]));
    // Without limits (a viewer) nothing is refused.
    let (got, _) = (run("sensors/a", br#"{"value":1,"ts":0}"#).unwrap(), ());
    assert_eq!(got.len(), 1);
}

#[test]
fn new_series_past_max_series_are_refused_and_known_ones_go_on() {
    let cap = Limits {
        max_series: Some(3),
        ..limits()
    };
    let mut d = Decoder::with_mappings("sensors", 1024, &[], cap);
    d.remember("stored/one", NOW - 60_000);
    let mut out = Vec::new();
    let mut go = |d: &mut Decoder, topic: &str| {
        out.clear();
        d.decode_message(topic, b"1", false, NOW, &mut out).unwrap();
        let refused: Vec<String> = d.refused().iter().map(|e| e.to_string()).collect();
        (out.len(), refused)
    };
    assert_eq!(go(&mut d, "sensors/a"), (1, vec![]));
    assert_eq!(go(&mut d, "sensors/b"), (1, vec![]));
    // The stored series counted: the fourth name is one too many.
    assert_eq!(
        go(&mut d, "sensors/c"),
        (
            0,
            vec![
                r#"new series "c" refused: 3 series are known already (ingest.max_series)"#
                    .to_string()
            ]
        )
    );
    assert_eq!(d.refused()[0].reason(), "too_many_series");
    // Series already known are read as before, the stored one included.
    assert_eq!(go(&mut d, "sensors/a"), (1, vec![]));
    assert_eq!(go(&mut d, "sensors/stored/one"), (1, vec![]));
}

#[test]
fn retained_messages_are_kept_only_when_newer_than_what_is_known() {
    let maps = [mapping("z/+", "z/{1}", MapFormat::Json)];
    let mut d = Decoder::with_mappings("sensors", 1024, &maps, limits());
    d.remember("a/b", NOW - 60_000);
    let mut out = Vec::new();
    let mut go = |d: &mut Decoder, topic: &str, p: &str, retained: bool| {
        out.clear();
        d.decode_message(topic, p.as_bytes(), retained, NOW, &mut out)
            .unwrap();
        (
            out.len(),
            d.refused()
                .iter()
                .map(DecodeError::reason)
                .collect::<Vec<_>>(),
        )
    };
    // No timestamp of its own: a restart must not make a dead device look alive.
    assert_eq!(
        go(&mut d, "sensors/a/b", "21.5", true),
        (0, vec!["retained_without_ts"])
    );
    assert_eq!(
        go(&mut d, "z/dev", r#"{"t":1,"h":2}"#, true),
        (0, vec!["retained_without_ts"; 2])
    );
    // Its own timestamp, not newer than the stored one: already stored.
    let older = format!(r#"{{"value":1,"ts":{}}}"#, NOW - 60_000);
    assert_eq!(
        go(&mut d, "sensors/a/b", &older, true),
        (0, vec!["retained_not_newer"])
    );
    // Newer: kept, once.
    let newer = format!(r#"{{"value":1,"ts":{}}}"#, NOW - 1_000);
    assert_eq!(go(&mut d, "sensors/a/b", &newer, true), (1, vec![]));
    assert_eq!(
        go(&mut d, "sensors/a/b", &newer, true),
        (0, vec!["retained_not_newer"])
    );
    // Live messages are never held back.
    assert_eq!(go(&mut d, "sensors/a/b", "21.5", false), (1, vec![]));
    assert_eq!(go(&mut d, "sensors/a/b", &older, false), (1, vec![]));
}
