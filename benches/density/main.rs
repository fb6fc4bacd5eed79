//! Connection density bench (issue #6).
//!
//! `cargo run --release -p hub-benches --bin density -- --connections N` opens N authenticated
//! MQTT-over-TLS device connections from separate client processes against the server under test
//! (one child process, or for the hub several: `--server-processes`, by default enough that none
//! holds more than 19,000), holds them idle with keep-alive, and prints JSON with the server's
//! resident memory per connection, the kernel's slab growth per connection and the server's CPU
//! during the hold (summed over its processes, and per process under `per_server`); then does the
//! same against Mosquitto (`--peer mosquitto`, the default; one process, at most 19,000
//! connections) with the same client and certificate, reported under `peer`. `--handshakes`
//! measures full TLS 1.3 handshakes plus MQTT CONNECT per second instead (one server process);
//! `--messages` adds a phase in which every device receives a 1 KiB message a second. See
//! `BENCHMARKS.md` ("Connection density") for the method.
//!
//! The same binary is the client process (`density client …`) and the hub server
//! (`density hub-server …`), both started by the orchestrator.

// A bench reports on standard output, and the client processes talk to the orchestrator there.
#![allow(clippy::print_stdout)]

mod client;
mod hub_server;
mod mqtt;
mod procfs;
mod server;
mod setup;

use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::ClientArgs;
use crate::server::{Kind, Server};
use crate::setup::CertFiles;

/// At most this many connections per client process: the per-process open-file limit here is
/// 20,000, and a client needs one descriptor per connection plus a few.
const MAX_PER_CLIENT_PROCESS: usize = 15_000;

/// At most this many connections per server process: the same 20,000-file limit, with room for
/// the files a server opens besides its connections.
const MAX_PER_SERVER_PROCESS: usize = 19_000;

/// Mosquitto is one process, so it is asked for at most this many.
const MAX_MOSQUITTO: usize = MAX_PER_SERVER_PROCESS;

const USAGE: &str = "\
usage: density [--connections N] [--processes P] [--hold-secs S] [--keepalive-secs K]
               [--server hub|mosquitto] [--server-processes K] [--peer mosquitto|none]
               [--concurrency C]
               [--messages [--load-secs S]] [--hub-kernel-buffers]
               [--handshakes [--handshake-secs S] [--handshake-concurrency C]]";

/// The orchestrator's options.
#[derive(Debug, Clone)]
struct Options {
    connections: usize,
    processes: Option<usize>,
    hold_secs: u64,
    keepalive_secs: u16,
    server: Kind,
    /// Hub server processes (`None`: as many as 19,000 connections each need).
    server_processes: Option<usize>,
    peer: Option<Kind>,
    concurrency: usize,
    messages: bool,
    load_secs: u64,
    handshakes: bool,
    handshake_secs: u64,
    handshake_concurrency: usize,
    hub_kernel_buffers: bool,
}

