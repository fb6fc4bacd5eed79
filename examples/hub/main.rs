//! The hub, composed from the SDK crates: `cargo run --release --example hub`.
//!
//! One process serves:
//! - the Web API over HTTPS (`--http-addr`, default 127.0.0.1:8443): OAuth 2.0 / OIDC, the
//!   registry (groups, devices and their access keys, users, clients), the Job API with its
//!   event stream, the measurement API, MQTT over WebSocket at `/mqtt`, and `/openapi.json`;
//! - MQTT over TLS for devices (`--mqtt-addr`, default 127.0.0.1:8883).
//!
//! State lives in SQLite in `--data-dir` (default `./hub-data`), or in PostgreSQL with
//! `--postgres-url`. On first start it makes a development CA and server certificate
//! (`ca.pem`, `server.pem`, `server.key`), the OAuth signing keys, and the bootstrap
//! administrator, whose one-time credentials it prints and writes to `bootstrap-admin.json`
//! (mode 0600). SIGTERM or Ctrl-C drains connections and stops.
//!
//! ```text
//! hub [--data-dir DIR] [--postgres-url URL] [--http-addr ADDR] [--mqtt-addr ADDR]
//!     [--hostname NAME]... [--public-url URL] [--tenant TENANT]
//!     [--durability process-crash|power-loss] [--retention-days N]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use hub_auth::access_keys::{AccessKeyConfig, AccessKeys};
use hub_auth::keys::{Algorithm, KeySet, SharedKeys};
use hub_auth::oauth::{AuthServer, OAuthConfig};
use hub_auth::tokens::{TokenValidator, ValidatorConfig};
use hub_auth::{AuthLayer, HubAuthenticator};
use hub_core::{Clock, DeviceJobs, SystemClock, TenantId};
use hub_examples::dev_pki::{DevPki, write_private};
use hub_jobs::events::EventBus;
use hub_jobs::http::JobsHttp;
use hub_jobs::{BulkJobs, JobService};
use hub_store::http::{MeasurementApi, MeasurementApiConfig};
use hub_store::postgres::{PostgresConfig, PostgresStore};
use hub_store::sqlite::{SqliteConfig, SqliteStore};
use hub_store::{Durability, StoreLimits, Stores};
use hub_transport::https::{HttpsConfig, TlsListener};
use hub_transport::{DeviceJobsSlot, Transport, TransportConfig};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
struct Options {
    data_dir: PathBuf,
    postgres_url: Option<String>,
    http_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    hostnames: Vec<String>,
    public_url: Option<String>,
    tenant: TenantId,
    durability: Durability,
    retention: Duration,
}

