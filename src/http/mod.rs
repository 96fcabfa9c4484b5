//! # HTTP: the router
//!
//! [`app`] builds the axum `Router` apart from `main`, so tests serve the very same router
//! on port 0. Routes:
//! - `GET /ws?token=...`: the meeting websocket (token checked before the upgrade: 401).
//! - `GET /api/minutes?format=json|csv|md` with a moderator token (query `token` or
//!   `Authorization: Bearer`).
//! - `GET /healthz`: 200 with version and uptime.
//! - `GET /`: a plain page saying what this server is.
//! - `GET /join?token=...` (the page of the token's role), `GET /timer?token=...` (the lectern
//!   timer), `GET /web/<file>`: the browser clients, see [`web`].
//!
//! No media or floor internals here: meetings are reached through their handles.

mod connection;
pub mod listen;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::auth::{self, Claims, Secret};
use crate::clock::Clock;
use crate::meeting::{Counters, MeetingHandle, Who};
use crate::store::{Journal, minutes};

pub use connection::{FLOOD_LIMIT, FLOOD_WINDOW};

/// Largest websocket message accepted at all; larger ones end the connection. Messages over
/// the configured soft limit (64 KiB by default) get a `too_large` error instead.
pub const HARD_FRAME_LIMIT: usize = 1 << 20;

/// Read and write buffer size of a websocket connection.
pub const WS_BUFFER: usize = 8 * 1024;

/// Per-connection limits from the config.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Soft frame limit in bytes.
    pub max_frame_bytes: usize,
    /// Token bucket refill.
    pub commands_per_second: u32,
    /// Token bucket size.
    pub command_burst: u32,
    /// Origins whose pages may open the websocket besides the server's own, normalised
    /// (lowercase, no trailing slash): `server.allowed_origins` and `public_url`'s origin.
    pub allowed_origins: Vec<String>,
}

/// `scheme://host[:port]` of a URL, lowercase, without a path or trailing slash.
pub fn origin_of(url: &str) -> String {
    let url = url.trim().to_ascii_lowercase();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", &url));
    let host = rest.split('/').next().unwrap_or("");
    format!("{scheme}://{host}")
}

/// Whether a websocket upgrade from a page at `origin` may go on: no `Origin` (not a browser),
/// the server's own host (the request's `Host`), or an allowed origin. A browser always sends
/// `Origin` on a websocket, so a page elsewhere cannot open one with a token it holds.
fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let o = origin_of(origin);
    let own = host.is_some_and(|h| {
        let h = h.to_ascii_lowercase();
        o == format!("http://{h}") || o == format!("https://{h}")
    });
    own || allowed.contains(&o)
}

/// State shared by every request handler.
#[derive(Debug)]
pub struct Shared {
    /// Token key.
    pub secret: Secret,
    /// Meetings by id.
    pub meetings: HashMap<String, MeetingHandle>,
    /// The journal (minutes read it).
    pub journal: Journal,
    /// Server clock.
    pub clock: Clock,
    /// Limits.
    pub limits: Limits,
    /// Invites revoked or redeemed.
    pub invites: Arc<crate::invites::Invites>,
    /// The accept loop's counters (refused by the per-address limits, failed TLS handshakes).
    pub listen: Arc<listen::ListenCounters>,
    /// Process start, for `/healthz`.
    pub started: Instant,
    /// Connection id counter.
    pub next_conn: AtomicU64,
    /// Open websocket connections.
    pub ws_clients: AtomicU64,
    /// Meeting counters.
    pub counters: Arc<Counters>,
    /// The media engine, when it runs (`/metrics`).
    pub media: Option<crate::media::engine::MediaHandle>,
    /// Turns true on shutdown.
    pub shutdown: watch::Receiver<bool>,
}

/// The router.
pub fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/join", get(join_page))
        .route("/timer", get(timer_page))
        .route("/web/{*path}", get(web_file))
        .route("/ws", get(ws))
        .route("/api/minutes", get(minutes_handler))
        .route("/api/health", get(health_history))
        .route("/api/token", get(token_check))
        .with_state(shared)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"type": "error", "code": code, "message": message.into()})),
    )
        .into_response()
}

async fn index(State(s): State<Arc<Shared>>) -> Html<String> {
    let mut names: Vec<&String> = s.meetings.keys().collect();
    names.sort();
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>roundtable</title>\
         <h1>roundtable {}</h1><p>Session host for moderated hybrid roundtables.</p>\
         <p>Meetings: {}</p><p>Join with the link from your invitation.</p>",
        env!("CARGO_PKG_VERSION"),
        names
            .iter()
            .map(|n| web::html_escape(n))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// An invitation link: the page of the token's role (`web/<role>.html`), once the token is
/// checked. Without that page in this build, a plain landing page says who is invited.
async fn join_page(State(s): State<Arc<Shared>>, Query(q): Query<TokenQuery>) -> Response {
    let (claims, meeting) = match check_token(&s, q.token.as_deref()) {
        Ok(v) => v,
        Err(r) => return r.page(),
    };
    let page = format!("{}.html", claims.role.as_str());
    if web::file(&page).is_some() {
        return web::serve(&page);
    }
    Html(format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>\
         <title>roundtable: invitation</title><main style='font:1.25rem system-ui;max-width:40rem;margin:2rem auto'>\
         <h1>Invitation</h1><p><strong>{}</strong> ({}) joins meeting <strong>{}</strong> as \
         <strong>{}</strong>.</p><p>This build has no page for this role.</p></main>",
        web::html_escape(&claims.name),
        web::html_escape(&claims.delegation),
        web::html_escape(meeting.id.as_ref()),
        claims.role.as_str()
    ))
    .into_response()
}