fn parse_options(argv: &[String]) -> Result<Options, String> {
    let mut o = Options {
        connections: 2_000,
        processes: None,
        hold_secs: 60,
        keepalive_secs: 60,
        server: Kind::Hub,
        server_processes: None,
        peer: Some(Kind::Mosquitto),
        concurrency: 64,
        messages: false,
        load_secs: 30,
        handshakes: false,
        handshake_secs: 10,
        handshake_concurrency: 32,
        hub_kernel_buffers: false,
    };
    let kind = |s: &str| match s {
        "hub" => Ok(Some(Kind::Hub)),
        "mosquitto" => Ok(Some(Kind::Mosquitto)),
        "none" => Ok(None),
        other => Err(format!("unknown server {other:?} (hub, mosquitto or none)")),
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--connections" => o.connections = value()?.parse().map_err(|e| bad(&e))?,
            "--processes" => o.processes = Some(value()?.parse().map_err(|e| bad(&e))?),
            "--hold-secs" => o.hold_secs = value()?.parse().map_err(|e| bad(&e))?,
            "--keepalive-secs" => o.keepalive_secs = value()?.parse().map_err(|e| bad(&e))?,
            "--server" => {
                o.server = kind(&value()?)?.ok_or("--server cannot be none")?;
            }
            "--server-processes" => {
                o.server_processes = Some(value()?.parse().map_err(|e| bad(&e))?)
            }
            "--peer" => o.peer = kind(&value()?)?,
            "--concurrency" => o.concurrency = value()?.parse().map_err(|e| bad(&e))?,
            "--messages" => o.messages = true,
            "--load-secs" => o.load_secs = value()?.parse().map_err(|e| bad(&e))?,
            "--handshakes" => o.handshakes = true,
            "--hub-kernel-buffers" => o.hub_kernel_buffers = true,
            "--handshake-secs" => o.handshake_secs = value()?.parse().map_err(|e| bad(&e))?,
            "--handshake-concurrency" => {
                o.handshake_concurrency = value()?.parse().map_err(|e| bad(&e))?
            }
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    match o.server_processes {
        Some(0) => return Err("--server-processes must be at least 1".into()),
        Some(k) if k > 1 && o.server != Kind::Hub && o.peer != Some(Kind::Hub) => {
            return Err(format!(
                "--server-processes {k}: Mosquitto is one process; several server processes are \
                 for the hub (--server hub)"
            ));
        }
        Some(k) if k > 1 && o.handshakes => {
            return Err(format!(
                "--server-processes {k}: --handshakes measures one server process; leave \
                 --server-processes out"
            ));
        }
        _ => {}
    }
    if o.peer == Some(o.server) {
        o.peer = None;
    }
    Ok(o)
}

/// How many hub server processes for `n` connections: by default the fewest that keep each at
/// most [`MAX_PER_SERVER_PROCESS`].
fn server_count(n: usize, asked: Option<usize>) -> Result<usize, String> {
    let needed = n.div_ceil(MAX_PER_SERVER_PROCESS).max(1);
    match asked {
        None => Ok(needed),
        Some(k) if k >= needed && k <= n => Ok(k),
        Some(k) => Err(format!(
            "--server-processes {k}: {n} connections need between {needed} and {n} server \
             processes (at most {MAX_PER_SERVER_PROCESS} each: the per-process file limit is \
             20,000)"
        )),
    }
}

/// One server process's part of a density run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerPlan {
    /// Its devices (its in-memory store holds these only).
    devices: Range<usize>,
    /// Its client processes' devices, `(first, count)`, within `devices`: each client process
    /// talks to this server process only.
    clients: Vec<(usize, usize)>,
}

/// Splits `n` devices over `servers` server processes (contiguous ranges) and each server's
/// devices over its own client processes. No server process gets more than
/// [`MAX_PER_SERVER_PROCESS`] connections, nor more than `ephemeral_ports` (every connection to it
/// goes from 127.0.0.1 to its one port, and each needs a port of its own on the client's side);
/// no client process more than [`MAX_PER_CLIENT_PROCESS`]. `processes` is the total number of
/// client processes (by default the fewest); extra ones go round the servers in turn.
fn plan(
    n: usize,
    servers: usize,
    processes: Option<usize>,
    ephemeral_ports: usize,
) -> Result<Vec<ServerPlan>, String> {
    if servers == 0 || servers > n {
        return Err(format!(
            "{n} connections cannot be split over {servers} server processes"
        ));
    }
    let server_shares = shares(n, servers);
    for &(_, count) in &server_shares {
        if count > MAX_PER_SERVER_PROCESS {
            return Err(format!(
                "{count} connections in one server process: at most {MAX_PER_SERVER_PROCESS} fit \
                 its 20,000-file limit; use at least {} server processes (--server-processes)",
                n.div_ceil(MAX_PER_SERVER_PROCESS)
            ));
        }
        if count > ephemeral_ports {
            return Err(format!(
                "{count} connections to one server process: they all go from 127.0.0.1 to its one \
                 port, and the loopback has only {ephemeral_ports} ephemeral ports \
                 (net.ipv4.ip_local_port_range); use at least {} server processes \
                 (--server-processes)",
                n.div_ceil(ephemeral_ports.max(1))
            ));
        }
    }
    let mut counts: Vec<usize> = server_shares
        .iter()
        .map(|&(_, count)| count.div_ceil(MAX_PER_CLIENT_PROCESS).max(1))
        .collect();
    let fewest: usize = counts.iter().sum();
    if let Some(p) = processes {
        if p < fewest || p > n {
            return Err(format!(
                "--processes {p}: {n} connections over {servers} server process(es) need between \
                 {fewest} and {n} client processes (at most {MAX_PER_CLIENT_PROCESS} each, each \
                 talking to one server process)"
            ));
        }
        // Ends: p <= n, so some server has a device without a client process of its own.
        let mut extra = p - fewest;
        while extra > 0 {
            for (c, &(_, devices)) in counts.iter_mut().zip(&server_shares) {
                if extra > 0 && *c < devices {
                    *c += 1;
                    extra -= 1;
                }
            }
        }
    }
    Ok(server_shares
        .into_iter()
        .zip(counts)
        .map(|((first, count), processes)| ServerPlan {
            devices: first..first + count,
            clients: shares(count, processes)
                .into_iter()
                .map(|(f, c)| (first + f, c))
                .collect(),
        })
        .collect())
}

