//! TLS served by the server itself (rustls, `server.tls_cert` / `server.tls_key`): a client
//! that trusts the certificate gets `/healthz` over HTTPS and a meeting over WSS; plain HTTP on
//! the TLS port gets nothing; a config with only one of the two files, or files that are not
//! PEM, does not start.

mod common;

use std::sync::Arc;

use common::*;
use roundtable::auth::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn connector(cert_der: rustls::pki_types::CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_the_servers_own_certificate() {
    let keys = TempDir::new("tls-keys");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a self-signed certificate");
    let cert_path = keys.0.join("cert.pem");
    let key_path = keys.0.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("key");
    let (cert, key) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let server = TestServer::start_with("tls", move |c| {
        c.server.tls_cert = cert;
        c.server.tls_key = key;
    })
    .await;
    let tls = connector(certified.cert.der().clone());
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");

    // HTTPS.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut s = tls.connect(name.clone(), tcp).await.expect("TLS handshake");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut body = Vec::new();
    s.read_to_end(&mut body).await.expect("read");
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"status\":\"ok\""), "{text}");

    // WSS: a meeting.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let s = tls.connect(name, tcp).await.expect("TLS handshake");
    let token = server.token(Role::Delegate, "d1", "Amina", "KG");
    let url = format!("wss://localhost:{}/ws?token={token}", server.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, s)
        .await
        .expect("websocket over TLS");
    use futures_util::{SinkExt, StreamExt};
    ws.send(Message::Text(
        json!({"id": "h", "type": "hello", "protocol": 1})
            .to_string()
            .into(),
    ))
    .await
    .expect("hello");
    let welcome = loop {
        match ws.next().await.expect("a message").expect("ok") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("json");
                if v["type"] == "welcome" {
                    break v;
                }
            }
            _ => continue,
        }
    };
    assert_eq!(welcome["you"]["id"], "d1");

    // Plain HTTP on the TLS port: no answer, the connection is closed.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plain HTTP must not be served on the TLS port"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_config_that_cannot_work_does_not_start() {
    let dir = TempDir::new("tls-bad");
    let junk = dir.0.join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    // Files that are not PEM.
    let mut config = test_config(&dir.0);
    config.server.tls_cert = junk.display().to_string();
    config.server.tls_key = junk.display().to_string();
    let clock = roundtable::clock::Clock::System;
    let err = roundtable::server::prepare(&config, clock.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("tls"), "{err}");
    // A file that does not exist.
    config.server.tls_cert = dir.0.join("missing.pem").display().to_string();
    let err = roundtable::server::prepare(&config, clock)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // Only one of the two: a config error naming the key.
    let text = roundtable::config::DEFAULT_TOML.replace("tls_cert = \"\"", "tls_cert = \"a.pem\"");
    let e = roundtable::config::Config::from_toml_str(&text, "test").expect_err("refused");
    assert!(e.to_string().contains("server.tls_key"), "{e}");
}
