//! `rt-media-bench`: media benchmarks of roundtable, the real server in this process with the
//! headless WebRTC clients as load.
//!
//! ```sh
//! cargo run --release -p roundtable-headless --example rt-media-bench -- baku
//! cargo run -p roundtable-headless --example rt-media-bench -- baku --delegates 4 --secs 5
//! ```
//!
//! (An example of the headless crate rather than a subcommand of `rt-bench`: it needs the
//! headless client, which is a dev-dependency of the root crate, and the real server, which is
//! a dev-dependency of the headless crate; examples may use both.)
//!
//! ## `baku` (docs/PERFORMANCE.md, "Media: the baku scenario")
//! The server starts as the headless tests start it (`server::prepare` with media on
//! 127.0.0.1:0, the default event, moderated). Then:
//! - the **room** publishes the program: Opus at 50 packets/s and VP8 simulcast `q`/`h`/`f`
//!   (about 0.13 + 0.53 + 1.3 Mbit/s);
//! - **N delegates** (`--delegates`, 30) each publish Opus and a two-layer camera (`q`, `h`);
//! - the **chair** (websocket only) grants the floor to the first delegate;
//! - every delegate and the room subscribe with thumbnails on: a delegate receives the
//!   program (high layer), the floor holder's camera (speaker slot, high) and microphone, and
//!   every other delegate's camera on the low layer; the room receives every delegate's
//!   camera (low), the speaker slot and the floor holder's microphone. The other delegates'
//!   microphones are negotiated and dropped at the server by the floor gate.
//!
//! When every subscriber receives what it should (plus `--settle-secs`), the bench measures a
//! window of `--secs` seconds:
//! - **CPU per forwarded packet**: CPU time of the media thread (`roundtable-media`; its
//!   `/proc/self/task/<tid>/schedstat` run time, in ns; utime+stime in ticks as a check)
//!   divided by the engine's `rtp_forwarded` over the window. Everything the thread does is in
//!   it: receive and decrypt, routing, RTCP, STUN, timers, seal and send.
//! - **delivery**: per received track and per sending stream, the payload sequence numbers
//!   each packet carries (the headless [`Mark`](roundtable_headless::Mark)): received vs
//!   expected over the window, so loss anywhere (publisher → server → subscriber) counts.
//! - **added latency**: receive time minus the send time in each payload, every packet of the
//!   window. It includes both headless clients' async webrtc stacks (send and receive), which
//!   run on the same two cores: an upper bound on what the server adds.
//! - **RSS per participant**: the server process's `VmRSS` after the window minus before anyone
//!   joined, divided by the media participants (delegates + room). In process (the default)
//!   that is the whole process, server *and* clients; with `--spawn-server` the server runs in
//!   a child process (this binary's hidden `serve-child` subcommand, which answers `stats` and
//!   `token` requests on stdin) and the figure is the server's alone.
//! - process CPU (server's and bench's when they are apart) and CPU by thread name, for
//!   context.
//!
//! The publishers send a keyframe every 3 s per video stream (the headless default), each as a
//! back-to-back burst (`--keyframe-secs 0`: only the first and on request).
//!
//! Then, with every client closed and the server stopped, **the bare floor**: one thread seals
//! the same number of packets (the window's `rtp_forwarded`, the same audio/video mix and
//! sizes, in bursts like the incoming packets' fan-out, paced over the same duration) with SRTP
//! AEAD-AES-128-GCM (ring, a key per receiver) and sends each with `UdpSocket::send_to` to one
//! of as many loopback receiver sockets as there were subscribers, each drained by its own
//! thread. Its CPU per packet (the sending thread's run time) is the floor; the JSON gives the
//! ratio roundtable / floor. An unpaced run of the same packets is reported for context.
//!
//! The result is written as JSON to `--out` (bench/results/baku.json), progress to stderr.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use roundtable::auth::Role;
use roundtable::media::engine::{EngineStats, LatencyHistogram};
use roundtable_headless::{
    Client, ClientOptions, JanusClient, JanusStream, LatencySummary, PublishSpec, TrackStats,
};
use serde_json::{Value, json};
use tokio::task::JoinSet;

#[path = "../tests/real/mod.rs"]
mod real;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// The media thread's name as the kernel keeps it (15 bytes of `roundtable-media`).
const MEDIA_THREAD_COMM: &str = "roundtable-medi";
/// Clock ticks per second of `/proc/*/stat` (USER_HZ; 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Media benchmarks of roundtable (server in process, headless WebRTC clients as load).
#[derive(Debug, Parser)]
#[command(name = "rt-media-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The `baku` scenario: room program + N delegates (audio + 2-layer camera), moderated.
    Baku(BakuArgs),
    /// The `ramp` scenario (and `forum`, its step at 300): the room's program and audio-only
    /// delegates added in steps until loss or p99 exceeds the bounds; roundtable, then Janus.
    Ramp(RampArgs),
    /// (Internal) the server for `--spawn-server`: prints `ready <ws base>`, then answers
    /// `stats` and `token <role> <id>` lines on stdin; `quit` or end of input stops it.
    #[command(hide = true)]
    ServeChild,
}

#[derive(Debug, Clone, Args)]
struct BakuArgs {
    /// Remote delegates (each publishes and subscribes).
    #[arg(long, default_value_t = 30)]
    delegates: usize,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Seconds between every subscriber receiving what it should and the window.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Longest wait for every subscriber to receive what it should, seconds.
    #[arg(long, default_value_t = 90)]
    ready_timeout_secs: u64,
    /// Periodic keyframe interval of every published video stream, seconds (0: only the
    /// first and on request). 3 is the headless client's default.
    #[arg(long, default_value_t = 3.0)]
    keyframe_secs: f64,
    /// Clients joining and negotiating at once.
    #[arg(long, default_value_t = 6)]
    join_batch: usize,
    /// Skip the bare floor.
    #[arg(long)]
    no_floor: bool,
    /// Run the server in a child process (this binary, `serve-child`) instead of in this one:
    /// its RSS and CPU are then the server's alone, the clients' are this process's.
    #[arg(long)]
    spawn_server: bool,
    /// Where to write the JSON result (parent directories are created).
    #[arg(long, default_value = "bench/results/baku.json")]
    out: PathBuf,
    /// Run without stream-health measurement (`media.health = false`), to measure its cost.
    #[arg(long)]
    no_health: bool,
    /// Also run the same load against Janus VideoRoom at this HTTP API address (started by
    /// `bench/janus/janus.sh start`: http://10.77.0.2:8088/janus), after roundtable.
    #[arg(long)]
    janus: Option<String>,
    /// The VideoRoom room of `--janus` (janus.sh configures 1234).
    #[arg(long, default_value_t = 1234)]
    janus_room: u64,
    /// The local address the clients bind for `--janus` (the host side of janus.sh's veth).
    #[arg(long, default_value = "10.77.0.1")]
    janus_bind: std::net::IpAddr,
    /// Exit with an error when anything failed (a Janus run, a join, a step), after writing
    /// the JSON: for the smoke runs in tests/run.sh.
    #[arg(long)]
    strict: bool,
}

macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("rt-media-bench: {}", format!($($arg)*)) };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Baku(args) => baku(args),
        Cmd::Ramp(args) => ramp(args),
        Cmd::ServeChild => serve_child(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rt-media-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

// ----- /proc ------------------------------------------------------------------------------

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Fields of a `stat` file after the `(comm)`: index 0 is field 3 (state).
fn stat_fields(text: &str) -> Vec<&str> {
    text.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// utime + stime in ticks from a `stat` file.
fn stat_ticks(path: &str) -> Option<u64> {
    let text = read(path)?;
    let f = stat_fields(&text);
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Run time in ns from a `schedstat` file.
fn schedstat_ns(path: &str) -> Option<u64> {
    read(path)?.split_whitespace().next()?.parse().ok()
}

/// The calling thread's CPU time, ns.
fn thread_self_cpu_ns() -> u64 {
    schedstat_ns("/proc/thread-self/schedstat")
        .or_else(|| stat_ticks("/proc/thread-self/stat").map(|t| t * 10_000_000))
        .unwrap_or(0)
}

/// The thread ids of a process (`proc`: `/proc/self` or `/proc/<pid>`) with their names.
fn threads(proc: &str) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("{proc}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = read(&format!("{proc}/task/{tid}/comm"))?;
        Some((tid, comm.trim().to_owned()))
    })
    .collect()
}

/// CPU time (ns) of a process's live threads, summed by name (prefixed with `prefix`).
fn cpu_by_thread_name(proc: &str, prefix: &str, by: &mut BTreeMap<String, u64>) {
    for (tid, comm) in threads(proc) {
        if let Some(ns) = schedstat_ns(&format!("{proc}/task/{tid}/schedstat")) {
            *by.entry(format!("{prefix}{comm}")).or_insert(0) += ns;
        }
    }
}

fn rss_kib(proc: &str) -> u64 {
    read(&format!("{proc}/status"))
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn nofile_soft_limit() -> Option<u64> {
    read("/proc/self/limits")?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// E.g. "Linux 6.18.44 x86_64, 2 vCPU Intel(R) Xeon(R) Processor, 23.5 GiB".
fn machine() -> String {
    let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = read("/proc/meminfo")
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let release = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "Linux {} {}, {cpus} vCPU {model}, {mem_gib:.1} GiB",
        release.trim(),
        std::env::consts::ARCH
    )
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ----- the scenario -----------------------------------------------------------------------

/// One subscriber: its client and how many tracks must be flowing before the window.
struct Subscriber {
    name: String,
    client: Client,
    expected_tracks: usize,
}

/// The engine's counters the bench uses (from [`EngineStats`], in this process or a child's).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    connections: u64,
    datagrams_in: u64,
    datagrams_out: u64,
    send_errors: u64,
    rtp_in: u64,
    rtp_forwarded: u64,
    forward_errors: u64,
    core_errors: u64,
    events_dropped: u64,
    forward_latency: LatencyHistogram,
}

impl From<EngineStats> for Counters {
    fn from(s: EngineStats) -> Counters {
        Counters {
            connections: s.connections,
            datagrams_in: s.datagrams_in,
            datagrams_out: s.datagrams_out,
            send_errors: s.send_errors,
            rtp_in: s.rtp_in,
            rtp_forwarded: s.rtp_forwarded,
            forward_errors: s.forward_errors,
            core_errors: s.core_errors,
            events_dropped: s.events_dropped,
            forward_latency: s.forward_latency,
        }
    }
}

fn counters_json(s: &EngineStats) -> Value {
    json!({
        "connections": s.connections,
        "datagrams_in": s.datagrams_in,
        "datagrams_out": s.datagrams_out,
        "send_errors": s.send_errors,
        "rtp_in": s.rtp_in,
        "rtp_forwarded": s.rtp_forwarded,
        "forward_errors": s.forward_errors,
        "core_errors": s.core_errors,
        "events_dropped": s.events_dropped,
        "forward_latency_counts": s.forward_latency.counts(),
    })
}

fn counters_from_json(v: &Value) -> Counters {
    let f = |k: &str| v[k].as_u64().unwrap_or(0);
    Counters {
        connections: f("connections"),
        datagrams_in: f("datagrams_in"),
        datagrams_out: f("datagrams_out"),
        send_errors: f("send_errors"),
        rtp_in: f("rtp_in"),
        rtp_forwarded: f("rtp_forwarded"),
        forward_errors: f("forward_errors"),
        core_errors: f("core_errors"),
        events_dropped: f("events_dropped"),
        forward_latency: LatencyHistogram::from_counts(
            &v["forward_latency_counts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| c.as_u64().unwrap_or(0))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        ),
    }
}

/// The server under test: in this process, or a child process speaking lines on stdin/stdout.
enum Sut {
    InProcess(Box<real::Server>),
    Child(Box<ChildServer>),
}

/// The server in a child process (`serve-child`).
struct ChildServer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    base: String,
    proc: String,
}

impl Sut {
    async fn start(spawn: bool, health: bool) -> Result<Sut> {
        use tokio::io::AsyncBufReadExt;
        if !spawn {
            return Ok(Sut::InProcess(Box::new(
                real::start_with(|c| c.media.health = health).await,
            )));
        }
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("serve-child")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("child stdin")?;
        let stdout = child.stdout.take().ok_or("child stdout")?;
        let pid = child.id().ok_or("child pid")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| "the server child did not start in 30 s")??
            .ok_or("the server child exited")?;
        let base = ready
            .strip_prefix("ready ")
            .ok_or_else(|| format!("the server child said {ready:?}"))?
            .to_owned();
        Ok(Sut::Child(Box::new(ChildServer {
            child,
            stdin,
            lines,
            base,
            proc: format!("/proc/{pid}"),
        })))
    }

    fn base(&self) -> &str {
        match self {
            Sut::InProcess(s) => &s.base,
            Sut::Child(c) => &c.base,
        }
    }

    /// `/proc/self` or `/proc/<child pid>`.
    fn proc(&self) -> &str {
        match self {
            Sut::InProcess(_) => "/proc/self",
            Sut::Child(c) => &c.proc,
        }
    }

    async fn ask(&mut self, line: &str) -> Result<String> {
        use tokio::io::AsyncWriteExt;
        let Sut::Child(c) = self else {
            return Err("not a child".into());
        };
        c.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        c.stdin.flush().await?;
        Ok(c.lines
            .next_line()
            .await?
            .ok_or("the server child exited")?)
    }

    async fn token(&mut self, role: Role, id: &str) -> Result<String> {
        if let Sut::InProcess(s) = self {
            return Ok(s.token(role, id));
        }
        let role = serde_json::to_value(role)?;
        self.ask(&format!(
            "token {} {id}",
            role.as_str().unwrap_or("delegate")
        ))
        .await
    }

    async fn counters(&mut self) -> Result<Counters> {
        if let Sut::InProcess(s) = self {
            return Ok(s.engine.stats().await?.into());
        }
        let line = self.ask("stats").await?;
        Ok(counters_from_json(&serde_json::from_str(&line)?))
    }

    async fn stop(self) {
        match self {
            Sut::InProcess(s) => {
                let s = *s;
                let _ = s.stop.send(());
                let engine = s.engine.clone();
                let stopper = tokio::task::spawn_blocking(move || engine.shutdown());
                if tokio::time::timeout(Duration::from_secs(10), stopper)
                    .await
                    .is_err()
                {
                    progress!("warning: the media engine did not stop within 10 s");
                }
            }
            Sut::Child(c) => {
                use tokio::io::AsyncWriteExt;
                let ChildServer {
                    mut child,
                    mut stdin,
                    ..
                } = *c;
                let _ = stdin.write_all(b"quit\n").await;
                drop(stdin);
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    progress!("warning: the server child did not stop within 10 s; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    }
}

/// The `serve-child` subcommand.
fn serve_child() -> Result<()> {
    use tokio::io::AsyncBufReadExt;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = real::start().await;
        println!("ready {}", server.base);
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["stats"] => println!("{}", counters_json(&server.engine.stats().await?)),
                ["token", role, id] => {
                    let role: Role = serde_json::from_value(json!(role))?;
                    println!("{}", server.token(role, id));
                }
                ["quit"] => break,
                _ => println!("error unknown command"),
            }
        }
        let _ = server.stop.send(());
        let engine = server.engine.clone();
        let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
        Ok::<(), BoxError>(())
    })?;
    drop(runtime);
    Ok(())
}

/// Everything read at one instant.
struct Snapshot {
    at: Instant,
    media_ns: u64,
    media_ticks: u64,
    /// The server's process (the same as `bench_ticks` in process).
    server_ticks: u64,
    bench_ticks: u64,
    threads: BTreeMap<String, u64>,
    server_rss_kib: u64,
    bench_rss_kib: u64,
    engine: Counters,
    /// Per subscriber, per received track.
    subs: Vec<Vec<TrackStats>>,
    /// Packets written by every publisher.
    sent: u64,
}

async fn snapshot(
    sut: &mut Sut,
    media_tid: u32,
    subs: &[Subscriber],
    publishers: &[Client],
) -> Result<Snapshot> {
    let proc = sut.proc().to_owned();
    let media_ns = schedstat_ns(&format!("{proc}/task/{media_tid}/schedstat"))
        .ok_or("cannot read the media thread's schedstat")?;
    let media_ticks = stat_ticks(&format!("{proc}/task/{media_tid}/stat")).unwrap_or(0);
    let engine = sut.counters().await?;
    let at = Instant::now();
    let mut threads = BTreeMap::new();
    if proc == "/proc/self" {
        cpu_by_thread_name(&proc, "", &mut threads);
    } else {
        cpu_by_thread_name(&proc, "server:", &mut threads);
        cpu_by_thread_name("/proc/self", "bench:", &mut threads);
    }
    Ok(Snapshot {
        at,
        media_ns,
        media_ticks,
        server_ticks: stat_ticks(&format!("{proc}/stat")).unwrap_or(0),
        bench_ticks: stat_ticks("/proc/self/stat").unwrap_or(0),
        threads,
        server_rss_kib: rss_kib(&proc),
        bench_rss_kib: rss_kib("/proc/self"),
        engine,
        subs: subs.iter().map(|s| s.client.stats()).collect(),
        sent: publishers
            .iter()
            .flat_map(|p| p.sent_stats())
            .map(|s| s.packets)
            .sum(),
    })
}

/// What the media part of the run measured.
struct MediaRun {
    delegates: usize,
    subscribers: usize,
    window: Duration,
    before: Snapshot,
    after: Snapshot,
    /// RSS of the server's process and of this one before anyone joined.
    server_rss_base_kib: u64,
    bench_rss_base_kib: u64,
    spawned: bool,
    /// Stream-health measurement was on.
    health: bool,
    latency: LatencySummary,
    latency_p999_us: u64,
    latency_audio: LatencySummary,
    latency_video: LatencySummary,
    client_errors: Vec<String>,
    setup: Duration,
}

/// Joins the clients named in `tokens` (name, token), each publishing `spec`, `batch` at a
/// time.
async fn join_publishers(
    base: &str,
    tokens: Vec<(String, String)>,
    spec: PublishSpec,
    batch: usize,
) -> Result<Vec<(String, Client)>> {
    let mut out = Vec::new();
    for chunk in tokens.chunks(batch.max(1)) {
        let mut set = JoinSet::new();
        for (i, (name, token)) in chunk.iter().cloned().enumerate() {
            let (base, spec) = (base.to_owned(), spec.clone());
            set.spawn(async move {
                let c = Client::join(&base, &token)
                    .await
                    .map_err(|e| format!("{name} join: {e}"))?;
                c.publish(spec)
                    .await
                    .map_err(|e| format!("{name} publish: {e}"))?;
                c.wait_published()
                    .await
                    .map_err(|e| format!("{name} publish connection: {e}"))?;
                Ok::<_, String>((i, name, c))
            });
        }
        let mut got = Vec::new();
        while let Some(r) = set.join_next().await {
            got.push(r.map_err(|e| e.to_string())??);
        }
        got.sort_by_key(|(i, _, _)| *i);
        out.extend(got.into_iter().map(|(_, n, c)| (n, c)));
    }
    Ok(out)
}

async fn run_media(args: &BakuArgs) -> Result<MediaRun> {
    let n = args.delegates;
    if n < 2 {
        return Err("baku needs at least 2 delegates".into());
    }
    if let Some(limit) = nofile_soft_limit() {
        let need = 40 * (n as u64 + 2) + 64;
        if limit < need {
            progress!("warning: open files limit {limit} < ~{need}: run `ulimit -n 4096` first");
        }
    }
    let t_setup = Instant::now();
    let mut sut = Sut::start(args.spawn_server, !args.no_health).await?;
    let base = sut.base().to_owned();
    // The thread names itself once it runs: look for a while.
    let mut media_tid = None;
    for _ in 0..100 {
        media_tid = threads(sut.proc())
            .into_iter()
            .find(|(_, comm)| comm == MEDIA_THREAD_COMM)
            .map(|(tid, _)| tid);
        if media_tid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let media_tid = media_tid.ok_or("no roundtable-media thread")?;
    let server_rss_base_kib = rss_kib(sut.proc());
    let bench_rss_base_kib = rss_kib("/proc/self");
    progress!(
        "server up ({}; media thread tid {media_tid}), RSS {server_rss_base_kib} KiB; joining \
         the room",
        if args.spawn_server {
            "child process"
        } else {
            "in process"
        }
    );

    let room = Client::join(&base, &sut.token(Role::Room, "room").await?).await?;
    let keyframe_interval = Duration::from_secs_f64(args.keyframe_secs.max(0.0));
    room.publish(PublishSpec {
        audio: true,
        video_layers: 3,
        source_program: true,
        keyframe_interval,
        ..Default::default()
    })
    .await?;
    room.wait_published().await?;
    let chair = Client::join(&base, &sut.token(Role::Moderator, "chair").await?).await?;

    let mut tokens: Vec<(String, String)> = Vec::new();
    for i in 1..=n {
        let id = format!("d{i:03}");
        let token = sut.token(Role::Delegate, &id).await?;
        tokens.push((id, token));
    }
    let delegates = join_publishers(
        &base,
        tokens,
        PublishSpec {
            audio: true,
            video_layers: 2,
            keyframe_interval,
            ..Default::default()
        },
        args.join_batch,
    )
    .await?;
    progress!(
        "{n} delegates publish (audio + camera q/h) after {:.1} s",
        t_setup.elapsed().as_secs_f64()
    );

    // The first delegate takes the floor.
    let (holder_name, holder) = &delegates[0];
    let ack = holder
        .cmd(json!({"type": "raise_hand"}))
        .await
        .map_err(|e| format!("raise_hand: {e}"))?;
    chair
        .cmd(json!({"type": "grant", "request": ack["request"]}))
        .await
        .map_err(|e| format!("grant: {e}"))?;
    progress!("{holder_name} holds the floor");
    // Let the publishers' first packets open their tracks at the server (fewer re-offers).
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Everyone subscribes with thumbnails.
    let mut subs = vec![Subscriber {
        name: "room".into(),
        client: room.clone(),
        // every delegate's camera (low), the speaker slot, the holder's microphone
        expected_tracks: n + 2,
    }];
    for (i, (name, c)) in delegates.iter().enumerate() {
        subs.push(Subscriber {
            name: name.clone(),
            client: c.clone(),
            // program audio + video, n-1 thumbnails; others also the speaker slot and the mic
            expected_tracks: if i == 0 { n + 1 } else { n + 3 },
        });
    }
    for chunk in subs.chunks(args.join_batch.max(1)) {
        let mut set = JoinSet::new();
        for s in chunk {
            let (c, name) = (s.client.clone(), s.name.clone());
            set.spawn(async move {
                c.subscribe(true)
                    .await
                    .map_err(|e| format!("{name} subscribe: {e}"))?;
                c.wait_subscribed(1)
                    .await
                    .map_err(|e| format!("{name} subscribe offer: {e}"))
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
    }
    progress!("{} subscribers negotiated; waiting for media", subs.len());

    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout_secs);
    loop {
        let lagging: Vec<String> = subs
            .iter()
            .filter_map(|s| {
                let flowing = s.client.stats().iter().filter(|t| t.packets > 0).count();
                (flowing < s.expected_tracks)
                    .then(|| format!("{} {flowing}/{}", s.name, s.expected_tracks))
            })
            .collect();
        if lagging.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not every subscriber receives what it should after {} s: {lagging:?}",
                args.ready_timeout_secs
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress!(
        "all tracks flowing after {:.1} s; settling {} s",
        t_setup.elapsed().as_secs_f64(),
        args.settle_secs
    );
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let setup = t_setup.elapsed();

    let mut publishers: Vec<Client> = vec![room.clone()];
    publishers.extend(delegates.iter().map(|(_, c)| c.clone()));
    let lat_before: Vec<BTreeMap<String, usize>> = subs
        .iter()
        .map(|s| sample_counts(&s.client.stats(), |m| s.client.latency_count(m)))
        .collect();
    let before = snapshot(&mut sut, media_tid, &subs, &publishers).await?;
    progress!("measuring {} s", args.secs);
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let after = snapshot(&mut sut, media_tid, &subs, &publishers).await?;
    let window = after.at - before.at;

    // Latency of every packet received in the window.
    let (mut all, mut audio, mut video) = (Vec::new(), Vec::new(), Vec::new());
    for (s, start) in subs.iter().zip(&lat_before) {
        for t in s.client.stats() {
            let samples = s.client.latency_samples(&t.mid);
            let from = start.get(&t.mid).copied().unwrap_or(0).min(samples.len());
            let w = &samples[from..];
            all.extend_from_slice(w);
            if t.kind == "audio" {
                audio.extend_from_slice(w);
            } else {
                video.extend_from_slice(w);
            }
        }
    }
    let latency = LatencySummary::of(&all);
    all.sort_unstable();
    let latency_p999_us = all
        .get(((all.len().saturating_sub(1)) as f64 * 0.999).round() as usize)
        .map_or(0, |v| u64::from(*v));
    let mut client_errors = Vec::new();
    for (name, c) in std::iter::once(("room", &room))
        .chain(std::iter::once(("chair", &chair)))
        .chain(delegates.iter().map(|(n, c)| (n.as_str(), c)))
    {
        client_errors.extend(c.errors().into_iter().map(|e| format!("{name}: {e}")));
    }

    progress!("closing the clients");
    let mut set = JoinSet::new();
    for c in std::iter::once(room)
        .chain(std::iter::once(chair))
        .chain(delegates.into_iter().map(|(_, c)| c))
    {
        set.spawn(async move { c.close().await });
    }
    while set.join_next().await.is_some() {}
    sut.stop().await;
    Ok(MediaRun {
        delegates: n,
        subscribers: subs.len(),
        window,
        before,
        after,
        server_rss_base_kib,
        bench_rss_base_kib,
        spawned: args.spawn_server,
        health: !args.no_health,
        latency,
        latency_p999_us,
        latency_audio: LatencySummary::of(&audio),
        latency_video: LatencySummary::of(&video),
        client_errors,
        setup,
    })
}

/// Sums over every subscriber's tracks, before → after.
#[derive(Debug, Default)]
struct Delivery {
    /// Payload sequence numbers (end to end, per sending stream).
    expected: u64,
    received: u64,
    /// RTP sequence numbers of each subscriber track (server → subscriber).
    rtp_expected: u64,
    rtp_received: u64,
    duplicates: u64,
    audio_packets: u64,
    audio_bytes: u64,
    video_packets: u64,
    video_bytes: u64,
}

fn delivery(before: &[Vec<TrackStats>], after: &[Vec<TrackStats>]) -> Delivery {
    let mut d = Delivery::default();
    for (b, a) in before.iter().zip(after) {
        for t in a {
            let old = b.iter().find(|o| o.mid == t.mid);
            let packets = t.packets - old.map_or(0, |o| o.packets);
            let bytes = t.bytes - old.map_or(0, |o| o.bytes);
            if t.kind == "audio" {
                d.audio_packets += packets;
                d.audio_bytes += bytes;
            } else {
                d.video_packets += packets;
                d.video_bytes += bytes;
            }
            d.rtp_expected += t.rtp.expected - old.map_or(0, |o| o.rtp.expected);
            d.rtp_received += t.rtp.received - old.map_or(0, |o| o.rtp.received);
            d.duplicates += t.rtp.duplicates - old.map_or(0, |o| o.rtp.duplicates);
            for (tag, s) in &t.streams {
                let o = old.and_then(|o| o.streams.get(tag));
                d.expected += s.seq.expected - o.map_or(0, |o| o.seq.expected);
                d.received += s.seq.received - o.map_or(0, |o| o.seq.received);
            }
        }
    }
    d
}

// ----- the bare floor ---------------------------------------------------------------------

/// The packets the floor sends.
#[derive(Debug, Clone)]
struct FloorPlan {
    receivers: usize,
    /// Bursts (one per packet that arrived at the server).
    events: u64,
    /// Packets in all (the server's forwarded count).
    packets: u64,
    audio_fraction: f64,
    audio_payload: usize,
    video_payload: usize,
    /// Spread evenly over this time; `None`: as fast as possible.
    pace: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
struct FloorResult {
    sent: u64,
    send_errors: u64,
    cpu_ns: u64,
    wall: Duration,
    received: u64,
    sleeps: u64,
}

impl FloorResult {
    fn us_per_packet(&self) -> f64 {
        self.cpu_ns as f64 / 1000.0 / self.sent.max(1) as f64
    }
}

/// One receiver's SRTP sender state.
struct Out {
    key: LessSafeKey,
    salt: [u8; 12],
    ssrc: u32,
    seq: u16,
    roc: u32,
    timestamp: u32,
}

fn run_floor(plan: &FloorPlan) -> io::Result<FloorResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let mut addrs = Vec::new();
    let mut drains = Vec::new();
    for i in 0..plan.receivers {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        addrs.push(sock.local_addr()?);
        let (stop, received) = (stop.clone(), received.clone());
        drains.push(
            std::thread::Builder::new()
                .name(format!("floor-rx-{i}"))
                .spawn(move || {
                    let mut buf = [0u8; 2048];
                    loop {
                        match sock.recv(&mut buf) {
                            Ok(_) => {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) if stop.load(Ordering::Relaxed) => break,
                            Err(_) => {}
                        }
                    }
                })?,
        );
    }
    let p = plan.clone();
    let sender = std::thread::Builder::new()
        .name("floor-sender".into())
        .spawn(move || send_floor(&p, &addrs))?;
    let result = sender
        .join()
        .map_err(|_| io::Error::other("the floor's sender panicked"))?;
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for d in drains {
        let _ = d.join();
    }
    let mut result = result?;
    result.received = received.load(Ordering::Relaxed);
    Ok(result)
}

/// The floor's one sending thread: seal (SRTP AEAD-AES-128-GCM, RFC 7714) and `send_to`.
fn send_floor(plan: &FloorPlan, addrs: &[SocketAddr]) -> io::Result<FloorResult> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let mut outs: Vec<Out> = (0..addrs.len())
        .map(|i| {
            let mut key = [0u8; 16];
            let mut salt = [0u8; 12];
            for (j, b) in key.iter_mut().enumerate() {
                *b = (i * 31 + j * 7) as u8 ^ 0xa5;
            }
            for (j, b) in salt.iter_mut().enumerate() {
                *b = (i * 17 + j * 13) as u8 ^ 0x3c;
            }
            let key = UnboundKey::new(&AES_128_GCM, &key).expect("a 16-byte key");
            Out {
                key: LessSafeKey::new(key),
                salt,
                ssrc: 0x1000_0000 + i as u32,
                seq: (i * 1000) as u16,
                roc: 0,
                timestamp: 0,
            }
        })
        .collect();
    let payload = vec![0x5a_u8; plan.audio_payload.max(plan.video_payload)];
    let mut buf: Vec<u8> = Vec::with_capacity(1500);
    let events = plan.events.max(1);
    let (mut sent, mut send_errors, mut sleeps) = (0u64, 0u64, 0u64);
    let mut cursor = 0usize;
    let mut audio_acc = 0.0f64;
    let cpu0 = thread_self_cpu_ns();
    let start = Instant::now();
    for e in 0..events {
        if let Some(pace) = plan.pace {
            let due = start + pace.mul_f64(e as f64 / events as f64);
            let now = Instant::now();
            if due > now {
                // At most about a thousand sleeps a second: the rest goes out in bursts.
                std::thread::sleep((due - now).max(Duration::from_millis(1)));
                sleeps += 1;
            }
        }
        let count = (e + 1) * plan.packets / events - e * plan.packets / events;
        audio_acc += plan.audio_fraction;
        let audio = audio_acc >= 1.0;
        if audio {
            audio_acc -= 1.0;
        }
        let size = if audio {
            plan.audio_payload
        } else {
            plan.video_payload
        };
        for _ in 0..count {
            let r = cursor % addrs.len();
            cursor += 1;
            let o = &mut outs[r];
            o.seq = o.seq.wrapping_add(1);
            if o.seq == 0 {
                o.roc += 1;
            }
            o.timestamp = o.timestamp.wrapping_add(if audio { 960 } else { 3000 });
            buf.clear();
            buf.extend_from_slice(&[0x80, if audio { 111 } else { 96 }]);
            buf.extend_from_slice(&o.seq.to_be_bytes());
            buf.extend_from_slice(&o.timestamp.to_be_bytes());
            buf.extend_from_slice(&o.ssrc.to_be_bytes());
            buf.extend_from_slice(&payload[..size]);
            let mut iv = [0u8; 12];
            iv[2..6].copy_from_slice(&o.ssrc.to_be_bytes());
            iv[6..10].copy_from_slice(&o.roc.to_be_bytes());
            iv[10..12].copy_from_slice(&o.seq.to_be_bytes());
            for (b, s) in iv.iter_mut().zip(o.salt) {
                *b ^= s;
            }
            let (header, body) = buf.split_at_mut(12);
            let tag = o
                .key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&header[..]),
                    body,
                )
                .map_err(|_| io::Error::other("seal failed"))?;
            buf.extend_from_slice(tag.as_ref());
            match sock.send_to(&buf, addrs[r]) {
                Ok(_) => sent += 1,
                Err(_) => send_errors += 1,
            }
        }
    }
    let wall = start.elapsed();
    let cpu_ns = thread_self_cpu_ns().saturating_sub(cpu0);
    Ok(FloorResult {
        sent,
        send_errors,
        cpu_ns,
        wall,
        received: 0,
        sleeps,
    })
}

// ----- the run and its report -------------------------------------------------------------

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn latency_json(l: &LatencySummary) -> Value {
    json!({
        "count": l.count,
        "min_ms": ms(l.min_us),
        "p50_ms": ms(l.p50_us),
        "p99_ms": ms(l.p99_us),
        "max_ms": ms(l.max_us),
        "mean_ms": ms(l.mean_us),
    })
}

fn baku(args: BakuArgs) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let run = runtime.block_on(run_media(&args))?;
    drop(runtime);

    let (b, a) = (&run.before, &run.after);
    let secs = run.window.as_secs_f64();
    let fwd = a.engine.rtp_forwarded - b.engine.rtp_forwarded;
    let rtp_in = a.engine.rtp_in - b.engine.rtp_in;
    if fwd == 0 {
        return Err("nothing was forwarded in the window".into());
    }
    let media_ns = a.media_ns - b.media_ns;
    let media_ticks = a.media_ticks - b.media_ticks;
    let us_per_fwd = media_ns as f64 / 1000.0 / fwd as f64;
    let us_per_fwd_ticks = media_ticks as f64 / TICKS_PER_SEC * 1e6 / fwd as f64;
    let server_cpu_s = (a.server_ticks - b.server_ticks) as f64 / TICKS_PER_SEC;
    let bench_cpu_s = (a.bench_ticks - b.bench_ticks) as f64 / TICKS_PER_SEC;
    let d = delivery(&b.subs, &a.subs);
    let delivery_ratio = d.received as f64 / d.expected.max(1) as f64;
    let received = d.audio_packets + d.video_packets;
    let participants = run.delegates + 1;
    let rss_per = (a.server_rss_kib.saturating_sub(run.server_rss_base_kib)) as f64
        / 1024.0
        / participants as f64;
    let threads: BTreeMap<String, f64> = a
        .threads
        .iter()
        .map(|(name, ns)| {
            let d = ns.saturating_sub(b.threads.get(name).copied().unwrap_or(0));
            (name.clone(), round(d as f64 / 1e9 / secs, 3))
        })
        .collect();
    progress!(
        "roundtable: {fwd} packets forwarded in {secs:.1} s ({:.0}/s, {rtp_in} in); media thread \
         {:.3} s CPU ({:.1}% of a core): {us_per_fwd:.2} us per forwarded packet; delivery \
         {:.5}; latency p50 {:.2} ms p99 {:.2} ms; RSS {:.2} MiB per participant ({})",
        fwd as f64 / secs,
        media_ns as f64 / 1e9,
        media_ns as f64 / 1e7 / secs,
        delivery_ratio,
        ms(run.latency.p50_us),
        ms(run.latency.p99_us),
        rss_per,
        if run.spawned {
            "server process"
        } else {
            "whole process: server and clients"
        }
    );

    let floor = if args.no_floor {
        None
    } else {
        let plan = FloorPlan {
            receivers: run.subscribers,
            events: rtp_in.max(1),
            packets: fwd,
            audio_fraction: d.audio_packets as f64 / received.max(1) as f64,
            audio_payload: (d.audio_bytes / d.audio_packets.max(1)) as usize,
            video_payload: (d.video_bytes / d.video_packets.max(1)).max(1) as usize,
            pace: Some(run.window),
        };
        progress!(
            "bare floor: {} packets to {} receivers over {secs:.1} s (audio {:.1}%, payloads {} / {} B)",
            plan.packets,
            plan.receivers,
            plan.audio_fraction * 100.0,
            plan.audio_payload,
            plan.video_payload
        );
        let paced = run_floor(&plan)?;
        let unpaced = run_floor(&FloorPlan {
            pace: None,
            ..plan.clone()
        })?;
        progress!(
            "bare floor: {:.2} us per packet paced, {:.2} unpaced",
            paced.us_per_packet(),
            unpaced.us_per_packet()
        );
        Some((plan, paced, unpaced))
    };

    let server_latency = a.engine.forward_latency.since(&b.engine.forward_latency);
    let server_ms = |q: f64| round(server_latency.quantile_us(q) as f64 / 1000.0, 3);
    progress!(
        "server share of the latency (read off the socket to last copy sent, per forwarded \
         datagram): p50 {} ms, p99 {} ms, p99.9 {} ms",
        server_ms(0.5),
        server_ms(0.99),
        server_ms(0.999)
    );
    let mut baku = json!({
        "roundtable": {
            "cpu_us_per_forwarded_packet": round(us_per_fwd, 3),
            "delivery_ratio": round(delivery_ratio, 6),
            "added_latency_p50_ms": ms(run.latency.p50_us),
            "added_latency_p99_ms": ms(run.latency.p99_us),
            "rss_per_participant_mib": round(rss_per, 3),
            "cpu_us_per_forwarded_packet_from_ticks": round(us_per_fwd_ticks, 3),
            "media_thread_cpu_s": round(media_ns as f64 / 1e9, 3),
            "media_thread_core_share": round(media_ns as f64 / 1e9 / secs, 4),
            "server": if run.spawned { "child process" } else { "in process (RSS and process CPU include the clients)" },
            "stream_health": run.health,
            "server_process_cpu_s": round(server_cpu_s, 2),
            "server_process_core_share": round(server_cpu_s / secs, 3),
            "bench_process_core_share": round(bench_cpu_s / secs, 3),
            "cpu_core_share_by_thread": threads,
            "latency": latency_json(&run.latency),
            "server_latency_ms": {
                "what": "per forwarded datagram, from reading it off the socket to the last copy sent (queueing in the socket before the read not included)",
                "count": server_latency.count(),
                "p50": server_ms(0.5),
                "p99": server_ms(0.99),
                "p999": server_ms(0.999),
                "max_bucket": server_ms(1.0),
            },
            "latency_p999_ms": ms(run.latency_p999_us),
            "latency_audio": latency_json(&run.latency_audio),
            "latency_video": latency_json(&run.latency_video),
            "delivery": {
                "expected": d.expected,
                "received": d.received,
                "missing": d.expected.saturating_sub(d.received),
                "rtp_expected": d.rtp_expected,
                "rtp_received": d.rtp_received,
                "rtp_delivery_ratio": round(d.rtp_received as f64 / d.rtp_expected.max(1) as f64, 6),
                "duplicates": d.duplicates,
                "received_vs_forwarded": round(received as f64 / fwd as f64, 6),
            },
            "rss_kib": {
                "server_before_join": run.server_rss_base_kib,
                "server_after_window": a.server_rss_kib,
                "bench_before_join": run.bench_rss_base_kib,
                "bench_after_window": a.bench_rss_kib,
                "participants": participants,
            },
            "engine": {
                "rtp_in": rtp_in,
                "rtp_forwarded": fwd,
                "datagrams_in": a.engine.datagrams_in - b.engine.datagrams_in,
                "datagrams_out": a.engine.datagrams_out - b.engine.datagrams_out,
                "send_errors": a.engine.send_errors - b.engine.send_errors,
                "forward_errors": a.engine.forward_errors - b.engine.forward_errors,
                "core_errors": a.engine.core_errors - b.engine.core_errors,
                "events_dropped": a.engine.events_dropped - b.engine.events_dropped,
                "connections": a.engine.connections,
            },
            "client_errors": run.client_errors,
        },
        "load": {
            "delegates": run.delegates,
            "keyframe_interval_s": args.keyframe_secs,
            "subscribers": run.subscribers,
            "publishers": run.delegates + 1,
            "window_s": round(secs, 3),
            "setup_s": round(run.setup.as_secs_f64(), 1),
            "packets_sent_by_publishers": a.sent - b.sent,
            "packets_in_per_s": round(rtp_in as f64 / secs, 1),
            "packets_forwarded_per_s": round(fwd as f64 / secs, 1),
            "packets_received_per_s": round(received as f64 / secs, 1),
            "audio_packets_received": d.audio_packets,
            "video_packets_received": d.video_packets,
        },
        "targets": {
            "cpu_vs_floor_max": 1.5,
            "added_latency_p99_ms_max": 2.0,
            "delivery_ratio_min": 0.999,
            "rss_per_participant_mib_max": 2.0,
        },
    });
    if let Some((plan, paced, unpaced)) = &floor {
        let ratio = us_per_fwd / paced.us_per_packet();
        progress!("ratio roundtable / floor: {ratio:.2}");
        baku["floor"] = json!({
            "cpu_us_per_forwarded_packet": round(paced.us_per_packet(), 3),
            "paced_over_s": round(paced.wall.as_secs_f64(), 2),
            "packets": paced.sent,
            "send_errors": paced.send_errors,
            "received": paced.received,
            "sleeps": paced.sleeps,
            "receivers": plan.receivers,
            "bursts": plan.events,
            "audio_fraction": round(plan.audio_fraction, 4),
            "audio_payload_bytes": plan.audio_payload,
            "video_payload_bytes": plan.video_payload,
            "unpaced_cpu_us_per_packet": round(unpaced.us_per_packet(), 3),
            "unpaced_wall_s": round(unpaced.wall.as_secs_f64(), 2),
        });
        baku["ratio_vs_floor"] = json!(round(ratio, 3));
    }
    // Whole-process CPU per forwarded packet: what the Janus figure is (its process).
    let process_us_per_fwd = server_cpu_s * 1e6 / fwd as f64;
    baku["roundtable"]["process_cpu_us_per_forwarded_packet"] = json!(round(process_us_per_fwd, 3));
    if let Some(api) = &args.janus {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let janus = runtime.block_on(run_janus(&args, api));
        drop(runtime);
        // A Janus failure is recorded; roundtable's figures are written all the same.
        let janus = match janus {
            Ok(j) => j,
            Err(e) => {
                progress!("janus failed: {e}");
                json!({"error": e.to_string()})
            }
        };
        let j = janus["cpu_us_per_forwarded_packet"]
            .as_f64()
            .unwrap_or(f64::NAN);
        // Like for like: both servers' whole processes (roundtable's only when it runs apart).
        let (mine, what) = if run.spawned {
            (
                process_us_per_fwd,
                "process CPU per forwarded packet, both servers in their own processes",
            )
        } else {
            (
                us_per_fwd,
                "roundtable's media thread (server in process with the clients) vs Janus's process",
            )
        };
        let ratio = mine / j.max(1e-9);
        progress!("ratio roundtable / Janus (CPU per forwarded packet): {ratio:.3} ({what})");
        baku["janus"] = janus;
        baku["ratio_vs_janus"] = if ratio.is_finite() {
            json!(round(ratio, 3))
        } else {
            Value::Null
        };
        baku["ratio_vs_janus_basis"] = json!(what);
    }
    let result = json!({
        "machine": machine(),
        "date": utc_now(),
        "command": command,
        "scenarios": {"baku": baku},
    });
    write_json(&args.out, &result)?;
    if args.strict
        && let Some(e) = result["scenarios"]["baku"]["janus"]["error"].as_str()
    {
        return Err(format!("--strict: Janus failed: {e}").into());
    }
    progress!("wrote {}", args.out.display());
    Ok(())
}

// ----- forum and ramp ---------------------------------------------------------------------

#[derive(Debug, Clone, Args)]
struct RampArgs {
    /// Delegates at the first step.
    #[arg(long, default_value_t = 10)]
    start: usize,
    /// Delegates added per step.
    #[arg(long, default_value_t = 10)]
    step: usize,
    /// Most delegates tried.
    #[arg(long, default_value_t = 500)]
    max: usize,
    /// The `forum` figures are those of the step with this many delegates (always measured,
    /// even past a failed step, unless it cannot be reached).
    #[arg(long, default_value_t = 300)]
    forum: usize,
    /// Measured window per step, seconds.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Seconds between a step's subscribers all receiving and its window.
    #[arg(long, default_value_t = 2)]
    settle_secs: u64,
    /// Longest wait for a step's subscribers to receive what they should, seconds.
    #[arg(long, default_value_t = 120)]
    ready_timeout_secs: u64,
    /// Clients joining and negotiating at once.
    #[arg(long, default_value_t = 10)]
    join_batch: usize,
    /// Periodic keyframe interval of the room's program, seconds. 0 (the default): the first
    /// keyframe and those asked for (each joining subscriber asks), as a browser's encoder does
    /// (libwebrtc sends no periodic VP8 keyframes); the synthetic periodic keyframe is a
    /// back-to-back burst of 20 packets per subscriber, which alone decides the p99 (baku).
    #[arg(long, default_value_t = 0.0)]
    keyframe_secs: f64,
    /// A step passes with loss at most this (0.001: 0.1 %).
    #[arg(long, default_value_t = 0.001)]
    loss_max: f64,
    /// A step passes with end-to-end p99 at most this, ms.
    #[arg(long, default_value_t = 10.0)]
    p99_max_ms: f64,
    /// roundtable's server in a child process (its CPU and RSS alone).
    #[arg(long)]
    spawn_server: bool,
    /// Also ramp Janus VideoRoom at this HTTP API address, after roundtable.
    #[arg(long)]
    janus: Option<String>,
    /// The VideoRoom room of `--janus`.
    #[arg(long, default_value_t = 1234)]
    janus_room: u64,
    /// The local address the clients bind for `--janus`.
    #[arg(long, default_value = "10.77.0.1")]
    janus_bind: std::net::IpAddr,
    /// Exit with an error when anything failed (a Janus run, a join, a step), after writing
    /// the JSON: for the smoke runs in tests/run.sh.
    #[arg(long)]
    strict: bool,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/ramp.json")]
    out: PathBuf,
}

/// A forum participant on either server.
#[derive(Clone)]
enum Part {
    Rt(Client),
    Janus(JanusClient),
}

impl Part {
    fn stats(&self) -> Vec<TrackStats> {
        match self {
            Part::Rt(c) => c.stats(),
            Part::Janus(c) => c.stats(),
        }
    }
    fn latency_samples(&self, mid: &str) -> Vec<u32> {
        match self {
            Part::Rt(c) => c.latency_samples(mid),
            Part::Janus(c) => c.latency_samples(mid),
        }
    }
    fn latency_count(&self, mid: &str) -> usize {
        match self {
            Part::Rt(c) => c.latency_count(mid),
            Part::Janus(c) => c.latency_count(mid),
        }
    }
    fn sent(&self) -> u64 {
        let s = match self {
            Part::Rt(c) => c.sent_stats(),
            Part::Janus(c) => c.sent_stats(),
        };
        s.iter().map(|s| s.packets).sum()
    }
    fn errors(&self) -> Vec<String> {
        match self {
            Part::Rt(c) => c.errors(),
            Part::Janus(c) => c.errors(),
        }
    }
    async fn close(&self) {
        match self {
            Part::Rt(c) => c.close().await,
            Part::Janus(c) => c.close().await,
        }
    }
}

/// The server side of a ramp.
enum Side {
    Rt {
        sut: Sut,
        chair: Client,
        media_tid: u32,
    },
    Janus {
        api: String,
        room: u64,
        opts: ClientOptions,
        proc: String,
    },
}

impl Side {
    fn proc(&self) -> &str {
        match self {
            Side::Rt { sut, .. } => sut.proc(),
            Side::Janus { proc, .. } => proc,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Side::Rt { .. } => "roundtable",
            Side::Janus { .. } => "janus",
        }
    }

    /// What a new participant needs to join (a token is asked of the server here).
    async fn joiner(&mut self, id: &str, room: bool) -> Result<Joiner> {
        Ok(match self {
            Side::Rt { sut, .. } => {
                let role = if room { Role::Room } else { Role::Delegate };
                Joiner::Rt {
                    token: sut.token(role, id).await?,
                    base: sut.base().to_owned(),
                }
            }
            Side::Janus {
                api, room: r, opts, ..
            } => Joiner::Janus {
                api: api.clone(),
                room: *r,
                id: id.to_owned(),
                opts: opts.clone(),
            },
        })
    }
}

/// One participant about to join (cheap, `Send`: joins run concurrently).
enum Joiner {
    Rt {
        base: String,
        token: String,
    },
    Janus {
        api: String,
        room: u64,
        id: String,
        opts: ClientOptions,
    },
}

impl Joiner {
    /// Joins and publishes `spec`; returns once the publish connection is up.
    async fn publish(self, spec: PublishSpec) -> std::result::Result<Part, String> {
        match self {
            Joiner::Rt { base, token } => {
                let c = Client::join_with(&base, &token, ramp_options())
                    .await
                    .map_err(|e| format!("join: {e}"))?;
                c.publish(spec).await.map_err(|e| format!("publish: {e}"))?;
                c.wait_published()
                    .await
                    .map_err(|e| format!("publish connection: {e}"))?;
                Ok(Part::Rt(c))
            }
            Joiner::Janus {
                api,
                room,
                id,
                opts,
            } => {
                let c = JanusClient::join(&api, room, &id, opts)
                    .await
                    .map_err(|e| format!("join: {e}"))?;
                c.publish(spec).await.map_err(|e| format!("publish: {e}"))?;
                c.wait_published()
                    .await
                    .map_err(|e| format!("publish connection: {e}"))?;
                Ok(Part::Janus(c))
            }
        }
    }
}

/// A ramp client's options: negotiation steps may take longer while hundreds join under load.
fn ramp_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// What one ramp step measured.
#[derive(Debug, Clone)]
struct Step {
    delegates: usize,
    json: Value,
    loss: f64,
    p99_ms: f64,
}

fn forum_spec(speaking: bool) -> PublishSpec {
    PublishSpec {
        audio: true,
        video_layers: 0,
        // A listener's microphone is muted by the floor gate but sends DTX: a small packet
        // every 400 ms (as Opus DTX in a browser); the floor holder speaks, 50 packets/s.
        audio_interval: Duration::from_millis(if speaking { 20 } else { 400 }),
        audio_size: if speaking { (80, 160) } else { (24, 32) },
        audio_level: Some(if speaking { 30 } else { 127 }),
        ..Default::default()
    }
}

/// Subscribes one forum participant: the program (audio and its top video layer) and the floor
/// holder's microphone (the room: the holder's microphone only).
async fn forum_subscribe(
    who: Part,
    room: Part,
    holder: Part,
    is_room: bool,
) -> std::result::Result<usize, String> {
    let e = |e: roundtable_headless::Error| format!("subscribe: {e}");
    match &who {
        Part::Rt(c) => {
            c.cmd(json!({"type": "media_preferences", "thumbnails": false, "microphones": "open"}))
                .await
                .map_err(e)?;
            c.wait_subscribed(1).await.map_err(e)?;
            let is_holder = matches!(holder, Part::Rt(h) if h.participant() == c.participant());
            Ok(if is_room {
                1
            } else if is_holder {
                2
            } else {
                3
            })
        }
        Part::Janus(c) => {
            let (Part::Janus(r), Part::Janus(h)) = (&room, &holder) else {
                return Err("mixed sides".into());
            };
            let mut list = Vec::new();
            if !is_room {
                let m = r.mids();
                list.push(JanusStream {
                    feed: r.feed(),
                    mid: m[0].clone(),
                    substream: None,
                });
                // The program's top layer (`f`, the third of three).
                list.push(JanusStream {
                    feed: r.feed(),
                    mid: m[1].clone(),
                    substream: Some(janus_substream(3, 2)),
                });
            }
            if h.feed() != c.feed() {
                list.push(JanusStream {
                    feed: h.feed(),
                    mid: h.mids()[0].clone(),
                    substream: None,
                });
            }
            let n = list.len();
            c.subscribe(&list).await.map_err(e)?;
            Ok(n)
        }
    }
}

/// Ramps one side: delegates join in steps; each step is measured once everyone receives.
async fn ramp_side(args: &RampArgs, mut side: Side) -> Result<(Vec<Step>, Option<String>)> {
    let name = side.name();
    let rss_base = rss_kib(side.proc());
    let t0 = Instant::now();
    let room = side
        .joiner("room", true)
        .await?
        .publish(PublishSpec {
            audio: true,
            video_layers: 3,
            source_program: true,
            keyframe_interval: Duration::from_secs_f64(args.keyframe_secs.max(0.0)),
            ..Default::default()
        })
        .await?;
    let mut delegates: Vec<Part> = Vec::new();
    let mut subs: Vec<(Part, usize)> = Vec::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut failure: Option<String> = None;
    let mut target = args.start.max(1);
    let mut passed_all = true;
    loop {
        // Join the new delegates, publishing (the first speaks and holds the floor), and
        // subscribe them; a failure ends the ramp at this step.
        let joined: std::result::Result<(), String> = async {
            // Join the new delegates, publishing (the first speaks and holds the floor).
            let from = delegates.len();
            let ids: Vec<usize> = (from + 1..=target).collect();
            for chunk in ids.chunks(args.join_batch.max(1)) {
                let mut set = JoinSet::new();
                for &i in chunk {
                    let j = side
                        .joiner(&format!("d{i:03}"), false)
                        .await
                        .map_err(|e| e.to_string())?;
                    set.spawn(async move { (i, j.publish(forum_spec(i == 1)).await) });
                }
                let mut got = Vec::new();
                while let Some(r) = set.join_next().await {
                    let (i, p) = r.map_err(|e| e.to_string())?;
                    got.push((i, p.map_err(|e| format!("d{i:03} {e}"))?));
                }
                got.sort_by_key(|(i, _)| *i);
                delegates.extend(got.into_iter().map(|(_, p)| p));
            }
            let holder = delegates[0].clone();
            if from == 0
                && let (Side::Rt { chair, .. }, Part::Rt(h)) = (&side, &holder)
            {
                let ack = h
                    .cmd(json!({"type": "raise_hand"}))
                    .await
                    .map_err(|e| e.to_string())?;
                chair
                    .cmd(json!({"type": "grant", "request": ack["request"]}))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            // Subscribe them (and the room, at the first step).
            let mut new: Vec<(Part, bool)> = delegates[from..]
                .iter()
                .map(|d| (d.clone(), false))
                .collect();
            if from == 0 {
                new.insert(0, (room.clone(), true));
            }
            for chunk in new.chunks(args.join_batch.max(1)) {
                let mut set = JoinSet::new();
                for (k, (p, is_room)) in chunk.iter().cloned().enumerate() {
                    let (room, holder) = (room.clone(), holder.clone());
                    set.spawn(async move { (k, forum_subscribe(p, room, holder, is_room).await) });
                }
                let mut got = Vec::new();
                while let Some(r) = set.join_next().await {
                    let (k, n) = r.map_err(|e| e.to_string())?;
                    got.push((k, n?));
                }
                got.sort_by_key(|(k, _)| *k);
                for (k, n) in got {
                    subs.push((chunk[k].0.clone(), n));
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = joined {
            failure = Some(format!("{target} delegates: {e}"));
            progress!("{name}: {target} delegates: {e}");
            break;
        }
        // Everyone receives what they should.
        let deadline = Instant::now() + Duration::from_secs(args.ready_timeout_secs);
        let ready = loop {
            let lagging = subs
                .iter()
                .filter(|(p, want)| p.stats().iter().filter(|t| t.packets > 0).count() < *want)
                .count();
            if lagging == 0 {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if !ready {
            failure = Some(format!(
                "{target} delegates: not every subscriber received what it should within {} s",
                args.ready_timeout_secs
            ));
            break;
        }
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        // The window.
        let lat_before: Vec<BTreeMap<String, usize>> = subs
            .iter()
            .map(|(p, _)| sample_counts(&p.stats(), |m| p.latency_count(m)))
            .collect();
        let proc = side.proc().to_owned();
        let (media_ns0, counters0) = match &mut side {
            Side::Rt { sut, media_tid, .. } => (
                schedstat_ns(&format!("{proc}/task/{media_tid}/schedstat")).unwrap_or(0),
                Some(sut.counters().await?),
            ),
            Side::Janus { .. } => (0, None),
        };
        let ticks0 = stat_ticks(&format!("{proc}/stat")).unwrap_or(0);
        let stats0: Vec<Vec<TrackStats>> = subs.iter().map(|(p, _)| p.stats()).collect();
        let sent0: u64 = std::iter::once(&room)
            .chain(&delegates)
            .map(Part::sent)
            .sum();
        let at0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.secs)).await;
        let secs = at0.elapsed().as_secs_f64();
        let stats1: Vec<Vec<TrackStats>> = subs.iter().map(|(p, _)| p.stats()).collect();
        let sent1: u64 = std::iter::once(&room)
            .chain(&delegates)
            .map(Part::sent)
            .sum();
        let ticks1 = stat_ticks(&format!("{proc}/stat")).unwrap_or(0);
        let (media_ns1, counters1) = match &mut side {
            Side::Rt { sut, media_tid, .. } => (
                schedstat_ns(&format!("{proc}/task/{media_tid}/schedstat")).unwrap_or(0),
                Some(sut.counters().await?),
            ),
            Side::Janus { .. } => (0, None),
        };
        let rss = rss_kib(&proc);
        let mut all = Vec::new();
        for ((p, _), start) in subs.iter().zip(&lat_before) {
            samples_since(&p.stats(), start, |m| p.latency_samples(m), &mut all);
        }
        let latency = LatencySummary::of(&all);
        let d = delivery(&stats0, &stats1);
        let received = d.audio_packets + d.video_packets;
        let delivery_ratio = d.received as f64 / d.expected.max(1) as f64;
        let loss = 1.0 - delivery_ratio;
        let process_cpu_s = ticks1.saturating_sub(ticks0) as f64 / TICKS_PER_SEC;
        let forwarded = match (&counters0, &counters1) {
            (Some(a), Some(b)) => b.rtp_forwarded.saturating_sub(a.rtp_forwarded),
            _ => received,
        };
        let mut json = json!({
            "delegates": target,
            "subscribers": subs.len(),
            "window_s": round(secs, 2),
            "process_cpu_us_per_forwarded_packet": round(process_cpu_s * 1e6 / forwarded.max(1) as f64, 3),
            "process_core_share": round(process_cpu_s / secs, 3),
            "delivery_ratio": round(delivery_ratio, 6),
            "added_latency_p50_ms": ms(latency.p50_us),
            "added_latency_p99_ms": ms(latency.p99_us),
            "rss_per_participant_mib": round(rss.saturating_sub(rss_base) as f64 / 1024.0 / (target + 1) as f64, 3),
            "packets_forwarded_per_s": round(forwarded as f64 / secs, 1),
            "packets_received_per_s": round(received as f64 / secs, 1),
            "packets_sent_per_s": round(sent1.saturating_sub(sent0) as f64 / secs, 1),
            "latency": latency_json(&latency),
        });
        if let (Some(a), Some(b)) = (&counters0, &counters1) {
            let media_ns = media_ns1.saturating_sub(media_ns0);
            json["cpu_us_per_forwarded_packet"] =
                json!(round(media_ns as f64 / 1000.0 / forwarded.max(1) as f64, 3));
            json["media_thread_core_share"] = json!(round(media_ns as f64 / 1e9 / secs, 3));
            let server = b.forward_latency.since(&a.forward_latency);
            json["server_latency_ms"] = json!({
                "p50": round(server.quantile_us(0.5) as f64 / 1000.0, 3),
                "p99": round(server.quantile_us(0.99) as f64 / 1000.0, 3),
            });
        } else {
            json["cpu_us_per_forwarded_packet"] =
                json["process_cpu_us_per_forwarded_packet"].clone();
        }
        let p99_ms = ms(latency.p99_us);
        let ok = loss <= args.loss_max && p99_ms <= args.p99_max_ms;
        json["passed"] = json!(ok);
        progress!(
            "{name}: {target} delegates: {:.0} packets/s forwarded, {} us per packet ({:.0}% of a \
             core), delivery {delivery_ratio:.5}, latency p50 {:.2} ms p99 {p99_ms:.2} ms: {} \
             ({:.0} s in)",
            forwarded as f64 / secs,
            json["cpu_us_per_forwarded_packet"],
            process_cpu_s * 100.0 / secs,
            ms(latency.p50_us),
            if ok { "passes" } else { "fails" },
            t0.elapsed().as_secs_f64()
        );
        steps.push(Step {
            delegates: target,
            json,
            loss,
            p99_ms,
        });
        passed_all &= ok;
        let mut next = target + args.step.max(1);
        if target < args.forum && next > args.forum {
            next = args.forum; // the forum size is measured even off the step grid
        }
        // Go on while passing (up to --max), and in any case up to the forum size.
        let need_forum = target < args.forum;
        if next > args.max.max(args.forum) || (!passed_all && !need_forum) || args.step == 0 {
            break;
        }
        // Past a failed step, straight to the forum size.
        target = if passed_all { next } else { args.forum };
    }
    // Errors nobody waited for (at most 20), on the last step.
    let errors: Vec<String> = std::iter::once(&room)
        .chain(&delegates)
        .flat_map(Part::errors)
        .take(20)
        .collect();
    if let Some(last) = steps.last_mut() {
        last.json["client_errors"] = json!(errors);
    }
    let mut set = JoinSet::new();
    for p in std::iter::once(room).chain(delegates) {
        set.spawn(async move { p.close().await });
    }
    while set.join_next().await.is_some() {}
    match side {
        Side::Rt { sut, chair, .. } => {
            chair.close().await;
            sut.stop().await;
        }
        Side::Janus { .. } => {}
    }
    Ok((steps, failure))
}

/// The largest delegate count of consecutive passing steps from the first.
fn max_passing(steps: &[Step]) -> usize {
    steps
        .iter()
        .take_while(|s| s.json["passed"] == true)
        .last()
        .map_or(0, |s| s.delegates)
}

fn side_json(steps: &[Step], failure: &Option<String>, forum: usize) -> Value {
    let at_forum = steps
        .iter()
        .find(|s| s.delegates == forum)
        .map(|s| s.json.clone());
    json!({
        "max_delegates": max_passing(steps),
        "forum": at_forum,
        "steps": steps.iter().map(|s| s.json.clone()).collect::<Vec<_>>(),
        "stopped": failure,
        "worst_step": steps.iter().max_by(|a, b| (a.loss, a.p99_ms).partial_cmp(&(b.loss, b.p99_ms)).unwrap_or(std::cmp::Ordering::Equal)).map(|s| s.delegates),
    })
}

fn ramp(args: RampArgs) -> Result<()> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let mut sut = Sut::start(args.spawn_server, true).await?;
        let mut media_tid = None;
        for _ in 0..100 {
            media_tid = threads(sut.proc())
                .into_iter()
                .find(|(_, comm)| comm == MEDIA_THREAD_COMM)
                .map(|(tid, _)| tid);
            if media_tid.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let media_tid = media_tid.ok_or("no roundtable-media thread")?;
        let token = sut.token(Role::Moderator, "chair").await?;
        let chair = Client::join(sut.base(), &token).await?;
        progress!(
            "ramp: roundtable ({}), steps of {} from {} (forum at {})",
            if args.spawn_server {
                "child process"
            } else {
                "in process"
            },
            args.step,
            args.start,
            args.forum
        );
        let rt = ramp_side(
            &args,
            Side::Rt {
                sut,
                chair,
                media_tid,
            },
        )
        .await?;
        let janus = match &args.janus {
            Some(api) => {
                let run = async {
                    let pid = janus_pid()?;
                    progress!("ramp: Janus at {api} (pid {pid})");
                    let side = Side::Janus {
                        api: api.clone(),
                        room: args.janus_room,
                        opts: ClientOptions {
                            bind_ip: args.janus_bind,
                            ..ramp_options()
                        },
                        proc: format!("/proc/{pid}"),
                    };
                    ramp_side(&args, side).await
                };
                // A Janus failure is recorded; roundtable's figures are written all the same.
                Some(run.await.map_err(|e| e.to_string()))
            }
            None => None,
        };
        Ok::<_, BoxError>((rt, janus))
    });
    drop(runtime);
    let ((rt_steps, rt_fail), janus) = result?;
    let rt = side_json(&rt_steps, &rt_fail, args.forum);
    let mut out = json!({
        "machine": machine(),
        "date": utc_now(),
        "command": command,
        "load": {
            "what": "forum: the room's program (Opus 50/s + VP8 q/h/f) and N audio-only delegates: the first speaks (50/s) and holds the floor, the others send DTX (a small packet every 400 ms, dropped by the floor gate); every delegate receives the program (audio, top layer) and the holder's microphone, the room the holder's microphone (roundtable: media_preferences microphones = open)",
            "step": args.step, "start": args.start, "forum": args.forum,
            "pass": {"loss_max": args.loss_max, "p99_max_ms": args.p99_max_ms},
            "window_s": args.secs,
            "keyframe_interval_s": args.keyframe_secs,
        },
        "roundtable": rt,
    });
    match &janus {
        Some(Ok((steps, fail))) => out["janus"] = side_json(steps, fail, args.forum),
        Some(Err(e)) => out["janus"] = json!({"error": e, "max_delegates": null, "forum": null}),
        None => {}
    }
    progress!(
        "ramp: roundtable keeps loss <= {} and p99 <= {} ms up to {} delegates{}",
        args.loss_max,
        args.p99_max_ms,
        max_passing(&rt_steps),
        match &janus {
            Some(Ok((s, _))) => format!("; Janus up to {}", max_passing(s)),
            Some(Err(e)) => format!("; Janus failed: {e}"),
            None => String::new(),
        }
    );
    write_json(&args.out, &out)?;
    if args.strict {
        let mut failed = Vec::new();
        if let Some(f) = &rt_fail {
            failed.push(format!("roundtable: {f}"));
        }
        if rt_steps.is_empty() {
            failed.push("roundtable: no step measured".into());
        }
        match &janus {
            Some(Err(e)) => failed.push(format!("janus: {e}")),
            Some(Ok((steps, f))) => {
                if let Some(f) = f {
                    failed.push(format!("janus: {f}"));
                }
                if steps.is_empty() {
                    failed.push("janus: no step measured".into());
                }
            }
            None => {}
        }
        if !failed.is_empty() {
            return Err(format!("--strict: {}", failed.join("; ")).into());
        }
    }
    progress!("wrote {}", args.out.display());
    Ok(())
}

// ----- Janus side by side -----------------------------------------------------------------

/// Janus's substream for our simulcast layer `ours` (0 = `q`) of a publisher with `layers`.
/// Janus numbers a publisher's rids from the top: the first rid in `a=simulcast` is its
/// highest substream (janus.js offers `h;m;l`). Ours are offered low first (`q;h;f`, as the
/// roundtable web client does), so our layer `l` of `n` is Janus's `n - 1 - l` (measured:
/// substream 2 of the room's three layers gave the `q` rate, 16 packets/s, and substream 0 of
/// a two-layer camera its `h` rate, 61).
fn janus_substream(layers: u8, ours: u8) -> u8 {
    layers.saturating_sub(1).saturating_sub(ours)
}

/// How many delay samples each received track has now (by mid): the start of a window.
fn sample_counts(tracks: &[TrackStats], count: impl Fn(&str) -> usize) -> BTreeMap<String, usize> {
    tracks
        .iter()
        .map(|t| (t.mid.clone(), count(&t.mid)))
        .collect()
}

/// Appends to `out` every delay sample that arrived since `start` ([`sample_counts`]).
fn samples_since(
    tracks: &[TrackStats],
    start: &BTreeMap<String, usize>,
    samples: impl Fn(&str) -> Vec<u32>,
    out: &mut Vec<u32>,
) {
    for t in tracks {
        let all = samples(&t.mid);
        let from = start.get(&t.mid).copied().unwrap_or(0).min(all.len());
        out.extend_from_slice(&all[from..]);
    }
}

/// The Janus process (`janus -F …`, as bench/janus/janus.sh starts it).
fn janus_pid() -> Result<u32> {
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let mut args = cmd.split(|b| *b == 0);
        if args.next().is_some_and(|a| a.ends_with(b"janus")) && args.any(|a| a == b"-F") {
            return Ok(pid);
        }
    }
    Err("no Janus process: start it with `bash bench/janus/janus.sh start` (as root)".into())
}

/// One Janus participant's view at an instant.
struct JanusSnap {
    at: Instant,
    ticks: u64,
    rss_kib: u64,
    subs: Vec<Vec<TrackStats>>,
    sent: u64,
}

fn janus_snap(proc: &str, subs: &[(JanusClient, usize)], pubs: &[JanusClient]) -> JanusSnap {
    JanusSnap {
        at: Instant::now(),
        ticks: stat_ticks(&format!("{proc}/stat")).unwrap_or(0),
        rss_kib: rss_kib(proc),
        subs: subs.iter().map(|(c, _)| c.stats()).collect(),
        sent: pubs
            .iter()
            .flat_map(|p| p.sent_stats())
            .map(|s| s.packets)
            .sum(),
    }
}

/// The `baku` load against Janus VideoRoom: the same publishers (the room's program with three
/// layers, each delegate's microphone and two-layer camera) and, per subscriber, the same
/// streams roundtable forwards: a delegate gets the program (audio, top layer), the floor
/// holder's camera (top layer) and microphone, and every other delegate's camera on the low
/// layer (`substream` 0); the room gets every delegate's camera (low) and the holder's camera
/// (top) and microphone. Janus has no floor gate: the microphones nobody should hear are simply
/// not subscribed. CPU is the Janus process's (utime + stime) over the window, per packet
/// received by the subscribers (Janus keeps no forwarded count we could read over HTTP).
async fn run_janus(args: &BakuArgs, api: &str) -> Result<Value> {
    let n = args.delegates;
    let pid = janus_pid()?;
    let proc = format!("/proc/{pid}");
    let opts = ClientOptions {
        bind_ip: args.janus_bind,
        ..Default::default()
    };
    let rss_base = rss_kib(&proc);
    let t_setup = Instant::now();
    progress!("janus: pid {pid} at {api}, RSS {rss_base} KiB; joining the room");
    let keyframe_interval = Duration::from_secs_f64(args.keyframe_secs.max(0.0));
    let room = JanusClient::join(api, args.janus_room, "room", opts.clone()).await?;
    room.publish(PublishSpec {
        audio: true,
        video_layers: 3,
        source_program: true,
        keyframe_interval,
        ..Default::default()
    })
    .await?;
    room.wait_published().await?;
    let mut delegates: Vec<JanusClient> = Vec::new();
    let ids: Vec<usize> = (1..=n).collect();
    for chunk in ids.chunks(args.join_batch.max(1)) {
        let mut set = JoinSet::new();
        for &i in chunk {
            let (api, opts, room_id) = (api.to_owned(), opts.clone(), args.janus_room);
            set.spawn(async move {
                let name = format!("d{i:03}");
                let c = JanusClient::join(&api, room_id, &name, opts)
                    .await
                    .map_err(|e| format!("{name} join: {e}"))?;
                c.publish(PublishSpec {
                    audio: true,
                    video_layers: 2,
                    keyframe_interval,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("{name} publish: {e}"))?;
                c.wait_published()
                    .await
                    .map_err(|e| format!("{name} publish connection: {e}"))?;
                Ok::<_, String>((i, c))
            });
        }
        let mut got = Vec::new();
        while let Some(r) = set.join_next().await {
            got.push(r.map_err(|e| e.to_string())??);
        }
        got.sort_by_key(|(i, _)| *i);
        delegates.extend(got.into_iter().map(|(_, c)| c));
    }
    progress!(
        "janus: {n} delegates publish after {:.1} s",
        t_setup.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let janus_layer = |layers: u8, ours: u8| Some(janus_substream(layers, ours));
    let stream = |c: &JanusClient, i: usize, layer: Option<u8>| JanusStream {
        feed: c.feed(),
        mid: c.mids().get(i).cloned().unwrap_or_default(),
        substream: layer,
    };
    let holder = delegates[0].clone();
    // (client, its streams)
    let mut plan: Vec<(JanusClient, Vec<JanusStream>)> = Vec::new();
    let mut room_streams: Vec<JanusStream> = delegates
        .iter()
        .map(|d| stream(d, 1, janus_layer(2, 0)))
        .collect();
    room_streams.push(stream(&holder, 1, janus_layer(2, 1)));
    room_streams.push(stream(&holder, 0, None));
    plan.push((room.clone(), room_streams));
    for (i, d) in delegates.iter().enumerate() {
        let mut list = vec![stream(&room, 0, None), stream(&room, 1, janus_layer(3, 2))];
        for (j, other) in delegates.iter().enumerate() {
            if j != i {
                list.push(stream(other, 1, janus_layer(2, 0)));
            }
        }
        if i != 0 {
            list.push(stream(&holder, 1, janus_layer(2, 1)));
            list.push(stream(&holder, 0, None));
        }
        plan.push((d.clone(), list));
    }
    for chunk in plan.chunks(args.join_batch.max(1)) {
        let mut set = JoinSet::new();
        for (c, list) in chunk {
            let (c, list) = (c.clone(), list.clone());
            set.spawn(async move {
                c.subscribe(&list)
                    .await
                    .map_err(|e| format!("subscribe: {e}"))
            });
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
    }
    let subs: Vec<(JanusClient, usize)> = plan.iter().map(|(c, l)| (c.clone(), l.len())).collect();
    progress!(
        "janus: {} subscribers negotiated; waiting for media",
        subs.len()
    );
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout_secs);
    loop {
        let lagging: Vec<String> = subs
            .iter()
            .enumerate()
            .filter_map(|(i, (c, want))| {
                let flowing = c.stats().iter().filter(|t| t.packets > 0).count();
                (flowing < *want).then(|| format!("#{i} {flowing}/{want}"))
            })
            .collect();
        if lagging.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "janus: not every subscriber receives what it should after {} s: {lagging:?}",
                args.ready_timeout_secs
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress!(
        "janus: all tracks flowing after {:.1} s; settling {} s",
        t_setup.elapsed().as_secs_f64(),
        args.settle_secs
    );
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let mut pubs = vec![room.clone()];
    pubs.extend(delegates.iter().cloned());
    let lat_before: Vec<BTreeMap<String, usize>> = subs
        .iter()
        .map(|(c, _)| sample_counts(&c.stats(), |m| c.latency_count(m)))
        .collect();
    let before = janus_snap(&proc, &subs, &pubs);
    progress!("janus: measuring {} s", args.secs);
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let after = janus_snap(&proc, &subs, &pubs);
    let secs = (after.at - before.at).as_secs_f64();
    let mut all = Vec::new();
    for ((c, _), start) in subs.iter().zip(&lat_before) {
        samples_since(&c.stats(), start, |m| c.latency_samples(m), &mut all);
    }
    let latency = LatencySummary::of(&all);
    let d = delivery(&before.subs, &after.subs);
    let received = d.audio_packets + d.video_packets;
    let cpu_s = after.ticks.saturating_sub(before.ticks) as f64 / TICKS_PER_SEC;
    let us = cpu_s * 1e6 / received.max(1) as f64;
    let delivery_ratio = d.received as f64 / d.expected.max(1) as f64;
    let rss_per = after.rss_kib.saturating_sub(rss_base) as f64 / 1024.0 / (n + 1) as f64;
    let mut errors = Vec::new();
    for (i, c) in pubs.iter().enumerate() {
        errors.extend(c.errors().into_iter().map(|e| format!("#{i}: {e}")));
    }
    progress!(
        "janus: {received} packets received in {secs:.1} s ({:.0}/s); process {cpu_s:.2} s CPU ({:.1}% of a core): {us:.2} us per forwarded packet; delivery {delivery_ratio:.5}; latency p50 {:.2} ms p99 {:.2} ms; RSS {rss_per:.2} MiB per participant",
        received as f64 / secs,
        cpu_s * 100.0 / secs,
        ms(latency.p50_us),
        ms(latency.p99_us),
    );
    let mut set = JoinSet::new();
    for c in pubs {
        set.spawn(async move { c.close().await });
    }
    while set.join_next().await.is_some() {}
    Ok(json!({
        "cpu_us_per_forwarded_packet": round(us, 3),
        "delivery_ratio": round(delivery_ratio, 6),
        "added_latency_p50_ms": ms(latency.p50_us),
        "added_latency_p99_ms": ms(latency.p99_us),
        "rss_per_participant_mib": round(rss_per, 3),
        "what": "Janus VideoRoom 1.1.2 (Debian), event_loops = 1, HTTP transport and VideoRoom only, in its own network namespace (bench/janus/janus.sh); CPU = the Janus process's utime+stime per packet received by the subscribers",
        "process_cpu_s": round(cpu_s, 2),
        "process_core_share": round(cpu_s / secs, 3),
        "latency": latency_json(&latency),
        "delivery": {
            "expected": d.expected,
            "received": d.received,
            "rtp_expected": d.rtp_expected,
            "rtp_received": d.rtp_received,
            "duplicates": d.duplicates,
        },
        "rss_kib": {"before_join": rss_base, "after_window": after.rss_kib, "participants": n + 1},
        "load": {
            "window_s": round(secs, 3),
            "packets_sent_by_publishers": after.sent.saturating_sub(before.sent),
            "packets_received_per_s": round(received as f64 / secs, 1),
            "audio_packets_received": d.audio_packets,
            "video_packets_received": d.video_packets,
            "subscriber_streams": subs.iter().map(|(_, n)| n).sum::<usize>(),
        },
        "client_errors": errors,
        "packets_per_s_by_track": {
            "what": "the room's and the first two delegates' received tracks over the window, by mid (audio first, then the streams in the order subscribed)",
            "room": track_rates(&before.subs[0], &after.subs[0], secs),
            "d001": track_rates(&before.subs[1], &after.subs[1], secs),
            "d002": before.subs.get(2).zip(after.subs.get(2)).map(|(b, a)| track_rates(b, a, secs)),
        },
    }))
}

/// Packets per second of each received track between two snapshots, by mid.
fn track_rates(before: &[TrackStats], after: &[TrackStats], secs: f64) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|t| {
            let old = before
                .iter()
                .find(|o| o.mid == t.mid)
                .map_or(0, |o| o.packets);
            (t.mid.clone(), round((t.packets - old) as f64 / secs, 1))
        })
        .collect()
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(v)? + "\n")?;
    Ok(())
}
