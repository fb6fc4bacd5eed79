//! The hub side of the density bench: hub-transport's MQTT-over-TLS listener with an in-memory
//! authenticator that accepts the run's generated device keys, the in-memory store (the devices
//! registered in one group, for topic access control) and no jobs. The `density` orchestrator
//! starts it as a child process of the same binary, one or several times, each process for its
//! own contiguous range of devices:
//!
//! `density hub-server --port P --cert server.pem --key server.key --seed S --first-device F --devices N`
//!
//! serves devices `F..F+N` (`--first-device` defaults to 0).

use std::sync::Arc;

use hub_benches::density::{GROUP, device_id, device_index, publisher_password};
use hub_core::{
    Authenticator, BoxFuture, Clock, Credentials, DeviceJob, DeviceJobs, DevicePrincipal,
    DeviceReport, Error, GroupPath, JobId, Principal, Role, SystemClock, UserPrincipal,
};
use hub_store::memory::MemoryStore;
use hub_store::{NewDevice, StoreLimits};
use hub_transport::{Transport, TransportConfig, tls};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Accepts device `i` of its range with its generated access key, and the publisher's bearer
/// token. Keys are kept as SHA-256 digests, as a real credential store keeps them.
#[derive(Debug)]
struct BenchAuth {
    group: GroupPath,
    /// The index of the first device this server serves.
    first: usize,
    /// The key digests of devices `first..first + key_digests.len()`.
    key_digests: Vec<[u8; 32]>,
    publisher_digest: [u8; 32],
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl BenchAuth {
    fn check(&self, credentials: &Credentials) -> Result<Principal, Error> {
        let refused = || Error::unauthenticated("bad credentials");
        match credentials {
            Credentials::AccessKey { device, key } => {
                // The key id (`hk_k<index>_…`) names the device whose digest to compare.
                let index: usize = key
                    .expose()
                    .strip_prefix("hk_k")
                    .and_then(|rest| rest.split('_').next())
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(refused)?;
                let expected = index
                    .checked_sub(self.first)
                    .and_then(|k| self.key_digests.get(k))
                    .ok_or_else(refused)?;
                if digest(key.expose()) != *expected {
                    return Err(refused());
                }
                if let Some(device) = device
                    && device_index(device.as_str()) != Some(index)
                {
                    return Err(refused());
                }
                Ok(Principal::Device(DevicePrincipal {
                    id: device_id(index).parse().map_err(|_| refused())?,
                    group: self.group.clone(),
                }))
            }
            Credentials::Bearer(token) if digest(token.expose()) == self.publisher_digest => {
                Ok(Principal::User(UserPrincipal {
                    id: "bench-publisher".parse().map_err(|_| refused())?,
                    group: self.group.clone(),
                    scopes: Role::Viewer.scopes(),
                }))
            }
            _ => Err(refused()),
        }
    }
}

impl Authenticator for BenchAuth {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials,
    ) -> BoxFuture<'a, Result<Principal, Error>> {
        Box::pin(async move { self.check(credentials) })
    }
}

/// The bench's devices have no jobs.
#[derive(Debug)]
struct NoJobs;

impl DeviceJobs for NoJobs {
    fn next_job<'a>(
        &'a self,
        _device: &'a Principal,
        _lane: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<DeviceJob>, Error>> {
        Box::pin(async { Ok(None) })
    }

    fn report<'a>(
        &'a self,
        _device: &'a Principal,
        _job: &'a JobId,
        _execution: u32,
        _report: DeviceReport,
    ) -> BoxFuture<'a, Result<DeviceJob, Error>> {
        Box::pin(async { Err(Error::not_found("the density bench runs no jobs")) })
    }
}