/// Splits `n` devices into `processes` contiguous ranges `(first, count)`.
fn shares(n: usize, processes: usize) -> Vec<(usize, usize)> {
    (0..processes)
        .map(|p| {
            let first = n * p / processes;
            (first, n * (p + 1) / processes - first)
        })
        .collect()
}

/// A client process and its pipes.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ClientProcess {
    fn spawn(args: &ClientArgs) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
        let mut child = Command::new(exe)
            .args(client::to_command_line(args))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting a client process: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// Reads the next line and splits it into words, checking the first.
    fn expect(&mut self, word: &str) -> Result<Vec<String>, String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading a client process: {e}"))?;
        if n == 0 {
            return Err("a client process exited early".into());
        }
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if words.first().map(String::as_str) != Some(word) {
            return Err(format!(
                "expected {word:?} from a client process, got {line:?}"
            ));
        }
        Ok(words)
    }

    fn numbers(&mut self, word: &str) -> Result<Vec<u64>, String> {
        let words = self.expect(word)?;
        words[1..]
            .iter()
            .map(|w| w.parse().map_err(|e| format!("{word} line: {e}")))
            .collect()
    }

    fn send(&mut self, command: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("client stdin closed")?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to a client process: {e}"))
    }

    fn quit(mut self) {
        let _ = self.send("quit");
        self.stdin = None;
        let _ = self.child.wait();
    }
}

/// The numbers each client answers to `command`, client by client.
fn ask_each(
    clients: &mut [ClientProcess],
    command: &str,
    word: &str,
) -> Result<Vec<Vec<u64>>, String> {
    for c in clients.iter_mut() {
        c.send(command)?;
    }
    clients.iter_mut().map(|c| c.numbers(word)).collect()
}

/// Sums rows of numbers position by position.
fn sum_rows<'a>(rows: impl IntoIterator<Item = &'a Vec<u64>>) -> Vec<u64> {
    let mut sum: Vec<u64> = Vec::new();
    for row in rows {
        sum.resize(sum.len().max(row.len()), 0);
        for (s, n) in sum.iter_mut().zip(row) {
            *s += n;
        }
    }
    sum
}

/// Sums the numbers each client answers to `command` (position by position).
fn ask_all(clients: &mut [ClientProcess], command: &str, word: &str) -> Result<Vec<u64>, String> {
    Ok(sum_rows(&ask_each(clients, command, word)?))
}

/// The server's CPU time in seconds.
fn cpu_secs(server: &Server, ticks_per_sec: u64) -> Result<f64, String> {
    Ok(procfs::cpu_ticks(server.pid())? as f64 / ticks_per_sec as f64)
}

/// Each server process's CPU time in seconds.
fn cpu_each(servers: &[Server], ticks_per_sec: u64) -> Result<Vec<f64>, String> {
    servers.iter().map(|s| cpu_secs(s, ticks_per_sec)).collect()
}

/// Each server process's resident memory in bytes.
fn rss_each(servers: &[Server]) -> Result<Vec<u64>, String> {
    servers.iter().map(|s| procfs::rss_bytes(s.pid())).collect()
}

/// What each server process used since `start`: `end - start`, process by process.
fn deltas(end: &[f64], start: &[f64]) -> Vec<f64> {
    end.iter().zip(start).map(|(e, s)| e - s).collect()
}

