//! Test support: a real server on port 0 and websocket clients that speak the protocol.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roundtable::auth::{self, Role, Secret};
use roundtable::clock::{Clock, ManualClock};
use roundtable::config::Config;
use roundtable::server;
use roundtable_signaling::{Event, ServerMessage};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// 2026-10-26T10:00:00+04:00, the reference event's planned start.
pub const EVENT_START: i64 = 1_792_994_400_000;
pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const MEETING: &str = "baku-minerals";

/// A unique temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("roundtable-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::default_event();
    config.server.data_dir = data_dir.to_path_buf();
    config.server.secret = SECRET.into();
    config.media.udp = "127.0.0.1:0".into();
    config.media.udp_addr = ([127, 0, 0, 1], 0).into();
    config
}

/// An in-process server with a manual clock.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub clock: Arc<ManualClock>,
    pub secret: Secret,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub dir: TempDir,
}

impl TestServer {
    pub async fn start(tag: &str) -> TestServer {
        Self::start_with(tag, |_| {}).await
    }

    pub async fn start_with(tag: &str, edit: impl FnOnce(&mut Config)) -> TestServer {
        let dir = TempDir::new(tag);
        let mut config = test_config(&dir.0);
        edit(&mut config);
        let (clock, manual) = Clock::manual(EVENT_START - 10 * 60_000);
        let prepared = server::prepare(&config, clock).await.expect("prepare");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(listener, prepared, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        TestServer {
            addr,
            clock: manual,
            secret: Secret::from_config(SECRET).expect("secret"),
            stop: Some(tx),
            task: Some(task),
            dir,
        }
    }

    pub fn token(&self, role: Role, id: &str, name: &str, delegation: &str) -> String {
        token_for(
            &self.secret,
            role,
            id,
            name,
            delegation,
            self.clock.now() / 1000,
        )
    }

    pub async fn join(&self, role: Role, id: &str, name: &str, delegation: &str) -> Client {
        Client::join(self.addr, &self.token(role, id, name, delegation)).await
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

pub fn token_for(
    secret: &Secret,
    role: Role,
    id: &str,
    name: &str,
    delegation: &str,
    now_unix: i64,
) -> String {
    let claims = auth::new_invite(
        MEETING,
        role,
        Some(id),
        name,
        delegation,
        3600 * 24,
        now_unix,
    );
    auth::sign(secret, &claims)
}

/// A websocket client that keeps events it has not been asked about yet.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Event messages received and not yet consumed by `wait_event`.
    pub events: Vec<Value>,
    /// The welcome message.
    pub welcome: Value,
}

pub const WAIT: Duration = Duration::from_secs(5);

impl Client {
    pub async fn connect(addr: std::net::SocketAddr, token: &str) -> Client {
        let url = format!("ws://{addr}/ws?token={token}");
        let (ws, _) = connect_async(url).await.expect("connect");
        Client {
            ws,
            next_id: 0,
            events: Vec::new(),
            welcome: Value::Null,
        }
    }

    pub async fn join(addr: std::net::SocketAddr, token: &str) -> Client {
        let mut c = Client::connect(addr, token).await;
        c.send_raw(&json!({"id": "hello", "type": "hello", "protocol": 1}).to_string())
            .await;
        loop {
            let m = c.recv().await.expect("welcome");
            if m["type"] == "welcome" {
                c.welcome = m;
                return c;
            }
            if m["type"] == "event" {
                continue;
            }
            panic!("expected welcome, got {m}");
        }
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_msg(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// The next JSON message (None on close or timeout).
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match m {
                Message::Text(t) => {
                    return Some(serde_json::from_str(t.as_str()).expect("server sent JSON"));
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Sends a command (an `id` is added) and returns its ack or error, keeping events.
    pub async fn cmd(&mut self, mut command: Value) -> Value {
        self.next_id += 1;
        let id = format!("c{}", self.next_id);
        command["id"] = json!(id);
        self.send_raw(&command.to_string()).await;
        loop {
            let m = self
                .recv()
                .await
                .unwrap_or_else(|| panic!("no answer to {command}"));
            if m["type"] == "event" {
                self.events.push(m);
            } else if m["id"] == json!(id) {
                return m;
            }
        }
    }

    /// Sends a command and asserts it was acked.
    pub async fn ok(&mut self, command: Value) -> Value {
        let a = self.cmd(command.clone()).await;
        assert_eq!(a["type"], "ack", "{command} → {a}");
        a
    }

    /// Sends a command and asserts the error code.
    pub async fn err(&mut self, command: Value, code: &str) -> Value {
        let a = self.cmd(command.clone()).await;
        assert_eq!(a["type"], "error", "{command} → {a}");
        assert_eq!(a["code"], code, "{command} → {a}");
        a
    }

    /// Waits for an event whose `event.type` is `kind` and that satisfies `pred`; returns
    /// the whole event message. Earlier events are dropped.
    pub async fn wait_event(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            if let Some(pos) = self
                .events
                .iter()
                .position(|m| m["event"]["type"] == kind && pred(&m["event"]))
            {
                let m = self.events.remove(pos);
                self.events.drain(..pos);
                return m;
            }
            match self.recv().await {
                Some(m) if m["type"] == "event" => self.events.push(m),
                Some(_) => {}
                None => panic!("no {kind} event arrived; have {:?}", self.events),
            }
        }
    }

    /// The latest floor view seen (from events, or the welcome).
    pub fn last_floor(&self) -> Value {
        self.events
            .iter()
            .rev()
            .find(|m| !m["floor"].is_null())
            .map(|m| m["floor"].clone())
            .unwrap_or_else(|| self.welcome["snapshot"]["floor"].clone())
    }

    /// The websocket itself, for tests that drive it by hand.
    pub fn take_ws(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Parses a message as the typed protocol (proves the wire matches the types).
pub fn typed(m: &Value) -> ServerMessage {
    serde_json::from_value(m.clone()).expect("message matches the protocol types")
}

pub fn event_of(m: &Value) -> Event {
    serde_json::from_value(m["event"].clone()).expect("event matches the protocol types")
}

/// A plain HTTP GET over a fresh connection; returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("http timeout")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = match text.split_once("\r\n\r\n") {
        Some((head, body))
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            dechunk(body)
        }
        Some((_, body)) => body.to_owned(),
        None => String::new(),
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Participant ids of a list of requests (holders, queue), in order.
pub fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    r["beneficiary"]["participant"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}
