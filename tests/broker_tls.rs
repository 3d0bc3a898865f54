//! `mqtts://` to an external broker, end to end with the real binary: a Mosquitto with
//! a TLS-only listener and certificates made here with openssl; readings published
//! over TLS land in SQLite; a wrong CA, a missing or foreign client certificate are
//! start-up errors that say they are about certificates (exit 1, no retry loop);
//! `centinela simulate` publishes over TLS too.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::mqtt::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_centinela");

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn mosquitto_bin() -> Option<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost/127.0.0.1 signed by it, a client
/// certificate signed by it, and a second CA with a client certificate of its own.
fn make_certs(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        );
    }
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, ca, ext) in [
        ("server", "ca", "san.ext"),
        ("client", "ca", "client.ext"),
        ("rogue", "other-ca", "client.ext"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                ext,
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }
}

/// Mosquitto with one TLS-only listener on `port`.
struct TlsMosquitto {
    child: Child,
}

impl TlsMosquitto {
    fn start(dir: &Path, port: u16, require_certificate: bool) -> TlsMosquitto {
        let bin = mosquitto_bin().expect("mosquitto");
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let d = dir.display();
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\ncafile {d}/ca.pem\ncertfile {d}/server.pem\n\
             keyfile {d}/server.key\nuser root\n"
        );
        if require_certificate {
            text.push_str("require_certificate true\n");
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let m = TlsMosquitto { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut pubc = Command::new("mosquitto_pub");
            pubc.args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "ready",
                "-m",
                "x",
            ])
            .arg("--cafile")
            .arg(dir.join("ca.pem"));
            if require_certificate {
                pubc.arg("--cert")
                    .arg(dir.join("client.pem"))
                    .arg("--key")
                    .arg(dir.join("client.key"));
            }
            let ok = pubc
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto with TLS did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TlsMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, name: &str, port: u16, tls_lines: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[broker]\nmode = \"external\"\nurl = \"mqtts://127.0.0.1:{port}\"\n\
         client_id = \"centinela-{name}\"\n{tls_lines}\n\
         [storage.sqlite]\npath = \"{}\"\nflush_interval = \"200ms\"\n",
        dir.join(format!("{name}.db")).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `centinela run` with its stderr lines sent to a channel.
fn run(config: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("centinela runs");
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a line containing `want`; returns every line seen so far.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    want: &str,
    within: Duration,
) -> Result<Vec<String>, Vec<String>> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(want);
                seen.push(line);
                if hit {
                    return Ok(seen);
                }
            }
            Err(_) => break,
        }
    }
    Err(seen)
}

