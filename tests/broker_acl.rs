//! The embedded broker's users, ACLs and limits, seen by real MQTT clients (rumqttc,
//! and raw packets over TCP and TLS) against a running service.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use centinela::config::{BrokerUser, Config};
use centinela::service::{Options, Service};
use rumqttc::mqttbytes::v4::{Connect, Login, Publish};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use support::mqtt::free_port;
use support::process::wait_for;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn user(name: &str, publish: &[&str], subscribe: &[&str], control: bool) -> BrokerUser {
    let var = format!("CENTINELA_TEST_ACL_{}", name.to_uppercase());
    std::env::set_var(&var, format!("pw-{name}"));
    BrokerUser {
        name: name.into(),
        password_env: var,
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        control,
    }
}

fn base(port: u16) -> Config {
    let mut cfg = Config::default();
    cfg.broker.listen = format!("127.0.0.1:{port}").parse().unwrap();
    cfg.broker.max_payload = 4096;
    cfg
}

/// sensor: publishes sensors/#; viewer: reads centinela/# and sensors/#, controls;
/// spy: subscribes to everything, publishes nothing.
fn with_users(port: u16) -> Config {
    let mut cfg = base(port);
    cfg.broker.users = vec![
        user("sensor", &["sensors/#"], &[], false),
        user("viewer", &[], &["centinela/#", "sensors/#"], true),
        user("spy", &[], &["#"], false),
    ];
    cfg
}

async fn start(cfg: Config, dir: &std::path::Path) -> Service {
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    Service::start(
        cfg,
        Options {
            db_path: Some(dir.join("c.db")),
        },
    )
    .await
    .unwrap()
}

fn opts(port: u16, id: &str, login: Option<&str>) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    if let Some(u) = login {
        o.set_credentials(u, format!("pw-{u}"));
    }
    o
}

/// Polls until the CONNACK (or the refusal).
async fn connect(o: MqttOptions) -> (AsyncClient, EventLoop, Result<(), ConnectionError>) {
    let (c, mut ev) = AsyncClient::new(o, 100);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no CONNACK");
        match tokio::time::timeout(Duration::from_secs(10), ev.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return (c, ev, Ok(())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return (c, ev, Err(e)),
            Err(_) => panic!("no CONNACK within 10 s"),
        }
    }
}

/// What `ev` receives within `d`: publishes (topic, payload) and SUBACK codes; stops
/// at the first error.
async fn collect(
    ev: &mut EventLoop,
    d: Duration,
) -> (
    Vec<(String, Vec<u8>)>,
    Vec<Vec<SubscribeReasonCode>>,
    Option<String>,
) {
    let (mut pubs, mut acks) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, ev.poll()).await {
            Err(_) => return (pubs, acks, None),
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                pubs.push((p.topic.clone(), p.payload.to_vec()))
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(a)))) => acks.push(a.return_codes),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return (pubs, acks, Some(e.to_string())),
        }
    }
}

async fn silences(db: &std::path::Path) -> i64 {
    let pool = centinela::store::sqlite::open_existing(db).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM silences")
        .fetch_one(&pool)
        .await
        .unwrap()
}

