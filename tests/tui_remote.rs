//! The remote feed of `centinela tui --broker` against a real rumqttd on loopback,
//! with a real rumqttc client playing the service: readings, retained alerts and
//! status reach the viewer's screen, its actions reach `centinela/control` only with
//! the right credentials, and a lost broker shows and is reconnected to.

mod support;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use support::tui_fixture;

use centinela::model::{AlertState, Control, LiveEvent, LogLevel, Severity};
use centinela::tui::remote::{self, RemoteOptions};
use centinela::tui::{App, Options};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{timeout, Instant};
use tui_fixture::{alert, render, status};

const USER: &str = "centinela";
const PASS: &str = "s3cret-pass";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts rumqttd on `port` (with a password when `auth`) and waits until it accepts.
fn start_broker(port: u16, auth: bool) {
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let connections = ConnectionSettings {
        connection_timeout_ms: 5_000,
        max_payload_size: 64 * 1024,
        max_inflight_count: 100,
        auth: auth.then(|| HashMap::from([(USER.to_string(), PASS.to_string())])),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "v4-test".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 1_000,
            max_segment_size: 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("v4-test".to_string(), server)])),
        ..Default::default()
    };
    std::thread::spawn(move || {
        let mut broker = Broker::new(config);
        // start() blocks for the broker's lifetime and only logs a failed bind.
        let _ = broker.start();
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "rumqttd did not listen on {listen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client of the broker playing the service: returns it and a channel of the
/// messages it receives on its subscriptions.
async fn service_client(
    port: u16,
    id: &str,
    subscribe: &[&str],
) -> (AsyncClient, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_credentials(USER, PASS);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let subs: Vec<String> = subscribe.iter().map(|s| s.to_string()).collect();
    let sub_client = client.clone();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for s in &subs {
                        sub_client
                            .subscribe(s.clone(), QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                    if subs.is_empty() {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(e) => panic!("service client lost the broker: {e}"),
            }
        }
    });
    timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("service client connected")
        .unwrap();
    (client, rx)
}

fn viewer_opts(port: u16, id: &str, credentials: bool) -> RemoteOptions {
    RemoteOptions {
        tls: Default::default(),
        url: format!("mqtt://127.0.0.1:{port}"),
        client_id: id.into(),
        username: credentials.then(|| USER.to_string()),
        password: credentials.then(|| PASS.to_string()),
        prefix: "sensors".into(),
        topics: vec!["sensors/#".into()],
        map: Vec::new(),
        max_payload: 64 * 1024,
    }
}

/// Receives live events until `done` says so, feeding them into `app`.
async fn until(
    rx: &mut broadcast::Receiver<LiveEvent>,
    app: &mut App,
    secs: u64,
    mut done: impl FnMut(&LiveEvent) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) => {
                let hit = done(&ev);
                app.apply(ev, tui_fixture::NOW);
                if hit {
                    return true;
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return false,
        }
    }
}