const USAGE: &str = "usage: hub [--data-dir DIR] [--postgres-url URL] [--http-addr ADDR] \
    [--mqtt-addr ADDR] [--hostname NAME]... [--public-url URL] [--tenant TENANT] \
    [--durability process-crash|power-loss] [--retention-days N]";

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        data_dir: PathBuf::from("./hub-data"),
        postgres_url: None,
        http_addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
        mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 8883)),
        hostnames: Vec::new(),
        public_url: None,
        tenant: "demo".parse().map_err(|e| format!("{e}"))?,
        durability: Durability::ProcessCrash,
        retention: Duration::from_secs(400 * 24 * 3600),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let addr = |v: String| v.parse::<SocketAddr>().map_err(|e| format!("{v}: {e}"));
        match arg.as_str() {
            "--data-dir" => o.data_dir = value("--data-dir")?.into(),
            "--postgres-url" => o.postgres_url = Some(value("--postgres-url")?),
            "--http-addr" => o.http_addr = addr(value("--http-addr")?)?,
            "--mqtt-addr" => o.mqtt_addr = addr(value("--mqtt-addr")?)?,
            "--hostname" => o.hostnames.push(value("--hostname")?),
            "--public-url" => o.public_url = Some(value("--public-url")?),
            "--tenant" => {
                o.tenant = value("--tenant")?
                    .parse()
                    .map_err(|e| format!("--tenant: {e}"))?
            }
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
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.hostnames.is_empty() {
        o.hostnames = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(options).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(o: Options) -> Result<(), BoxError> {
    std::fs::create_dir_all(&o.data_dir)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (stores, description) = open_stores(&o).await?;
    eprintln!("hub: storage ready ({description}, schema migrated)");

    // TLS for everything devices and apps connect to.
    let pki = DevPki::load_or_create(&o.data_dir, &o.hostnames)?;
    if pki.created {
        eprintln!(
            "hub: made a development CA; clients trust {}",
            pki.ca_pem_path.display()
        );
    }
    let https_tls = pki.server_config(&[b"http/1.1"])?;
    let mqtt_tls = pki.server_config(&[b"mqtt"])?;

    // Identity: OAuth signing keys, tokens, device access keys, the first administrator.
    let public_url = o
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://localhost:{}", o.http_addr.port()));
    let keys = SharedKeys::new(KeySet::load_or_generate(
        &o.data_dir.join("oauth-keys.json"),
        Algorithm::Es256,
        clock.now(),
    )?);
    let validator = Arc::new(
        TokenValidator::new(ValidatorConfig::new(&public_url), clock.clone())
            .with_local_issuer(&public_url, keys.clone()),
    );
    let auth_server = Arc::new(AuthServer::new(
        OAuthConfig::new(&public_url),
        stores.registry.clone(),
        stores.credentials.clone(),
        keys,
        validator.clone(),
        clock.clone(),
    )?);
    let access_keys = Arc::new(AccessKeys::new(
        &stores,
        clock.clone(),
        AccessKeyConfig::default(),
    ));
    let authenticator =
        Arc::new(HubAuthenticator::new(validator).with_access_keys(access_keys.clone()));
    bootstrap(&o, &stores, clock.as_ref(), &public_url, &pki.ca_pem_path).await?;

    // Devices' sessions, the job service and the event bus, wired through hub-core's seams.
    let bus = EventBus::new(4096);
    let device_jobs = Arc::new(DeviceJobsSlot::new());
    let transport = Transport::builder(
        authenticator.clone(),
        device_jobs.clone(),
        stores.measurements.clone(),
        stores.registry.clone(),
    )
    .config(TransportConfig::default())
    .events(Arc::new(bus.clone()))
    .clock(clock.clone())
    .build();
    let jobs = JobService::new(
        stores.jobs.clone(),
        stores.registry.clone(),
        transport.notifier(),
        transport.presence_query(),
        Arc::new(bus.clone()),
        clock.clone(),
    );
    device_jobs.set(Arc::new(jobs.clone()) as Arc<dyn DeviceJobs>);
    let bulk = BulkJobs::new(
        stores.bulk.clone(),
        stores.jobs.clone(),
        stores.registry.clone(),
        jobs.clone(),
        clock.clone(),
    );

    // The Web API: every crate's router under the authentication layer, OAuth beside it.
    let measurements = MeasurementApi::new(
        stores.measurements.clone(),
        stores.registry.clone(),
        clock.clone(),
        MeasurementApiConfig::default(),
    );
    let registry = hub_auth::registry_api::RegistryState::new(
        stores.clone(),
        access_keys.clone(),
        clock.clone(),
    );
    let mut openapi = hub_auth::oauth::openapi();
    openapi.merge(hub_auth::registry_api::openapi());
    openapi.merge(hub_jobs::http::openapi());
    openapi.merge(hub_store::http::openapi());
    openapi.merge(Transport::openapi());
    openapi.info.title = "IoT hub".into();
    let openapi = serde_json::to_value(&openapi)?;
    let api = axum::Router::new()
        .merge(hub_auth::registry_api::router(registry))
        .merge(hub_jobs::http::router(
            JobsHttp::new(jobs.clone())
                .with_events(bus.clone())
                .with_bulk(bulk.clone()),
        ))
        .merge(measurements.router())
        .merge(transport.router())
        .layer(AuthLayer::new(authenticator));
    let app = axum::Router::new()
        .merge(hub_auth::oauth::router(auth_server))
        .merge(api)
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { axum::Json(openapi.clone()) }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::map_response(
            hub_core::http::rejections_as_problems,
        ));

    let shutdown = CancellationToken::new();
    let https = tokio::net::TcpListener::bind(o.http_addr).await?;
    let mqtt = tokio::net::TcpListener::bind(o.mqtt_addr).await?;
    eprintln!("hub: Web API on https://{}", https.local_addr()?);
    eprintln!("hub: MQTT over TLS on {}", mqtt.local_addr()?);
    eprintln!(
        "hub: MQTT over WebSocket on wss://{}/mqtt",
        https.local_addr()?
    );
    let web = tokio::spawn({
        let shutdown = shutdown.clone();
        // `tap_io` gives axum's `ConnectInfo<SocketAddr>` (sign-in throttling per client address).
        let listener = TlsListener::new(https, https_tls, HttpsConfig::default()).tap_io(|_tls| {});
        async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        }
    });
    let devices = tokio::spawn({
        let (transport, shutdown) = (transport.clone(), shutdown.clone());
        async move { transport.serve(mqtt, mqtt_tls, shutdown).await }
    });
    let timers = tokio::spawn(timers(jobs, bulk, stores.clone(), o.retention));
    eprintln!("hub: ready; stop with Ctrl-C or SIGTERM");

    shutdown_signal().await;
    eprintln!("hub: draining connections");
    shutdown.cancel();
    timers.abort();
    let (web, devices) = tokio::join!(web, devices);
    web??;
    devices??;
    eprintln!("hub: stopped");
    Ok(())
}

