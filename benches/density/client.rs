//! A client process: opens its share of device connections (MQTT 3.1.1 over TLS 1.3), keeps them
//! alive, and answers the orchestrator's commands on standard input with one line each on
//! standard output. A second mode measures full handshakes per second.
//!
//! Protocol with the orchestrator (one line each way):
//! - on start, once every connection succeeded or failed: `ready <ok> <failed>`;
//! - `stats` → `stats <open> <received publishes> <disconnects> <pings sent> <ping responses>`;
//! - `load` → starts the publisher (one 1 KiB message a second to each of this process's
//!   devices) and answers `load <ok|error text>`;
//! - `quit` or end of input: exit (sockets close with RST: no TIME_WAIT left for the next server).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::mqtt;
use crate::setup;

/// What a client process is told on its command line.
#[derive(Debug, Clone)]
pub(crate) struct ClientArgs {
    /// The server.
    pub(crate) addr: SocketAddr,
    /// The CA certificate to trust.
    pub(crate) ca: PathBuf,
    /// The run's credential seed.
    pub(crate) seed: String,
    /// The first device index of this process.
    pub(crate) first: usize,
    /// How many devices this process connects.
    pub(crate) count: usize,
    /// The MQTT keep-alive period (0 = none).
    pub(crate) keepalive_secs: u16,
    /// Handshakes in flight at once.
    pub(crate) concurrency: usize,
    /// Subscribe every device to `devices/{id}/inbox` (message mode).
    pub(crate) subscribe: bool,
    /// Handshake mode: run for this many seconds instead of holding connections.
    pub(crate) handshake_secs: Option<u64>,
}

/// Counters shared by the connection tasks.
#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    received: AtomicU64,
    disconnects: AtomicU64,
    pings: AtomicU64,
    pongs: AtomicU64,
}

/// Runs a client process to the end.
pub(crate) fn run(args: ClientArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        match args.handshake_secs {
            Some(secs) => handshakes(args, secs).await,
            None => hold(args).await,
        }
    })
}

