//! `[source.kafka]` and `[output.kafka]` in the configuration: a binary built without
//! Kafka refuses them (exit 2, naming the section and the build flag); one built with
//! `--features kafka` checks their fields.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

/// Exit code and stderr of `centinela CMD --config FILE` with `text` as the file.
fn centinela(cmd: &str, text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("centinela.toml");
    std::fs::write(&path, text).unwrap();
    let o = Command::new(BIN)
        .args([cmd, "--config"])
        .arg(&path)
        .env_remove("CENTINELA_CONFIG")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn validate(text: &str) -> (i32, String) {
    let (code, err) = centinela("validate", text);
    if code != 0 {
        // `run` refuses the same file the same way before starting anything.
        let (run_code, run_err) = centinela("run", text);
        assert_eq!(run_code, code, "run: {run_err}");
    }
    (code, err)
}

#[test]
fn kafka_sections_are_refused_without_the_feature_and_checked_with_it() {
    for (section, body) in [
        ("output.kafka", "brokers = [\"127.0.0.1:9092\"]\n"),
        (
            "source.kafka",
            "brokers = [\"127.0.0.1:9092\"]\ntopics = [\"readings\"]\ngroup_id = \"g\"\n",
        ),
    ] {
        let text = format!("[ingest]\ntopics = [\"sensors/#\"]\n\n[{section}]\n{body}");
        let (code, err) = validate(&text);
        if cfg!(feature = "kafka") {
            assert_eq!(code, 0, "{section}: {err}");
        } else {
            assert_eq!(code, 2, "{section}: {err}");
            assert!(err.contains(section), "{section}: {err}");
            assert!(err.contains("--features kafka"), "{section}: {err}");
            assert!(err.contains("centinela.toml:4"), "names the line: {err}");
        }
    }
    if cfg!(feature = "kafka") {
        let (code, err) =
            validate("[source.kafka]\nbrokers = [\"nohost\"]\ntopics = []\nkey = \"value\"\n");
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("host:port"), "{err}");
    }
}

#[test]
fn notifying_from_kafka_needs_an_alerts_topic_to_read() {
    let text = "[ingest]\ntopics = [\"sensors/#\"]\n\n[notify]\nfrom_kafka = true\n";
    let (code, err) = validate(text);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("centinela.toml:5"), "names the line: {err}");
    assert!(err.contains("notify.from_kafka"), "names the field: {err}");
    if cfg!(feature = "kafka") {
        assert!(err.contains("alerts_topic"), "says what to set: {err}");
        // The source's alerts topic, or the output's, is one to read.
        for section in [
            "[source.kafka]\nbrokers = [\"127.0.0.1:9092\"]\ntopics = [\"r\"]\ngroup_id = \"g\"\nalerts_topic = \"al\"\n",
            "[output.kafka]\nbrokers = [\"127.0.0.1:9092\"]\nreadings_topic = \"\"\nalerts_topic = \"al\"\n",
        ] {
            let (code, err) = validate(&format!("{text}\n{section}"));
            assert_eq!(code, 0, "{section}: {err}");
        }
        // A source without one, and an output whose alerts topic is empty, are not.
        let (code, err) = validate(&format!(
            "{text}\n[source.kafka]\nbrokers = [\"127.0.0.1:9092\"]\ntopics = [\"r\"]\ngroup_id = \"g\"\n\n\
             [output.kafka]\nbrokers = [\"127.0.0.1:9092\"]\nalerts_topic = \"\"\n"
        ));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("centinela.toml:5"), "{err}");
    }
}
