//! `centinela demo`: the service on the demo configuration with simulated sensors, in
//! the terminal UI or with a printed live summary.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{init_logging, init_logging_to};
use crate::config::{self, Config};
use crate::model::{format_ts, now_ms, AlertState, LiveEvent};
use crate::service::reload::wait_for_stop;
use crate::service::{Options, Service};
use crate::store::sqlite;

use super::DemoArgs;

pub(super) async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = Config::parse(config::DEMO_TOML, "<demo config>")?;
    use std::io::IsTerminal;
    let interactive = !args.headless && std::io::stdout().is_terminal();
    let tmp;
    let dir = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("while creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("while creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    cfg.broker.listen = match args.listen {
        Some(a) => a,
        None if std::net::TcpListener::bind(cfg.broker.listen).is_ok() => cfg.broker.listen,
        None => std::net::SocketAddr::from(([127, 0, 0, 1], crate::broker::free_port()?)),
    };
    let db = dir.join("centinela.db");
    if interactive {
        // Logs would draw over the screen: they go to a file beside the database.
        init_logging_to(&cfg, Some(&dir.join("centinela.log")));
    } else {
        init_logging(&cfg, !args.headless);
    }
    let mut service = Service::start(
        cfg.clone(),
        Options {
            db_path: Some(db.clone()),
        },
    )
    .await?;
    let addr = service
        .broker_addr
        .context("the demo needs the embedded broker")?;
    eprintln!(
        "centinela demo: broker mqtt://{addr}, database {}",
        db.display()
    );
    eprintln!(
        "  try: mosquitto_sub -h {} -p {} -t 'sensors/#' -v",
        addr.ip(),
        addr.port()
    );

    let scenario = centinela_sim::Scenario::load(&args.scenario)
        .with_context(|| format!("while loading scenario {:?}", args.scenario))?;
    let (sim_stop_tx, sim_stop_rx) = tokio::sync::watch::channel(false);
    let mut sim_opts =
        centinela_sim::PublishOptions::new(addr.ip().to_string(), addr.port(), scenario);
    sim_opts.seed = args.seed;
    sim_opts.client_id = "centinela-demo-sensors".into();
    sim_opts.shutdown = Some(sim_stop_rx);
    let sim = tokio::spawn(centinela_sim::publish(sim_opts));

    let summary = (!args.headless && !interactive)
        .then(|| tokio::spawn(print_summary(service.live.subscribe())));
    let outcome = if interactive {
        let view = service.view.borrow().clone();
        let pool = sqlite::open_existing(&db).await.ok();
        let mut about = vec![
            ("broker".to_string(), format!("mqtt://{addr}")),
            ("database".to_string(), db.display().to_string()),
        ];
        if args.data_dir.is_none() {
            about.push((
                String::new(),
                "deleted on quit; keep it with --data-dir DIR".to_string(),
            ));
        }
        about.push((
            "try".to_string(),
            format!(
                "mosquitto_sub -h {} -p {} -t 'sensors/#' -v",
                addr.ip(),
                addr.port()
            ),
        ));
        let opts = crate::tui::RunOptions {
            app: crate::tui::Options {
                about,
                ..Default::default()
            },
            thresholds: crate::tui::thresholds_from_rules(&cfg.rules),
            initial: view.initial_events(),
            db: pool.clone(),
        };
        let history = pool.map(|pool| {
            std::sync::Arc::new(sqlite::SqliteHistory {
                pool,
                runtime: tokio::runtime::Handle::current(),
            }) as std::sync::Arc<dyn crate::tui::HistorySource>
        });
        let ui = crate::tui::run(
            service.live.subscribe(),
            service.control.clone(),
            history,
            opts,
        );
        let limit = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = ui => r.map_err(anyhow::Error::from),
            _ = limit => Ok(()),
            e = service.failed() => Err(e),
        }
    } else {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("while installing the SIGTERM handler")?;
        wait_for_stop(&mut service, &mut term, args.duration).await
    };
    let _ = sim_stop_tx.send(true);
    match sim.await {
        Ok(Ok(stats)) => tracing::info!(published = stats.published, "simulators stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "simulators failed"),
        Err(e) => tracing::error!(error = %e, "simulators panicked"),
    }
    // Give the broker a moment to hand over what the simulators just sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(s) = summary {
        s.abort();
    }
    service.shutdown().await?;
    outcome?;
    let pool = sqlite::open_existing(&db).await?;
    let sqlite::Totals {
        readings: n,
        series: s,
        alert_events: a,
    } = sqlite::totals(&pool).await?;
    let kept = if args.data_dir.is_some() {
        ""
    } else {
        " (a temporary directory, deleted now; keep it with --data-dir DIR)"
    };
    eprintln!(
        "centinela demo: stored {n} readings of {s} series and {a} alert events in {}{kept}",
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn print_summary(mut rx: tokio::sync::broadcast::Receiver<LiveEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut firing = std::collections::BTreeMap::new();
    let mut last_print = std::time::Instant::now();
    loop {
        match rx.recv().await {
            Ok(LiveEvent::Alert(e)) => {
                println!(
                    "{}  {:<12} {:<9} {}  {}",
                    &format_ts(e.ts)[11..19],
                    e.state,
                    e.severity,
                    e.alert_id(),
                    e.message
                );
                match e.state {
                    AlertState::Firing | AlertState::Repeat | AlertState::Acknowledged => {
                        firing.insert(e.alert_id(), e.severity);
                    }
                    AlertState::Resolved => {
                        firing.remove(&e.alert_id());
                    }
                    _ => {}
                }
            }
            Ok(LiveEvent::Status(s)) if last_print.elapsed() >= Duration::from_secs(5) => {
                last_print = std::time::Instant::now();
                println!(
                    "{}  {:>8.0} readings/s  received {}  stored {}  bad {}  firing {}",
                    &format_ts(now_ms())[11..19],
                    s.readings_per_s,
                    s.received_total,
                    s.stored_total,
                    s.decode_errors_total,
                    firing.len()
                );
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
    }
}