/// Opens a TCP connection that closes with RST (linger 0), so that thousands of closed
/// connections leave no TIME_WAIT behind to exhaust the loopback's ephemeral ports.
async fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads until one whole packet is in `buf`, and returns it (consumed from `buf`).
async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(u8, Vec<u8>), String> {
    loop {
        if let Some(f) = mqtt::frame(buf).map_err(|_| "malformed MQTT from the server")? {
            let body = buf[f.body_start..f.end].to_vec();
            buf.drain(..f.end);
            return Ok((f.kind, body));
        }
        let mut chunk = [0u8; 512];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// TCP connect, full TLS 1.3 handshake, MQTT CONNECT and CONNACK.
async fn open(
    addr: SocketAddr,
    tls: &TlsConnector,
    client_id: &str,
    user: &str,
    password: &str,
    keepalive_secs: u16,
) -> Result<(TlsStream<TcpStream>, Vec<u8>), String> {
    let tcp = tcp(addr).await.map_err(|e| format!("connect: {e}"))?;
    let mut stream = tls
        .connect(setup::server_name(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let packet = mqtt::connect(client_id, user, password, keepalive_secs);
    stream
        .write_all(&packet)
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream.flush().await.map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let (kind, body) = read_packet(&mut stream, &mut buf).await?;
    if kind != mqtt::CONNACK {
        return Err(format!("expected CONNACK, got packet type {kind}"));
    }
    match mqtt::connack_code(&body) {
        Ok(0) => Ok((stream, buf)),
        Ok(code) => Err(format!("CONNACK refused with return code {code}")),
        Err(_) => Err("malformed CONNACK".into()),
    }
}

/// The inbox topic of device `i` (message mode).
fn inbox(i: usize) -> String {
    format!("devices/{}/inbox", setup::device_id(i))
}

/// One device: connect, optionally subscribe, report the outcome, then keep the connection alive
/// until the server closes it or the process exits.
async fn device(
    i: usize,
    args: Arc<ClientArgs>,
    tls: TlsConnector,
    gate: Arc<Semaphore>,
    counters: Arc<Counters>,
    done: mpsc::UnboundedSender<Result<(), String>>,
) {
    let permit = gate.acquire().await.expect("the gate is never closed");
    let id = setup::device_id(i);
    let key = setup::access_key(&args.seed, i);
    let opened = async {
        let (mut stream, mut buf) =
            open(args.addr, &tls, &id, &id, &key, args.keepalive_secs).await?;
        if args.subscribe {
            stream
                .write_all(&mqtt::subscribe(1, &inbox(i)))
                .await
                .map_err(|e| format!("write: {e}"))?;
            stream.flush().await.map_err(|e| format!("write: {e}"))?;
            let (kind, _) = read_packet(&mut stream, &mut buf).await?;
            if kind != mqtt::SUBACK {
                return Err(format!("expected SUBACK, got packet type {kind}"));
            }
        }
        Ok((stream, buf))
    };
    let (mut stream, mut buf) = match tokio::time::timeout(Duration::from_secs(120), opened).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            let _ = done.send(Err(e));
            return;
        }
        Err(_) => {
            let _ = done.send(Err("timed out connecting".into()));
            return;
        }
    };
    drop(permit);
    counters.open.fetch_add(1, Ordering::Relaxed);
    let _ = done.send(Ok(()));

    // Spread the pings over the period rather than sending them all at the same moment.
    let period = Duration::from_secs(u64::from(args.keepalive_secs));
    let mut next_ping = (!period.is_zero()).then(|| {
        let phase_ms = (i as u64).wrapping_mul(7_919) % period.as_millis() as u64;
        Instant::now() + Duration::from_millis(phase_ms.max(1))
    });
    let mut chunk = vec![0u8; 2048];
    loop {
        let ping = async {
            match next_ping {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = stream.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match mqtt::frame(&buf) {
                        Ok(Some(f)) => {
                            match f.kind {
                                mqtt::PUBLISH => counters.received.fetch_add(1, Ordering::Relaxed),
                                mqtt::PINGRESP => counters.pongs.fetch_add(1, Ordering::Relaxed),
                                _ => 0,
                            };
                            buf.drain(..f.end);
                        }
                        Ok(None) => break,
                        Err(_) => {
                            counters.open.fetch_sub(1, Ordering::Relaxed);
                            counters.disconnects.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
                // Keep an idle connection's buffer at its smallest.
                if buf.is_empty() {
                    buf = Vec::new();
                }
            }
            () = ping => {
                if stream.write_all(&mqtt::PINGREQ_PACKET).await.is_err()
                    || stream.flush().await.is_err()
                {
                    break;
                }
                counters.pings.fetch_add(1, Ordering::Relaxed);
                next_ping = next_ping.map(|at| at + period);
            }
        }
    }
    counters.open.fetch_sub(1, Ordering::Relaxed);
    counters.disconnects.fetch_add(1, Ordering::Relaxed);
}

/// The message-mode publisher: one connection that sends a 1 KiB QoS 0 message to each of this
/// process's devices once a second, spread evenly over the second in 10 ms slices.
async fn publisher(args: Arc<ClientArgs>, tls: TlsConnector) -> Result<(), String> {
    let password = setup::publisher_password(&args.seed);
    let client_id = format!("bench-publisher-{}", args.first);
    let (stream, _) = open(
        args.addr,
        &tls,
        &client_id,
        setup::PUBLISHER_USER,
        &password,
        args.keepalive_secs,
    )
    .await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    tokio::spawn(async move {
        // Drain whatever the server sends (nothing, unless it pings back).
        let mut sink = [0u8; 1024];
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    tokio::spawn(async move {
        let payload = vec![b'x'; 1024];
        let slices = 100usize;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut slice = 0usize;
        loop {
            tick.tick().await;
            let from = args.count * slice / slices;
            let to = args.count * (slice + 1) / slices;
            let mut batch = Vec::with_capacity((to - from) * 1100);
            for i in from..to {
                batch.extend_from_slice(&mqtt::publish(&inbox(args.first + i), &payload));
            }
            if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            slice = (slice + 1) % slices;
        }
    });
    Ok(())
}

/// Density mode: open the connections, report, then serve commands until told to quit.
async fn hold(args: ClientArgs) -> Result<(), String> {
    let args = Arc::new(args);
    let tls = TlsConnector::from(setup::client_config(&args.ca)?);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let counters = Arc::new(Counters::default());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for i in args.first..args.first + args.count {
        tokio::spawn(device(
            i,
            args.clone(),
            tls.clone(),
            gate.clone(),
            counters.clone(),
            done_tx.clone(),
        ));
    }
    drop(done_tx);
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    // Every task reports once (and keeps its sender while its connection lives).
    for _ in 0..args.count {
        let Some(outcome) = done_rx.recv().await else {
            break;
        };
        match outcome {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("density client {}: {failed} failed, first: {e}", args.first);
    }
    println!("ready {ok} {failed}");

    let commands = stdin_lines();
    let mut commands = commands;
    while let Some(line) = commands.recv().await {
        match line.trim() {
            "stats" => println!(
                "stats {} {} {} {} {}",
                counters.open.load(Ordering::Relaxed),
                counters.received.load(Ordering::Relaxed),
                counters.disconnects.load(Ordering::Relaxed),
                counters.pings.load(Ordering::Relaxed),
                counters.pongs.load(Ordering::Relaxed),
            ),
            "load" => match publisher(args.clone(), tls.clone()).await {
                Ok(()) => println!("load ok"),
                Err(e) => println!("load {e}"),
            },
            "quit" => break,
            other => eprintln!("density client: unknown command {other:?}"),
        }
    }
    Ok(())
}

/// Standard input, line by line, read on a thread of its own (end of input closes the channel).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Handshake mode: `concurrency` workers each loop over connect, full handshake, CONNECT,
/// CONNACK, DISCONNECT until `secs` have passed; prints `handshakes <ok> <failed>`.
async fn handshakes(args: ClientArgs, secs: u64) -> Result<(), String> {
    let args = Arc::new(args);
    let tls = TlsConnector::from(setup::client_config(&args.ca)?);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let (args, tls, ok, failed) = (args.clone(), tls.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut n = w;
            while Instant::now() < deadline {
                let i = args.first + n % args.count.max(1);
                n += args.concurrency;
                let id = setup::device_id(i);
                let key = setup::access_key(&args.seed, i);
                let attempt = tokio::time::timeout_at(deadline, async {
                    let (mut stream, _) = open(args.addr, &tls, &id, &id, &key, 60).await?;
                    // Best effort: the count is of completed CONNACKs, the goodbye is courtesy.
                    let _ = stream.write_all(&mqtt::DISCONNECT_PACKET).await;
                    let _ = stream.flush().await;
                    Ok::<(), String>(())
                })
                .await;
                match attempt {
                    Ok(Ok(())) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(Err(e)) => {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("density handshake client: {e}");
                        }
                        0
                    }
                    // Cut off by the deadline: neither a success nor a failure.
                    Err(_) => 0,
                };
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    println!(
        "handshakes {} {}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Encodes client arguments for the command line of a child process.
pub(crate) fn to_command_line(args: &ClientArgs) -> Vec<String> {
    let mut out = vec![
        "client".to_owned(),
        "--addr".into(),
        args.addr.to_string(),
        "--ca".into(),
        args.ca.display().to_string(),
        "--seed".into(),
        args.seed.clone(),
        "--first".into(),
        args.first.to_string(),
        "--count".into(),
        args.count.to_string(),
        "--keepalive-secs".into(),
        args.keepalive_secs.to_string(),
        "--concurrency".into(),
        args.concurrency.to_string(),
    ];
    if args.subscribe {
        out.push("--subscribe".into());
    }
    if let Some(secs) = args.handshake_secs {
        out.extend(["--handshake-secs".into(), secs.to_string()]);
    }
    out
}

/// Decodes what [`to_command_line`] produced (without the leading `client`).
pub(crate) fn from_command_line(argv: &[String]) -> Result<ClientArgs, String> {
    let mut args = ClientArgs {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ca: PathBuf::new(),
        seed: String::new(),
        first: 0,
        count: 0,
        keepalive_secs: 60,
        concurrency: 64,
        subscribe: false,
        handshake_secs: None,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--addr" => args.addr = value()?.parse().map_err(|e| bad(&e))?,
            "--ca" => args.ca = value()?.into(),
            "--seed" => args.seed = value()?,
            "--first" => args.first = value()?.parse().map_err(|e| bad(&e))?,
            "--count" => args.count = value()?.parse().map_err(|e| bad(&e))?,
            "--keepalive-secs" => args.keepalive_secs = value()?.parse().map_err(|e| bad(&e))?,
            "--concurrency" => args.concurrency = value()?.parse().map_err(|e| bad(&e))?,
            "--handshake-secs" => {
                args.handshake_secs = Some(value()?.parse().map_err(|e| bad(&e))?)
            }
            "--subscribe" => args.subscribe = true,
            other => return Err(format!("unknown client argument {other}")),
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_arguments_survive_the_command_line() {
        let args = ClientArgs {
            addr: "127.0.0.1:8883".parse().unwrap(),
            ca: "/tmp/ca.pem".into(),
            seed: "abc".into(),
            first: 15_000,
            count: 4_000,
            keepalive_secs: 30,
            concurrency: 16,
            subscribe: true,
            handshake_secs: Some(5),
        };
        let line = to_command_line(&args);
        assert_eq!(line[0], "client");
        let back = from_command_line(&line[1..]).unwrap();
        assert_eq!(format!("{back:?}"), format!("{args:?}"));
        assert!(from_command_line(&["--count".into()]).is_err());
        assert!(from_command_line(&["--bogus".into()]).is_err());
    }
}