/// On the first start: the tenant, an administrator client and user; their secrets are shown
/// once and kept in `bootstrap-admin.json`, readable by the owner only.
async fn bootstrap(
    o: &Options,
    stores: &Stores,
    clock: &dyn Clock,
    public_url: &str,
    ca: &std::path::Path,
) -> Result<(), BoxError> {
    let Some(created) = hub_auth::bootstrap::ensure_bootstrap(stores, &o.tenant, clock).await?
    else {
        return Ok(());
    };
    let file = o.data_dir.join("bootstrap-admin.json");
    let doc = serde_json::json!({
        "tenant": created.tenant.to_string(),
        "client_id": created.client_id.to_string(),
        "client_secret": created.client_secret.expose(),
        "admin_user": created.admin_user.to_string(),
        "admin_password": created.admin_password.expose(),
        "token_endpoint": format!("{public_url}/oauth/token"),
        "ca": ca.display().to_string(),
    });
    write_private(&file, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    eprintln!(
        "hub: first start: tenant {}, OAuth client {} (client_credentials) and user {}; their \
         one-time credentials are in {}:\n{doc:#}",
        created.tenant,
        created.client_id,
        created.admin_user,
        file.display()
    );
    Ok(())
}

/// The hub's clocks: job and rollout timers every second, measurement retention every hour.
async fn timers(jobs: JobService, bulk: BulkJobs, stores: Stores, retention: Duration) {
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        second.tick().await;
        if let Err(e) = jobs.tick().await {
            eprintln!("hub: job timers: {e}");
        }
        if let Err(e) = bulk.tick().await {
            eprintln!("hub: rollouts: {e}");
        }
        if ticks.is_multiple_of(3600) {
            let cut = SystemClock.now().saturating_sub(retention);
            match stores.measurements.delete_before(cut).await {
                Ok(0) => {}
                Ok(n) => eprintln!("hub: retention removed {n} points before {cut}"),
                Err(e) => eprintln!("hub: retention failed: {e}"),
            }
        }
        ticks += 1;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
