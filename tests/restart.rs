//! Kill the real server mid-dialogue (SIGKILL: no shutdown, no flush), start it again on the
//! same data directory, reconnect: the queue, the holder and every minute entry are there.
//! Also: an invalid config exits with code 2 naming the key; SIGTERM stops the server cleanly.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use roundtable::auth::{Role, Secret};
use serde_json::{Value, json};

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
        .replace("udp = \"127.0.0.1:8443\"", "udp = \"127.0.0.1:0\"");
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
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not start");
}

fn token(role: Role, id: &str, name: &str, delegation: &str) -> String {
    let secret = Secret::from_config(SECRET).expect("secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    token_for(&secret, role, id, name, delegation, now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_dialogue_and_restart_loses_nothing() {
    let dir = TempDir::new("restart");
    let port = free_port();
    let config = write_config(&dir.0, port);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = spawn(&config, port).await;

    let chair_token = token(Role::Moderator, "chair", "Chair", "ECO");
    let mut chair = Client::join(addr, &chair_token).await;
    chair
        .ok(json!({"type": "agenda_jump", "item": "dialogue"}))
        .await;
    let mut ds = Vec::new();
    for i in 1..=4 {
        let mut d = Client::join(
            addr,
            &token(
                Role::Delegate,
                &format!("d{i}"),
                &format!("Delegate {i}"),
                "X",
            ),
        )
        .await;
        d.ok(json!({"type": "raise_hand"})).await;
        ds.push(d);
    }
    let mut asst = Client::join(addr, &token(Role::Assistant, "asst", "Assistant", "ECO")).await;
    asst.ok(json!({"type": "request_for", "name": "Mr. In Room", "delegation": "Türkiye"}))
        .await;
    chair.ok(json!({"type": "next"})).await; // d1 speaks
    let g = chair.wait_event("floor_granted", |_| true).await;
    let d2 = g["floor"]["queue"][0]["id"].clone();
    chair
        .ok(json!({"type": "revoke", "request": g["event"]["request"]}))
        .await;
    chair.ok(json!({"type": "grant", "request": d2})).await; // d2 speaks
    let d4 = chair.wait_event("floor_granted", |_| true).await["floor"]["queue"][1]["id"].clone();
    chair
        .ok(json!({"type": "move", "request": d4, "position": 1}))
        .await;
    let before = chair.cmd(json!({"type": "ping", "client_time": 0})).await;
    assert_eq!(before["type"], "pong");
    let (_, minutes_before) = http_get(
        addr,
        &format!("/api/minutes?format=json&token={chair_token}"),
    )
    .await;

    // Kill without any shutdown.
    child.kill().expect("kill");
    let _ = child.wait();
    drop(chair);
    drop(ds);
    drop(asst);

    let mut child = spawn(&config, port).await;
    let chair = Client::join(addr, &chair_token).await;
    let snap = &chair.welcome["snapshot"];
    assert_eq!(ids(&snap["floor"]["holders"]), vec!["d2"]);
    assert_eq!(ids(&snap["floor"]["queue"]), vec!["d4", "d3", "room-1"]);
    assert_eq!(snap["floor"]["queue"][2]["beneficiary"]["in_room"], true);
    assert_eq!(snap["agenda"]["current"], "dialogue");
    // Everyone but the chair shows as connection lost until they come back.
    let d1 = snap["participants"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == "d1"))
        .cloned()
        .expect("d1 known");
    assert_eq!(d1["presence"], "connection_lost");

    let (_, minutes_after) = http_get(
        addr,
        &format!("/api/minutes?format=json&token={chair_token}"),
    )
    .await;
    let before: Value = serde_json::from_str(&minutes_before).expect("json");
    let after: Value = serde_json::from_str(&minutes_after).expect("json");
    assert_eq!(
        before["items"], after["items"],
        "minutes changed across the restart"
    );
    let dialogue = &after["items"][6]["interventions"];
    assert_eq!(dialogue.as_array().map(Vec::len), Some(2));
    assert_eq!(dialogue[0]["speaker"], "Delegate 1");
    assert_eq!(dialogue[0]["ended"], "revoked_chair");

    // The queue goes on where it stopped.
    let mut chair = chair;
    chair.ok(json!({"type": "next"})).await;
    let g = chair.wait_event("floor_granted", |_| true).await;
    assert_eq!(ids(&g["floor"]["holders"]), vec!["d4"]);

    // SIGTERM: clients are told, the process exits within 5 s.
    let pid = child.id().to_string();
    let started = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let mut saw_goodbye = false;
    while let Some(m) = chair.recv().await {
        if m["type"] == "goodbye" {
            saw_goodbye = true;
        }
    }
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "did not exit within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(saw_goodbye);

    // The minutes command reads the same journal offline.
    let out = Command::new(env!("CARGO_BIN_EXE_roundtable"))
        .args(["minutes", "--format", "md", "--config"])
        .arg(&config)
        .output()
        .expect("minutes");
    assert!(out.status.success());
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("| 1 | Delegate 1 |"), "{md}");
    assert!(md.contains("Delegate 4"), "{md}");
}

#[test]
fn invalid_config_exits_with_code_2_naming_the_key() {
    let dir = TempDir::new("badconfig");
    let path = dir.0.join("bad.toml");
    let text = roundtable::config::DEFAULT_TOML.replace("max_speakers = 1", "max_speakers = 0");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_roundtable"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("meeting[0].floor.max_speakers"), "{err}");

    std::fs::write(&path, "[server]\nlisten = 42\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_roundtable"))
        .args(["--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"));
}

#[test]
fn invite_prints_a_join_url_that_verifies() {
    let dir = TempDir::new("invite");
    let config = write_config(&dir.0, 8080);
    let out = Command::new(env!("CARGO_BIN_EXE_roundtable"))
        .args([
            "invite",
            "--role",
            "delegate",
            "--name",
            "Elif Yilmaz",
            "--delegation",
            "Türkiye",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("invite");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let token = url.split("token=").nth(1).expect("token in url");
    let secret = Secret::from_config(SECRET).expect("secret");
    let claims = roundtable::auth::verify(&secret, token, 0).expect("verifies");
    assert_eq!(claims.role, Role::Delegate);
    assert_eq!(claims.name, "Elif Yilmaz");
    assert_eq!(claims.delegation, "Türkiye");
    assert!(url.starts_with("http://127.0.0.1:8080/join?token="));
}
