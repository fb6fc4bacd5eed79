//! The hub, composed from the SDK crates: `cargo run --release --example hub`.
//!
//! What it runs today: the storage layer (SQLite in `--data-dir`, or PostgreSQL with
//! `--postgres-url`), migrated on start, with measurement retention applied every hour. The Web
//! API, OAuth and the MQTT device listener join as their crates land (see the README).
//!
//! ```text
//! hub [--data-dir DIR] [--postgres-url URL] [--durability process-crash|power-loss]
//!     [--retention-days N]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use hub_core::{Clock, SystemClock};
use hub_store::postgres::{PostgresConfig, PostgresStore};
use hub_store::sqlite::{SqliteConfig, SqliteStore};
use hub_store::{Durability, StoreLimits, Stores};

#[derive(Debug)]
struct Options {
    data_dir: PathBuf,
    postgres_url: Option<String>,
    durability: Durability,
    retention: Duration,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        data_dir: PathBuf::from("./hub-data"),
        postgres_url: None,
        durability: Durability::ProcessCrash,
        retention: Duration::from_secs(400 * 24 * 3600),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--data-dir" => o.data_dir = value("--data-dir")?.into(),
            "--postgres-url" => o.postgres_url = Some(value("--postgres-url")?),
            "--durability" => {
                o.durability = match value("--durability")?.as_str() {
                    "process-crash" => Durability::ProcessCrash,
                    "power-loss" => Durability::PowerLoss,
                    other => return Err(format!("unknown durability {other:?}")),
                }
            }
            "--retention-days" => {
                let days: u64 = value("--retention-days")?
                    .parse()
                    .map_err(|_| "--retention-days takes a whole number".to_owned())?;
                o.retention = Duration::from_secs(days * 24 * 3600);
            }
            "--help" | "-h" => {
                return Err("usage: hub [--data-dir DIR] [--postgres-url URL] \
                     [--durability process-crash|power-loss] [--retention-days N]"
                    .into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

async fn open_stores(o: &Options) -> hub_core::Result<(Stores, String)> {
    match &o.postgres_url {
        Some(url) => {
            let store = PostgresStore::connect(PostgresConfig {
                url: url.clone(),
                schema: None,
                pool_size: 16,
                limits: StoreLimits::default(),
            })
            .await?;
            Ok((store.into_stores(), "PostgreSQL".to_owned()))
        }
        None => {
            let path = o.data_dir.join("hub.db");
            let store = SqliteStore::open(SqliteConfig {
                durability: o.durability,
                ..SqliteConfig::new(&path)
            })
            .await?;
            Ok((store.into_stores(), format!("SQLite at {}", path.display())))
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    let (stores, description) = match open_stores(&options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hub: cannot open the store: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("hub: storage ready ({description}, schema migrated)");
    eprintln!(
        "hub: keeping measurements for {} days; stop with Ctrl-C or SIGTERM",
        options.retention.as_secs() / 86_400
    );

    let retention = tokio::spawn({
        let measurements = stores.measurements.clone();
        async move {
            let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every_hour.tick().await;
                let cut = SystemClock.now().saturating_sub(options.retention);
                match measurements.delete_before(cut).await {
                    Ok(0) => {}
                    Ok(n) => eprintln!("hub: retention removed {n} points before {cut}"),
                    Err(e) => eprintln!("hub: retention failed: {e}"),
                }
            }
        }
    });

    shutdown_signal().await;
    retention.abort();
    eprintln!("hub: stopped");
    std::process::ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
