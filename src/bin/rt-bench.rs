//! `rt-bench`: benchmarks of a running roundtable server.
//!
//! `rt-bench fanout` measures the websocket fan-out of floor events: N delegate clients join
//! one meeting, a moderator client drives rounds of floor commands (`move`, `grant`, `revoke`)
//! and the bench times each from the moment the moderator's frame is written to the moment
//! the LAST of the N delegates has received the resulting event. It also reports the ack
//! latency at the moderator and the server's resident memory per idle websocket client.
//!
//! The server under test is one of:
//! - in-process (the default): `roundtable::server::prepare` + `serve` on 127.0.0.1:0 in this
//!   process, with a temporary data directory. Server and clients share one process, so the
//!   RSS figure covers both.
//! - `--spawn-server PATH`: the `roundtable` binary at PATH as a child process
//!   (`serve --config <tmp> --listen 127.0.0.1:0`); the RSS figure is the server's alone.
//! - `--url ws://host:port --secret S`: an already running server (no RSS figure).
//!
//! Progress goes to stderr, the result as JSON to `--out`.
//!
//! Open files: each client is a socket, and in-process the server's end is one too, so 1000
//! clients need about 2100 descriptors in-process (about 1100 here with `--spawn-server`,
//! and as many in the child). The bench checks the soft limit first and says to run
//! `ulimit -n 4096` when it is too low.
//!
//! The clients use an 8 KiB websocket read buffer: tungstenite zero-fills its whole read
//! buffer (128 KiB by default) before every read, which at 1000 clients in one process
//! would be most of the client-side CPU and would inflate the measured fan-out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use roundtable::auth::{self, Role, Secret};
use roundtable::clock::Clock;
use roundtable::config::Config;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

/// The secret the bench's own servers sign tokens with.
const BENCH_SECRET: &str = "rt-bench-secret-0123456789abcdef";
/// Read buffer of each bench client's websocket (see [`join`]).
const CLIENT_READ_BUFFER: usize = 8 * 1024;
/// Delegates who raise their hands each round (the queue `move` reorders).
const HANDS_PER_ROUND: usize = 3;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Benchmarks for the roundtable server.
#[derive(Debug, Parser)]
#[command(name = "rt-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Websocket fan-out: latency from a moderator command to the last of N clients.
    Fanout(FanoutArgs),
}

#[derive(Debug, Args)]
struct FanoutArgs {
    /// Delegate clients to connect (besides the moderator).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Measured rounds; each times one `move`, one `grant` and one `revoke`.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Unmeasured rounds first (default: rounds / 10, at most 10).
    #[arg(long)]
    warmup: Option<usize>,
    /// Where to write the JSON result (parent directories are created).
    #[arg(long, default_value = "bench/results/fanout.json")]
    out: PathBuf,
    /// Clients connecting at once.
    #[arg(long, default_value_t = 50)]
    connect_batch: usize,
    /// Run this `roundtable` binary as a child process and measure its RSS.
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    spawn_server: Option<PathBuf>,
    /// Target an already running server instead (`ws://host:port`); needs --secret.
    #[arg(long, requires = "secret")]
    url: Option<String>,
    /// The external server's token secret (`server.secret`).
    #[arg(long, requires = "url")]
    secret: Option<String>,
    /// Meeting id to join.
    #[arg(long, default_value = "baku-minerals")]
    meeting: String,
    /// Give up when one step takes longer than this many seconds.
    #[arg(long, default_value_t = 20)]
    timeout_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Fanout(args) => fanout(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rt-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("rt-bench: {}", format!($($arg)*)) };
}

// ----- the server under test --------------------------------------------------------------

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("rt-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

enum Server {
    InProcess {
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), roundtable::server::ServerError>>,
        _dir: TempDir,
    },
    Child {
        child: tokio::process::Child,
        _dir: TempDir,
    },
    External,
}

struct Target {
    /// `ws://host:port`
    base: String,
    secret: Secret,
    /// The process whose RSS is measured, and what it holds.
    rss_pid: Option<u32>,
    mode: &'static str,
    rss_scope: &'static str,
    server: Server,
}