/// The lectern timer for a token (any role may show it).
async fn timer_page(State(s): State<Arc<Shared>>, Query(q): Query<TokenQuery>) -> Response {
    if let Err(r) = check_token(&s, q.token.as_deref()) {
        return r.page();
    }
    web::serve("timer.html")
}

/// A file of the browser clients.
async fn web_file(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    web::serve(&path)
}

/// The stream-health history of the token's meeting: `format=csv` (samples) or `json`
/// (samples and alerts). For the moderator and technicians.
async fn health_history(
    State(s): State<Arc<Shared>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let (claims, _) = match authenticate(&s, bearer.or(q.token.as_deref())) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    use roundtable_signaling::Role;
    if !matches!(claims.role, Role::Moderator | Role::Technician) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the health history is for the moderator and technicians",
        );
    }
    let (samples, alerts) = match s.journal.read_health(&claims.meeting).await {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                e.to_string(),
            );
        }
    };
    match q.format.as_deref().unwrap_or("csv") {
        "csv" => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            crate::store::health::samples_csv(&samples),
        )
            .into_response(),
        "json" => Json(json!({
            "summary": crate::store::health::summarise(&samples, &alerts),
            "samples": samples.iter().map(|x| json!({
                "at": x.at_ms, "participant": x.participant, "direction": x.direction,
                "score": x.score, "cause": x.cause, "loss_pct": x.loss_pct,
                "jitter_ms": x.jitter_ms, "rtt_ms": x.rtt_ms, "kbps": x.kbps,
            })).collect::<Vec<_>>(),
            "alerts": alerts.iter().map(|a| json!({
                "id": a.id, "kind": a.kind, "participant": a.participant,
                "direction": a.direction, "detail": a.detail, "raised_at": a.raised_at,
                "cleared_at": a.cleared_at, "acked_by": a.acked_by,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        _ => error(
            StatusCode::BAD_REQUEST,
            "invalid_value",
            "format must be csv or json",
        ),
    }
}

/// The Prometheus exposition ([`crate::metrics`]).
async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let engine = match &s.media {
        Some(m) => m.stats().await.ok(),
        None => None,
    };
    let mut ids: Vec<&String> = s.meetings.keys().collect();
    ids.sort();
    let mut meetings = Vec::new();
    for id in ids {
        if let Some(m) = s.meetings[id].metrics().await {
            meetings.push(m);
        }
    }
    let body = crate::metrics::render(
        &s.counters,
        s.ws_clients.load(std::sync::atomic::Ordering::Relaxed),
        engine.as_ref(),
        &meetings,
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": s.started.elapsed().as_secs(),
        "meetings": s.meetings.len(),
        "ws_clients": s.ws_clients.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
    format: Option<String>,
}

fn now_secs(clock: &Clock) -> i64 {
    clock.now().div_euclid(1000)
}

/// Why a token opens nothing: the HTTP status, the error code and a message.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    /// For the APIs: the JSON error body.
    fn json(self) -> Response {
        error(self.status, self.code, self.message)
    }

    /// For a page (`/join`, `/timer`): a page that says what the refusal means to the person
    /// holding the link (`web/refused.html`), with the same status and code.
    fn page(self) -> Response {
        web::refused_page(self.status, self.code, &self.message)
    }
}

/// Verifies a token; the error is a ready 401 (or 404 for an unknown meeting) with a JSON body.
fn authenticate(s: &Shared, token: Option<&str>) -> Result<(Claims, MeetingHandle), Box<Response>> {
    check_token(s, token).map_err(|r| Box::new(r.json()))
}

/// Verifies a token: signed by us, not expired, for a meeting we host, its invite not revoked.
fn check_token(s: &Shared, token: Option<&str>) -> Result<(Claims, MeetingHandle), Refusal> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "token_missing",
            "a token is required: use the link from your invitation",
        ));
    };
    let claims = auth::verify(&s.secret, token, now_secs(&s.clock)).map_err(|e| {
        tracing::info!(code = e.code(), "refused a token");
        Refusal::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    })?;
    let Some(meeting) = s.meetings.get(&claims.meeting).cloned() else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_meeting",
            format!("this server hosts no meeting {:?}", claims.meeting),
        ));
    };
    if s.invites.is_revoked(&claims.meeting, &claims.invite) {
        let e = crate::invites::InviteError::Revoked;
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            e.code(),
            e.to_string(),
        ));
    }
    Ok((claims, meeting))
}