fn per_conn(delta: i64, n: u64) -> Value {
    if n == 0 {
        Value::Null
    } else {
        json!((delta as f64 / n as f64).round() as i64)
    }
}

fn percent(cpu: f64, wall: Duration) -> f64 {
    (cpu / wall.as_secs_f64() * 1000.0).round() / 10.0
}

/// The density run against one server (one process, or for the hub several): connect each
/// server process's devices from its own client processes, hold, measure.
fn density(
    servers: &mut [Server],
    plan: &[ServerPlan],
    o: &Options,
    certs: &CertFiles,
    seed: &str,
) -> Result<Value, String> {
    let tps = procfs::ticks_per_sec();
    let n: usize = plan.iter().map(|s| s.devices.len()).sum();
    let processes: usize = plan.iter().map(|s| s.clients.len()).sum();
    let name = servers[0].kind.name();
    // Let the servers finish starting before the baseline.
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss_each(servers)?;
    let slab_before = procfs::slab()?;

    eprintln!(
        "density: {name}: opening {n} connections from {processes} client processes to {} \
         server process(es)",
        servers.len()
    );
    let started = Instant::now();
    let mut clients = Vec::new();
    // The server process each client process talks to.
    let mut owner = Vec::new();
    for (s, (server, share)) in servers.iter().zip(plan).enumerate() {
        for &(first, count) in &share.clients {
            clients.push(ClientProcess::spawn(&ClientArgs {
                addr: server.addr,
                ca: certs.ca.clone(),
                seed: seed.to_owned(),
                first,
                count,
                keepalive_secs: o.keepalive_secs,
                concurrency: o.concurrency,
                subscribe: o.messages,
                handshake_secs: None,
            })?);
            owner.push(s);
        }
    }
    let (mut connected_each, mut failed) = (vec![0u64; servers.len()], 0u64);
    for (c, &s) in clients.iter_mut().zip(&owner) {
        let ready = c.numbers("ready")?;
        connected_each[s] += ready.first().copied().unwrap_or(0);
        failed += ready.get(1).copied().unwrap_or(0);
    }
    let connected: u64 = connected_each.iter().sum();
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "density: {name}: {connected} connected, {failed} failed in {connect_secs:.1} s; \
         holding {} s",
        o.hold_secs
    );

    let cpu_start = cpu_each(servers, tps)?;
    let hold_start = Instant::now();
    std::thread::sleep(Duration::from_secs(o.hold_secs));
    let cpu_idle = deltas(&cpu_each(servers, tps)?, &cpu_start);
    let hold = hold_start.elapsed();
    let rss_after = rss_each(servers)?;
    let slab_after = procfs::slab()?;
    let idle_each = ask_each(&mut clients, "stats", "stats")?;
    let idle = sum_rows(&idle_each);

    let per_server: Vec<Value> = (0..servers.len())
        .map(|s| {
            let open: u64 = idle_each
                .iter()
                .zip(&owner)
                .filter(|&(_, &o)| o == s)
                .map(|(stats, _)| stats.first().copied().unwrap_or(0))
                .sum();
            json!({
                "first_device": plan[s].devices.start,
                "connections": plan[s].devices.len(),
                "connected": connected_each[s],
                "client_processes": plan[s].clients.len(),
                "open_after_hold": open,
                "rss_bytes_per_conn":
                    per_conn(rss_after[s] as i64 - rss_before[s] as i64, connected_each[s]),
                "idle_cpu_percent": percent(cpu_idle[s], hold),
            })
        })
        .collect();
    let rss_before: u64 = rss_before.iter().sum();
    let rss_after: u64 = rss_after.iter().sum();

    let mut report = json!({
        "server": name,
        "auth": servers[0].auth.name(),
        "connections": n,
        "connected": connected,
        "failed": failed,
        "server_processes": servers.len(),
        "client_processes": processes,
        "keepalive_secs": o.keepalive_secs,
        "hold_secs": o.hold_secs,
        "connect_secs": (connect_secs * 10.0).round() / 10.0,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_bytes_per_conn": per_conn(rss_after as i64 - rss_before as i64, connected),
        "kernel_bytes_per_conn": per_conn(slab_after.total as i64 - slab_before.total as i64, connected),
        "kernel_unreclaimable_bytes_per_conn":
            per_conn(slab_after.unreclaimable as i64 - slab_before.unreclaimable as i64, connected),
        "idle_cpu_percent": percent(cpu_idle.iter().sum(), hold),
        "open_after_hold": idle.first(),
        "disconnects": idle.get(2),
        "pings_sent": idle.get(3),
        "ping_responses": idle.get(4),
        "per_server": per_server,
    });

    if o.messages {
        eprintln!(
            "density: {name}: every device now receives 1 KiB a second for {} s",
            o.load_secs
        );
        for c in &mut clients {
            c.send("load")?;
        }
        for c in &mut clients {
            let answer = c.expect("load")?;
            if answer.get(1).map(String::as_str) != Some("ok") {
                return Err(format!("the publisher failed: {}", answer[1..].join(" ")));
            }
        }
        // Let the publishers reach their rate before measuring.
        std::thread::sleep(Duration::from_secs(3));
        let before = ask_all(&mut clients, "stats", "stats")?;
        let cpu_start = cpu_each(servers, tps)?;
        let load_start = Instant::now();
        std::thread::sleep(Duration::from_secs(o.load_secs));
        let cpu_load: f64 = deltas(&cpu_each(servers, tps)?, &cpu_start).iter().sum();
        let rss_load: u64 = rss_each(servers)?.iter().sum();
        let after = ask_all(&mut clients, "stats", "stats")?;
        let wall = load_start.elapsed();
        let received = after.get(1).copied().unwrap_or(0) - before.get(1).copied().unwrap_or(0);
        let open = after.first().copied().unwrap_or(0);
        report["load"] = json!({
            "load_secs": o.load_secs,
            "message_bytes": 1024,
            "rss_bytes": rss_load,
            "rss_bytes_per_conn": per_conn(rss_load as i64 - rss_before as i64, connected),
            "cpu_percent": percent(cpu_load, wall),
            "messages_per_sec": (received as f64 / wall.as_secs_f64()).round(),
            "messages_per_conn_per_sec": if open == 0 { 0.0 } else {
                (received as f64 / wall.as_secs_f64() / open as f64 * 100.0).round() / 100.0
            },
            "open_after_load": open,
            "disconnects": after.get(2),
        });
    }
    for c in clients {
        c.quit();
    }
    for (s, server) in servers.iter_mut().enumerate() {
        if !server.running() {
            return Err(format!(
                "{name} (server process {s} of {}, on {}) died during the run:\n{}",
                plan.len(),
                server.addr,
                server.log_tail()
            ));
        }
    }
    Ok(report)
}