fn bench_config(dir: &Path) -> Config {
    let mut config = Config::default_event();
    config.server.listen = "127.0.0.1:0".into();
    config.server.listen_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.data_dir = dir.to_path_buf();
    config.server.secret = BENCH_SECRET.into();
    // The moderator sends a few commands per round with no pause; delegates far fewer.
    config.server.commands_per_second = 1000;
    config.server.command_burst = 2000;
    // The fan-out bench needs no media: no UDP port to collide with a running server.
    config.media.enabled = false;
    config
}

async fn start_target(args: &FanoutArgs) -> anyhow::Result<Target> {
    if let Some(url) = &args.url {
        let secret = Secret::from_config(args.secret.as_deref().unwrap_or_default())
            .map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
        return Ok(Target {
            base: url.trim_end_matches('/').to_owned(),
            secret,
            rss_pid: None,
            mode: "external",
            rss_scope: "not measured (external server)",
            server: Server::External,
        });
    }
    let dir = TempDir::new()?;
    let config = bench_config(&dir.0);
    let secret = Secret::from_config(BENCH_SECRET).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(path) = &args.spawn_server {
        // The listen address comes from the command line: the config keeps a valid one.
        let mut file_config = config.clone();
        file_config.server.listen = "127.0.0.1:8080".into();
        let text = toml::to_string(&file_config).context("cannot write the server config")?;
        let config_path = dir.0.join("bench.toml");
        std::fs::write(&config_path, text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let mut child = tokio::process::Command::new(path)
            .arg("--config")
            .arg(&config_path)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout from the server")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(args.timeout_secs), async {
            while let Some(line) = lines.next_line().await? {
                if let Some((_, rest)) = line.split_once("listening on http://") {
                    return Ok(rest.trim().to_owned());
                }
            }
            anyhow::Ok(String::new())
        })
        .await
        .context("the server did not say where it listens")??;
        if addr.is_empty() {
            bail!("the server exited before listening (see its stderr above)");
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        return Ok(Target {
            base: format!("ws://{addr}"),
            secret,
            rss_pid: Some(pid),
            mode: "spawn-server",
            rss_scope: "server process only (child)",
            server: Server::Child { child, _dir: dir },
        });
    }
    let prepared = roundtable::server::prepare(&config, Clock::System)
        .await
        .context("cannot prepare the server")?;
    let listener = tokio::net::TcpListener::bind(config.server.listen_addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(roundtable::server::serve(listener, prepared, async {
        let _ = stopped.await;
    }));
    Ok(Target {
        base: format!("ws://{addr}"),
        secret,
        rss_pid: Some(std::process::id()),
        mode: "in-process",
        rss_scope: "whole process: in-process server AND the bench clients",
        server: Server::InProcess {
            stop,
            task,
            _dir: dir,
        },
    })
}

async fn stop_server(server: Server) {
    match server {
        Server::InProcess { stop, task, _dir } => {
            let _ = stop.send(());
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(Err(e))) => progress!("server stopped with an error: {e}"),
                Err(_) => progress!("server did not stop within 15 s"),
                _ => {}
            }
        }
        Server::Child { mut child, _dir } => {
            if let Some(pid) = child.id() {
                // A graceful stop (SIGTERM) without unsafe code: the kill(1) command.
                let _ = tokio::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                progress!("server did not stop on SIGTERM within 10 s: killing it");
                let _ = child.kill().await;
            }
        }
        Server::External => {}
    }
}

fn token(secret: &Secret, meeting: &str, role: Role, id: &str, name: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let claims = auth::new_invite(meeting, role, Some(id), name, "rt-bench", 24 * 3600, now);
    auth::sign(secret, &claims)
}

// ----- /proc -----------------------------------------------------------------------------

/// Resident set size of a process in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// User + system CPU time of a process in milliseconds (assumes USER_HZ = 100, as on Linux).
fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10)
}

/// The soft limit on open files.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

fn machine() -> String {
    let uname = std::process::Command::new("uname")
        .arg("-a")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB RAM", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{uname}; nproc {cpus}; {model}; {mem}")
}

// ----- clients ----------------------------------------------------------------------------

