//! The `roundtable` command: `serve` (the default), `invite`, `minutes`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use roundtable::auth::{self, Role};
use roundtable::clock::Clock;
use roundtable::config::Config;
use roundtable::store::{JournalReader, minutes};
use roundtable::{meeting, server};

/// Session host for moderated hybrid roundtables.
#[derive(Debug, Parser)]
#[command(name = "roundtable", version, about)]
struct Cli {
    /// Config file (TOML); default: the built-in Baku roundtable.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the meetings (the default).
    Serve {
        /// Listen address, overriding the config.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print a join URL for a new invite.
    Invite {
        /// moderator, delegate, room, technician, observer or assistant.
        #[arg(long)]
        role: Role,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Delegation or organisation.
        #[arg(long, default_value = "")]
        delegation: String,
        /// Participant id (default: derived from the name).
        #[arg(long)]
        participant: Option<String>,
        /// Meeting id (default: the first meeting in the config).
        #[arg(long)]
        meeting: Option<String>,
        /// Validity in hours (default: server.token_ttl_hours).
        #[arg(long)]
        hours: Option<u32>,
        /// The link works once: its first connection redeems it (a forwarded copy is refused
        /// with token_used); the page keeps a session token for its reconnects.
        #[arg(long)]
        once: bool,
    },
    /// Print the minutes of a meeting from the journal.
    Minutes {
        /// json, csv or md.
        #[arg(long, default_value = "md")]
        format: String,
        /// Meeting id (default: the first meeting in the config).
        #[arg(long)]
        meeting: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default_event()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roundtable: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(cli.json_logs);
    match run(cli.command, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roundtable: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,roundtable=info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn now_unix() -> i64 {
    Clock::System.now() / 1000
}

fn pick_meeting<'a>(
    config: &'a Config,
    id: Option<&str>,
) -> anyhow::Result<&'a roundtable::config::MeetingConfig> {
    match id {
        Some(id) => config
            .meeting(id)
            .with_context(|| format!("no meeting {id:?} in the config")),
        None => config.meetings.first().context("the config has no meeting"),
    }
}

fn run(command: Option<Cmd>, mut config: Config) -> anyhow::Result<()> {
    match command.unwrap_or(Cmd::Serve { listen: None }) {
        Cmd::Serve { listen } => {
            if let Some(addr) = listen {
                config.server.listen_addr = addr;
                config.server.listen = addr.to_string();
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(config))
        }
        Cmd::Invite {
            role,
            name,
            delegation,
            participant,
            meeting,
            hours,
            once,
        } => {
            let m = pick_meeting(&config, meeting.as_deref())?;
            if let Some(id) = participant.as_deref() {
                anyhow::ensure!(
                    roundtable::config::is_valid_id(id),
                    "--participant must be 1 to 64 characters of a-z, 0-9 and '-' (got {id:?})"
                );
                anyhow::ensure!(
                    !id.starts_with("room-") && !id.starts_with("lectern-"),
                    "--participant may not start with room- or lectern-: the server names people in the room so"
                );
            }
            let secret = server::secret(&config)?;
            let ttl = u64::from(hours.unwrap_or(config.server.token_ttl_hours)) * 3600;
            let mut claims = auth::new_invite(
                &m.id,
                role,
                participant.as_deref(),
                &name,
                &delegation,
                ttl,
                now_unix(),
            );
            claims.once = once;
            eprintln!("invite id: {}", claims.invite);
            println!(
                "{}",
                auth::join_url(&config.server.base_url(), &auth::sign(&secret, &claims))
            );
            Ok(())
        }
        Cmd::Minutes { format, meeting } => {
            let m = pick_meeting(&config, meeting.as_deref())?;
            let format =
                minutes::Format::parse(&format).context("--format must be json, csv or md")?;
            let reader =
                JournalReader::open_readonly(&config.server.data_dir.join(server::JOURNAL_FILE))?;
            let records = reader.load(&m.id)?;
            let engine = meeting::replay_engine(m, &records);
            let info = meeting::meeting_info(m);
            let items = meeting::wire::agenda_view(&engine, Clock::System.now()).items;
            let (body, _) = minutes::render(&minutes::build(&info, &items, &records), format);
            print!("{body}");
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.server.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen_addr))?;
    let prepared = server::prepare(&config, Clock::System).await?;
    let addr = listener.local_addr()?;
    println!(
        "roundtable {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    if addr.ip().is_loopback() {
        for m in &config.meetings {
            println!("\nMeeting {:?}: {}", m.id, m.title);
            for (role, url) in
                server::role_links(&config, &prepared.shared.secret, &m.id, now_unix())
            {
                println!("  {:<11} {url}", role.as_str());
                if role == auth::Role::Observer {
                    // The lectern timer shows with any token; an observer's sees nothing else.
                    println!("  {:<11} {}", "timer", url.replacen("/join?", "/timer?", 1));
                }
            }
        }
        println!(
            "\nMore invites: roundtable invite --role delegate --name \"...\" --delegation \"...\""
        );
    }
    server::serve(listener, prepared, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