/// The handshake run against one server: full TLS 1.3 handshakes plus MQTT CONNECT/CONNACK.
fn handshake_rate(
    server: &mut Server,
    n: usize,
    o: &Options,
    certs: &CertFiles,
    seed: &str,
) -> Result<Value, String> {
    let tps = procfs::ticks_per_sec();
    let processes = o.processes.unwrap_or(1).max(1);
    let name = server.kind.name();
    eprintln!(
        "density: {name}: handshakes for {} s from {processes} client processes",
        o.handshake_secs
    );
    let cpu_start = cpu_secs(server, tps)?;
    let started = Instant::now();
    let mut clients = Vec::new();
    for (first, count) in shares(n, processes) {
        clients.push(ClientProcess::spawn(&ClientArgs {
            addr: server.addr,
            ca: certs.ca.clone(),
            seed: seed.to_owned(),
            first,
            count,
            keepalive_secs: o.keepalive_secs,
            concurrency: o.handshake_concurrency,
            subscribe: false,
            handshake_secs: Some(o.handshake_secs),
        })?);
    }
    let (mut ok, mut failed) = (0u64, 0u64);
    for c in &mut clients {
        let counts = c.numbers("handshakes")?;
        ok += counts.first().copied().unwrap_or(0);
        failed += counts.get(1).copied().unwrap_or(0);
    }
    let wall = started.elapsed();
    let cpu = cpu_secs(server, tps)? - cpu_start;
    for c in clients {
        c.quit();
    }
    Ok(json!({
        "server": name,
        "auth": server.auth.name(),
        "client_processes": processes,
        "concurrency_per_process": o.handshake_concurrency,
        "secs": (wall.as_secs_f64() * 10.0).round() / 10.0,
        "handshakes": ok,
        "failed": failed,
        "handshakes_per_sec": (ok as f64 / wall.as_secs_f64()).round(),
        "server_cpu_percent": percent(cpu, wall),
        "handshakes_per_server_cpu_sec": if cpu > 0.0 { (ok as f64 / cpu).round() } else { 0.0 },
    }))
}