/// When each event sequence number reached the tracked clients.
struct Tracker {
    /// Clients that must receive an event for it to count as delivered.
    clients: usize,
    arrivals: Mutex<HashMap<u64, Arrival>>,
    notify: Notify,
    /// Clients whose connection ended unexpectedly.
    dead: AtomicUsize,
    first_failure: Mutex<Option<String>>,
    /// Set at teardown: closed connections are expected from then on.
    stopping: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Arrival {
    count: usize,
    first: Instant,
    last: Instant,
}

impl Tracker {
    fn new(clients: usize) -> Tracker {
        Tracker {
            clients,
            arrivals: Mutex::new(HashMap::new()),
            notify: Notify::new(),
            dead: AtomicUsize::new(0),
            first_failure: Mutex::new(None),
            stopping: AtomicBool::new(false),
        }
    }

    fn arrivals(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arrival>> {
        self.arrivals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, seq: u64, at: Instant) {
        let complete = {
            let mut map = self.arrivals();
            let a = map.entry(seq).or_insert(Arrival {
                count: 0,
                first: at,
                last: at,
            });
            a.count += 1;
            a.first = a.first.min(at);
            a.last = a.last.max(at);
            a.count == self.clients
        };
        if complete {
            self.notify.notify_waiters();
        }
    }

    fn failed(&self, who: &str, why: String) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        self.dead.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("{who}: {why}"));
        }
        drop(first);
        self.notify.notify_waiters();
    }

    /// Waits until every tracked client has received `seq`; returns the first and the last
    /// arrival.
    async fn wait(&self, seq: u64, timeout: Duration) -> anyhow::Result<(Instant, Instant)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let seen = self.arrivals().get(&seq).copied();
            if let Some(a) = seen.filter(|a| a.count >= self.clients) {
                self.arrivals().retain(|s, _| *s > seq);
                return Ok((a.first, a.last));
            }
            if self.dead.load(Ordering::Relaxed) > 0 {
                let why = self
                    .first_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_default();
                bail!(
                    "{} client connection(s) ended during the run; first: {why}",
                    self.dead.load(Ordering::Relaxed)
                );
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "timed out after {:?}: {} of {} clients received event {seq}",
                    timeout,
                    seen.map_or(0, |a| a.count),
                    self.clients
                );
            }
        }
    }
}

/// A command for a client task to send; the answer comes back on `reply`.
struct Request {
    command: Value,
    reply: oneshot::Sender<Reply>,
}

#[derive(Debug)]
struct Reply {
    /// Just before the frame was written.
    sent: Instant,
    /// When the `ack` or `error` arrived.
    answered: Instant,
    outcome: Result<Ack, String>,
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    seq: Option<u64>,
    request: Option<u64>,
}

/// What one client saw, returned when its task ends.
#[derive(Debug, Default)]
struct ClientStats {
    events: u64,
    gaps: u64,
}

/// The top-level fields the bench reads from a server message.
#[derive(Debug, Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    request: Option<u64>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

enum Frame {
    Event(u64),
    Other(Head),
}

/// Reads a server frame. Event frames (the bulk) take a fast path: the server writes `type`
/// and `seq` first; anything else goes through serde.
fn classify(text: &str) -> anyhow::Result<Frame> {
    if let Some(rest) = text.strip_prefix(r#"{"type":"event","seq":"#) {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(seq) = rest[..digits].parse() {
            return Ok(Frame::Event(seq));
        }
    }
    let head: Head = serde_json::from_str(text).with_context(|| {
        format!(
            "unreadable frame: {}",
            text.chars().take(120).collect::<String>()
        )
    })?;
    if head.kind == "event" {
        return head.seq.map(Frame::Event).context("event without a seq");
    }
    Ok(Frame::Other(head))
}

/// Connects, says hello and waits for `welcome`; returns the socket and the welcome's seq.
async fn join(url: &str) -> anyhow::Result<(Ws, u64)> {
    // tungstenite zero-fills its whole read buffer (128 KiB by default) before every read;
    // with a thousand clients in this process that memset would dominate what is measured.
    let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
    let (mut ws, _) = connect_async_with_config(url, Some(config), true)
        .await
        .context("websocket connect")?;
    ws.send(Message::text(
        r#"{"id":"hello","type":"hello","protocol":1}"#,
    ))
    .await
    .context("sending hello")?;
    loop {
        let frame = ws
            .next()
            .await
            .context("connection closed before welcome")?
            .context("reading welcome")?;
        let Message::Text(text) = frame else {
            continue;
        };
        match classify(text.as_str())? {
            Frame::Other(h) if h.kind == "welcome" => {
                return Ok((ws, h.seq.context("welcome without a seq")?));
            }
            Frame::Other(h) if h.kind == "error" => bail!(
                "hello refused: {} {}",
                h.code.unwrap_or_default(),
                h.message.unwrap_or_default()
            ),
            _ => {}
        }
    }
}

