//! The real roundtable server in process on port 0, for the headless tests.
#![allow(dead_code)]

use roundtable::auth::{self, Role, Secret};
use roundtable::clock::Clock;
use roundtable::config::Config;
use roundtable::server;
use roundtable_headless::Client;

const SECRET: &str = "headless-test-secret-0123456789";

/// Media tests measure timing and delivery on two cores: one server (with its clients) at a time
/// per test binary, so parallel test threads do not starve each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running server.
pub struct Server {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    pub base: String,
    pub meeting: roundtable::meeting::MeetingHandle,
    /// The media engine.
    pub engine: roundtable::media::engine::MediaHandle,
    pub secret: Secret,
    pub stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempdir::Dir,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir().join(format!("rt-headless-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts a server with media on loopback.
pub async fn start() -> Server {
    start_with(|_| {}).await
}

/// Starts one with a config edit.
pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Server {
    let turn = ONE_AT_A_TIME.lock().await;
    let dir = tempdir::Dir::new();
    let mut config = Config::default_event();
    config.server.data_dir = dir.0.clone();
    config.server.secret = SECRET.into();
    config.media.udp = "127.0.0.1:0".into();
    config.media.udp_addr = ([127, 0, 0, 1], 0).into();
    edit(&mut config);
    let prepared = server::prepare(&config, Clock::System)
        .await
        .expect("prepare");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let meeting = prepared
        .shared
        .meetings
        .values()
        .next()
        .cloned()
        .expect("a meeting");
    let engine = prepared.media().expect("media runs");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server::serve(listener, prepared, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    Server {
        _turn: turn,
        base: format!("ws://{addr}"),
        meeting,
        engine,
        secret: Secret::from_config(SECRET).expect("secret"),
        stop,
        _dir: dir,
    }
}

impl Server {
    /// A token for the default meeting.
    pub fn token(&self, role: Role, id: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let claims = auth::new_invite(
            &Config::default_event().meetings[0].id,
            role,
            Some(id),
            id,
            "Test",
            3600,
            now,
        );
        auth::sign(&self.secret, &claims)
    }

    /// Joins with a fresh token.
    pub async fn join(&self, role: Role, id: &str) -> Client {
        Client::join(&self.base, &self.token(role, id))
            .await
            .expect("join")
    }
}

/// `who` raises a hand and the chair grants it; returns the request id.
pub async fn raise_and_grant(chair: &Client, who: &Client) -> serde_json::Value {
    let ack = who
        .cmd(serde_json::json!({"type": "raise_hand"}))
        .await
        .expect("raise");
    chair
        .cmd(serde_json::json!({"type": "grant", "request": ack["request"]}))
        .await
        .expect("grant");
    ack["request"].clone()
}