/// Starts `kind` for `n` devices (for a hub density run, in as many processes as
/// `--server-processes` says) and runs the chosen measurement against it.
fn measure(
    kind: Kind,
    n: usize,
    o: &Options,
    dir: &Path,
    certs: &CertFiles,
    seed: &str,
) -> Result<Value, String> {
    // The handshake run holds no connections: one server process, its own client split.
    let plan = if o.handshakes {
        None
    } else {
        let servers = match kind {
            Kind::Hub => server_count(n, o.server_processes)?,
            Kind::Mosquitto => 1,
        };
        let plan = plan(n, servers, o.processes, procfs::ephemeral_ports())?;
        if kind == Kind::Hub {
            eprintln!(
                "density: hub: {servers} server process(es) for {n} connections ({}; at most \
                 {MAX_PER_SERVER_PROCESS} each)",
                if o.server_processes.is_some() {
                    "--server-processes"
                } else {
                    "the default"
                }
            );
        }
        Some(plan)
    };
    let ranges: Vec<Range<usize>> = match &plan {
        Some(plan) => plan.iter().map(|s| s.devices.clone()).collect(),
        None => std::iter::once(0..n).collect(),
    };
    let mut servers = Vec::new();
    for (i, devices) in ranges.into_iter().enumerate() {
        servers.push(match kind {
            Kind::Hub => server::start_hub(dir, certs, seed, i, devices, o.hub_kernel_buffers)?,
            Kind::Mosquitto => server::start_mosquitto(dir, certs, seed, devices.len())?,
        });
    }
    let result = match &plan {
        Some(plan) => density(&mut servers, plan, o, certs, seed),
        None => handshake_rate(&mut servers[0], n, o, certs, seed),
    };
    drop(servers);
    // Closed sockets are freed by the kernel a moment later; let that happen before the next
    // server's baseline.
    std::thread::sleep(Duration::from_secs(3));
    let mut result = result?;
    if kind == Kind::Hub {
        result["socket_buffers"] = json!(if o.hub_kernel_buffers {
            "kernel"
        } else {
            "transport caps"
        });
    }
    if kind == Kind::Mosquitto && n < o.connections {
        result["capped_from"] = json!(o.connections);
    }
    Ok(result)
}

/// The connections a server is asked for: Mosquitto is one process, capped below its file limit.
fn connections_for(kind: Kind, o: &Options) -> usize {
    match kind {
        Kind::Mosquitto if o.connections > MAX_MOSQUITTO => {
            eprintln!(
                "density: Mosquitto is one process with a 20,000-file limit: \
                 it gets {MAX_MOSQUITTO} connections, not {}",
                o.connections
            );
            MAX_MOSQUITTO
        }
        _ => o.connections,
    }
}