/// One client: joins, then reads its socket continuously (recording when each event
/// arrives) and sends the commands it is given.
async fn client_task(
    spec: ClientSpec,
    tracker: Arc<Tracker>,
    mut commands: mpsc::Receiver<Request>,
    joined: oneshot::Sender<anyhow::Result<()>>,
    permit: OwnedSemaphorePermit,
) -> ClientStats {
    let ClientSpec {
        name,
        url,
        tracked,
        timeout,
    } = spec;
    let mut stats = ClientStats::default();
    let (mut ws, mut last_seq) = match tokio::time::timeout(timeout, join(&url)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            let _ = joined.send(Err(e.context(format!("{name} could not join"))));
            return stats;
        }
        Err(_) => {
            let _ = joined.send(Err(anyhow::anyhow!(
                "{name}: no welcome within {timeout:?}"
            )));
            return stats;
        }
    };
    drop(permit);
    let _ = joined.send(Ok(()));
    let mut pending: HashMap<String, (oneshot::Sender<Reply>, Instant)> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            frame = ws.next() => {
                let at = Instant::now();
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => {
                        tracker.failed(&name, "connection closed by the server".into());
                        return stats;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracker.failed(&name, format!("read error: {e}"));
                        return stats;
                    }
                };
                match classify(text.as_str()) {
                    Ok(Frame::Event(seq)) => {
                        if seq != last_seq + 1 {
                            stats.gaps += 1;
                        }
                        last_seq = seq;
                        stats.events += 1;
                        if tracked {
                            tracker.record(seq, at);
                        }
                    }
                    Ok(Frame::Other(h)) if h.kind == "ack" || h.kind == "error" => {
                        let Some((reply, sent)) = h.id.as_ref().and_then(|id| pending.remove(id)) else {
                            if h.kind == "error" {
                                tracker.failed(&name, format!("error without a command: {} {}", h.code.unwrap_or_default(), h.message.unwrap_or_default()));
                            }
                            continue;
                        };
                        let outcome = if h.kind == "ack" {
                            Ok(Ack { seq: h.seq, request: h.request })
                        } else {
                            Err(format!("{}: {}", h.code.unwrap_or_default(), h.message.unwrap_or_default()))
                        };
                        let _ = reply.send(Reply { sent, answered: at, outcome });
                    }
                    Ok(Frame::Other(h)) if h.kind == "goodbye" => {
                        tracker.failed(&name, format!("goodbye from the server: {}", h.reason.unwrap_or_default()));
                    }
                    Ok(Frame::Other(_)) => {}
                    Err(e) => {
                        tracker.failed(&name, format!("{e:#}"));
                        return stats;
                    }
                }
            }
            request = commands.recv() => {
                let Some(Request { mut command, reply }) = request else {
                    // Teardown: leave politely.
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return stats;
                };
                next_id += 1;
                let id = next_id.to_string();
                if let Some(obj) = command.as_object_mut() {
                    obj.insert("id".into(), Value::String(id.clone()));
                }
                let text = command.to_string();
                let sent = Instant::now();
                if let Err(e) = ws.send(Message::text(text)).await {
                    tracker.failed(&name, format!("send error: {e}"));
                    return stats;
                }
                pending.insert(id, (reply, sent));
            }
        }
    }
}

/// The bench's handle on a client task.
struct ClientHandle {
    commands: mpsc::Sender<Request>,
    task: tokio::task::JoinHandle<ClientStats>,
}

impl ClientHandle {
    async fn command(&self, command: Value, timeout: Duration) -> anyhow::Result<Reply> {
        let (reply, answer) = oneshot::channel();
        let what = command.to_string();
        self.commands
            .send(Request { command, reply })
            .await
            .map_err(|_| anyhow::anyhow!("client task ended before sending {what}"))?;
        tokio::time::timeout(timeout, answer)
            .await
            .with_context(|| format!("no answer to {what} within {timeout:?}"))?
            .map_err(|_| anyhow::anyhow!("client connection ended before answering {what}"))
    }

