//! A hub transport on 127.0.0.1 with a test CA, fake seams and the memory store.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hub_core::{
    Authenticator, BoxFuture, Clock, Credentials, DeviceJob, DeviceJobs, DevicePrincipal,
    DeviceReport, Error, JobId, JobState, Principal, RecordedEvents, Role, SystemClock, Timestamp,
    UserPrincipal,
};
use hub_store::memory::MemoryStore;
use hub_store::{NewDevice, StoreLimits, Stores};
use hub_transport::{Transport, TransportConfig, tls};
use tokio_util::sync::CancellationToken;

/// Device credentials known to the fake authenticator: (tenant group, device, key).
pub const DEVICES: &[(&str, &str, &str)] = &[
    ("acme/plant-1", "pump-7", "hk_pump7_secret"),
    ("acme/plant-1", "pump-8", "hk_pump8_secret"),
    ("acme/plant-2", "pump-9", "hk_pump9_secret"),
    ("globex/site", "pump-7", "hk_globex7_secret"),
];

/// Bearer tokens: a viewer of acme/plant-1 and one of acme/plant-2.
pub const PLANT1_VIEWER: &str = "token-plant-1";
pub const PLANT2_VIEWER: &str = "token-plant-2";

#[derive(Debug, Default)]
pub struct FakeAuth;

impl Authenticator for FakeAuth {
    fn authenticate<'a>(&'a self, c: &'a Credentials) -> BoxFuture<'a, Result<Principal, Error>> {
        Box::pin(async move {
            match c {
                Credentials::AccessKey { device, key } => DEVICES
                    .iter()
                    .find(|(_, d, k)| {
                        *k == key.expose() && device.as_ref().is_none_or(|x| x.as_str() == *d)
                    })
                    .map(|(g, d, _)| {
                        Principal::Device(DevicePrincipal {
                            id: d.parse().unwrap(),
                            group: g.parse().unwrap(),
                        })
                    })
                    .ok_or_else(|| Error::unauthenticated("bad credentials")),
                Credentials::Bearer(t) => {
                    let group = match t.expose() {
                        PLANT1_VIEWER => "acme/plant-1",
                        PLANT2_VIEWER => "acme/plant-2",
                        _ => return Err(Error::unauthenticated("bad token")),
                    };
                    Ok(Principal::User(UserPrincipal {
                        id: "erin".parse().unwrap(),
                        group: group.parse().unwrap(),
                        scopes: Role::Viewer.scopes(),
                    }))
                }
                _ => Err(Error::unauthenticated("unsupported")),
            }
        })
    }
}

/// One job per device; reports are recorded and the first report's status wins.
#[derive(Debug)]
pub struct FakeJobs {
    pub job: JobId,
    pub reports: Mutex<Vec<(String, u32, DeviceReport)>>,
}

impl FakeJobs {
    fn device_job(&self, state: JobState) -> DeviceJob {
        DeviceJob {
            id: self.job,
            execution: 1,
            version: 2,
            lane: "default".into(),
            state,
            document: serde_json::json!({"op": "reboot"}),
        }
    }
}

impl DeviceJobs for FakeJobs {
    fn next_job<'a>(
        &'a self,
        device: &'a Principal,
        _lane: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<DeviceJob>, Error>> {
        Box::pin(async move {
            match device {
                Principal::Device(_) => Ok(Some(self.device_job(JobState::InProgress))),
                _ => Err(Error::forbidden("devices only")),
            }
        })
    }

    fn report<'a>(
        &'a self,
        device: &'a Principal,
        job: &'a JobId,
        execution: u32,
        report: DeviceReport,
    ) -> BoxFuture<'a, Result<DeviceJob, Error>> {
        Box::pin(async move {
            if *job != self.job || execution != 1 {
                return Err(Error::not_found("no such job execution"));
            }
            self.reports
                .lock()
                .unwrap()
                .push((device.describe(), execution, report));
            Ok(self.device_job(JobState::Succeeded))
        })
    }
}

pub struct Hub {
    pub port: u16,
    /// MQTT over WebSocket/TLS (`GET /mqtt`).
    pub ws_port: u16,
    pub ca: PathBuf,
    pub ca_pem: String,
    pub transport: Transport,
    pub shutdown: CancellationToken,
    pub events: Arc<RecordedEvents>,
    pub jobs: Arc<FakeJobs>,
    pub stores: Stores,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

pub struct TestCa {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn test_ca() -> TestCa {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hub test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    TestCa {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl Hub {
    pub async fn start(config: TransportConfig) -> Hub {
        Self::start_with(config, tls::TlsVersions::Tls13).await
    }

    pub async fn start_with(config: TransportConfig, versions: tls::TlsVersions) -> Hub {
        let stores = MemoryStore::new(StoreLimits::default()).into_stores();
        let now = SystemClock.now();
        for tenant in ["acme", "globex"] {
            stores
                .registry
                .create_tenant(&tenant.parse().unwrap(), tenant, now)
                .await
                .unwrap();
        }
        for g in ["acme/plant-1", "acme/plant-2", "globex/site"] {
            stores
                .registry
                .create_group(&g.parse().unwrap(), g, now)
                .await
                .unwrap();
        }
        for (g, d, _) in DEVICES {
            stores
                .registry
                .create_device(
                    NewDevice {
                        id: d.parse().unwrap(),
                        group: g.parse().unwrap(),
                        display_name: String::new(),
                        attributes: serde_json::json!({}),
                    },
                    now,
                )
                .await
                .unwrap();
        }
        let ca = test_ca();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.ca_pem).unwrap();
        let tls =
            tls::server_config_from_pem(ca.cert_pem.as_bytes(), ca.key_pem.as_bytes(), versions)
                .unwrap();
        let events = Arc::new(RecordedEvents::new());
        let jobs = Arc::new(FakeJobs {
            job: JobId::new(Timestamp::EPOCH),
            reports: Mutex::new(Vec::new()),
        });
        let transport = Transport::builder(
            Arc::new(FakeAuth),
            jobs.clone(),
            stores.measurements.clone(),
            stores.registry.clone(),
        )
        .config(config)
        .events(events.clone())
        .build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_port = ws_listener.local_addr().unwrap().port();
        {
            let t = transport.clone();
            let s = shutdown.clone();
            let tls = tls.clone();
            tokio::spawn(async move { t.serve_websocket(ws_listener, tls, s).await });
        }
        let server = {
            let t = transport.clone();
            let s = shutdown.clone();
            tokio::spawn(async move { t.serve(listener, tls, s).await })
        };
        Hub {
            port,
            ws_port,
            ca: ca_path,
            ca_pem: ca.ca_pem,
            transport,
            shutdown,
            events,
            jobs,
            stores,
            server,
            _dir: dir,
        }
    }
}

/// Whether an external client is installed; if not, says how to get it and fails only under CI.
pub fn have_tool(tool: &str, install: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--help")
        .output()
        .is_ok();
    if !found {
        eprintln!("skipping: `{tool}` is not installed; install it with `{install}`");
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is required under CI"
        );
    }
    found
}

pub fn _unused(_: HashMap<(), ()>) {}