fn orchestrate(o: &Options) -> Result<Value, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let certs = setup::generate_certs(dir.path())?;
    let seed = setup::random_seed()?;
    let mode = if o.handshakes {
        "handshakes"
    } else {
        "density"
    };
    let n = connections_for(o.server, o);
    let mut report = measure(o.server, n, o, dir.path(), &certs, &seed)?;
    report["mode"] = json!(mode);
    if let Some(peer) = o.peer {
        let n = connections_for(peer, o);
        report["peer"] = measure(peer, n, o, dir.path(), &certs, &seed)?;
    }
    Ok(report)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = if argv.first().map(String::as_str) == Some("client") {
        client::from_command_line(&argv[1..]).and_then(client::run)
    } else if argv.first().map(String::as_str) == Some("hub-server") {
        hub_server::run(&argv[1..])
    } else {
        parse_options(&argv).and_then(|o| {
            let report = orchestrate(&o)?;
            // Readable on the terminal (stderr); the last line of stdout is the one JSON object
            // that scripts read.
            eprintln!(
                "{}",
                serde_json::to_string_pretty(&report).expect("JSON values serialize")
            );
            println!("{report}");
            Ok(())
        })
    };
    if let Err(e) = result {
        eprintln!("density: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_default_to_the_issue_run() {
        let o = parse_options(&args("--connections 19000")).unwrap();
        assert_eq!(o.connections, 19_000);
        assert_eq!((o.server, o.peer), (Kind::Hub, Some(Kind::Mosquitto)));
        assert_eq!((o.keepalive_secs, o.hold_secs), (60, 60));
        assert!(!o.handshakes && !o.messages);
        let o = parse_options(&args("--server mosquitto --peer mosquitto")).unwrap();
        assert_eq!(o.peer, None, "a server is not its own peer");
        assert!(parse_options(&args("--peer nginx")).is_err());
        assert!(parse_options(&args("--connections 0")).is_err());
        assert!(parse_options(&args("--connections")).is_err());
    }

    #[test]
    fn several_server_processes_are_only_for_a_hub_density_run() {
        let o = parse_options(&args("--connections 40000 --server-processes 3")).unwrap();
        assert_eq!(o.server_processes, Some(3));
        assert_eq!(parse_options(&args("")).unwrap().server_processes, None);
        assert!(parse_options(&args("--server-processes 0")).is_err());
        assert!(parse_options(&args("--server-processes 2 --handshakes")).is_err());
        assert!(parse_options(&args("--server-processes 2 --server mosquitto")).is_err());
        assert!(parse_options(&args("--server-processes 2 --server mosquitto --peer hub")).is_ok());
        // One process is what those runs use anyway.
        assert!(parse_options(&args("--server-processes 1 --handshakes")).is_ok());
        assert!(parse_options(&args("--server-processes 1 --server mosquitto")).is_ok());
        // Message mode works across several processes: each client's publisher talks to the
        // server process that owns its devices.
        assert!(parse_options(&args("--server-processes 2 --messages")).is_ok());
    }

    #[test]
    fn server_processes_default_to_19000_connections_each_at_most() {
        assert_eq!(server_count(1, None), Ok(1));
        assert_eq!(server_count(19_000, None), Ok(1));
        assert_eq!(server_count(19_001, None), Ok(2));
        assert_eq!(server_count(40_000, None), Ok(3));
        assert_eq!(server_count(100_000, None), Ok(6));
        assert_eq!(server_count(300, Some(2)), Ok(2));
        assert_eq!(server_count(40_000, Some(5)), Ok(5));
        assert!(
            server_count(40_000, Some(2)).is_err(),
            "20,000 each is too many"
        );
        assert!(
            server_count(3, Some(4)).is_err(),
            "a server process without devices"
        );
    }

    /// Total client processes of a plan.
    fn client_count(plan: &[ServerPlan]) -> usize {
        plan.iter().map(|s| s.clients.len()).sum()
    }

    /// Checks what every plan must be: the servers' ranges cover `0..n` once, in order; each
    /// server's client processes cover its range once; all under the limits.
    fn assert_valid(plan: &[ServerPlan], n: usize, ports: usize) {
        let mut next_server = 0;
        for s in plan {
            assert_eq!(s.devices.start, next_server, "{plan:?}");
            assert!(!s.devices.is_empty(), "{plan:?}");
            assert!(s.devices.len() <= MAX_PER_SERVER_PROCESS, "{plan:?}");
            assert!(s.devices.len() <= ports, "{plan:?}");
            let mut next_client = s.devices.start;
            for &(first, count) in &s.clients {
                assert_eq!(first, next_client, "{plan:?}");
                assert!((1..=MAX_PER_CLIENT_PROCESS).contains(&count), "{plan:?}");
                next_client += count;
            }
            assert_eq!(next_client, s.devices.end, "{plan:?}");
            next_server = s.devices.end;
        }
        assert_eq!(next_server, n, "{plan:?}");
    }

    const PORTS: usize = 28_232;

    #[test]
    fn one_server_process_keeps_the_single_server_split() {
        // What `--processes` always meant with one server process.
        let one = |n, p| plan(n, 1, p, PORTS).map(|plan| client_count(&plan));
        assert_eq!(one(2_000, None), Ok(1));
        assert_eq!(one(19_000, None), Ok(2));
        assert_eq!(one(19_000, Some(4)), Ok(4));
        assert!(one(19_000, Some(1)).is_err());
        assert!(one(3, Some(4)).is_err());
        let p = plan(19_000, 1, None, PORTS).unwrap();
        assert_eq!(p[0].clients, vec![(0, 9_500), (9_500, 9_500)]);
        assert_valid(&p, 19_000, PORTS);
    }

    #[test]
    fn forty_thousand_take_three_server_processes_with_a_client_each() {
        let p = plan(40_000, server_count(40_000, None).unwrap(), None, PORTS).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.iter().map(|s| s.devices.clone()).collect::<Vec<_>>(),
            vec![0..13_333, 13_333..26_666, 26_666..40_000]
        );
        assert_eq!(client_count(&p), 3);
        assert_eq!(p[2].clients, vec![(26_666, 13_334)]);
        assert_valid(&p, 40_000, PORTS);
    }

    #[test]
    fn a_hundred_thousand_take_six_server_processes_with_two_clients_each() {
        let p = plan(100_000, server_count(100_000, None).unwrap(), None, PORTS).unwrap();
        assert_eq!(p.len(), 6);
        assert!(p.iter().all(|s| s.clients.len() == 2), "{p:?}");
        assert_valid(&p, 100_000, PORTS);
    }

    #[test]
    fn extra_client_processes_go_round_the_servers() {
        let p = plan(300, 2, Some(5), PORTS).unwrap();
        assert_eq!(
            p.iter().map(|s| s.clients.len()).collect::<Vec<_>>(),
            vec![3, 2]
        );
        assert_valid(&p, 300, PORTS);
        // As many client processes as devices: one device each.
        let p = plan(5, 2, Some(5), PORTS).unwrap();
        assert!(p.iter().flat_map(|s| &s.clients).all(|&(_, c)| c == 1));
        assert_valid(&p, 5, PORTS);
        // Fewer than one per server process, or more than devices: refused.
        assert!(plan(40_000, 3, Some(2), PORTS).is_err());
        assert!(plan(5, 2, Some(6), PORTS).is_err());
    }

    #[test]
    fn plans_stay_under_every_limit() {
        for n in [
            1, 2, 299, 300, 15_001, 19_000, 19_001, 37_999, 38_001, 57_001, 100_000,
        ] {
            let fewest = server_count(n, None).unwrap();
            for servers in [fewest, fewest + 1, fewest + 4]
                .into_iter()
                .filter(|&k| k <= n)
            {
                let p = plan(n, servers, None, PORTS).unwrap();
                assert_eq!(p.len(), servers);
                assert_valid(&p, n, PORTS);
                let most = client_count(&p) + 7;
                if most <= n {
                    assert_valid(&plan(n, servers, Some(most), PORTS).unwrap(), n, PORTS);
                }
            }
        }
    }

    #[test]
    fn a_server_process_beyond_the_limits_is_refused_clearly() {
        // Above the file limit, however it was asked for.
        let e = plan(40_000, 2, None, PORTS).unwrap_err();
        assert!(
            e.contains("20,000-file limit") && e.contains("at least 3"),
            "{e}"
        );
        // More connections to one port than the loopback has ephemeral ports.
        let e = plan(19_000, 1, None, 10_000).unwrap_err();
        assert!(
            e.contains("ephemeral ports") && e.contains("at least 2"),
            "{e}"
        );
        assert!(plan(19_000, 2, None, 10_000).is_ok());
        assert!(plan(3, 0, None, PORTS).is_err());
        assert!(plan(3, 4, None, PORTS).is_err());
    }

    #[test]
    fn shares_cover_every_device_once() {
        let s = shares(19_001, 3);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].0, 0);
        for w in s.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0);
        }
        assert_eq!(s[2].0 + s[2].1, 19_001);
        assert!(s.iter().all(|&(_, c)| c <= MAX_PER_CLIENT_PROCESS));
    }

    #[test]
    fn mosquitto_is_capped_below_its_file_limit() {
        let o = parse_options(&args("--connections 50000")).unwrap();
        assert_eq!(connections_for(Kind::Mosquitto, &o), MAX_MOSQUITTO);
        assert_eq!(connections_for(Kind::Hub, &o), 50_000);
    }
}