    /// Sends a command that must succeed; returns the reply and its ack.
    async fn expect_ack(&self, command: Value, timeout: Duration) -> anyhow::Result<(Reply, Ack)> {
        let what = command.to_string();
        let reply = self.command(command, timeout).await?;
        match reply.outcome {
            Ok(ack) => Ok((reply, ack)),
            Err(ref e) => bail!("{what} was refused: {e}"),
        }
    }
}

/// Who a client is and where it connects.
struct ClientSpec {
    name: String,
    url: String,
    /// Whether its event arrivals count towards fan-out (delegates, not the moderator).
    tracked: bool,
    timeout: Duration,
}

fn spawn_client(
    spec: ClientSpec,
    tracker: Arc<Tracker>,
    permit: OwnedSemaphorePermit,
) -> (ClientHandle, oneshot::Receiver<anyhow::Result<()>>) {
    let (commands, rx) = mpsc::channel(8);
    let (joined_tx, joined_rx) = oneshot::channel();
    let task = tokio::spawn(client_task(spec, tracker, rx, joined_tx, permit));
    (ClientHandle { commands, task }, joined_rx)
}

// ----- statistics -------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentiles of samples in milliseconds.
fn summary(samples: &[f64]) -> Value {
    if samples.is_empty() {
        return json!({"samples": 0});
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let rank = (p * s.len() as f64).ceil() as usize;
        s[rank.clamp(1, s.len()) - 1]
    };
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    json!({
        "p50": round(pct(0.50)),
        "p90": round(pct(0.90)),
        "p99": round(pct(0.99)),
        "max": round(s[s.len() - 1]),
        "mean": round(s.iter().sum::<f64>() / s.len() as f64),
        "samples": s.len(),
    })
}

#[derive(Default)]
struct Samples {
    fanout: Vec<f64>,
    first: Vec<f64>,
    ack: Vec<f64>,
    events: Vec<u64>,
}

// ----- the benchmark ----------------------------------------------------------------------

const COMMANDS: [&str; 3] = ["move", "grant", "revoke"];