fn silence_json(by: &str) -> String {
    format!(
        r##"{{"action":"silence","pattern":"#","until":32503680000000,"reason":"test","by":"{by}"}}"##
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_reaches_no_subscriber_and_is_counted_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let svc = start(with_users(port), dir.path()).await;

    let (spy, mut spy_ev, r) = connect(opts(port, "spy", Some("spy"))).await;
    r.unwrap();
    spy.subscribe("#", QoS::AtMostOnce).await.unwrap();
    let (_, acks, _) = collect(&mut spy_ev, Duration::from_millis(500)).await;
    assert_eq!(
        acks,
        vec![vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]]
    );

    let (sensor, mut sensor_ev, r) = connect(opts(port, "s1", Some("sensor"))).await;
    r.unwrap();
    for t in ["other/a/b", "centinela/alerts/fake/x", "centinela/status"] {
        sensor
            .publish(t, QoS::AtMostOnce, true, "666")
            .await
            .unwrap();
    }
    sensor
        .publish("sensors/a/b/c", QoS::AtMostOnce, false, "21.5")
        .await
        .unwrap();
    let sensor_task =
        tokio::spawn(async move { collect(&mut sensor_ev, Duration::from_secs(3)).await });
    let (pubs, _, err) = collect(&mut spy_ev, Duration::from_secs(2)).await;
    let topics: Vec<&str> = pubs.iter().map(|(t, _)| t.as_str()).collect();
    assert!(topics.contains(&"sensors/a/b/c"), "{topics:?} {err:?}");
    // (The service itself publishes centinela/status every second: not "666".)
    let forged: Vec<_> = pubs.iter().filter(|(_, p)| p == b"666").collect();
    assert!(
        forged.is_empty(),
        "refused, yet a subscriber got them: {forged:?}"
    );
    // A QoS 0 refusal does not cost the sensor its connection.
    let (_, _, sensor_err) = sensor_task.await.unwrap();
    assert!(sensor_err.is_none(), "{sensor_err:?}");

    let front = svc.broker_front.clone().unwrap();
    assert_eq!(front.refused_publishes.load(Ordering::Relaxed), 3);
    let per_user = front.users.refusals();
    assert!(
        per_user.contains(&("sensor".to_string(), 3, 0)),
        "{per_user:?}"
    );

    // At QoS 1 a refused publish is not acknowledged: the connection closes.
    let (sensor, mut sensor_ev, r) = connect(opts(port, "s2", Some("sensor"))).await;
    r.unwrap();
    sensor
        .publish("other/x", QoS::AtLeastOnce, false, "1")
        .await
        .unwrap();
    let mut acked = false;
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(ev) = tokio::time::timeout_at(deadline, sensor_ev.poll()).await {
        match ev {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked = true,
            Ok(_) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(!acked, "a refused QoS 1 publish was acknowledged");
    assert!(
        closed,
        "the connection stayed open after a refused QoS 1 publish"
    );
    let (pubs, _, _) = collect(&mut spy_ev, Duration::from_millis(500)).await;
    assert!(pubs.iter().all(|(t, _)| t != "other/x"), "{pubs:?}");
    assert_eq!(svc.source_stats.readings.load(Ordering::Relaxed), 1);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_gets_the_failure_code() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let svc = start(with_users(port), dir.path()).await;

    let (sensor, mut ev, r) = connect(opts(port, "s1", Some("sensor"))).await;
    r.unwrap();
    sensor
        .subscribe("centinela/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (_, acks, err) = collect(&mut ev, Duration::from_secs(1)).await;
    assert_eq!(acks, vec![vec![SubscribeReasonCode::Failure]], "{err:?}");

    // Mixed: the allowed filter is subscribed, the other refused, in their places.
    let (viewer, mut vev, r) = connect(opts(port, "v1", Some("viewer"))).await;
    r.unwrap();
    viewer
        .subscribe_many([
            rumqttc::SubscribeFilter::new("secret/#".into(), QoS::AtMostOnce),
            rumqttc::SubscribeFilter::new("sensors/#".into(), QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new("#".into(), QoS::AtMostOnce),
        ])
        .await
        .unwrap();
    let (_, acks, err) = collect(&mut vev, Duration::from_secs(1)).await;
    assert_eq!(
        acks,
        vec![vec![
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure
        ]],
        "{err:?}"
    );
    // …and it works.
    sensor
        .publish("sensors/x/y/z", QoS::AtMostOnce, false, "1")
        .await
        .unwrap();
    let sensor_task = tokio::spawn(async move { collect(&mut ev, Duration::from_secs(2)).await });
    let (pubs, _, _) = collect(&mut vev, Duration::from_secs(2)).await;
    assert_eq!(pubs, vec![("sensors/x/y/z".to_string(), b"1".to_vec())]);
    let _ = sensor_task.await;
    let front = svc.broker_front.clone().unwrap();
    assert_eq!(front.refused_subscriptions.load(Ordering::Relaxed), 3);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_is_refused_for_a_sensor_and_accepted_for_a_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let svc = start(with_users(port), dir.path()).await;
    let db = dir.path().join("c.db");

    let (sensor, mut ev, r) = connect(opts(port, "s1", Some("sensor"))).await;
    r.unwrap();
    sensor
        .publish(
            "centinela/control",
            QoS::AtLeastOnce,
            false,
            silence_json("sensor"),
        )
        .await
        .unwrap();
    let (_, _, err) = collect(&mut ev, Duration::from_secs(3)).await;
    assert!(
        err.is_some(),
        "the sensor's control publish was not refused"
    );

    let (viewer, mut vev, r) = connect(opts(port, "v1", Some("viewer"))).await;
    r.unwrap();
    viewer
        .publish(
            "centinela/control",
            QoS::AtLeastOnce,
            false,
            silence_json("viewer"),
        )
        .await
        .unwrap();
    let t = tokio::spawn(async move { collect(&mut vev, Duration::from_secs(3)).await });
    let deadline = Instant::now() + Duration::from_secs(15);
    while silences(&db).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the viewer's silence never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _, verr) = t.await.unwrap();
    assert!(verr.is_none(), "{verr:?}");
    let pool = centinela::store::sqlite::open_existing(&db).await.unwrap();
    let rec: String = sqlx::query_scalar("SELECT record FROM silences")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        rec.contains("viewer") && !rec.contains("\"sensor\""),
        "{rec}"
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_get_their_connack_code() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let svc = start(with_users(port), dir.path()).await;

    let mut wrong = opts(port, "w", None);
    wrong.set_credentials("sensor", "not-the-password");
    let (_, _, r) = connect(wrong).await;
    assert!(
        matches!(
            r,
            Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword
            ))
        ),
        "{r:?}"
    );
    let mut unknown = opts(port, "u", None);
    unknown.set_credentials("nobody", "x");
    let (_, _, r) = connect(unknown).await;
    assert!(
        matches!(
            r,
            Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword
            ))
        ),
        "{r:?}"
    );
    // Users are configured and allow_anonymous is not set: no anonymous clients.
    let (_, _, r) = connect(opts(port, "anon", None)).await;
    assert!(
        matches!(
            r,
            Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized
            ))
        ),
        "{r:?}"
    );
    let front = svc.broker_front.clone().unwrap();
    assert_eq!(front.refused_logins.load(Ordering::Relaxed), 3);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_publish_readings_but_never_control_and_the_local_viewer_does() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The loopback default: no users, anonymous clients allowed.
    let svc = start(base(port), dir.path()).await;
    let db = dir.path().join("c.db");

    let (anon, mut ev, r) = connect(opts(port, "anon", None)).await;
    r.unwrap();
    anon.publish("sensors/a/b/c", QoS::AtMostOnce, false, "1")
        .await
        .unwrap();
    anon.publish("centinela/status", QoS::AtMostOnce, true, "{}")
        .await
        .unwrap();
    anon.publish(
        "centinela/control",
        QoS::AtLeastOnce,
        false,
        silence_json("anon"),
    )
    .await
    .unwrap();
    let (_, _, err) = collect(&mut ev, Duration::from_secs(3)).await;
    assert!(
        err.is_some(),
        "the anonymous control publish was not refused"
    );
    let stats = svc.source_stats.clone();
    wait_for("the anonymous reading", 20, || {
        stats.readings.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(silences(&db).await, 0);

    // What `centinela tui` on this machine uses: the login written beside the database.
    let (u, p) = centinela::broker::read_viewer_login(&db).expect("viewer login file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(centinela::broker::viewer_file(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the viewer login is readable by others: {mode:o}"
        );
    }
    let mut o = opts(port, "tui", None);
    o.set_credentials(u, p);
    let (viewer, mut vev, r) = connect(o).await;
    r.unwrap();
    viewer
        .publish(
            "centinela/control",
            QoS::AtLeastOnce,
            false,
            silence_json("tui"),
        )
        .await
        .unwrap();
    let t = tokio::spawn(async move { collect(&mut vev, Duration::from_secs(2)).await });
    let deadline = Instant::now() + Duration::from_secs(15);
    while silences(&db).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the local viewer's silence never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = t.await;
    svc.shutdown().await.unwrap();
}

