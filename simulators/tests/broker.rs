//! The publisher against a real MQTT broker (rumqttd on 127.0.0.1, a free port) and a
//! real subscriber: what arrives is exactly what the simulator generated.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use centinela_sim::{publish, FaultKind, PublishError, PublishOptions, Scenario, Simulator};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts rumqttd on a free port (with `auth` = user → password when given) and waits
/// until it accepts connections.
fn start_broker(auth: Option<(&str, &str)>) -> u16 {
    start_broker_with(auth, 2 * 1024 * 1024)
}

fn start_broker_with(auth: Option<(&str, &str)>, max_payload_size: usize) -> u16 {
    let port = free_port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size,
        max_inflight_count: 500,
        auth: auth.map(|(u, p)| HashMap::from([(u.to_string(), p.to_string())])),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 1000,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Default::default()
    };
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        // start() blocks for the life of the broker and only logs a failed bind: the
        // connect loop below is the check.
        let _ = broker.start();
    });
    for _ in 0..200 {
        if TcpStream::connect(listen).is_ok() {
            return port;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("rumqttd did not listen on {listen}");
}

/// Subscribes to `sensors/#` and forwards every received (topic, payload).
async fn subscribe(port: u16) -> mpsc::UnboundedReceiver<(String, Vec<u8>)> {
    let mut opts = MqttOptions::new("test-subscriber", "127.0.0.1", port);
    opts.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client
        .subscribe("sensors/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client; // keep the request channel open
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), subscribed_rx)
        .await
        .unwrap()
        .unwrap();
    rx
}

const SCENARIO: &str = r#"
name = "it"
every = "1s"
[[devices]]
site = "lab"
name = "plain"
sensors = [{ metric = "temperature" }, { metric = "humidity" }]
[[devices]]
site = "lab"
name = "json"
format = "json"
sensors = [{ metric = "co2" }, { metric = "battery" }]
[[devices]]
site = "shop"
name = "bay"
format = "object"
sensors = [{ metric = "stock" }, { metric = "vibration" }]

[[faults]]
device = "plain"
metric = "humidity"
kind = "silence"
at = "500ms"
duration = "700ms"

[[faults]]
device = "json"
metric = "co2"
kind = "malformed"
payload = "utf8"
at = "800ms"
duration = "400ms"

[[faults]]
device = "bay"
kind = "malformed"
payload = "oversized"
size = 70000
at = "1500ms"
duration = "100ms"

[[faults]]
device = "plain"
metric = "temperature"
kind = "spike"
at = "1s"
duration = "500ms"
by = 30.0
"#;

fn options(port: u16, scenario: Scenario) -> PublishOptions {
    PublishOptions {
        host: "127.0.0.1".into(),
        port,
        tls: None,
        username: None,
        password: None,
        client_id: "centinela-sim-test".into(),
        scenario,
        rate: Some(20.0),
        time_scale: None,
        duration: Some(Duration::from_secs(2)),
        seed: 42,
        qos: 1,
        shutdown: None,
    }
}