async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let n = args.clients;
    if n < HANDS_PER_ROUND {
        bail!("--clients must be at least {HANDS_PER_ROUND} (the queue `move` reorders)");
    }
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let warmup = args.warmup.unwrap_or((args.rounds / 10).min(10));

    // Each client is one socket here; the in-process server holds the other end too.
    let in_process = args.url.is_none() && args.spawn_server.is_none();
    let needed = if in_process {
        2 * (n as u64 + 1)
    } else {
        n as u64 + 1
    } + 64;
    if let Some(limit) = open_files_limit() {
        if limit < needed {
            bail!(
                "{n} clients need about {needed} open files but the soft limit is {limit}: \
                 raise it first, e.g. `ulimit -n 4096`, and run again"
            );
        }
    }

    let target = start_target(&args).await?;
    progress!("server ({}) at {}", target.mode, target.base);
    let base = target.base.clone();
    let tracker = Arc::new(Tracker::new(n));
    let gate = Arc::new(Semaphore::new(args.connect_batch.max(1)));

    let result = async {
        let url_for = |role, id: &str, name: &str| {
            format!(
                "{base}/ws?token={}",
                token(&target.secret, &args.meeting, role, id, name)
            )
        };

        // The moderator joins first: it sends every measured command.
        let permit = gate.clone().acquire_owned().await?;
        let spec = ClientSpec {
            name: "moderator".into(),
            url: url_for(Role::Moderator, "bench-chair", "Bench Chair"),
            tracked: false,
            timeout,
        };
        let (moderator, joined) = spawn_client(spec, tracker.clone(), permit);
        joined.await.context("moderator task ended")??;
        // Start from an empty floor (matters only on an external server).
        moderator
            .expect_ack(json!({"type": "lower_all_hands"}), timeout)
            .await?;

        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_before = target.rss_pid.map(rss_kib).transpose()?;
        let self_before = rss_kib(std::process::id())?;

        // Delegates, `connect_batch` at a time.
        let connect_start = Instant::now();
        let mut delegates = Vec::with_capacity(n);
        let mut joins = Vec::with_capacity(n);
        for i in 0..n {
            let permit = gate.clone().acquire_owned().await?;
            let id = format!("bench-{i:05}");
            let spec = ClientSpec {
                url: url_for(Role::Delegate, &id, &format!("Delegate {i}")),
                name: id,
                tracked: true,
                timeout,
            };
            let (handle, joined) = spawn_client(spec, tracker.clone(), permit);
            delegates.push(handle);
            joins.push(joined);
            if (i + 1) % (n / 10).max(1) == 0 {
                progress!("connecting: {}/{n} started", i + 1);
            }
        }
        for joined in joins {
            joined.await.context("client task ended before joining")??;
        }
        let connect_secs = connect_start.elapsed().as_secs_f64();
        progress!("{n} clients joined in {connect_secs:.1} s");

        // Barrier: one event everyone must see; from here every client is caught up.
        let (_, ack) = moderator
            .expect_ack(json!({"type": "timer_message", "text": "rt-bench"}), timeout)
            .await?;
        let mut last_seq = ack.seq.context("timer_message changed nothing")?;
        tracker.wait(last_seq, timeout).await?;

        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_joined = target.rss_pid.map(rss_kib).transpose()?;
        let self_joined = rss_kib(std::process::id())?;
        let rss_per_client = rss_before
            .zip(rss_joined)
            .map(|(b, a)| (a as f64 - b as f64) / n as f64);
        if let Some(per) = rss_per_client {
            progress!(
                "RSS ({}): {} KiB before clients, {} KiB with {n} idle clients: {per:.1} KiB per client",
                target.rss_scope,
                rss_before.unwrap_or(0),
                rss_joined.unwrap_or(0)
            );
        }

        // Rounds.
        let cpu_before = target.rss_pid.and_then(cpu_ms);
        let rounds_start = Instant::now();
        let mut all = Samples::default();
        let mut by_command: HashMap<&str, Samples> = HashMap::new();
        let total_rounds = warmup + args.rounds;
        for round in 0..total_rounds {
            // Setup: a rotating set of delegates raise their hands, in order.
            let mut requests = Vec::with_capacity(HANDS_PER_ROUND);
            for j in 0..HANDS_PER_ROUND {
                let d = &delegates[(round * HANDS_PER_ROUND + j) % n];
                let (_, ack) = d.expect_ack(json!({"type": "raise_hand"}), timeout).await?;
                requests.push(ack.request.context("raise_hand ack without a request id")?);
                if let Some(seq) = ack.seq {
                    last_seq = last_seq.max(seq);
                }
            }
            tracker.wait(last_seq, timeout).await?;
            let last = requests[HANDS_PER_ROUND - 1];
            let measured = [
                json!({"type": "move", "request": last, "position": 1}),
                json!({"type": "grant", "request": last}),
                json!({"type": "revoke", "request": last}),
            ];
            for (name, command) in COMMANDS.iter().zip(measured) {
                let (reply, ack) = moderator.expect_ack(command, timeout).await?;
                let seq = ack.seq.with_context(|| format!("{name} changed nothing"))?;
                let (first, last) = tracker.wait(seq, timeout).await?;
                if round >= warmup {
                    let fan = ms(last.saturating_duration_since(reply.sent));
                    let first = ms(first.saturating_duration_since(reply.sent));
                    let ack_ms = ms(reply.answered.saturating_duration_since(reply.sent));
                    let events = seq - last_seq;
                    for s in [&mut all, by_command.entry(name).or_default()] {
                        s.fanout.push(fan);
                        s.first.push(first);
                        s.ack.push(ack_ms);
                        s.events.push(events);
                    }
                }
                last_seq = seq;
            }
            // Cleanup: the others' hands.
            let (_, ack) = moderator
                .expect_ack(json!({"type": "lower_all_hands"}), timeout)
                .await?;
            if let Some(seq) = ack.seq {
                last_seq = seq;
                tracker.wait(seq, timeout).await?;
            }
            if (round + 1) % (total_rounds / 10).max(1) == 0 {
                match all.fanout.last() {
                    Some(last) if round >= warmup => progress!(
                        "round {}/{total_rounds}: last fan-out {last:.2} ms",
                        round + 1
                    ),
                    _ => progress!("round {}/{total_rounds} (warm-up)", round + 1),
                }
            }
        }
        let rounds_secs = rounds_start.elapsed().as_secs_f64();
        let cpu_after = target.rss_pid.and_then(cpu_ms);
        let rss_end = target.rss_pid.map(rss_kib).transpose()?;
        let measured_commands = all.fanout.len();

        let events_per_command = if all.events.is_empty() {
            0.0
        } else {
            all.events.iter().sum::<u64>() as f64 / all.events.len() as f64
        };
        let mut per_command = serde_json::Map::new();
        for name in COMMANDS {
            if let Some(s) = by_command.get(name) {
                per_command.insert(
                    name.into(),
                    json!({
                        "fanout_ms": summary(&s.fanout),
                        "first_client_ms": summary(&s.first),
                        "ack_ms": summary(&s.ack),
                        "events_per_command": s.events.iter().sum::<u64>() as f64 / s.events.len().max(1) as f64,
                    }),
                );
            }
        }
        let round1 = |v: f64| (v * 10.0).round() / 10.0;
        let report = json!({
            "bench": "fanout",
            "machine": machine(),
            "date": time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "mode": target.mode,
            "command_line": std::env::args().collect::<Vec<_>>().join(" "),
            "clients": n,
            "rounds": args.rounds,
            "warmup_rounds": warmup,
            "measured_commands": measured_commands,
            "fanout_ms": summary(&all.fanout),
            "first_client_ms": summary(&all.first),
            "ack_ms": summary(&all.ack),
            "by_command": per_command,
            "events_per_command": events_per_command,
            "server_rss_per_client_kib": rss_per_client.map(round1),
            "rss": {
                "scope": target.rss_scope,
                "before_clients_kib": rss_before,
                "clients_joined_kib": rss_joined,
                "after_rounds_kib": rss_end,
                "bench_process_per_client_kib": round1((self_joined as f64 - self_before as f64) / n as f64),
            },
            "server_cpu_ms_per_round": cpu_before.zip(cpu_after)
                .map(|(b, a)| round1((a - b) as f64 / total_rounds.max(1) as f64)),
            "connect_secs": round1(connect_secs),
            "rounds_secs": round1(rounds_secs),
            "targets": {
                "fanout_p99_ms": 20.0,
                "server_rss_per_client_kib": 100.0,
            },
            "notes": [
                "fanout_ms: from just before the moderator's command frame is written to the moment the LAST of the N delegate clients has read the event frame the command caused (the ack's seq).",
                "ack_ms: from the same start to the moderator reading its ack.",
                "first_client_ms: from the same start to the FIRST delegate reading the event (command handling + journal sync + first write); fanout_ms minus it is the spread of the broadcast.",
                "Each round: 3 delegates raise hands (setup), then move (3rd to position 1), grant, revoke are measured, then lower_all_hands (cleanup). Every step waits until all clients have the event.",
                "Clients and server share the machine's cores; client-side websocket decoding is included in fanout_ms.",
            ],
        });
        anyhow::Ok((report, delegates, moderator))
    }
    .await;

    // Teardown: the server first (so N leaves are not journaled and broadcast one by one),
    // then the clients.
    tracker.stopping.store(true, Ordering::Relaxed);
    stop_server(target.server).await;
    let (report, delegates, moderator) = result?;
    let mut gaps = 0;
    let mut events = 0;
    for c in delegates.into_iter().chain([moderator]) {
        drop(c.commands);
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(5), c.task).await {
            gaps += s.gaps;
            events += s.events;
        }
    }
    let mut report = report;
    report["client_events_received"] = json!(events);
    report["sequence_gaps"] = json!(gaps);
    report["total_secs"] = json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);

    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.out, format!("{text}\n"))
        .with_context(|| format!("cannot write {}", args.out.display()))?;

    let p = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    progress!(
        "fan-out to {n} clients: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= 20 ms); first client p50 {:.2} ms; ack p50 {:.2} ms, p99 {:.2} ms",
        p(&report["fanout_ms"]["p50"]),
        p(&report["fanout_ms"]["p99"]),
        p(&report["fanout_ms"]["max"]),
        p(&report["first_client_ms"]["p50"]),
        p(&report["ack_ms"]["p50"]),
        p(&report["ack_ms"]["p99"]),
    );
    if let Some(per) = report["server_rss_per_client_kib"].as_f64() {
        progress!(
            "RSS per idle client: {per:.1} KiB ({}; target <= 100 KiB for the server)",
            target.rss_scope
        );
    }
    if gaps > 0 {
        progress!("WARNING: {gaps} sequence gaps seen by clients");
    }
    progress!("result written to {}", args.out.display());
    Ok(())
}