// Raw MQTT, for what a well-behaved client library will not send.

fn connect_bytes(id: &str, keepalive: u16, login: Option<(&str, &str)>) -> BytesMut {
    let mut c = Connect::new(id);
    c.keep_alive = keepalive;
    c.login = login.map(|(u, p)| Login::new(u, p));
    let mut b = BytesMut::new();
    c.write(&mut b).unwrap();
    b
}

fn publish_bytes(topic: &str, qos: QoS, payload: &str) -> BytesMut {
    let mut p = Publish::new(topic, qos, payload.as_bytes().to_vec());
    if qos != QoS::AtMostOnce {
        p.pkid = 1;
    }
    let mut b = BytesMut::new();
    p.write(&mut b).unwrap();
    b
}

/// Reads until `n` bytes came or the peer closed (`None`), within `d`.
async fn read_n<S: AsyncRead + Unpin>(s: &mut S, n: usize, d: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    match tokio::time::timeout(d, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

/// True when the peer closed the connection within `d`.
async fn closed<S: AsyncRead + Unpin>(s: &mut S, d: Duration) -> bool {
    let mut b = [0u8; 64];
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

async fn raw_session<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, id: &str, keepalive: u16) {
    s.write_all(&connect_bytes(id, keepalive, None))
        .await
        .unwrap();
    let ack = read_n(s, 4, Duration::from_secs(5)).await.expect("CONNACK");
    assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK");
}

async fn from(local: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{local}:0").parse().unwrap())?;
    s.connect(to).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_and_nul_topic_names_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let svc = start(base(port), dir.path()).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for (i, topic) in ["sensors/+/x/t", "sensors/a/#", "sensors/a/b\0/t"]
        .iter()
        .enumerate()
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        raw_session(&mut s, &format!("raw{i}"), 30).await;
        s.write_all(&publish_bytes(topic, QoS::AtMostOnce, "20"))
            .await
            .unwrap();
        assert!(
            closed(&mut s, Duration::from_secs(5)).await,
            "{topic:?} was accepted"
        );
    }
    // A good one on the same kind of connection is stored: the refusals were the topics.
    let mut s = TcpStream::connect(addr).await.unwrap();
    raw_session(&mut s, "raw-ok", 30).await;
    s.write_all(&publish_bytes("sensors/a/b/t", QoS::AtLeastOnce, "20"))
        .await
        .unwrap();
    let ack = read_n(&mut s, 4, Duration::from_secs(5)).await;
    assert_eq!(ack, Some(vec![0x40, 2, 0, 1]), "PUBACK");
    let stats = svc.source_stats.clone();
    wait_for("the good reading", 20, || {
        stats.readings.load(Ordering::Relaxed) == 1
    })
    .await;
    let front = svc.broker_front.clone().unwrap();
    assert_eq!(front.bad_topics.load(Ordering::Relaxed), 3);
    assert_eq!(
        stats.messages.load(Ordering::Relaxed),
        1,
        "a refused topic reached ingest"
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_does_not_lock_out_sensors() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = base(port);
    cfg.broker.max_connections_per_ip = 20;
    cfg.broker.max_keepalive = centinela::config::Duration::from_secs(2);
    let svc = start(cfg, dir.path()).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // 20 idle sessions from one address, asking for the longest keepalive there is.
    let mut idle = Vec::new();
    for i in 0..20 {
        let mut s = from("127.0.0.2", addr).await.unwrap();
        raw_session(&mut s, &format!("idle{i}"), u16::MAX).await;
        idle.push(s);
    }
    // The 21st from there is turned away…
    let mut extra = from("127.0.0.2", addr).await.unwrap();
    extra
        .write_all(&connect_bytes("idle-extra", u16::MAX, None))
        .await
        .unwrap();
    assert_eq!(read_n(&mut extra, 4, Duration::from_secs(3)).await, None);
    // …while a sensor elsewhere connects and publishes at once.
    let (c, mut ev, r) = connect(opts(port, "sensor", None)).await;
    r.expect("a sensor was locked out by idle connections");
    c.publish("sensors/a/b/c", QoS::AtLeastOnce, false, "1")
        .await
        .unwrap();
    let t = tokio::spawn(async move { collect(&mut ev, Duration::from_secs(2)).await });
    let stats = svc.source_stats.clone();
    wait_for("the sensor's reading", 20, || {
        stats.readings.load(Ordering::Relaxed) == 1
    })
    .await;
    let _ = t.await;

    // The idle ones are dropped after 1.5 × the capped keepalive (3 s), not 65,535 s.
    let started = Instant::now();
    for s in idle.iter_mut() {
        assert!(
            closed(s, Duration::from_secs(6)).await,
            "an idle session stayed"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    let front = svc.broker_front.clone().unwrap();
    assert!(front.idle_closed.load(Ordering::Relaxed) >= 20);
    assert!(front.over_limit.load(Ordering::Relaxed) >= 1);
    // Their slots are free again.
    let mut again = from("127.0.0.2", addr).await.unwrap();
    raw_session(&mut again, "back", 30).await;
    svc.shutdown().await.unwrap();
}

/// A test CA and a server certificate it signed for localhost and 127.0.0.1 (openssl
/// CLI): (CA cert, server cert, server key).
fn make_cert(
    dir: &std::path::Path,
) -> Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let p = |f: &str| dir.join(f).display().to_string();
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .ok()?;
    let steps: [Vec<String>; 3] = [
        // The CA.
        [
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["-days", "2", "-subj", "/CN=centinela test CA", "-keyout"].map(String::from))
        .chain([p("ca.key"), "-out".into(), p("ca.pem")])
        .collect(),
        // The server's key and request.
        [
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["-subj", "/CN=localhost", "-keyout"].map(String::from))
        .chain([p("key.pem"), "-out".into(), p("req.csr")])
        .collect(),
        // Signed by the CA.
        ["x509", "-req", "-days", "2", "-in"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                p("req.csr"),
                "-CA".into(),
                p("ca.pem"),
                "-CAkey".into(),
                p("ca.key"),
            ])
            .chain(["-CAcreateserial".into(), "-extfile".into(), p("ext.cnf")])
            .chain(["-out".into(), p("cert.pem")])
            .collect(),
    ];
    for args in steps {
        let ok = std::process::Command::new("openssl")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
    }
    Some((
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_receives_readings() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = make_cert(dir.path()) else {
        eprintln!(
            "SKIPPED: the openssl command is not installed (.ci/install-trust.sh installs it)"
        );
        return;
    };
    let (port, tls_port) = (free_port(), free_port());
    let mut cfg = with_users(port);
    cfg.broker.tls_listen = Some(format!("127.0.0.1:{tls_port}").parse().unwrap());
    cfg.broker.cert_file = Some(cert);
    cfg.broker.key_file = Some(key);
    let svc = start(cfg, dir.path()).await;

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.expect("TLS handshake");
    s.write_all(&connect_bytes(
        "tls-sensor",
        30,
        Some(("sensor", "pw-sensor")),
    ))
    .await
    .unwrap();
    assert_eq!(
        read_n(&mut s, 4, Duration::from_secs(5)).await,
        Some(vec![0x20, 2, 0, 0])
    );
    s.write_all(&publish_bytes(
        "sensors/tls/node/t",
        QoS::AtLeastOnce,
        "19.5",
    ))
    .await
    .unwrap();
    assert_eq!(
        read_n(&mut s, 4, Duration::from_secs(5)).await,
        Some(vec![0x40, 2, 0, 1])
    );
    let stats = svc.source_stats.clone();
    wait_for("the reading over TLS", 20, || {
        stats.readings.load(Ordering::Relaxed) == 1
    })
    .await;
    // ACLs hold over TLS too.
    s.write_all(&publish_bytes("centinela/control", QoS::AtLeastOnce, "{}"))
        .await
        .unwrap();
    assert!(closed(&mut s, Duration::from_secs(5)).await);
    // Plain MQTT on the TLS port is not let in.
    let mut plain = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    plain
        .write_all(&connect_bytes("plain", 30, Some(("sensor", "pw-sensor"))))
        .await
        .unwrap();
    // (What comes back, if anything, is a TLS alert, not a CONNACK.)
    let answer = read_n(&mut plain, 4, Duration::from_secs(5)).await;
    assert_ne!(answer, Some(vec![0x20, 2, 0, 0]), "plain MQTT got in");
    svc.shutdown().await.unwrap();
}

fn run_binary(config: &str, env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let config = config.replace("DB", &dir.path().join("c.db").display().to_string());
    std::fs::write(&path, config).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_centinela"));
    cmd.arg("run").arg("--config").arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("centinela run did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_taken_port_exits_2_and_says_how_to_use_the_broker_there() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = run_binary(
        &format!("[broker]\nlisten = \"{addr}\"\n[storage.sqlite]\npath = \"DB\"\n"),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(err.contains("mode = \"external\""), "{err}");
    assert!(err.contains("url = \"mqtt://127.0.0.1:1883\""), "{err}");
}

#[test]
fn an_empty_password_variable_is_a_start_up_error() {
    let port = free_port();
    let out = run_binary(
        &format!(
            "[broker]\nlisten = \"127.0.0.1:{port}\"\n[[broker.users]]\nname = \"sensor\"\n\
             password_env = \"CENTINELA_TEST_EMPTY_PW\"\npublish = [\"sensors/#\"]\n\
             [storage.sqlite]\npath = \"DB\"\n"
        ),
        &[("CENTINELA_TEST_EMPTY_PW", "")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("CENTINELA_TEST_EMPTY_PW") && err.contains("empty"),
        "{err}"
    );
}