/// Collects what the subscriber received until `want` messages arrived (or 10 s), then
/// half a second more to catch extras.
async fn receive(
    rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    want: u64,
) -> Vec<(String, Vec<u8>)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (got.len() as u64) < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => got.push(m),
            _ => break,
        }
    }
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        got.push(m);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_receives_exactly_what_was_published() {
    let port = start_broker(None);
    let mut rx = subscribe(port).await;
    let scenario = Scenario::parse(SCENARIO, "it").unwrap();
    let stats = publish(options(port, scenario.clone())).await.unwrap();

    // 20 Hz × 2 s × 5 emitters (two plain, two json, one object) = 200 + the final
    // tick at exactly 2 s, less the silenced humidity samples.
    assert!(stats.generated > 180, "{stats}");
    assert_eq!(
        stats.published, stats.generated,
        "QoS 1: every message acknowledged: {stats}"
    );
    assert_eq!(stats.reconnects, 0);
    let got = receive(&mut rx, stats.generated).await;
    assert_eq!(got.len() as u64, stats.generated, "{stats}");

    // The same seed, scenario, rate and start time reproduce every message, byte for byte.
    let mut again = scenario;
    again.set_rate(20.0).unwrap();
    let mut sim = Simulator::new(&again, 42, stats.start_ms).unwrap();
    let expected = sim.tick(stats.start_ms + 2000);
    let mut want: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
    for m in &expected {
        want.entry(m.topic.as_str()).or_default().push(&m.payload);
    }
    let mut have: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
    for (t, p) in &got {
        have.entry(t.as_str()).or_default().push(p);
    }
    let mut topics = sim.topics();
    topics.sort();
    assert_eq!(
        have.keys().map(|t| t.to_string()).collect::<Vec<_>>(),
        topics
    );
    assert!(
        have == want,
        "received payloads differ from the simulator's"
    );

    // The faults are visible in what arrived.
    let not_utf8 = got
        .iter()
        .filter(|(_, p)| std::str::from_utf8(p).is_err())
        .count();
    let oversized = got.iter().filter(|(_, p)| p.len() == 70_000).count();
    assert_eq!(
        (not_utf8 + oversized) as u64,
        stats.by_fault["malformed"],
        "{stats}"
    );
    assert!(not_utf8 >= 7 && oversized >= 2, "{not_utf8} {oversized}");
    let spiked = got
        .iter()
        .filter(|(t, p)| {
            t == "sensors/lab/plain/temperature"
                && std::str::from_utf8(p).unwrap().parse::<f64>().unwrap() > 45.0
        })
        .count() as u64;
    assert_eq!(spiked, stats.by_fault[FaultKind::Spike.as_str()]);
    let humidity = have["sensors/lab/plain/humidity"].len();
    assert!(
        humidity <= 41 - 14,
        "silenced for 0.7 s at 20 Hz: {humidity}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_when_asked() {
    let port = start_broker(None);
    let mut rx = subscribe(port).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut opts = options(port, Scenario::load("greenhouse").unwrap());
    opts.duration = None;
    opts.qos = 0;
    opts.shutdown = Some(stop_rx);
    let run = tokio::spawn(publish(opts));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop_tx.send(true).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("publish stops promptly")
        .unwrap()
        .unwrap();
    assert!(stats.elapsed < Duration::from_secs(3), "{stats}");
    assert!(stats.generated > 20, "{stats}");
    assert_eq!(stats.published, stats.generated, "{stats}");
    let got = receive(&mut rx, stats.generated).await;
    assert_eq!(got.len() as u64, stats.generated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_clear_error() {
    let port = start_broker(Some(("sensor", "right")));
    let mut opts = options(port, Scenario::load("demo").unwrap());
    opts.username = Some("sensor".into());
    opts.password = Some("wrong".into());
    let started = std::time::Instant::now();
    let err = publish(opts).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "no retry loop");
    let text = err.to_string();
    assert!(text.contains("username or password"), "{text}");
    assert!(
        matches!(
            err.downcast_ref::<PublishError>(),
            Some(PublishError::ClosedBeforeConnAck { .. } | PublishError::Refused { .. })
        ),
        "{err:?}"
    );

    // The right password works against the same broker.
    let mut opts = options(port, Scenario::load("demo").unwrap());
    opts.username = Some("sensor".into());
    opts.password = Some("right".into());
    opts.duration = Some(Duration::from_millis(300));
    let stats = publish(opts).await.unwrap();
    assert_eq!(stats.published, stats.generated);
}

#[tokio::test]
async fn nothing_listening_is_a_clear_error() {
    let port = free_port();
    let err = publish(options(port, Scenario::load("demo").unwrap()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<PublishError>(),
            Some(PublishError::Unreachable { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_when_the_broker_drops_it() {
    // rumqttd closes a connection that sends a payload over its limit: the oversized
    // fault does that here, and the publisher carries on over a new connection.
    let port = start_broker_with(None, 16 * 1024);
    let mut rx = subscribe(port).await;
    let scenario = Scenario::parse(
        "name = \"r\"\nevery = \"100ms\"\n[[devices]]\nsite = \"s\"\nname = \"d\"\nsensors = [{ metric = \"temperature\" }]\n\
         [[faults]]\ndevice = \"d\"\nkind = \"malformed\"\npayload = \"oversized\"\nat = \"500ms\"\nduration = \"50ms\"",
        "r",
    )
    .unwrap();
    let mut opts = PublishOptions::new("127.0.0.1", port, scenario.clone());
    opts.duration = Some(Duration::from_secs(3));
    let stats = publish(opts).await.unwrap();
    assert!(stats.reconnects >= 1, "{stats}");
    assert_eq!(stats.by_fault["malformed"], 1, "{stats}");
    let got = receive(&mut rx, stats.generated - 1).await;
    // Everything but the oversized message arrived, including what was sent after the
    // reconnect (the last second of the run).
    assert!(got.iter().all(|(_, p)| p.len() < 1000));
    assert!(
        got.len() as u64 >= stats.generated - 3,
        "{} of {stats}",
        got.len()
    );
    let expected = Simulator::new(&scenario, 1, stats.start_ms)
        .unwrap()
        .tick(stats.start_ms + 3000);
    let (last_topic, last_payload) = got.last().unwrap();
    assert_eq!(
        (last_topic, last_payload),
        (
            &expected.last().unwrap().topic,
            &expected.last().unwrap().payload
        )
    );
}