fn connected(ev: &LiveEvent) -> bool {
    matches!(ev, LiveEvent::Log { text, .. } if text.starts_with("connected to"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_with_credentials_sees_the_service_and_its_actions_arrive() {
    let port = free_port();
    start_broker(port, true);
    let (service, mut control_seen) = service_client(port, "service", &["centinela/control"]).await;
    // A retained alert published before the viewer starts.
    let firing = alert(
        "too-hot",
        "greenhouse/node2/temperature",
        AlertState::Firing,
        Severity::Warning,
        31.2,
        "°C",
        tui_fixture::NOW,
    );
    service
        .publish(
            "centinela/alerts/too-hot/greenhouse/node2/temperature",
            QoS::AtLeastOnce,
            true,
            serde_json::to_vec(&firing).unwrap(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (live_tx, mut live_rx) = broadcast::channel(1024);
    let (control_tx, control_rx) = mpsc::channel(8);
    let feed = tokio::spawn(remote::feed(
        viewer_opts(port, "viewer-1", true),
        live_tx,
        control_rx,
    ));
    let mut app = App::new(Options::default(), tui_fixture::NOW);
    app.set_size(120, 30);
    assert!(
        until(&mut live_rx, &mut app, 10, connected).await,
        "viewer did not connect"
    );

    // The retained alert arrives on subscribe.
    assert!(
        until(
            &mut live_rx,
            &mut app,
            10,
            |ev| matches!(ev, LiveEvent::Alert(a) if a == &firing)
        )
        .await,
        "no retained alert"
    );

    // Readings and status, published until the viewer has seen them.
    let mut s = status(true);
    s.readings_per_s = 3.5;
    let mut got_reading = false;
    let mut got_status = false;
    for _ in 0..50 {
        service
            .publish(
                "sensors/greenhouse/node1/temperature",
                QoS::AtMostOnce,
                false,
                r#"{"value":21.5,"unit":"°C"}"#,
            )
            .await
            .unwrap();
        service
            .publish(
                "sensors/lab/node7",
                QoS::AtMostOnce,
                false,
                r#"{"co2":612,"humidity":40.5}"#,
            )
            .await
            .unwrap();
        service
            .publish(
                "centinela/status",
                QoS::AtMostOnce,
                false,
                serde_json::to_vec(&s).unwrap(),
            )
            .await
            .unwrap();
        until(&mut live_rx, &mut app, 1, |ev| {
            match ev {
                LiveEvent::Readings(r) => {
                    got_reading |= r.iter().any(|r| &*r.series == "lab/node7/co2")
                }
                LiveEvent::Status(st) => got_status |= st.readings_per_s == 3.5,
                _ => {}
            }
            got_reading && got_status
        })
        .await;
        if got_reading && got_status {
            break;
        }
    }
    assert!(
        got_reading && got_status,
        "reading {got_reading} status {got_status}"
    );
    let screen = render(&mut app);
    assert!(
        tui_fixture::line_with(&screen, "greenhouse/node1/temperature").contains("21.5 °C"),
        "{screen}"
    );
    assert!(
        tui_fixture::line_with(&screen, "lab/node7/co2").contains("612"),
        "{screen}"
    );
    assert!(
        tui_fixture::line_with(&screen, "greenhouse/node2/temperature  ").contains("● warning"),
        "{screen}"
    );
    assert!(
        screen.lines().next().unwrap().contains("3.5 readings/s"),
        "{screen}"
    );

    // The person acknowledges: the service receives exactly that request.
    let ack = Control::Ack {
        alert: "too-hot/greenhouse/node2/temperature".into(),
        by: "tui".into(),
    };
    control_tx.send(ack.clone()).await.unwrap();
    let (topic, payload) = timeout(Duration::from_secs(10), control_seen.recv())
        .await
        .expect("control arrived")
        .unwrap();
    assert_eq!(topic, "centinela/control");
    assert_eq!(serde_json::from_slice::<Control>(&payload).unwrap(), ack);

    // Closing the control channel (the viewer quit) ends the feed.
    drop(control_tx);
    timeout(Duration::from_secs(5), feed)
        .await
        .expect("feed ended")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_viewer_is_refused_and_cannot_act() {
    let port = free_port();
    start_broker(port, true);
    let (_service, mut control_seen) =
        service_client(port, "service", &["centinela/control"]).await;
    let (live_tx, mut live_rx) = broadcast::channel(1024);
    let (control_tx, control_rx) = mpsc::channel(8);
    let _feed = tokio::spawn(remote::feed(
        viewer_opts(port, "anonymous", false),
        live_tx,
        control_rx,
    ));
    let mut app = App::new(Options::default(), tui_fixture::NOW);
    app.set_size(160, 30);
    let down = until(
        &mut live_rx,
        &mut app,
        10,
        |ev| matches!(ev, LiveEvent::Status(s) if !s.broker_up),
    )
    .await;
    assert!(down, "refusal not reported");
    let screen = render(&mut app);
    assert!(
        screen
            .lines()
            .next()
            .unwrap()
            .contains(&format!("BROKER DOWN mqtt://127.0.0.1:{port}")),
        "{screen}"
    );
    assert!(
        screen.contains("no figures from the service yet"),
        "{screen}"
    );
    assert!(
        app.log()
            .iter()
            .any(|l| l.level == LogLevel::Error && l.text.contains("no connection to")),
        "{:?}",
        app.log()
    );

    control_tx
        .send(Control::Ack {
            alert: "too-hot/greenhouse/node2/temperature".into(),
            by: "tui".into(),
        })
        .await
        .unwrap();
    // Several reconnect attempts pass; none may carry the request through.
    let got = timeout(Duration::from_secs(3), control_seen.recv()).await;
    assert!(
        got.is_err(),
        "an anonymous viewer's control reached the service: {got:?}"
    );
    assert!(!until(&mut live_rx, &mut app, 1, connected).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_broker_shows_and_the_viewer_reconnects() {
    let port = free_port();
    let (live_tx, mut live_rx) = broadcast::channel(1024);
    let (_control_tx, control_rx) = mpsc::channel(8);
    let _feed = tokio::spawn(remote::feed(
        viewer_opts(port, "viewer-2", true),
        live_tx,
        control_rx,
    ));
    let mut app = App::new(Options::default(), tui_fixture::NOW);
    assert!(
        until(
            &mut live_rx,
            &mut app,
            10,
            |ev| matches!(ev, LiveEvent::Status(s) if !s.broker_up)
        )
        .await
    );
    assert!(app
        .status()
        .is_some_and(|s| !s.broker_up && s.broker.contains("retry in")));

    // The broker comes up: the viewer finds it by itself.
    let started = Instant::now();
    start_broker(port, true);
    assert!(
        until(&mut live_rx, &mut app, 15, connected).await,
        "no reconnect"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(11), "backoff too long: {took:?}");
    let (service, _) = service_client(port, "service-2", &[]).await;
    let mut seen = false;
    for _ in 0..50 {
        service
            .publish(
                "sensors/cellar/node3/temperature",
                QoS::AtMostOnce,
                false,
                "12.25",
            )
            .await
            .unwrap();
        if until(
            &mut live_rx,
            &mut app,
            1,
            |ev| matches!(ev, LiveEvent::Readings(r) if r.iter().any(|r| r.value == 12.25)),
        )
        .await
        {
            seen = true;
            break;
        }
    }
    assert!(seen, "no readings after the reconnect");
}