fn who(s: &Shared, claims: &Claims) -> Who {
    Who {
        id: claims.participant.clone(),
        name: claims.name.clone(),
        delegation: claims.delegation.clone(),
        role: claims.role,
        invite: claims.invite.clone(),
        // A one-time invite's holder reconnects with the same claims, not one-time.
        session_token: claims.once.then(|| {
            auth::sign(
                &s.secret,
                &Claims {
                    once: false,
                    ..claims.clone()
                },
            )
        }),
    }
}

async fn ws(
    State(s): State<Arc<Shared>>,
    Query(q): Query<TokenQuery>,
    place: Option<axum::Extension<Arc<listen::Admitted>>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if !origin_allowed(
        text(header::ORIGIN),
        text(header::HOST),
        &s.limits.allowed_origins,
    ) {
        tracing::info!(origin = ?text(header::ORIGIN), "refused a websocket from another origin");
        return error(
            StatusCode::FORBIDDEN,
            "origin_forbidden",
            "this page's origin may not open the meeting's websocket (server.allowed_origins)",
        );
    }
    // The token is checked before anything else: a bad one never gets a websocket.
    let (claims, meeting) = match authenticate(&s, q.token.as_deref()) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = s.invites.admit(&claims, s.clock.now()).await {
        tracing::info!(code = e.code(), invite = %claims.invite, "refused an invite");
        let status = match e {
            crate::invites::InviteError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        return error(status, e.code(), e.to_string());
    }
    let who = who(&s, &claims);
    // Small socket buffers: tungstenite's 128 KiB defaults dominate the memory of an idle
    // client (measured with rt-bench: docs/PERFORMANCE.md).
    upgrade
        .read_buffer_size(WS_BUFFER)
        .write_buffer_size(WS_BUFFER)
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| async move {
            // The per-address place of the TCP connection, held while the websocket lives.
            let _place = place;
            connection::serve(socket, s, who, meeting).await
        })
}

/// Whether a token would open the websocket now (without redeeming a one-time invite): 200
/// with who it names, or the refusal `/ws` would give, with its JSON body. Pages ask it when
/// their websocket does not open, to tell "link revoked" or "link used" from "server down".
async fn token_check(State(s): State<Arc<Shared>>, Query(q): Query<TokenQuery>) -> Response {
    let (claims, _) = match authenticate(&s, q.token.as_deref()) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if claims.once && s.invites.is_redeemed(&claims.meeting, &claims.invite) {
        let e = crate::invites::InviteError::Used;
        return error(StatusCode::UNAUTHORIZED, e.code(), e.to_string());
    }
    Json(json!({
        "type": "token",
        "meeting": claims.meeting,
        "participant": claims.participant,
        "role": claims.role.as_str(),
        "once": claims.once,
    }))
    .into_response()
}

async fn minutes_handler(
    State(s): State<Arc<Shared>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let (claims, _) = match authenticate(&s, bearer.or(q.token.as_deref())) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if claims.role != roundtable_signaling::Role::Moderator {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "minutes are for the moderator",
        );
    }
    let format = match minutes::Format::parse(q.format.as_deref().unwrap_or("json")) {
        Some(f) => f,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_value",
                "format must be json, csv or md",
            );
        }
    };
    let records = match s.journal.load(&claims.meeting).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                e.to_string(),
            );
        }
    };
    let Some(handle) = s.meetings.get(&claims.meeting) else {
        return error(StatusCode::NOT_FOUND, "unknown_meeting", "no such meeting");
    };
    let Some((_, snapshot)) = handle.snapshot().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "meeting_stopped",
            "the meeting task has stopped",
        );
    };
    let mut m = minutes::build(&snapshot.meeting, &snapshot.agenda.items, &records);
    if let Ok((samples, alerts)) = s.journal.read_health(&claims.meeting).await {
        m.quality = crate::store::health::summarise(&samples, &alerts);
    }
    let (body, mime) = minutes::render(&m, format);
    ([(header::CONTENT_TYPE, mime)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_websocket_from_another_origin_is_refused_unless_allowed() {
        let allowed = vec![origin_of("https://Portal.example.org/")];
        let host = Some("rt.example.org:8443");
        // Not a browser: no Origin header.
        assert!(origin_allowed(None, host, &[]));
        // The server's own pages, either scheme (behind a TLS proxy the Host is the same).
        assert!(origin_allowed(
            Some("https://rt.example.org:8443"),
            host,
            &[]
        ));
        assert!(origin_allowed(
            Some("http://RT.example.org:8443"),
            host,
            &[]
        ));
        // Another site, another port, a look-alike.
        for o in [
            "https://evil.example",
            "https://rt.example.org",
            "https://rt.example.org:8443.evil.example",
            "null",
        ] {
            assert!(!origin_allowed(Some(o), host, &[]), "{o}");
        }
        // An allowed portal.
        assert!(origin_allowed(
            Some("https://portal.example.org"),
            host,
            &allowed
        ));
        assert!(!origin_allowed(
            Some("https://portal.example.org"),
            None,
            &[]
        ));
        assert_eq!(origin_of("https://a.b:1/x/y"), "https://a.b:1");
    }
}