#[derive(Debug)]
struct Args {
    port: u16,
    cert: String,
    key: String,
    seed: String,
    /// The first device this process serves.
    first_device: usize,
    /// How many devices (from `first_device` on) it serves.
    devices: usize,
    /// Leave SO_SNDBUF/SO_RCVBUF to the kernel instead of the transport's small caps.
    kernel_buffers: bool,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        cert: String::new(),
        key: String::new(),
        seed: String::new(),
        first_device: 0,
        devices: 0,
        kernel_buffers: false,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--kernel-buffers" {
            args.kernel_buffers = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--port" => args.port = value.parse().map_err(|e| bad(&e))?,
            "--cert" => args.cert = value.clone(),
            "--key" => args.key = value.clone(),
            "--seed" => args.seed = value.clone(),
            "--first-device" => args.first_device = value.parse().map_err(|e| bad(&e))?,
            "--devices" => args.devices = value.parse().map_err(|e| bad(&e))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

async fn serve(args: Args) -> Result<(), String> {
    let group: GroupPath = GROUP.parse().map_err(|e| format!("{GROUP}: {e}"))?;
    let stores = MemoryStore::new(StoreLimits::default()).into_stores();
    let now = SystemClock.now();
    let store_err = |e: Error| format!("registering the bench's devices: {e}");
    stores
        .registry
        .create_tenant(&group.tenant(), "density bench", now)
        .await
        .map_err(store_err)?;
    stores
        .registry
        .create_group(&group, "density bench", now)
        .await
        .map_err(store_err)?;
    let mut key_digests = Vec::with_capacity(args.devices);
    for i in args.first_device..args.first_device + args.devices {
        stores
            .registry
            .create_device(
                NewDevice {
                    id: device_id(i)
                        .parse()
                        .map_err(|e| format!("device id: {e}"))?,
                    group: group.clone(),
                    display_name: String::new(),
                    attributes: serde_json::json!({}),
                },
                now,
            )
            .await
            .map_err(store_err)?;
        key_digests.push(digest(&hub_benches::density::access_key(&args.seed, i)));
    }
    let auth = BenchAuth {
        group,
        first: args.first_device,
        key_digests,
        publisher_digest: digest(&publisher_password(&args.seed)),
    };
    let mut config = TransportConfig {
        // The bench ramps connections as fast as the clients go; the hub's default accept rate
        // limit (a protection for production) would only measure itself.
        accept_rate_per_sec: 100_000,
        accept_burst: 100_000,
        ..TransportConfig::default()
    };
    if args.kernel_buffers {
        config.socket.send_buffer = None;
        config.socket.recv_buffer = None;
    }
    let transport = Transport::builder(
        Arc::new(auth),
        Arc::new(NoJobs),
        stores.measurements,
        stores.registry,
    )
    .config(config)
    .build();
    let tls = tls::server_config_from_pem_files(
        args.cert.as_ref(),
        args.key.as_ref(),
        tls::TlsVersions::Tls13,
    )
    .map_err(|e| format!("TLS: {e}"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| format!("binding 127.0.0.1:{}: {e}", args.port))?;
    transport
        .serve(listener, tls, CancellationToken::new())
        .await
        .map_err(|e| format!("serving: {e}"))
}

/// Runs the hub server until it is killed (`argv` without the leading `hub-server`).
pub(crate) fn run(argv: &[String]) -> Result<(), String> {
    let args = parse_args(argv)?;
    // tokio's default: one worker thread per core, as an application would run the hub.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?
        .block_on(serve(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_core::{DeviceId, Secret};

    /// The authenticator of a server for devices `first..first + count`.
    fn auth_for(first: usize, count: usize) -> BenchAuth {
        BenchAuth {
            group: GROUP.parse().unwrap(),
            first,
            key_digests: (first..first + count)
                .map(|i| digest(&hub_benches::density::access_key("s", i)))
                .collect(),
            publisher_digest: digest(&publisher_password("s")),
        }
    }

    fn auth() -> BenchAuth {
        auth_for(0, 3)
    }

    fn key(device: Option<&str>, key: String) -> Credentials {
        Credentials::AccessKey {
            device: device.map(|d| d.parse::<DeviceId>().unwrap()),
            key: Secret::new(key),
        }
    }

    #[test]
    fn a_device_gets_in_with_its_own_key_only() {
        let a = auth();
        let ok = a
            .check(&key(
                Some("dev-000002"),
                hub_benches::density::access_key("s", 2),
            ))
            .unwrap();
        assert!(matches!(ok, Principal::Device(d) if d.id.as_str() == "dev-000002"));
        // Without a user name the key alone names the device.
        a.check(&key(None, hub_benches::density::access_key("s", 1)))
            .unwrap();
        // Another device's name, another run's key, an unknown index, garbage: refused.
        for bad in [
            key(Some("dev-000001"), hub_benches::density::access_key("s", 2)),
            key(Some("dev-000002"), hub_benches::density::access_key("t", 2)),
            key(None, hub_benches::density::access_key("s", 3)),
            key(None, "hk_kx_y".to_owned()),
            key(None, "not-a-key".to_owned()),
        ] {
            assert!(a.check(&bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_server_for_a_range_accepts_only_the_devices_of_its_range() {
        let a = auth_for(5, 3);
        for i in 5..8 {
            let p = a
                .check(&key(
                    Some(&hub_benches::density::device_id(i)),
                    hub_benches::density::access_key("s", i),
                ))
                .unwrap();
            assert!(
                matches!(p, Principal::Device(d) if d.id.as_str() == hub_benches::density::device_id(i))
            );
        }
        // Valid keys of devices another server process owns.
        for i in [0, 4, 8] {
            let bad = key(None, hub_benches::density::access_key("s", i));
            assert!(a.check(&bad).is_err(), "device {i} was accepted");
        }
    }

    #[test]
    fn server_arguments_name_the_device_range() {
        let argv: Vec<String> = "--port 1 --seed s --first-device 19000 --devices 500"
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let args = parse_args(&argv).unwrap();
        assert_eq!((args.first_device, args.devices), (19_000, 500));
        assert_eq!(parse_args(&argv[..2]).unwrap().first_device, 0);
        assert!(parse_args(&["--first-device".to_owned()]).is_err());
    }

    #[test]
    fn only_the_publisher_token_is_a_bearer() {
        let a = auth();
        let p = a
            .check(&Credentials::Bearer(Secret::new(publisher_password("s"))))
            .unwrap();
        assert!(matches!(p, Principal::User(_)));
        assert!(a.check(&Credentials::Bearer(Secret::new("other"))).is_err());
    }
}
