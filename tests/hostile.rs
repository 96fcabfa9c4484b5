//! A hostile client against the real binary (a child process), while a chair keeps working:
//! random bytes on the HTTP port, random binary frames, truncated JSON, 1 MiB frames, 10,000
//! commands per second, half-open connections, slowloris (a request head one byte a second),
//! and more connections from one address than it may open. Afterwards the server is up and
//! healthy, the chair's commands were answered within normal latency throughout, every
//! hostile socket is gone, and the server's memory grew by a bounded amount.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use roundtable::auth::{Role, Secret};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let text = roundtable::config::DEFAULT_TOML
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "data_dir = \"data\"",
            &format!("data_dir = {:?}", dir.join("data").display().to_string()),
        )
        .replace("secret = \"\"", &format!("secret = \"{SECRET}\""))
        .replace("udp = \"127.0.0.1:8443\"", "udp = \"127.0.0.1:0\"")
        // Everything here comes from 127.0.0.1: room for the assault, and a limit it hits.
        .replace(
            "max_connections_per_ip = 512",
            "max_connections_per_ip = 300",
        )
        .replace(
            "connections_per_ip_per_sec = 50",
            "connections_per_ip_per_sec = 1000",
        );
    let path = dir.join("roundtable.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

async fn spawn(config: &std::path::Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roundtable"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    while Instant::now() < deadline {
        if TcpStream::connect(addr).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not start");
}

/// The server's resident memory (KiB) and open file descriptors.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

fn token(role: Role, id: &str) -> String {
    let secret = Secret::from_config(SECRET).expect("secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    token_for(&secret, role, id, id, "X", now)
}

/// A tiny xorshift: the random bytes are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The chair's command round trips (ms) while `work` runs.
async fn timed_commands(chair: &mut Client, until: Instant) -> Vec<u64> {
    let mut rtts = Vec::new();
    let mut i = 0u32;
    while Instant::now() < until {
        i += 1;
        let t0 = Instant::now();
        chair
            .ok(json!({"type": "timer_message", "text": format!("t{}", i % 2)}))
            .await;
        rtts.push(t0.elapsed().as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rtts
}

async fn ws_join(addr: std::net::SocketAddr, id: &str) -> Client {
    Client::join(addr, &token(Role::Delegate, id)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_client_harms_no_one() {
    let dir = TempDir::new("hostile");
    let port = free_port();
    let config = write_config(&dir.0, port);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = spawn(&config, port).await;
    let pid = child.id();

    let mut chair = Client::join(addr, &token(Role::Moderator, "chair")).await;
    // Warm up, then the baseline.
    let _ = timed_commands(&mut chair, Instant::now() + Duration::from_secs(1)).await;
    let (rss0, fds0) = rss_and_fds(pid);
    let quiet = timed_commands(&mut chair, Instant::now() + Duration::from_secs(1)).await;

    let assault = tokio::spawn(async move {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut notes = Vec::new();

        // 1. Random bytes on the HTTP port: answered 400 or closed.
        for _ in 0..50 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let junk = rng.bytes(512);
            let _ = s.write_all(&junk).await;
            let mut buf = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        }
        notes.push("50 connections of random bytes");

        // 2. On a joined websocket: random binary frames, truncated JSON, random text.
        let mut d = ws_join(addr, "h1").await;
        for i in 0..30 {
            d.send_msg(Message::Binary(rng.bytes(64 + i).into())).await;
            let cmd = json!({"id": format!("x{i}"), "type": "raise_hand"}).to_string();
            d.send_raw(&cmd[..cmd.len() / 2]).await;
            let text: String = rng
                .bytes(40)
                .into_iter()
                .map(|b| char::from(b' ' + b % 94))
                .collect();
            d.send_raw(&text).await;
        }
        // Still answered after all that (slowly, the rate limiter has refused some).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let a = d.cmd(json!({"type": "raise_hand"})).await;
        assert_eq!(a["type"], "ack", "still served: {a}");
        notes.push("binary frames, truncated JSON, random text on a live socket");

        // 3. 1 MiB frames: the hard limit ends that connection, nobody else's.
        let mut big = ws_join(addr, "h2").await;
        let frame = "x".repeat(1 << 20);
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            big.send_msg(Message::Text(frame.into())),
        )
        .await;
        // 4. A flood: 10,000 commands per second for a second.
        let f = ws_join(addr, "h3").await;
        let (mut sink, mut stream) = f.take_ws().split();
        let reader = tokio::spawn(async move {
            let mut goodbye = None;
            while let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_secs(10), stream.next()).await
            {
                if let Message::Text(t) = &m {
                    if t.contains("\"goodbye\"") {
                        goodbye = Some(t.to_string());
                    }
                }
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
            goodbye
        });
        let t0 = Instant::now();
        for i in 0..10_000 {
            let cmd = json!({"id": format!("f{i}"), "type": "raise_hand"}).to_string();
            if sink.send(Message::Text(cmd.into())).await.is_err() {
                break;
            }
            if i % 100 == 99 {
                let due = Duration::from_millis((i as u64 + 1) / 10);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let goodbye = reader.await.expect("reader");
        assert!(
            goodbye.as_deref().is_some_and(|g| g.contains("flood")),
            "a flood ends with goodbye flood: {goodbye:?}"
        );
        notes.push("10,000 commands in a second: goodbye flood");

        // 5. Half-open connections: TCP only, and a websocket handshake cut in the middle.
        let mut idle = Vec::new();
        for i in 0..150 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            if i % 2 == 1 {
                let _ = s
                    .write_all(b"GET /ws?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websock")
                    .await;
            }
            idle.push(s);
        }
        // 6. Slowloris: a request head one byte a second.
        let mut slow = Vec::new();
        for _ in 0..20 {
            slow.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let head =
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let started = Instant::now();
        'drip: for b in head.iter() {
            for s in &mut slow {
                if s.write_all(&[*b]).await.is_err() {
                    break 'drip;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        // The server closed them: a read sees the end.
        let mut ended = 0;
        for s in &mut slow {
            let mut buf = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await
            {
                ended += 1;
            }
        }
        assert_eq!(
            ended,
            slow.len(),
            "every slowloris socket closed by the server"
        );
        let mut idle_ended = 0;
        for s in &mut idle {
            let mut buf = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
            {
                idle_ended += 1;
            }
        }
        assert_eq!(
            idle_ended,
            idle.len(),
            "every half-open socket closed by the server"
        );
        notes.push("150 half-open and 20 slowloris connections closed by the header timeout");

        // 7. More connections from one address than it may open: the excess gets 429.
        let mut many = Vec::new();
        let mut refused = 0;
        for _ in 0..400 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let _ = s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await
            {
                if buf[..n].starts_with(b"HTTP/1.1 429") {
                    refused += 1;
                    continue;
                }
            }
            many.push(s);
        }
        assert!(refused > 0, "the per-address limit refused some");
        assert!(many.len() <= 300, "{} open", many.len());
        drop(many);
        notes.push("connections over the per-address limit: 429");
        let _ = (d, big);
        notes.join("; ")
    });

    // The chair works throughout: its commands are answered in normal time.
    let mut during = Vec::new();
    while !assault.is_finished() {
        during.extend(timed_commands(&mut chair, Instant::now() + Duration::from_secs(1)).await);
    }
    let notes = assault.await.expect("assault");
    during.sort_unstable();
    let p50 = during[during.len() / 2];
    let max = *during.last().expect("some");
    eprintln!(
        "hostile: {notes}; chair round trip quiet max {} ms, during p50 {p50} ms, max {max} ms, {} commands",
        quiet.iter().max().unwrap_or(&0),
        during.len()
    );
    assert!(p50 < 100, "p50 {p50} ms");
    assert!(max < 2000, "max {max} ms");

    // Healthy, nothing left over, memory bounded.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s, body) = http_get(addr, "/healthz").await;
    assert_eq!(s, 200, "{body}");
    let (rss1, fds1) = rss_and_fds(pid);
    eprintln!("hostile: RSS {rss0} → {rss1} KiB, fds {fds0} → {fds1}");
    assert!(fds1 <= fds0 + 8, "sockets left over: {fds0} → {fds1}");
    assert!(rss1 < rss0 + 64 * 1024, "memory grew {rss0} → {rss1} KiB");
    chair.close().await;
    let _ = child.kill();
    let _ = child.wait();
}