/// Waits for the process to exit by itself; its code and every stderr line.
fn wait_exit(
    mut child: Child,
    rx: &mpsc::Receiver<String>,
    within: Duration,
) -> (Option<i32>, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            let text: Vec<String> = rx.try_iter().collect();
            return (status.code(), text.join("\n"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let text: Vec<String> = rx.try_iter().collect();
            panic!(
                "still running after {within:?}; it said:\n{}",
                text.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "centinela did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stored_values(db: &Path) -> Vec<(String, f64)> {
    let out = Command::new(BIN)
        .args(["readings", "--json", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["series"].as_str().unwrap().to_string(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn publish_tls(dir: &Path, port: u16, lines: &str, client_cert: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t"])
        .arg("sensors/lab/node1/temperature")
        .arg("-l")
        .arg("--cafile")
        .arg(dir.join("ca.pem"));
    if client_cert {
        cmd.arg("--cert")
            .arg(dir.join("client.pem"))
            .arg("--key")
            .arg(dir.join("client.key"));
    }
    let mut child = cmd.stdin(Stdio::piped()).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn prerequisites() -> bool {
    if mosquitto_bin().is_none() || !have("mosquitto_pub") || !have("openssl") {
        eprintln!("SKIPPED: mosquitto, mosquitto_pub or openssl missing (.ci/run installs them)");
        return false;
    }
    true
}

#[test]
fn readings_arrive_over_mqtts_and_a_wrong_ca_is_a_start_up_error() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let port = free_port();
    let _mosq = TlsMosquitto::start(d, port, false);

    // The broker's certificate is not signed by the CA we are told to trust.
    let wrong = write_config(
        d,
        "wrong-ca",
        port,
        &format!("ca_file = \"{}/other-ca.pem\"", d.display()),
    );
    let (child, rx) = run(&wrong);
    let (code, said) = wait_exit(child, &rx, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("certificate problem"), "{said}");
    assert!(said.contains("other-ca.pem"), "names the CA file: {said}");
    assert!(
        said.contains(&format!("127.0.0.1:{port}")),
        "names the broker: {said}"
    );
    assert_eq!(
        said.matches("certificate problem").count(),
        1,
        "said once, not retried: {said}"
    );

    // With the right CA the readings arrive.
    let good = write_config(
        d,
        "good",
        port,
        &format!("ca_file = \"{}/ca.pem\"", d.display()),
    );
    let (mut child, rx) = run(&good);
    if let Err(seen) = wait_line(&rx, "connected to the MQTT broker", Duration::from_secs(20)) {
        let _ = child.kill();
        panic!("never connected over TLS:\n{}", seen.join("\n"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let lines: String = (1..=20).map(|i| format!("{i}\n")).collect();
    publish_tls(d, port, &lines, false);

    // The simulator speaks mqtts:// too.
    let sim = Command::new(BIN)
        .args([
            "simulate",
            "--broker",
            &format!("mqtts://127.0.0.1:{port}"),
            "--duration",
            "2s",
            "--qos",
            "1",
            "--prefix",
            "simulated",
        ])
        .arg("--ca-file")
        .arg(d.join("ca.pem"))
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "simulate over TLS: {}",
        String::from_utf8_lossy(&sim.stderr)
    );
    assert!(
        String::from_utf8_lossy(&sim.stdout).contains("published"),
        "{}",
        String::from_utf8_lossy(&sim.stdout)
    );
    let sim = Command::new(BIN)
        .args([
            "simulate",
            "--broker",
            &format!("mqtts://127.0.0.1:{port}"),
            "--duration",
            "1s",
        ])
        .arg("--ca-file")
        .arg(d.join("other-ca.pem"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&sim.stderr);
    assert_eq!(sim.status.code(), Some(1), "{err}");
    assert!(err.contains("certificate problem"), "{err}");

    std::thread::sleep(Duration::from_millis(800));
    stop(&mut child);
    let mut got: Vec<f64> = stored_values(&d.join("good.db"))
        .into_iter()
        .filter(|(s, _)| s == "lab/node1/temperature")
        .map(|(_, v)| v)
        .collect();
    got.sort_by(f64::total_cmp);
    assert_eq!(got, (1..=20).map(f64::from).collect::<Vec<_>>());
}

#[test]
fn client_certificates_are_accepted_and_refused() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let port = free_port();
    let _mosq = TlsMosquitto::start(d, port, true);

    for (name, lines) in [
        ("no-cert", format!("ca_file = \"{}/ca.pem\"", d.display())),
        (
            "rogue-cert",
            format!(
                "ca_file = \"{0}/ca.pem\"\nclient_cert = \"{0}/rogue.pem\"\nclient_key = \"{0}/rogue.key\"",
                d.display()
            ),
        ),
    ] {
        let cfg = write_config(d, name, port, &lines);
        let (child, rx) = run(&cfg);
        let (code, said) = wait_exit(child, &rx, Duration::from_secs(20));
        assert_eq!(code, Some(1), "{name}: {said}");
        assert!(said.contains("certificate"), "{name}: {said}");
        assert!(!said.contains("check username and password"), "{name} blames the password: {said}");
    }

    let cfg = write_config(
        d,
        "client-cert",
        port,
        &format!(
            "ca_file = \"{0}/ca.pem\"\nclient_cert = \"{0}/client.pem\"\nclient_key = \"{0}/client.key\"",
            d.display()
        ),
    );
    let (mut child, rx) = run(&cfg);
    if let Err(seen) = wait_line(&rx, "connected to the MQTT broker", Duration::from_secs(20)) {
        let _ = child.kill();
        panic!(
            "never connected with the client certificate:\n{}",
            seen.join("\n")
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    publish_tls(d, port, "41.5\n", true);
    std::thread::sleep(Duration::from_millis(800));
    stop(&mut child);
    let got = stored_values(&d.join("client-cert.db"));
    assert_eq!(got, vec![("lab/node1/temperature".to_string(), 41.5)]);
}

#[test]
fn mqtt_5_over_mqtts() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let port = free_port();
    let _mosq = TlsMosquitto::start(d, port, false);
    let config = write_config(
        d,
        "v5",
        port,
        &format!("protocol = \"v5\"\nca_file = \"{}/ca.pem\"", d.display()),
    );
    let (mut child, rx) = run(&config);
    match wait_line(&rx, "connected to the MQTT broker", Duration::from_secs(20)) {
        Ok(seen) => {
            let line = seen.last().unwrap();
            assert!(line.contains("protocol=\"5\""), "{line}");
        }
        Err(seen) => {
            let _ = child.kill();
            panic!("never connected with MQTT 5 over TLS:\n{}", seen.join("\n"));
        }
    }
    // The subscription follows the CONNACK; then the readings arrive.
    let db = d.join("v5.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        publish_tls(d, port, "1\n2\n3\n", false);
        std::thread::sleep(Duration::from_millis(500));
        let got = stored_values(&db);
        if got
            .iter()
            .filter(|(s, _)| s == "lab/node1/temperature")
            .count()
            >= 3
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing stored over MQTT 5 and TLS: {got:?}"
        );
    }
    stop(&mut child);
    let mut got: Vec<f64> = stored_values(&db)
        .into_iter()
        .filter(|(s, _)| s == "lab/node1/temperature")
        .map(|(_, v)| v)
        .collect();
    got.sort_by(f64::total_cmp);
    got.dedup();
    assert_eq!(got, [1.0, 2.0, 3.0]);

    // A wrong CA is the same start-up error in MQTT 5.
    let wrong = write_config(
        d,
        "v5-wrong-ca",
        port,
        &format!(
            "protocol = \"v5\"\nca_file = \"{}/other-ca.pem\"",
            d.display()
        ),
    );
    let (child, rx) = run(&wrong);
    let (code, said) = wait_exit(child, &rx, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("certificate problem") && said.contains("other-ca.pem"),
        "{said}"
    );
}
