//! `centinela tui`: the terminal UI attached to a running service through its broker,
//! with history from its database when reachable.

use std::process::ExitCode;

use super::{load, TuiArgs};
use crate::config;
use crate::store::sqlite;

pub(super) async fn tui(args: TuiArgs) -> anyhow::Result<ExitCode> {
    let (cfg, _) = load(args.config.config.as_deref())?;
    if args.config.config.is_none() && config::resolve_path(None).is_none() {
        eprintln!(
            "note: no configuration file ({}, {} or ./{}): using the embedded default's broker \
             and database; pass --config PATH",
            config::user_path().map_or("$XDG_CONFIG_HOME/centinela/centinela.toml".into(), |p| p
                .display()
                .to_string()),
            config::SYSTEM_PATH,
            config::LOCAL_PATH
        );
    }
    // No logging: lines would draw over the screen; the UI shows what matters.
    let url = match (&args.broker, cfg.broker.mode) {
        (Some(u), _) => u.clone(),
        (None, config::BrokerMode::External) => cfg.broker.url.clone().unwrap_or_default(),
        (None, config::BrokerMode::Embedded) => format!("mqtt://{}", cfg.broker.listen),
    };
    let mut username = args.username.clone().or(cfg.broker.username.clone());
    // A user of [[broker.users]] has its own password variable.
    let mut password = username.as_ref().and_then(|u| {
        let var = cfg
            .broker
            .users
            .iter()
            .find(|x| &x.name == u)
            .map_or(&cfg.broker.password_env, |x| &x.password_env);
        std::env::var(var).ok()
    });
    if username.is_none()
        && args.broker.is_none()
        && cfg.broker.mode == config::BrokerMode::Embedded
    {
        // The service on this machine: its local viewer login, when readable.
        let db = args.db.clone().unwrap_or(cfg.storage.sqlite.path.clone());
        if let Some((u, p)) = crate::broker::read_viewer_login(&db) {
            (username, password) = (Some(u), Some(p));
        }
    }
    let mut tls = cfg.broker.tls();
    if args.ca_file.is_some() {
        tls.ca_file = args.ca_file.clone();
    }
    let remote = crate::tui::remote::RemoteOptions {
        url,
        tls,
        client_id: format!("centinela-tui-{}", std::process::id()),
        username,
        password,
        prefix: cfg.ingest.prefix.clone(),
        topics: cfg.ingest.topics.clone(),
        map: cfg.ingest.map.clone(),
        max_payload: cfg.broker.max_payload,
    };
    let db = args.db.clone().unwrap_or(cfg.storage.sqlite.path.clone());
    let pool = match sqlite::open_existing(&db).await {
        Ok(pool) => Some(pool),
        Err(e) => {
            let why = match std::fs::File::open(&db) {
                Err(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                    format!("{}: {io}; {}", db.display(), config::permission_hint(&db))
                }
                _ => e.to_string(),
            };
            eprintln!("note: no history ({why})");
            None
        }
    };
    let history = pool.clone().map(|pool| {
        std::sync::Arc::new(sqlite::SqliteHistory {
            pool,
            runtime: tokio::runtime::Handle::current(),
        }) as std::sync::Arc<dyn crate::tui::HistorySource>
    });
    // Every series the service knows, with its last value, before the feed says
    // anything: the list is whole from the first screen.
    let initial = match &pool {
        Some(p) => crate::tui::seed::last_values(p).await.unwrap_or_else(|e| {
            eprintln!("note: series not read from {} ({e})", db.display());
            Vec::new()
        }),
        None => Vec::new(),
    };
    let opts = crate::tui::RunOptions {
        app: crate::tui::Options::default(),
        thresholds: crate::tui::thresholds_from_rules(&cfg.rules),
        initial,
        db: pool,
    };
    crate::tui::remote::attach(remote, history, opts).await?;
    Ok(ExitCode::SUCCESS)
}
